"""``segtrain --data DIR`` with no training option: adapt the packaged model and write the run folder.

The run folder has what every segtrain run has (``train/runfolder.py``): ``model.pt`` (the chosen
snapshot, its model card carrying the adapted normalisation and the foreground rule),
``metrics.csv`` (one row per candidate: step, criterion and, with ``--masks``, IoU),
``metrics.json`` (``final.train_iou`` / ``final.test_iou`` when masks exist, the
candidates, the choice, the configuration) and ``plots/`` (criterion by step, results).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unsupseg import __version__
from unsupseg.core.errors import ModelFileError
from unsupseg.core.metrics import iou, iou_any_polarity
from unsupseg.core.modelcard import ModelCard
from unsupseg.core.polarity import apply_polarity
from unsupseg.train.adapt import (
    PACKAGED,
    AdaptConfig,
    Candidate,
    FolderImages,
    adapt,
    criterion,
    padded,
    read_folder,
)
from unsupseg.train.checkpoint import CHECKPOINT_FORMAT, load_model, save_checkpoint
from unsupseg.train.device import resolve_device, seed_everything
from unsupseg.train.orient import Orientation, invert_output, orientation
from unsupseg.train.runfolder import check_run_dir, write_metrics


def start_checkpoint(cfg: AdaptConfig) -> Path:
    path = Path(cfg.start) if cfg.start is not None else PACKAGED
    if not path.is_file():
        raise ModelFileError(
            f"{path}: no start model; build the packaged one with `make model`, or pass --init-from MODEL.pt"
        )
    return path


@dataclass
class Adapted:
    """The outcome of an adaptation: the network to write, its card, and the record of what was done."""

    model: torch.nn.Module  # the adapted network (the start network when the structure step writes)
    card: ModelCard  # normalisation, foreground rule, structure step and its context
    checkpoint: dict  # model.pt's content
    summary: dict  # metrics.json's content: the sample, the structure, the snapshots, the choice, time
    trained: bool  # False: the start network was kept (a structure step writes the masks, or every
    # snapshot collapsed)


def run_adaptation(
    cfg: AdaptConfig, overwrite: bool = False, log: Callable[[str], None] = print, plots: bool = True
) -> dict:
    """``segtrain --data DIR``: adapt to the folder, write the run folder; returns metrics.json's content."""
    out = Path(cfg.out)
    check_run_dir(out, overwrite, resume=False)
    images = read_folder(cfg, log)  # raises before anything is written
    result = adapt_images(images, cfg, log, folder=cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(result.checkpoint, out / "model.pt")
    write_metrics(out, result.summary["adaptation"]["candidates"], result.summary)
    if plots and result.trained:
        device = next(result.model.parameters()).device
        cands = result.summary["adaptation"]["candidates"]
        _plots(out / "plots", cands, result.model, images, cfg, device, result.card.polarity)
    log(f"wrote {out / 'model.pt'}")
    return result.summary


def adapt_images(
    images: FolderImages,
    cfg: AdaptConfig,
    log: Callable[[str], None] = print,
    folder: str = "",
    should_stop: Callable[[], bool] | None = None,
    started: float | None = None,
) -> Adapted:
    """Adapt the start model to ``images`` (pages of one folder) without labels.

    1. The structure step (core/structure/detect.py) is decided on up to ``structure_pages``
       of the images, with the start network's probabilities: when one fits (objects,
       membranes, photo), it writes the masks from the image itself, and the network's output
       only says which region is the object, so the start network is kept (no training: it
       would not change the masks) and the step's folder context goes into the card.
    2. Otherwise the network itself writes the masks: it is fine-tuned (train/adapt.py), the
       snapshot chosen by the label-free criterion and the collapse guard, and its foreground
       orientation inherited (train/orient.py).

    ``should_stop``: polled between steps; when it returns True the adaptation raises
    ``KeyboardInterrupt`` (nothing is written). ``started``: the ``time.perf_counter()`` from
    which ``cfg.deadline_s`` counts (default: now); with a deadline, the network path trains on
    at most ``cfg.network_pages`` of the images and for what time the deadline leaves, and not
    at all when that is under ``MIN_TRAINING_S`` (the record says so: ``not_trained``).
    """
    from unsupseg.core.structure import folder_context
    from unsupseg.core.structure.detect import Detection, detect_structure
    from unsupseg.core.structure.rule import Structure

    started = time.perf_counter() if started is None else started
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    start_path = start_checkpoint(cfg)
    model, card, ckpt = load_model(start_path)
    model = model.to(device)
    t0 = time.perf_counter()
    pick = [images.raw[i] for i in _spread(len(images.raw), cfg.structure_pages)]
    t_probs = time.perf_counter()
    probs = _probs_of(model, pick, card.normalization, card.polarity, device)
    page_s = (time.perf_counter() - t_probs) / max(1, len(pick))  # one page through the network
    if cfg.structure == "auto":
        found = detect_structure(pick, probs)
    else:  # the step asked for, with its context measured on the sample
        context = folder_context(cfg.structure, pick, probs)
        found = Detection(Structure(cfg.structure, context), {"pages": len(pick), "asked": cfg.structure})
    structure = {"kind": found.structure.kind, "context": found.structure.context, "evidence": found.evidence}
    sample = {"images": len(images.raw), "skipped": images.skipped, "structure_pages": len(pick)}

    def start_kept(**record) -> Adapted:
        """The start network, untrained, with the structure step found in its card."""
        card.structure, card.structure_context = found.structure.kind, found.structure.context
        card.package_version = __version__
        start = Candidate(0, float("nan"), {})
        summary = _summary(cfg, start, [], start, time.perf_counter() - t0, start_path, str(device), folder)
        summary["adaptation"].update(trained=False, structure=structure, sample=sample, **record)
        return Adapted(model, card, _checkpoint(model, card, ckpt, cfg, start), summary, trained=False)

    if found.structure.active:
        why = found.evidence.get("votes", "asked for")
        log(
            f"structure: {found.structure.kind} ({why}, {len(pick)} pages): the "
            f"{found.structure.kind} step writes the masks, the start network is kept"
        )
        return start_kept()
    if cfg.network_pages and len(images.raw) > cfg.network_pages:
        images = images.subset(_spread(len(images.raw), cfg.network_pages), cfg.hold_every)
    votes = found.evidence.get("votes", "asked")
    if cfg.deadline_s is not None:  # at the pace of the pages just seen (a criterion: ~2 passes of its pages)
        budget = _training_budget(cfg, started, 2 * page_s * len(images.held), page_s * len(images.raw))
        if budget < MIN_TRAINING_S:
            why = (
                f"the adaptation's deadline ({cfg.deadline_s:.0f} s left when it began here) leaves "
                f"{max(budget, 0):.0f} s for training, under the {MIN_TRAINING_S:.0f} s it needs at least: "
                "the network is not trained"
            )
            log(f"structure: none ({votes} over {len(pick)} pages); {why}")
            return start_kept(not_trained=why)
        cfg = copy.copy(cfg)
        cfg.time_budget_s = budget
    log(
        f"structure: none ({votes} over {len(pick)} pages); adapting "
        f"{start_path.name}: "
        f"{len(images.raw)} image(s), {len(images.train)} trained on, {len(images.held)} held aside"
    )
    start = Candidate(0, criterion(model, images, cfg, device), copy.deepcopy(model.state_dict()))
    start_masks = _masks_of(model, images, cfg, device)
    candidates = adapt(model, images, cfg, device, log, should_stop)
    best = choose(model, start, start_masks, candidates, images, cfg, device, log)
    changed = best is not start  # every snapshot refused: the start model stays as it was
    if changed:  # the start model's masks as seginfer writes them, which the orientation follows
        model.load_state_dict(start.state)
        written = _masks_of(model, images, cfg, device, card.normalization, card.polarity)
    model.load_state_dict(best.state)
    orient = _orient(model, images, cfg, device, written, log) if changed else None  # may invert the output
    seconds = time.perf_counter() - t0
    if changed:
        card.normalization = cfg.input_norm()
        card.polarity = "model" if orient.fixed else "auto"
    card.structure, card.structure_context = "none", {}
    card.package_version = __version__
    card.train_iou, card.test_iou = best.scores.get("train_iou"), best.scores.get("test_iou")
    summary = _summary(cfg, start, candidates, best, seconds, start_path, str(device), folder)
    summary["adaptation"].update(
        trained=changed, structure=structure, sample=sample, orientation=orient.to_dict() if changed else None
    )
    if best.scores:
        final = _masks_of(model, images, cfg, device, rule=card.polarity)  # as seginfer will write
        summary["final"]["iou_as_written"] = _scores(final, images)["iou_as_written"]
    log(f"chose step {best.step} (criterion {best.criterion:.5f}) in {seconds:.0f} s")
    return Adapted(model, card, _checkpoint(model, card, ckpt, cfg, best), summary, trained=changed)


def _training_budget(cfg: AdaptConfig, started: float, criterion_s: float, pass_s: float) -> float:
    """Training's seconds within ``cfg.deadline_s`` counted from ``started``: what is left once the
    work around training is set aside, at a measured pace (``criterion_s``: a criterion of the
    held-aside images; ``pass_s``: a pass of masks over all of them): three criteria (the start's
    and two snapshots'), five passes (the start's masks, two snapshots' for the collapse guard,
    the start's written masks and the orientation's) and 3 s to export and check the ONNX file.
    At most ``cfg.time_budget_s``; may be under ``MIN_TRAINING_S`` (or negative), when the
    caller does not train."""
    after = 3 * criterion_s + 5 * pass_s + 3.0
    left = cfg.deadline_s - (time.perf_counter() - started) - after
    return float(min(cfg.time_budget_s, left))


# the least training worth its overhead: the network is not trained when the deadline leaves less
# (a few steps at 2-core CPU speed; the overhead around them, criteria and guard, costs more)
MIN_TRAINING_S = 5.0


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``n`` (all when there are fewer)."""
    return list(range(n)) if n <= k else sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


@torch.no_grad()
def _probs_of(model, pages: list[np.ndarray], norm, rule: str, device) -> list[np.ndarray]:
    """The network's foreground probability of each page (its card's normalisation and rule), as the
    start model gives it to seginfer."""
    model.eval()
    out = []
    for raw in pages:
        x = norm(raw)
        h, w = x.shape
        prob = model(torch.from_numpy(padded(x))[None, None].to(device))[0, 0, :h, :w].cpu().numpy()
        out.append(apply_polarity(x, prob, 0.5, rule)[1])
    return out


def _orient(model, images: FolderImages, cfg: AdaptConfig, device, written, log) -> Orientation:
    """Fix the folder's foreground orientation from the start model's written masks when the
    images agree (train/orient.py); inverts the model's output when region 0 is the object."""
    regions = _masks_of(model, images, cfg, device, rule="model")
    orient = orientation(regions, written, cfg.orientation_consistency)
    if orient.inverted:
        invert_output(model)
    how = "region 0, output inverted" if orient.inverted else "region 1"
    log(
        f"foreground: {how}, fixed for the folder ({100 * orient.consistency:.0f}% of the images agree)"
        if orient.fixed
        else f"foreground: the per-image rule auto (only {100 * orient.consistency:.0f}% of the images agree)"
    )
    return orient


