"""Overlap metrics on binary maps.

``iou_any_polarity`` is the seed notebook's accuracy: without labels the model
cannot know which of its two regions is the object, so the IoU of the map and
the IoU of its complement are both computed and the larger one counts.
The ``eps`` convention is the notebook's: two empty maps score 1.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def _as_bool(a: np.ndarray) -> np.ndarray:
    return np.asarray(a) != 0


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two binary maps of one shape."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: prediction {p.shape} vs mask {g.shape}")
    inter = np.count_nonzero(p & g)
    union = np.count_nonzero(p | g)
    return float((inter + EPS) / (union + EPS))


def iou_any_polarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """max(IoU(pred, gt), IoU(not pred, gt)): the notebook's metric."""
    p = _as_bool(pred)
    return max(iou(p, gt), iou(~p, gt))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient 2|P&G| / (|P|+|G|); two empty maps score 1."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: prediction {p.shape} vs mask {g.shape}")
    inter = np.count_nonzero(p & g)
    total = np.count_nonzero(p) + np.count_nonzero(g)
    return float((2 * inter + EPS) / (total + EPS))
