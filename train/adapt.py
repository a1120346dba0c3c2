"""Label-free adaptation to a user's folder: what ``segtrain --data DIR`` does with no other option.

1. Up to ``max_images`` images (pages) spread over the folder are read; every
   ``hold_every``-th one is held aside (never trained on; at least one).
2. The start model (the packaged one) is fine-tuned on random crops of the others,
   normalised with percentiles (1, 99.8) and the curve log(1 + 10 x) / log(11) that
   lifts dim objects, by minimising the local-fit energy (train/local_loss.py, window
   ``sigma``, TV weight ``alpha``): AdamW, 10 % linear warm-up then cosine decay.
3. Every ``snapshot_every`` steps the weights are a candidate. Its criterion, needing no
   masks, is the mean energy on the held-aside images, measured on the image in the
   reference normalisation (linear, percentiles 1 and 99) with the candidate's output.
   The trained snapshot with the lowest criterion is kept (the start model itself is not
   a candidate: including it lost on the folders these settings were chosen on).
4. A guard against collapse: adaptation is meant to refine the start model's segmentation,
   not to replace it. A snapshot whose mask of some image agrees with the start model's
   (same normalisation, either polarity) at IoU below ``min_agreement`` has stopped
   segmenting that image's objects (on dim images the log curve lifts background noise
   and the local fit can prefer splitting the background) and is not chosen. When every
   snapshot is refused, the start model under the new normalisation is kept.
5. The chosen model's foreground orientation is inherited from the start model's written
   masks when at least ``orientation_consistency`` of the images agree (train/orient.py);
   otherwise the card keeps the per-image rule ``auto``.

Every setting was chosen on part of the real sets and reported on the rest
(docs/model-selection.md). ``--masks`` only scores the candidates (their IoU beside the
criterion, in metrics.json); it never chooses.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from unsupseg.core.errors import DataError, ImageReadError
from unsupseg.core.files import MaskIndex
from unsupseg.core.imageio import read_image, read_mask
from unsupseg.core.normalize import Normalization
from unsupseg.core.padding import central_window
from unsupseg.train.local_loss import energy

PACKAGED = Path(__file__).with_name("models") / "default.pt"  # the start model (make model writes it)


@dataclass
class AdaptConfig:
    data: str  # folder of unlabeled images
    out: str = "runs/adapted"  # run folder
    masks: str | None = None  # ground truth, only to score the candidates
    start: str | None = None  # checkpoint to start from; None = the packaged model
    norm_low: float = 1.0  # network input: this percentile maps to 0
    norm_high: float = 99.8  # ... and this one to 1
    norm_log: float = 10.0  # then log(1 + k x) / log(1 + k) (core/normalize.py)
    ref_low: float = 1.0  # criterion: the image measured in this linear normalisation
    ref_high: float = 99.0
    sigma: float = 8.0  # local-fit window, pixels
    alpha: float = 0.05  # weight of total variation
    steps: int = 160  # optimiser steps
    snapshot_every: int = 40  # a candidate every this many steps
    batch: int = 8  # crops per step
    crop: int = 96  # crop side (cut to the smallest image, multiple of 8)
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 1e-4
    hold_every: int = 5  # every this-many-th image is held aside for the criterion
    max_images: int = 64  # images (pages) read, spread over the folder
    criterion_max_side: int = 512  # held-aside images are cut to this side for the criterion
    max_side: int = 1024  # larger pages are cut to their central window of this side
    structure_pages: int = 16  # pages the structure step is decided on (core/structure/detect.py)
    structure: str = "auto"  # or a step to use ("none": the network writes the masks: always trained)
    time_budget_s: float = 540.0  # training stops here; the snapshots so far remain candidates
    deadline_s: float | None = None  # the whole adaptation's seconds (None: none); training ends in time
    network_pages: int = 0  # the network is trained and chosen on at most this many pages (0: all)
    min_agreement: float = 0.3  # collapse guard: least IoU of a snapshot's mask with the start's
    orientation_consistency: float = 0.75  # fix the foreground orientation when this share agrees
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = all cores

    def input_norm(self) -> Normalization:
        return Normalization(low=self.norm_low, high=self.norm_high, log_k=self.norm_log)

    def reference_norm(self) -> Normalization:
        return Normalization(low=self.ref_low, high=self.ref_high)


@dataclass
class Candidate:
    step: int  # optimiser steps trained
    criterion: float  # mean held-aside energy (lower is better)
    state: dict = field(repr=False)  # the weights
    scores: dict = field(default_factory=dict)  # with --masks: IoU figures (reported, never used)
    agreement: float = 1.0  # least IoU (either polarity) of its masks with the start model's


@dataclass
class FolderImages:
    """The images of an adaptation run as read (pages as separate 2-D images), with masks if any."""

    raw: list[np.ndarray]  # float32 (H, W) each
    masks: list[np.ndarray | None]
    train: list[int]  # indices trained on
    held: list[int]  # indices held aside for the criterion
    sources: list[str] = field(default_factory=list)  # the file of each image
    skipped: list[dict] = field(default_factory=list)  # {"input", "why"}: files and pages not used

    @classmethod
    def of(
        cls, pages: list[np.ndarray], hold_every: int, sources: list[str] | None = None, skipped=()
    ) -> FolderImages:
        """From pages already read (seginfer --adapt's sample, the napari plugin's layers)."""
        if not pages:
            raise DataError("no usable image to adapt to (every one was unreadable or constant)")
        train, held = split_images(len(pages), hold_every)
        raw = [np.asarray(p, dtype=np.float32) for p in pages]
        return cls(raw, [None] * len(raw), train, held, list(sources or []), list(skipped))

    def subset(self, keep: list[int], hold_every: int) -> FolderImages:
        """These images' ``keep``-th ones (split again into trained on and held aside)."""
        train, held = split_images(len(keep), hold_every)
        sources = [self.sources[i] for i in keep] if self.sources else []
        return FolderImages(
            [self.raw[i] for i in keep], [self.masks[i] for i in keep], train, held, sources, self.skipped
        )


