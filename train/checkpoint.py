"""The checkpoint format: what ``model.pt``, ``best.pt`` and ``last.pt`` hold, saving and loading.

A checkpoint is a plain dict that ``torch.load(..., weights_only=True)`` reads back:

    format        "unsupseg-checkpoint/1"
    model_config  ModelConfig as a dict (arch, width, init, context)
    state_dict    the network's weights (CPU tensors)
    card          ModelCard as a dict (normalisation, threshold, polarity rule, IoU...)
    train_config  TrainConfig as a dict
    epoch         epochs trained
    (last.pt adds optimizer, scheduler, history, best_loss, elapsed_s, torch_rng, loader_rng)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from unsupseg import __version__
from unsupseg.core.atomic import atomic_path
from unsupseg.core.errors import ModelFileError
from unsupseg.core.modelcard import ModelCard
from unsupseg.train.config import TrainConfig
from unsupseg.train.model import ModelConfig, build_model

CHECKPOINT_FORMAT = "unsupseg-checkpoint/1"
REQUIRED_KEYS = ("model_config", "state_dict", "card")


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary name beside ``path``, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def weights_checkpoint(net: torch.nn.Module, cfg: TrainConfig, metrics: dict, epoch: int) -> dict:
    """What model.pt and best.pt hold: ``net``'s weights after ``epoch`` epochs, with a model
    card whose IoU comes from the metrics row ``metrics`` (NaN already turned into None)."""
    mcfg = cfg.model_config()
    card = ModelCard(
        arch=mcfg.arch,
        width=mcfg.width,
        package_version=__version__,
        normalization=cfg.normalization(),
        train_iou=metrics.get("train_iou_mean"),
        test_iou=metrics.get("test_iou_mean"),
        structure="auto",  # new models: seginfer decides the structure step per folder (core/structure/)
    )
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": mcfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "card": card.to_dict(),
        "train_config": cfg.to_dict(),
        "epoch": epoch,
    }


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (weights_only=True) and check it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first_line = (str(e).splitlines() or [""])[0][:200]
        raise ModelFileError(
            f"{path}: not a readable unsupseg checkpoint ({type(e).__name__}: {first_line}); "
            "pass the model.pt written by segtrain"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not an unsupseg checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    for key in REQUIRED_KEYS:
        if key not in ckpt:
            raise ModelFileError(f"{path}: checkpoint lacks '{key}'; it is truncated or from another tool")
    return ckpt


RESUME_KEYS = ("epoch", "optimizer", "history", "torch_rng", "loader_rng", "train_config")


def load_resume_state(path: str | os.PathLike) -> dict:
    """``last.pt`` for ``segtrain --resume``, checked whole: readable, every key a resume needs,
    and weights that fit the network it describes. Any fault is a ModelFileError naming the
    file and the two ways on (a damaged last.pt cannot be resumed)."""
    path = Path(path)
    way_on = (
        f"start afresh with `segtrain --out {path.parent} --overwrite ...`, or keep the best weights so "
        f"far with `segtrain --init-from {path.parent / 'best.pt'} --out NEW_RUN ...`"
    )
    try:
        ckpt = load_checkpoint(path)
    except ModelFileError as e:
        reason = str(e).removeprefix(f"{path}: ").split("; pass the")[0]
        raise ModelFileError(f"{path}: cannot resume, {reason}; {way_on}") from e
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise ModelFileError(
            f"{path}: cannot resume, the file lacks {missing} (is it a model.pt or best.pt copied over "
            f"last.pt?); {way_on}"
        )
    try:
        build_model(ModelConfig(**ckpt["model_config"])).load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise ModelFileError(
            f"{path}: cannot resume, its weights do not fit its network ({first}); {way_on}"
        ) from e
    return ckpt


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelCard, dict]:
    """(network in eval mode, model card, checkpoint dict) from a model.pt; typed errors for bad files."""
    ckpt = load_checkpoint(path)
    try:
        mcfg = ModelConfig(**ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: unknown model in checkpoint ({e})") from e
    model = build_model(mcfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit a {mcfg.arch} of width {mcfg.width} ({e})") from e
    model.eval()
    return model, ModelCard.from_dict(ckpt["card"]), ckpt


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MB chunks (the exporter records the checkpoint's)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