def choose(model, start: Candidate, start_masks, candidates, images: FolderImages, cfg, device, log):
    """The trained snapshot with the lowest criterion among those the collapse guard keeps
    (train/adapt.py, step 4), else the start model; scores every candidate when masks exist."""
    has_masks = any(m is not None for m in images.masks)
    if has_masks:
        start.scores = _scores(start_masks, images)
    for cand in candidates:
        model.load_state_dict(cand.state)
        masks = _masks_of(model, images, cfg, device)
        cand.agreement = min(iou_any_polarity(m, s) for m, s in zip(masks, start_masks, strict=True))
        if has_masks:
            cand.scores = _scores(masks, images)
    kept = [c for c in candidates if c.agreement >= cfg.min_agreement]
    for c in candidates:
        if c not in kept:
            log(f"step {c.step} refused: a mask agrees with the start model's at IoU {c.agreement:.2f} only")
    if not kept:
        log("every snapshot collapsed on some image: keeping the start model as it was")
        return start
    return min(kept, key=lambda c: c.criterion)


def _checkpoint(model, card, start_ckpt: dict, cfg: AdaptConfig, best: Candidate) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": start_ckpt["model_config"],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "card": card.to_dict(),
        "train_config": {"preset": "adapt", **_config(cfg)},
        "epoch": best.step,
    }


