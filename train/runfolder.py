"""The run folder ``segtrain --out`` writes:

    model.pt      final weights + model card + config (what ``segexport`` reads)
    best.pt       weights with the lowest test loss (label-free choice)
    last.pt       full training state for ``--resume`` (weights, optimiser, history, RNG)
    metrics.csv   one row per epoch
    metrics.json  {"final": {"train_iou", "test_iou", ...}, "best": ..., "config": ...}
    plots/*.png   eight learning curves and two result grids
    report.html   the run, final metrics, curves and grids on one self-contained page

Checkpoints are written by ``unsupseg.train.checkpoint``; this module checks the folder
before a run and writes the metrics files, each to a temporary name then renamed.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from unsupseg import __version__
from unsupseg.core.atomic import atomic_text, remove_stale_temps, write_text_atomic
from unsupseg.core.errors import OutputExistsError
from unsupseg.train.config import TrainConfig
from unsupseg.train.prepare import PreparedData

RUN_FILES = ("model.pt", "best.pt", "last.pt", "metrics.csv", "metrics.json", "report.html")  # plus plots/


def check_run_dir(out: Path, overwrite: bool, resume: bool, remove: bool = True) -> None:
    """Refuse to mix runs; with ``overwrite`` (and ``remove``) delete the old run's files.

    Ranks other than 0 of a DDP run check with ``remove=False``: rank 0 deletes. Rank 0
    also removes the temporary files of a killed run (a checkpoint cut short by ``kill -9``),
    those of this machine's processes that no longer exist (``core.atomic.stale_temp``).
    """
    if remove and out.is_dir():
        remove_stale_temps(out)
    if resume:
        if not (out / "last.pt").is_file():
            raise OutputExistsError(
                f"{out / 'last.pt'}: nothing to resume; run without --resume to start afresh"
            )
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out}: run folder exists and is not empty; pass --overwrite to replace it, "
                "--resume to continue it, or choose another --out"
            )
        if remove:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / "plots", ignore_errors=True)


def metrics_summary(
    final: dict,
    *,
    best_loss: float,
    interrupted: bool,
    elapsed: float,
    data: PreparedData,
    cfg: TrainConfig,
    device: torch.device,
    processes: int,
) -> dict:
    """The contents of metrics.json; ``final`` is the last epoch's row (IoU in percent)."""
    return {
        "final": {
            "epoch": final.get("epoch"),
            "train_iou": final.get("train_iou_mean"),
            "train_iou_running": final.get("train_iou_running"),
            "test_iou": final.get("test_iou_mean"),
            "train_loss": final.get("train_loss_mean"),
            "test_loss": final.get("test_loss_mean"),
        },
        "best": {"test_loss": best_loss if np.isfinite(best_loss) else None},
        "interrupted": interrupted,
        "wall_time_s": elapsed,
        "data": data.source,
        "has_masks": data.has_masks,
        "config": cfg.to_dict(),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "device": str(device),
        "processes": processes,
    }


def write_metrics(out: Path, history: list[dict], summary: dict) -> None:
    """metrics.csv (one row per epoch, when there is one) and metrics.json."""
    if history:
        with atomic_text(out / "metrics.csv") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
            w.writeheader()
            w.writerows(history)
    write_text_atomic(
        out / "metrics.json", json.dumps(summary, indent=2, allow_nan=False, default=_json_default)
    )


def _json_default(o):
    raise TypeError(f"not JSON serialisable: {type(o)}")
