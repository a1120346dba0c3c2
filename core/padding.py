"""Padding to the network's size multiple: the one definition training and inference share."""

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