def _config(cfg: AdaptConfig) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def _row(c: Candidate, chosen: bool) -> dict:
    return {
        "step": c.step,
        "criterion": c.criterion,
        "agreement": c.agreement,
        "chosen": int(chosen),
        **c.scores,
    }


def _summary(cfg, start: Candidate, candidates, best: Candidate, seconds, start_path, device, folder) -> dict:
    return {
        "final": {
            "epoch": best.step,
            "train_iou": best.scores.get("train_iou"),
            "test_iou": best.scores.get("test_iou"),
            "criterion": best.criterion,
        },
        "adaptation": {
            "start": str(start_path),
            "chosen_step": best.step,
            "candidates": [_row(c, c is best) for c in [start, *candidates]],
            "start_is_candidate": False,  # ... except as the fall-back when every snapshot is refused
            "min_agreement": cfg.min_agreement,
        },
        "interrupted": False,
        "wall_time_s": seconds,
        "data": folder or cfg.data,
        "has_masks": bool(best.scores),
        "config": {"preset": "adapt", **_config(cfg)},
        "package_version": __version__,
        "torch_version": torch.__version__,
        "device": device,
        "processes": 1,
    }


@torch.no_grad()
def _masks_of(
    model, images: FolderImages, cfg: AdaptConfig, device, norm=None, rule: str = "auto"
) -> list[np.ndarray]:
    """The model's masks (threshold 0.5, the foreground ``rule``) of every image, in ``norm``
    (default: the adaptation's input normalisation)."""
    model.eval()
    norm, out = norm or cfg.input_norm(), []
    for raw in images.raw:
        x = norm(raw)
        h, w = x.shape
        prob = model(torch.from_numpy(padded(x))[None, None].to(device))
        prob = prob[0, 0, :h, :w].cpu().numpy()
        out.append(apply_polarity(x, prob, 0.5, rule)[0])
    return out