def read_folder(cfg: AdaptConfig, log: Callable[[str], None]) -> FolderImages:
    """Up to ``max_images`` pages spread over the folder's files, and which are held aside.

    Unreadable files and constant pages (an empty field of view: nothing to learn) are named
    in the log and in ``skipped``; the rest goes on. Pages larger than ``max_side`` on a side
    give their central window (``core.padding.central_window``)."""
    from unsupseg.train.folder import FileIndex

    index = FileIndex(cfg.data)
    try:
        picks = np.unique(np.linspace(0, len(index) - 1, min(len(index), cfg.max_images)).round().astype(int))
        paths = [index.path(int(i)) for i in picks]
        rels = [index.rel(int(i)) for i in picks]
    finally:
        index.close()
    truth = MaskIndex(cfg.masks) if cfg.masks is not None else None
    raw, masks, sources, skipped = [], [], [], []
    for path, rel in zip(paths, rels, strict=True):
        try:
            pages = read_image(path)
        except ImageReadError as e:  # named, and the rest goes on, as seginfer does
            log(f"skipped {e}")
            skipped.append({"input": str(path), "why": str(e)})
            continue
        found = truth.find(rel) if truth is not None else None
        gt = read_mask(found) if found is not None else None
        for k, page in enumerate(pages[: cfg.max_images - len(raw)]):
            if float(page.max()) == float(page.min()):
                why = f"page {k + 1} is constant: nothing to learn from it"
                log(f"skipped {path}: {why}")
                skipped.append({"input": str(path), "why": why})
                continue
            raw.append(central_window(page, cfg.max_side))
            fits = gt is not None and gt.shape == pages.shape
            masks.append(central_window(gt[k], cfg.max_side) if fits else None)
            sources.append(str(path))
    if not raw:
        raise DataError(
            f"{cfg.data}: none of the {len(paths)} image files gave a usable image "
            "(unreadable or constant); nothing to adapt to"
        )
    train, held = split_images(len(raw), cfg.hold_every)
    return FolderImages(raw, masks, train, held, sources, skipped)


def split_images(n: int, hold_every: int) -> tuple[list[int], list[int]]:
    """(trained on, held aside): every ``hold_every``-th image, at least one, is held aside;
    a single image is both."""
    held = list(range(hold_every - 1, n, hold_every)) or [n - 1]
    if len(held) == n:
        return list(range(n)), held
    return [i for i in range(n) if i not in held], held


def padded(x: np.ndarray) -> np.ndarray:
    """(H, W) reflect-padded to multiples of 8 (the network's size multiple)."""
    h, w = x.shape
    return np.pad(x, ((0, -h % 8), (0, -w % 8)), mode="reflect")


