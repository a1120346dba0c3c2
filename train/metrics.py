"""Per-epoch metrics: the polarity-free IoU on torch tensors and the mean/std rows of metrics.csv.

IoU any polarity (the seed notebook's accuracy): threshold u at 0.5, take the IoU of the
binary map and of its complement with the mask, keep the larger; reported in percent.
"""

from __future__ import annotations

import numpy as np
import torch

SERIES = ("loss", "fidelity", "tv", "iou")  # each gets <split>_<series>_mean and _std columns


def batch_iou_any_polarity(u: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image polarity-free IoU (B,) of u >= threshold against a bool mask; the
    torch twin of ``unsupseg.core.metrics.iou_any_polarity`` (same eps convention)."""
    b = u >= threshold
    m = mask.bool()
    dims = (1, 2, 3)
    eps = 1e-8
    i1 = (b & m).sum(dims).double()
    u1 = (b | m).sum(dims).double()
    i2 = (~b & m).sum(dims).double()
    u2 = (~b | m).sum(dims).double()
    return torch.maximum((i1 + eps) / (u1 + eps), (i2 + eps) / (u2 + eps))


def summarise(values: dict[str, list[float]]) -> dict[str, float]:
    """Mean and standard deviation over the mini-batches of an epoch (NaN for an empty series)."""
    out = {}
    for k in SERIES:
        v = values.get(k, [])
        out[f"{k}_mean"] = float(np.mean(v)) if v else float("nan")
        out[f"{k}_std"] = float(np.std(v)) if v else float("nan")
    return out


def epoch_row(epoch: int, train: dict, test: dict, lr: float, seconds: float) -> dict:
    """One metrics.csv row: epoch (from 1), train_*, test_*, learning rate, seconds."""
    row = {"epoch": epoch + 1}
    row.update({f"train_{k}": v for k, v in train.items()})
    row.update({f"test_{k}": v for k, v in test.items()})
    row["lr"] = lr
    row["seconds"] = seconds
    return row


def nan_to_none(d: dict) -> dict:
    """NaN and infinities -> None, for JSON and the model card."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}
