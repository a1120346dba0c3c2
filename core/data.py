"""Generated and stored data: the built-in generator and the notebook's .npz format.

Training reads them (``train/prepare.py``; folders of images are ``train/folder.py``'s), and
so do export's test tensors and the benchmarks: nothing here needs torch.

Built-in generator (the seed notebook's data process, re-created because its file is
not distributable): each image is a binary picture of 1 to ``max_objects`` shapes
(ellipses, rotated rectangles, regular polygons, smooth random blobs; varying size and
position) with Gaussian noise N(0, sigma) added, sigma drawn uniformly per image from a
range, objects bright on dark or dark on bright. The mask is the binary picture itself.
Deterministic by seed. ``builtin_splits()`` gives the notebook's format: 32x32,
1000 train / 1000 test under the keys image_train, mask_train, image_test, mask_test.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unsupseg.core.atomic import replacing
from unsupseg.core.errors import DataError
from unsupseg.core.normalize import Normalization

NPZ_KEYS = ("image_train", "mask_train", "image_test", "mask_test")
BUILTIN_SIZE = 32
BUILTIN_N = 1000
BUILTIN_SIGMA = (0.05, 0.5)  # noise std relative to an object/background contrast of 1
SHAPES = ("ellipse", "rectangle", "polygon", "blob")


# ----------------------------------------------------------------------------- generator
def _shape_radius(kind: str, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boundary radius r(theta) of a star-shaped object with unit scale."""
    if kind == "ellipse":
        a, b = 1.0, rng.uniform(0.45, 1.0)
        return 1.0 / np.sqrt((np.cos(theta) / a) ** 2 + (np.sin(theta) / b) ** 2)
    if kind == "rectangle":
        a, b = 0.9, 0.9 * rng.uniform(0.4, 1.0)
        c, s = np.abs(np.cos(theta)) + 1e-9, np.abs(np.sin(theta)) + 1e-9
        return np.minimum(a / c, b / s)
    if kind == "polygon":
        k = int(rng.integers(3, 7))
        sector = 2 * np.pi / k
        return np.cos(np.pi / k) / np.cos(np.mod(theta, sector) - sector / 2)
    # blob: smooth random radial Fourier series
    r = np.ones_like(theta)
    for harmonic in range(2, 6):
        r += rng.uniform(0, 0.22 / harmonic * 2) * np.sin(harmonic * theta + rng.uniform(0, 2 * np.pi))
    return 0.85 * r


def draw_shapes(height: int, width: int, rng: np.random.Generator, max_objects: int = 2) -> np.ndarray:
    """A binary picture (H, W) of 1..max_objects random shapes; never empty or full."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    side = min(height, width)
    while True:
        canvas = np.zeros((height, width), dtype=bool)
        for _ in range(int(rng.integers(1, max_objects + 1))):
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            scale = rng.uniform(0.14, 0.38) * side
            cy = rng.uniform(0.2, 0.8) * height
            cx = rng.uniform(0.2, 0.8) * width
            rot = rng.uniform(0, 2 * np.pi)
            dy, dx = yy - cy, xx - cx
            rho = np.hypot(dy, dx) / scale
            theta = np.arctan2(dy, dx) - rot
            canvas |= rho <= _shape_radius(kind, theta, rng)
        frac = canvas.mean()
        if 0.03 <= frac <= 0.75:
            return canvas


def generate(
    n: int,
    height: int = BUILTIN_SIZE,
    width: int = BUILTIN_SIZE,
    sigma: tuple[float, float] = BUILTIN_SIGMA,
    polarity: str = "both",
    seed: int = 0,
    max_objects: int = 2,
    quantize: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """n noisy images (float32, or uint8/uint16 when quantize is 8/16) and bool masks.

    polarity: "bright" objects on dark, "dark" objects on bright, or "both" (half each).
    quantize: 8 or 16 maps each image's range onto the full integer range and rounds.
    """
    if polarity not in ("bright", "dark", "both"):
        raise ValueError(f"polarity must be bright, dark or both, got {polarity!r}")
    rng = np.random.default_rng(seed)
    dtype = {None: np.float32, 8: np.uint8, 16: np.uint16}[quantize]
    images = np.empty((n, height, width), dtype=dtype)
    masks = np.empty((n, height, width), dtype=bool)
    for i in range(n):
        m = draw_shapes(height, width, rng, max_objects)
        dark = polarity == "dark" or (polarity == "both" and rng.random() < 0.5)
        clean = (~m if dark else m).astype(np.float32)
        s = rng.uniform(*sigma)
        img = clean + rng.normal(0.0, s, size=clean.shape).astype(np.float32)
        if quantize:
            lo, hi = img.min(), img.max()
            top = 2**quantize - 1
            img = np.round((img - lo) / max(hi - lo, 1e-6) * top)
        images[i] = img
        masks[i] = m
    return images, masks


def builtin_splits(seed: int = 0) -> dict[str, np.ndarray]:
    """The built-in data set in the notebook's format (train and test from disjoint seeds)."""
    xtr, ytr = generate(BUILTIN_N, seed=seed * 2 + 1)
    xte, yte = generate(BUILTIN_N, seed=seed * 2 + 2)
    return {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte}


def save_npz(path: str | os.PathLike, splits: dict[str, np.ndarray]) -> None:
    with replacing(path) as (fd, _), open(fd, "wb") as f:  # a file object: savez adds no ".npz"
        np.savez_compressed(f, **{k: splits[k] for k in NPZ_KEYS})


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check a notebook-format .npz; raise DataError naming what is wrong."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {', '.join(missing)} (has {', '.join(z.files) or 'none'}); "
                    f"an .npz for --data needs {', '.join(NPZ_KEYS)}"
                )
            out = {k: np.asarray(z[k]) for k in NPZ_KEYS}
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read as .npz ({type(e).__name__}: {e})") from e
    for split in ("train", "test"):
        x, y = out[f"image_{split}"], out[f"mask_{split}"]
        if x.ndim == 4 and x.shape[1] == 1:
            x = out[f"image_{split}"] = x[:, 0]
        if y.ndim == 4 and y.shape[1] == 1:
            y = out[f"mask_{split}"] = y[:, 0]
        if x.ndim != 3 or x.shape != y.shape or len(x) == 0:
            raise DataError(
                f"{path}: image_{split} {x.shape} and mask_{split} {y.shape} must be equal, "
                "non-empty (N, H, W) arrays"
            )
        if x.shape[1] % 8 or x.shape[2] % 8:
            raise DataError(
                f"{path}: images are {x.shape[1]}x{x.shape[2]}; height and width must be multiples of 8"
            )
        if not np.isfinite(x).all():
            raise DataError(f"{path}: image_{split} contains NaN or Inf values")
    return out


def normalize_stack(images: np.ndarray, norm: Normalization) -> np.ndarray:
    """Per-image normalisation of an (N, H, W) stack -> float32."""
    return np.stack([norm(im) for im in images]).astype(np.float32)
