"""Region-scalable (local) fitting energy: Li, Kao, Gore & Ding, "Minimization of
region-scalable fitting energy for image segmentation", IEEE TIP 17(10), 2008.

Each pixel x has its own pair of region means, Gaussian-weighted around x (K: the
Gaussian of std ``sigma`` pixels, truncated at 3 sigma, zero outside the image):

    f1(x) = (K * (u I))(x) / (K * u)(x),   f2(x) = (K * ((1 - u) I))(x) / (K * (1 - u))(x)
    F(u)  = (1/n) sum_x sum_y K(x - y) [ u(y) (I(y) - f1(x))^2 + (1 - u(y)) (I(y) - f2(x))^2 ]

Expanding the square, the sum over x is a few blurs: e1(y) = I(y)^2 (K*1)(y)
- 2 I(y) (K*f1)(y) + (K*f1^2)(y), e2 likewise, F = (1/n) sum_y u e1 + (1 - u) e2; divided
by (K*1) it is a mean squared residual against the local means, on the scale of the
global Chan-Vese fidelity (train/loss.py). Objects of different brightness and a slow
illumination gradient then cost nothing: only the contrast within a sigma-neighbourhood
counts. ``energy`` adds alpha * TV (train/loss.py) and is what adaptation minimises and
its label-free selection measures (train/adapt.py).
"""

from __future__ import annotations

import math

import torch

from unsupseg.train.loss import fidelity as global_fidelity
from unsupseg.train.loss import total_variation

TRUNCATE = 3.0  # the window is cut at this many sigma
_FFT_MIN_SIGMA = 3.0  # from this sigma on, the blur runs as FFTs (faster on the CPU than two 1-D convs)


def _kernel(sigma: float, n: int, like: torch.Tensor) -> torch.Tensor:
    """The 1-D Gaussian taps (normalised over the whole window), cut to an image of ``n`` pixels."""
    full = max(1, math.ceil(TRUNCATE * sigma))
    x = torch.arange(-full, full + 1, device=like.device, dtype=like.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    r = min(full, n - 1)
    return k[full - r : full + r + 1]


def _fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast FFT lengths)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with zero padding (the image ends at its border).

    For sigma >= 3 px the same linear operator runs as a product of FFTs over a
    zero-padded grid (no wrap-around); below that, as two 1-D convolutions.
    """
    b, c, h, w = x.shape
    ky, kx = _kernel(sigma, h, x), _kernel(sigma, w, x)
    ry, rx = (ky.numel() - 1) // 2, (kx.numel() - 1) // 2
    if sigma < _FFT_MIN_SIGMA:
        y = x.reshape(b * c, 1, h, w)
        y = torch.nn.functional.conv2d(y, ky.view(1, 1, -1, 1), padding=(ry, 0))
        y = torch.nn.functional.conv2d(y, kx.view(1, 1, 1, -1), padding=(0, rx))
        return y.reshape(b, c, h, w)
    fh, fw = _fft_length(h + ry), _fft_length(w + rx)  # a linear, not circular, convolution
    ty = torch.zeros(fh, device=x.device, dtype=x.dtype)  # taps laid out circularly: j at j mod n
    ty[: ry + 1] = ky[ry:]
    ty[fh - ry :] = ky[:ry]
    tx = torch.zeros(fw, device=x.device, dtype=x.dtype)
    tx[: rx + 1] = kx[rx:]
    tx[fw - rx :] = kx[:rx]
    kf = torch.fft.fft(ty)[:, None] * torch.fft.rfft(tx)[None, :]  # (fh, fw // 2 + 1)
    return torch.fft.irfft2(torch.fft.rfft2(x, s=(fh, fw)) * kf, s=(fh, fw))[..., :h, :w]


def local_fidelity(image: torch.Tensor, u: torch.Tensor, sigma: float, eps: float = 1e-4) -> torch.Tensor:
    """The region-scalable fitting fidelity per image, shape (B,); image and u (B, 1, H, W).

    ``eps`` keeps f1 / f2 defined where a region is locally absent (its weight there is ~0).
    """
    v = 1.0 - u
    k1 = gaussian_blur(torch.ones_like(image[:1]), sigma)  # (1, 1, H, W): window mass inside the image
    f1 = gaussian_blur(u * image, sigma) / (gaussian_blur(u, sigma) + eps * k1)
    f2 = gaussian_blur(v * image, sigma) / (gaussian_blur(v, sigma) + eps * k1)
    kf1, kf1s = gaussian_blur(torch.cat([f1, f1 * f1], 1), sigma).split(1, 1)
    kf2, kf2s = gaussian_blur(torch.cat([f2, f2 * f2], 1), sigma).split(1, 1)
    i2 = image * image * k1
    e1 = (i2 - 2 * image * kf1 + kf1s) / k1
    e2 = (i2 - 2 * image * kf2 + kf2s) / k1
    return (u * e1 + v * e2).mean(dim=(1, 2, 3))


def energy(image: torch.Tensor, u: torch.Tensor, alpha: float, sigma: float | None) -> torch.Tensor:
    """Per-image energy (B,): the local fidelity with window ``sigma`` (None: the global
    Chan-Vese fidelity) + alpha * TV."""
    fid = global_fidelity(image, u) if sigma is None else local_fidelity(image, u, sigma)
    return fid + alpha * total_variation(u)
