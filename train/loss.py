"""Chan-Vese energy for a soft two-region partition (Chan & Vese, 2001).

For an image I and a prediction u = f(I) in [0, 1] over n pixels, per image:

    a = sum(I u) / sum(u),  b = sum(I (1 - u)) / sum(1 - u)        region means
    fidelity = (1/n) sum( u (I - a)^2 + (1 - u) (I - b)^2 )
    TV       = (1/n) sum( |u(x+1, y) - u(x, y)| + |u(x, y+1) - u(x, y)| )

TV uses forward differences with a Neumann boundary (the difference past the last
row / column is 0). loss = fidelity + alpha * TV, each averaged over the batch.
A region that is empty (u all 0 or all 1) has no mean; its term is 0 times anything,
so the denominator is clamped and the loss stays finite.
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def region_means(image: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image means inside (a) and outside (b) the soft region u; shapes (B, 1, 1, 1)."""
    dims = (1, 2, 3)
    a = (image * u).sum(dims, keepdim=True) / u.sum(dims, keepdim=True).clamp_min(_EPS)
    v = 1.0 - u
    b = (image * v).sum(dims, keepdim=True) / v.sum(dims, keepdim=True).clamp_min(_EPS)
    return a, b


def fidelity(image: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per-image piecewise-constant fidelity, shape (B,)."""
    a, b = region_means(image, u)
    e = u * (image - a) ** 2 + (1.0 - u) * (image - b) ** 2
    return e.mean(dim=(1, 2, 3))


def total_variation(u: torch.Tensor) -> torch.Tensor:
    """Per-image anisotropic TV / n with forward differences, Neumann boundary; shape (B,)."""
    n = u.shape[1] * u.shape[2] * u.shape[3]
    dy = (u[:, :, 1:, :] - u[:, :, :-1, :]).abs().sum(dim=(1, 2, 3))
    dx = (u[:, :, :, 1:] - u[:, :, :, :-1]).abs().sum(dim=(1, 2, 3))
    return (dx + dy) / n


def chan_vese_loss(
    image: torch.Tensor, u: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, fidelity, tv), each the batch mean; image and u are (B, 1, H, W)."""
    fid = fidelity(image, u).mean()
    tv = total_variation(u).mean()
    return fid + alpha * tv, fid, tv