def _scores(masks: list[np.ndarray], images: FolderImages) -> dict:
    """IoU % (polarity-free as the model card records it, and as written) on the images with masks."""
    scored = [(i, m, images.masks[i]) for i, m in enumerate(masks) if images.masks[i] is not None]
    held = set(images.held)

    def mean(values):
        return float(np.mean(values)) * 100 if values else None

    return {
        "train_iou": mean([iou_any_polarity(m, g) for i, m, g in scored if i not in held]),
        "test_iou": mean([iou_any_polarity(m, g) for i, m, g in scored if i in held]),
        "iou_as_written": mean([iou(m, g) for _, m, g in scored]),
    }


def _plots(folder: Path, rows: list[dict], model, images: FolderImages, cfg, device, rule: str) -> None:
    """criterion.png (the criterion of each snapshot, the chosen one marked) and results.png."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 6))
    best = next(r for r in rows if r["chosen"])
    ax.plot([r["step"] for r in rows], [r["criterion"] for r in rows], "o-", color="red")
    ax.plot([best["step"]], [best["criterion"]], "o", color="blue", markersize=12, label="chosen")
    ax.set(title="held-aside energy (label-free criterion)", xlabel="step", ylabel="energy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "criterion.png", dpi=80)
    plt.close(fig)
    picks = images.held[:5] + images.train[: 5 - len(images.held[:5])]
    masks = _masks_of(model, images, cfg, device, rule=rule)
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3 * len(picks)), squeeze=False)
    for r, i in enumerate(picks):
        truth = images.masks[i]
        for c, (im, title) in enumerate(
            [(cfg.input_norm()(images.raw[i]), "image"), (masks[i], "mask"), (truth, "ground truth")]
        ):
            axes[r, c].imshow(im if im is not None else np.zeros_like(masks[i]), cmap="gray")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            axes[r, c].set_title(
                f"{title}{' (held aside)' if i in images.held else ''}" if r == 0 or c == 0 else ""
            )
    fig.tight_layout()
    fig.savefig(folder / "results.png", dpi=60)
    plt.close(fig)
