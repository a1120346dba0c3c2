"""Shapes training and inference share: padding to the network's size multiple, and the central
window that bounds what a sample of a folder holds."""

from __future__ import annotations

import numpy as np


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """(..., H, W) -> (..., H', W') with H', W' the next multiples, reflect-padded bottom/right."""
    h, w = image.shape[-2:]
    ph, pw = round_up(h, multiple) - h, round_up(w, multiple) - w
    if ph == 0 and pw == 0:
        return image
    pad = [(0, 0)] * (image.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(image, pad, mode="reflect" if min(h, w) > 1 else "edge")


def central_window(page: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` window of an (H, W) page (the page itself when it fits): what a
    sample of a folder measures and learns from, in bounded memory and time whatever the image
    size, with its objects at their own scale (a downscaled copy would change it)."""
    h, w = page.shape[-2:]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return page[..., y : y + side, x : x + side]