@torch.no_grad()
def criterion(model, images: FolderImages, cfg: AdaptConfig, device) -> float:
    """Mean energy over the held-aside images: the network sees the input normalisation,
    the energy measures the image in the reference one (so all candidates share a scale)."""
    model.eval()
    values = []
    norm_in, norm_ref = cfg.input_norm(), cfg.reference_norm()
    for i in images.held:
        raw = images.raw[i][: cfg.criterion_max_side, : cfg.criterion_max_side]
        h, w = raw.shape
        x = torch.from_numpy(padded(norm_in(raw)))[None, None].to(device)
        ref = torch.from_numpy(norm_ref(raw))[None, None].to(device)
        u = model(x)[..., :h, :w]
        values.append(float(energy(ref, u, cfg.alpha, cfg.sigma)[0]))
    return float(np.mean(values))


def _crop_side(images: list[np.ndarray], want: int) -> int:
    side = min(min(im.shape) for im in images)
    return max(8, min(want, side // 8 * 8))


def _batch(images: list[np.ndarray], n: int, side: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random crops (B, 1, side, side), each under one of the 8 symmetries of the square."""
    out = np.empty((n, 1, side, side), np.float32)
    for i in range(n):
        im = images[int(rng.integers(len(images)))]
        h, w = im.shape
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = im[y : y + side, x : x + side]
        k = int(rng.integers(8))
        crop = crop[::-1] if k & 1 else crop
        crop = crop[:, ::-1] if k & 2 else crop
        out[i, 0] = crop.T if k & 4 else crop
    return torch.from_numpy(out)


def _lr(cfg: AdaptConfig, step: int, steps: int | None = None) -> float:
    """10 % linear warm-up, then cosine decay to 0 at ``steps`` (default ``cfg.steps``)."""
    steps = steps or cfg.steps
    warm = max(1, steps // 10)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


# steps timed before the schedule is fitted to the time budget: the first one also pays for
# torch's first-use set-up, so the estimate is on the high side and the fitted run ends in time
FIT_AFTER_STEPS = 2


def adapt(
    model: torch.nn.Module,
    images: FolderImages,
    cfg: AdaptConfig,
    device,
    log: Callable[[str], None],
    should_stop: Callable[[], bool] | None = None,
) -> list[Candidate]:
    """Fine-tune ``model`` in place on the training images; returns the trained snapshots.
    ``should_stop`` is polled every step: True raises KeyboardInterrupt (the caller keeps nothing).

    When ``cfg.steps`` would not fit ``cfg.time_budget_s`` at the pace of the first
    ``FIT_AFTER_STEPS`` steps, the schedule is fitted to the budget: as many steps as fit, the
    learning rate warmed up and decayed to 0 over them, a snapshot at half and at the end (cut
    short by the budget instead, the last snapshot would be taken at a high learning rate). The
    budget counts training alone: the snapshots' criteria are the caller's to allow for."""
    t0 = time.perf_counter()
    norm = cfg.input_norm()
    train = [norm(images.raw[i]) for i in images.train]
    rng = np.random.default_rng([cfg.seed, 0])
    torch.manual_seed(cfg.seed * 1000)
    side = _crop_side(train, cfg.crop)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    candidates: list[Candidate] = []
    steps = cfg.steps
    snapshots = {*range(cfg.snapshot_every, steps + 1, cfg.snapshot_every), steps}
    model.train()
    step, judging = 0, 0.0
    while step < steps:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt("adaptation cancelled")
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step, steps)
        x = _batch(train, cfg.batch, side, rng).to(device)
        loss = energy(x, model(x), cfg.alpha, cfg.sigma).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = time.perf_counter() - t0 - judging  # the budget is training's: snapshots' criteria aside
        if step == FIT_AFTER_STEPS and steps > step:
            fit = int(cfg.time_budget_s / (elapsed / step))
            if fit < steps:
                steps = max(step + 1, fit)
                snapshots = {max(step, steps // 2), steps}
                log(f"{steps} steps fit the time budget of {cfg.time_budget_s:.0f} s: the schedule is fitted")
        over = elapsed > cfg.time_budget_s
        if step in snapshots or over:
            t_judge = time.perf_counter()
            c = criterion(model, images, cfg, device)
            judging += time.perf_counter() - t_judge
            candidates.append(Candidate(step, c, copy.deepcopy(model.state_dict())))
            log(f"step {step}/{steps}: criterion {c:.5f} ({time.perf_counter() - t0:.0f} s)")
            model.train()
        if over and step < steps:
            log(f"time budget of {cfg.time_budget_s:.0f} s reached at step {step}")
            break
    return candidates
