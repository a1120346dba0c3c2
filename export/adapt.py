"""Label-free adaptation to a set of images, written as one ONNX file: what ``seginfer --adapt``
does before it segments the folder, and what the napari plugin's "Adapt" does.

    pages (a sample of the inputs) --train/adapt_run.adapt_images--> network + model card
          --written as ADAPTED.onnx (the network exported and checked, or the packaged file with
            the new card when a structure step writes the masks)--> the record of what was done

The record (``Adaptation.record``) says what the adaptation did: the sample (pages used, inputs
skipped and why), the structure step found and its evidence, whether the network was trained,
the criterion of each snapshot, the chosen one, the refusals of the collapse guard, and the time.
``seginfer`` puts it in ``seginfer.json`` and ``report.html``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg.core.modelcard import ModelCard


@dataclass
class Adaptation:
    path: Path  # the adapted model (.onnx)
    card: ModelCard
    record: dict  # what the adaptation did (for seginfer.json and report.html)


# seginfer --adapt's whole adaptation (the structure step's decision and, when no step fits, the
# network's training, the criterion and the collapse guard) ends within a deadline: the caller's
# (seginfer --adapt-seconds, or a share of the run: infer/cli/adapt.py), else this many seconds.
# Training gets what the rest leaves (train/adapt_run.py). segtrain --data, a training command,
# keeps AdaptConfig's own budget.
ADAPT_BUDGET_S = 60.0
# ... and the network is trained and chosen on at most this many of the sample's pages: at 2-core
# CPU pace (about 3 steps of 8 crops a second) a larger sample is not seen, and every page costs
# a pass of the collapse guard per snapshot
NETWORK_PAGES = 16


def adapt_pages(
    pages: Sequence[np.ndarray],
    onnx_path: str | os.PathLike,
    sources: Sequence[str] = (),
    skipped: Sequence[dict] = (),
    device: str = "auto",
    threads: int = 0,
    seed: int = 0,
    structure: str = "auto",
    log: Callable[[str], None] = print,
    should_stop: Callable[[], bool] | None = None,
    deadline_s: float = ADAPT_BUDGET_S,
) -> Adaptation:
    """Adapt the packaged model to ``pages`` (2-D, as read) and write it to ``onnx_path`` atomically.

    ``structure``: "auto" decides the structure step on the pages; a step's name uses it ("none":
    the network writes the masks, and is trained). ``deadline_s``: the adaptation's seconds, all
    told (training gets what the rest leaves, and is left out when that is too little). Raises
    ``DataError`` when no page is usable, ``KeyboardInterrupt`` when ``should_stop`` says so
    (nothing is written then)."""
    from unsupseg.train.adapt import AdaptConfig, FolderImages
    from unsupseg.train.adapt_run import adapt_images

    start = time.perf_counter()
    cfg = AdaptConfig(data="", out="", seed=seed, device=device, threads=threads, structure=structure)
    cfg.time_budget_s = cfg.deadline_s = deadline_s
    cfg.network_pages = NETWORK_PAGES
    images = FolderImages.of(list(pages), cfg.hold_every, list(sources), list(skipped))
    result = adapt_images(images, cfg, log, should_stop=should_stop, started=start)
    if should_stop is not None and should_stop():
        raise KeyboardInterrupt("adaptation cancelled")
    write_adapted(result, Path(onnx_path), log)
    record = _record(result.summary, len(images.raw), images.skipped, time.perf_counter() - start)
    return Adaptation(Path(onnx_path), result.card, record)


def keep_network(
    card: ModelCard,
    structure: dict,
    onnx_path: str | os.PathLike,
    n_pages: int,
    skipped: Sequence[dict],
    why: str,
    seconds: float,
    log: Callable[[str], None] = print,
) -> Adaptation:
    """The packaged network with ``structure`` (kind, context, evidence) in its ``card``, written to
    ``onnx_path`` without torch: what ``seginfer --adapt`` does when a structure step fits the folder
    or when its deadline leaves no time to train (``why``, for the record)."""
    from dataclasses import replace

    card = replace(card, structure=structure["kind"], structure_context=structure["context"])
    _write_packaged(card, onnx_path, log)
    record = {
        "sample": {"pages": n_pages, "skipped": list(skipped)},
        "structure": structure,
        "network": f"kept: {why}",
        "trained": False,
        "steps": 0,
        "time_budget_s": 0.0,
        "snapshots": [],
        "chosen_step": None,
        "refused": [],
        "seconds": round(seconds, 2),
        "device": "none (nothing trained)",
    }
    return Adaptation(Path(onnx_path), card, record)


def write_adapted(result, onnx_path: Path, log: Callable[[str], None] = print) -> None:
    """The adapted network as ONNX: exported and checked against torch when it was trained, else the
    packaged ONNX file with the new model card (the same weights)."""
    from unsupseg.export.export import export_model

    if result.trained:
        export_model(result.model.cpu(), result.card, onnx_path, log=log, source="the adapted model")
    else:
        _write_packaged(result.card, onnx_path, log)


def _write_packaged(card: ModelCard, onnx_path: str | os.PathLike, log: Callable[[str], None]) -> None:
    """The packaged ONNX file with ``card`` (the same weights), written to ``onnx_path``."""
    from unsupseg.export.export import with_card
    from unsupseg.infer.model.segmenter import default_model_path

    with_card(default_model_path(), card, onnx_path)
    log(f"wrote {onnx_path} (the packaged network, structure step {card.structure} in its card)")


def _record(summary: dict, n_pages: int, skipped: list[dict], seconds: float) -> dict:
    """What seginfer.json and report.html say of the adaptation."""
    adaptation = summary["adaptation"]
    rows = adaptation["candidates"]
    ran = len(rows) > 1  # snapshots were trained (the structure step decides first)
    refused = [r["step"] for r in rows if r["step"] and r.get("agreement", 1.0) < adaptation["min_agreement"]]
    if adaptation["trained"]:
        network = "adapted"
    elif adaptation.get("not_trained"):
        network = f"kept: {adaptation['not_trained']}"
    elif ran:
        network = "kept: every snapshot collapsed on some image (the collapse guard refused them)"
    else:
        network = f"kept: the {adaptation['structure']['kind']} step writes the masks from the image"
    return {
        "sample": {"pages": n_pages, "skipped": skipped},
        "structure": adaptation["structure"],
        "network": network,
        "trained": adaptation["trained"],
        "steps": max(r["step"] for r in rows) if ran else 0,  # trained (the time budget may stop early)
        "time_budget_s": summary["config"].get("time_budget_s"),  # training's, within the deadline
        "snapshots": [{k: r[k] for k in ("step", "criterion", "agreement", "chosen") if k in r} for r in rows]
        if ran
        else [],
        "chosen_step": next((r["step"] for r in rows if r["chosen"]), 0) if ran else None,
        "refused": refused,
        "seconds": round(seconds, 2),
        "device": summary["device"],
    }
