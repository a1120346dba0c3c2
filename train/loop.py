"""The training loop: data -> model -> Chan-Vese loss -> checkpoints, metrics, plots.

Per epoch it records the mean and standard deviation over mini-batches of the loss,
its fidelity and regularisation terms and the polarity-free IoU, on the training and
the test split, as the seed notebook does. Files in the run folder:

    model.pt      final weights + model card + config (what ``segexport`` reads)
    best.pt       weights with the lowest test loss (label-free choice)
    last.pt       full training state for ``--resume`` (weights, optimiser, history, RNG)
    metrics.csv   one row per epoch
    metrics.json  {"final": {"train_iou", "test_iou", ...}, "best": ..., "config": ...}
    plots/*.png   eight learning curves and two result grids
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from unsupseg import __version__
from unsupseg.core.errors import OutputExistsError, UnsupsegError
from unsupseg.core.modelcard import ModelCard
from unsupseg.core.normalize import Normalization
from unsupseg.core.padding import pad_to_multiple
from unsupseg.infer.report import MaskIndex
from unsupseg.train import distributed
from unsupseg.train.augment import apply_augment, build_augment
from unsupseg.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_resume_state, save_checkpoint
from unsupseg.train.config import TrainConfig
from unsupseg.train.data import DataError, builtin_splits, load_npz, normalize_stack
from unsupseg.train.folder import (
    EpochSampler,
    FileIndex,
    FolderCropDataset,
    load_eval_images,
    noisier_input,
)
from unsupseg.train.loss import chan_vese_loss
from unsupseg.train.model import SIZE_MULTIPLE, build_model

SERIES = ("loss", "fidelity", "tv", "iou")


# ----------------------------------------------------------------------------- devices
def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit device that cannot run is an error.

    ``local_rank`` (a torchrun process): 'auto' and 'cuda' mean that process's GPU.
    """
    if local_rank is not None and name in ("auto", "cuda") and torch.cuda.is_available():
        name = f"cuda:{local_rank}"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnsupsegError(f"--device {name}: CUDA is not available to torch here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UnsupsegError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UnsupsegError(f"--device {name}: MPS is not available here; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- metrics
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


# ----------------------------------------------------------------------------- datasets
class ArrayDataset(Dataset):
    """Raw images (N, H, W) and masks -> (input, image, mask), each (1, H, W).

    ``image`` is the normalised image the loss is measured on; ``input`` is what the
    network sees: the same image, or a noisier copy of it during training.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        norm: Normalization,
        augment: str = "none",
        input_noise: float = 0.0,
    ):
        self.raw = images
        self.norm = norm
        self.images = torch.from_numpy(normalize_stack(images, norm)).unsqueeze(1)
        self.masks = torch.from_numpy(np.ascontiguousarray(masks).astype(bool)).unsqueeze(1)
        self.transform = build_augment(augment) if augment != "none" else None
        self.input_noise = input_noise

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img, msk = self.images[i], self.masks[i]
        inp = img
        if self.input_noise > 0:
            inp = torch.from_numpy(noisier_input(self.raw[i], self.norm, self.input_noise))[None]
        if self.transform is not None:
            inp, img, msk = apply_augment(self.transform, inp, img, msk)
        return inp, img, msk


@dataclass
class PreparedData:
    train: Dataset
    test: list  # list of (image (1,1,H,W) batches, mask) tensors ready for evaluation
    train_eval: list  # the training images in the same form, for the final train IoU
    has_masks: bool
    source: str
    grid_train: tuple[np.ndarray, np.ndarray] = field(default=None)  # 10 images + masks for the grid
    grid_test: tuple[np.ndarray, np.ndarray] = field(default=None)
    sampler: Sampler | None = None  # the training order (None: shuffle the whole data set each epoch)
    index: FileIndex | None = None  # --data DIR: the file list, removed by close()

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def _batches(images: np.ndarray, masks: np.ndarray, size: int) -> list:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    y = torch.from_numpy(np.ascontiguousarray(masks).astype(bool)).unsqueeze(1)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _grid_pick(images: np.ndarray, masks: np.ndarray, n: int = 10):
    idx = np.linspace(0, len(images) - 1, min(n, len(images))).astype(int)
    return images[idx], masks[idx]


def prepare_data(
    cfg: TrainConfig,
    norm: Normalization,
    log: Callable[[str], None],
    dist_ctx: distributed.DistContext | None = None,
    device: torch.device | None = None,
) -> PreparedData:
    """The training set, the evaluation images and the figure grids for ``cfg.data``.

    ``--data DIR`` streams (see ``unsupseg.train.folder``); the built-in data and .npz
    files are small and held in memory.
    """
    dist_ctx = dist_ctx or distributed.DistContext()
    device = device or torch.device("cpu")
    if cfg.data is None or str(cfg.data).endswith(".npz"):
        if cfg.data is None:
            splits = builtin_splits(cfg.seed)
            source = "built-in generator"
        else:
            splits = load_npz(cfg.data)
            source = str(cfg.data)
        xte = normalize_stack(splits["image_test"], norm)
        ytr, yte = splits["mask_train"].astype(bool), splits["mask_test"].astype(bool)
        train = ArrayDataset(splits["image_train"], ytr, norm, cfg.augment, cfg.input_noise)
        xtr = train.images[:, 0].numpy()
        return PreparedData(
            train=train,
            test=_batches(xte, yte, cfg.batch_size),
            train_eval=_batches(xtr, ytr, cfg.batch_size),
            has_masks=True,
            source=source,
            grid_train=_grid_pick(xtr, ytr),
            grid_test=_grid_pick(xte, yte),
        )

    path = Path(cfg.data)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass an .npz file or a folder of images to --data")
    if not path.is_dir():
        raise DataError(f"{path}: --data takes an .npz file or a folder of images")
    if cfg.masks is not None and not Path(cfg.masks).is_dir():
        raise DataError(f"{cfg.masks}: --masks must be a folder of mask images")
    if cfg.crop % SIZE_MULTIPLE or cfg.crop <= 0:
        raise DataError(f"--crop {cfg.crop}: must be a positive multiple of {SIZE_MULTIPLE}")

    if cfg.eval_images < 1:
        raise DataError(f"--eval-images {cfg.eval_images}: must be at least 1")
    mask_index = None
    if cfg.masks is not None:
        mask_index = MaskIndex(Path(cfg.masks))
        if len(mask_index) == 0:
            log(f"warning: no mask images in {cfg.masks}; IoU will not be reported")
            mask_index = None
    index = FileIndex(path)
    try:
        distributed.check_same(dist_ctx, len(index), f"the number of images in {path}", device)
        evals = load_eval_images(index, norm, mask_index, cfg.eval_images, log)
        length = max(cfg.samples_per_epoch, cfg.batch_size * dist_ctx.world_size)  # over all ranks
        sampler = EpochSampler(len(index), length, cfg.seed, dist_ctx.rank, dist_ctx.world_size)
    except BaseException:
        index.close()
        raise
    has_masks = any(m is not None for _, _, m in evals)
    if mask_index is not None and not has_masks:
        log(
            f"warning: no mask in {cfg.masks} matches the {len(evals)} evaluation image(s) from {path}; "
            "IoU will not be reported"
        )
    # Evaluation ("test") runs on whole images, padded to a multiple of 8; IoU on images
    # that have a mask. Images without a mask get an all-false mask and are excluded from
    # IoU via the flag kept alongside.
    test = []
    for _, image, mask in evals:
        h, w = image.shape
        img = pad_to_multiple(image, SIZE_MULTIPLE)
        m = np.zeros(img.shape, dtype=bool)
        if mask is not None:
            m[:h, :w] = mask
        test.append(
            (
                torch.from_numpy(np.ascontiguousarray(img))[None, None],
                torch.from_numpy(m)[None, None],
                (h, w, mask is not None),
            )
        )
    gi = np.linspace(0, len(evals) - 1, min(10, len(evals))).astype(int)
    side = cfg.crop
    grid_imgs, grid_msks = [], []
    for i in gi:
        _, im, mk = evals[i]
        mk = mk if mk is not None else np.zeros(im.shape, bool)
        im = np.pad(im, ((0, max(0, side - im.shape[0])), (0, max(0, side - im.shape[1]))), mode="edge")
        mk = np.pad(mk, ((0, max(0, side - mk.shape[0])), (0, max(0, side - mk.shape[1]))))
        grid_imgs.append(im[:side, :side])
        grid_msks.append(mk[:side, :side])
    grid = (np.stack(grid_imgs), np.stack(grid_msks))
    log(
        f"{len(index)} image file(s) in {path}, streamed; {len(evals)} evaluated each epoch"
        + (f", masks from {cfg.masks}" if has_masks else "")
    )
    dataset = FolderCropDataset(
        index,
        cfg.crop,
        norm,
        cfg.augment,
        cfg.input_noise,
        masks=mask_index if has_masks else None,
        seed=cfg.seed,
        cache_mb=cfg.cache_mb,
        workers=cfg.workers,
        log=log,
    )
    return PreparedData(
        train=dataset,
        test=test,
        train_eval=test,  # folder: evaluation images are trained on (as crops) and evaluated whole
        has_masks=has_masks,
        source=str(path),
        grid_train=grid,
        grid_test=grid,
        sampler=sampler,
        index=index,
    )


# ----------------------------------------------------------------------------- one epoch
def _summarise(values: dict[str, list[float]]) -> dict[str, float]:
    out = {}
    for k in SERIES:
        v = values.get(k, [])
        out[f"{k}_mean"] = float(np.mean(v)) if v else float("nan")
        out[f"{k}_std"] = float(np.std(v)) if v else float("nan")
    return out


def train_epoch(model, loader, optimizer, scheduler, alpha, device, has_masks) -> dict[str, float]:
    model.train()
    vals: dict[str, list[float]] = {k: [] for k in SERIES}
    for inp, image, mask in loader:
        inp, image = inp.to(device, non_blocking=True), image.to(device, non_blocking=True)
        u = model(inp)
        loss, fid, tv = chan_vese_loss(image, u, alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        vals["loss"].append(loss.item())
        vals["fidelity"].append(fid.item())
        vals["tv"].append(tv.item())
        if has_masks:
            vals["iou"].append(100.0 * batch_iou_any_polarity(u.detach(), mask.to(device)).mean().item())
    return _summarise(vals)


@torch.no_grad()
def evaluate(model, test, alpha, device, has_masks) -> dict[str, float]:
    model.eval()
    vals: dict[str, list[float]] = {k: [] for k in SERIES}
    for entry in test:
        image, mask = entry[0].to(device), entry[1].to(device)
        u = model(image)
        if len(entry) == 3:  # folder image: crop the padding away before scoring
            h, w, with_mask = entry[2]
            image, mask, u = image[..., :h, :w], mask[..., :h, :w], u[..., :h, :w]
        else:
            with_mask = has_masks
        loss, fid, tv = chan_vese_loss(image, u, alpha)
        vals["loss"].append(loss.item())
        vals["fidelity"].append(fid.item())
        vals["tv"].append(tv.item())
        if with_mask:
            vals["iou"].append(100.0 * batch_iou_any_polarity(u, mask).mean().item())
    return _summarise(vals)


# ----------------------------------------------------------------------------- the run
def _check_run_dir(out: Path, overwrite: bool, resume: bool, remove: bool = True) -> None:
    """Refuse to mix runs; with ``overwrite`` (and ``remove``) delete the old run's files.

    Ranks other than 0 of a DDP run check with ``remove=False``: rank 0 deletes.
    """
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
            for name in ("model.pt", "best.pt", "last.pt", "metrics.csv", "metrics.json"):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / "plots", ignore_errors=True)


def _write_metrics(out: Path, history: list[dict], summary: dict) -> None:
    if history:
        tmp = out / ".metrics.csv.part"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
            w.writeheader()
            w.writerows(history)
        os.replace(tmp, out / "metrics.csv")
    tmp = out / ".metrics.json.part"
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=False, default=_json_default))
    os.replace(tmp, out / "metrics.json")


def _json_default(o):
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _nan_to_none(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


@dataclass
class TrainResult:
    out: Path
    final: dict
    interrupted: bool = False
    model: torch.nn.Module | None = None  # the trained network (this process's copy under DDP)


def run_training(
    cfg: TrainConfig,
    overwrite: bool = False,
    resume: bool = False,
    log: Callable[[str], None] = print,
    resume_epochs: int | None = None,
    progress: bool = True,
    plots: bool = True,
) -> TrainResult:
    """Train per ``cfg`` and write the run folder. Raises UnsupsegError on bad input.

    With ``resume`` the configuration saved in ``out/last.pt`` is used (only device,
    threads and, if given, ``resume_epochs`` change).

    Started by ``torchrun`` (WORLD_SIZE > 1), each process trains with DDP on its share
    of the samples; rank 0 alone logs and writes the run folder (``train.distributed``).
    """
    dist_ctx = distributed.from_env()
    if not dist_ctx.is_main:
        log, progress, plots = (lambda m: None), False, False
    try:
        return _run_training(cfg, overwrite, resume, log, resume_epochs, progress, plots, dist_ctx)
    finally:
        distributed.teardown(dist_ctx)


def _run_training(cfg, overwrite, resume, log, resume_epochs, progress, plots, dist_ctx) -> TrainResult:
    out = Path(cfg.out)
    main = dist_ctx.is_main
    _check_run_dir(out, overwrite, resume, remove=main)
    state = None
    if resume:
        state = load_resume_state(out / "last.pt")  # ModelFileError for a damaged file
        saved = TrainConfig.from_dict(state["train_config"])
        if resume_epochs is not None and resume_epochs != saved.epochs:
            if saved.schedule == "onecycle":
                raise UnsupsegError(
                    f"--epochs {resume_epochs}: {out} was planned as a one-cycle schedule of {saved.epochs} "
                    f"epochs, which --resume continues to its end; to train longer, start a new run from "
                    f"its weights: segtrain --init-from {out / 'model.pt'} ..."
                )
            saved.epochs = resume_epochs
        # settings that do not change the result may differ on resume
        saved.device, saved.threads, saved.out = cfg.device, cfg.threads, cfg.out
        saved.workers, saved.cache_mb = cfg.workers, cfg.cache_mb
        cfg = saved

    init_state = None
    if cfg.init_from and state is None:
        # fine-tuning: the network's shape comes from the checkpoint
        init_state = load_checkpoint(cfg.init_from)
        src = init_state["model_config"]
        cfg.arch, cfg.width = src["arch"], src["width"]
        cfg.context, cfg.init = src.get("context", False), src.get("init", "default")
    device = resolve_device(cfg.device, dist_ctx.local_rank if dist_ctx.enabled else None)
    if device.type == "cpu":
        # processes sharing a machine share its cores
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if dist_ctx.enabled else 1
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local_world))
    distributed.setup(dist_ctx, device)
    seed_everything(cfg.seed)
    norm = cfg.normalization()
    data = prepare_data(cfg, norm, log, dist_ctx, device)  # raises DataError before anything is written
    try:
        return _train(cfg, out, state, init_state, norm, data, device, dist_ctx, log, progress, plots)
    finally:
        data.close()


def _train(cfg, out, state, init_state, norm, data, device, dist_ctx, log, progress, plots):
    from tqdm.auto import tqdm

    main = dist_ctx.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)

    mcfg = cfg.model_config()
    model = build_model(mcfg)
    if cfg.init_from and state is None:
        model.load_state_dict(init_state["state_dict"])
        log(f"starting from the weights of {cfg.init_from}")
    model = model.to(device)
    raw_model = model  # what is evaluated, saved and exported
    if dist_ctx.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        # ranks start from rank 0's weights (DDP broadcasts them); their random draws differ
        torch.manual_seed(cfg.seed * 1_000_003 + dist_ctx.rank)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise UnsupsegError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = data.sampler
    if sampler is None and dist_ctx.enabled:
        sampler = DistributedSampler(
            data.train, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
    loader = DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        generator=gen,
        num_workers=cfg.workers if data.sampler is not None else 0,
        persistent_workers=cfg.workers > 0 and data.sampler is not None,
    )
    steps = max(1, len(loader)) * cfg.epochs
    sched = None
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    elif cfg.schedule != "constant":
        raise UnsupsegError(f"unknown schedule {cfg.schedule!r}; choose constant or onecycle")

    history: list[dict] = []
    start_epoch = 0
    best_loss = float("inf")
    elapsed_before = 0.0
    if state is not None:
        raw_model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        best_loss = float(state.get("best_loss", best_loss))
        elapsed_before = float(state.get("elapsed_s", 0.0))
        torch.set_rng_state(state["torch_rng"])
        if dist_ctx.rank > 0:
            torch.manual_seed(cfg.seed * 1_000_003 + dist_ctx.rank + 7919 * start_epoch)
        gen.set_state(state["loader_rng"])
        np.random.seed(cfg.seed + start_epoch)
        log(f"resuming {out} at epoch {start_epoch}/{cfg.epochs}")

    def card(metrics: dict) -> ModelCard:
        return ModelCard(
            arch=mcfg.arch,
            width=mcfg.width,
            package_version=__version__,
            normalization=norm,
            train_iou=metrics.get("train_iou_mean"),
            test_iou=metrics.get("test_iou_mean"),
        )

    def weights_ckpt(metrics: dict, epoch: int) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": mcfg.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in raw_model.state_dict().items()},
            "card": card(metrics).to_dict(),
            "train_config": cfg.to_dict(),
            "epoch": epoch,
        }

    log(
        f"training {mcfg.arch} width {mcfg.width} on {data.source} for {cfg.epochs} epochs "
        f"(preset {cfg.preset}, device {device}"
        + (f", {dist_ctx.world_size} processes" if dist_ctx.enabled else "")
        + ")"
    )
    t_start = time.perf_counter()
    interrupted = False
    bar = tqdm(
        range(start_epoch, cfg.epochs),
        initial=start_epoch,
        total=cfg.epochs,
        desc="epochs",
        disable=not progress,
        unit="ep",
    )
    epoch = start_epoch
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            # noise draws of the in-memory data sets, reproducible on resume and distinct per rank
            np.random.seed(cfg.seed * 100003 + epoch + 1_000_003 * dist_ctx.rank)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            tr = train_epoch(model, loader, opt, sched, cfg.alpha, device, data.has_masks)
            if not main:
                continue  # rank 0 evaluates and writes; the others go on to the next epoch
            te = evaluate(raw_model, data.test, cfg.alpha, device, data.has_masks)
            row = {"epoch": epoch + 1}
            row.update({f"train_{k}": v for k, v in tr.items()})
            row.update({f"test_{k}": v for k, v in te.items()})
            row["lr"] = opt.param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            post = {"loss": f"{tr['loss_mean']:.4f}"}
            if data.has_masks:
                post.update(iou=f"{tr['iou_mean']:.1f}", test_iou=f"{te['iou_mean']:.1f}")
            bar.set_postfix(post)
            if te["loss_mean"] < best_loss:
                best_loss = te["loss_mean"]
                save_checkpoint(weights_ckpt(_nan_to_none(row), epoch + 1), out / "best.pt")
            resume_state = weights_ckpt(_nan_to_none(row), epoch + 1)
            resume_state.update(
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict() if sched is not None else None,
                history=history,
                best_loss=best_loss,
                elapsed_s=elapsed_before + time.perf_counter() - t_start,
                torch_rng=torch.get_rng_state(),
                loader_rng=gen.get_state(),
            )
            save_checkpoint(resume_state, out / "last.pt")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    elapsed = elapsed_before + time.perf_counter() - t_start
    if not interrupted:
        distributed.sync_buffers(raw_model, dist_ctx)  # every rank ends with rank 0's exact state
    if not main:
        return TrainResult(out, {}, interrupted=interrupted, model=raw_model)
    final = _nan_to_none(history[-1]) if history else {}
    # The running train IoU is measured on augmented (noisier) inputs while the weights
    # move; the final train IoU is measured like the test IoU: eval mode, inputs as is.
    train_eval = evaluate(raw_model, data.train_eval, cfg.alpha, device, data.has_masks) if history else {}
    if data.has_masks and history:
        final["train_iou_running"] = final.get("train_iou_mean")
        final["train_iou_mean"] = train_eval["iou_mean"]
    summary = {
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
        "processes": dist_ctx.world_size,
    }
    _write_metrics(out, history, summary)
    if interrupted:
        log(
            f"interrupted after epoch {len(history)}; state saved to {out / 'last.pt'}. "
            f"Continue with: segtrain --out {out} --resume"
        )
        return TrainResult(out, summary["final"], interrupted=True, model=raw_model)

    save_checkpoint(weights_ckpt(final, len(history)), out / "model.pt")
    if plots:
        from unsupseg.train.plots import save_plots

        save_plots(out / "plots", history, raw_model, data, device, has_masks=data.has_masks)
    log(f"wrote {out / 'model.pt'} ({elapsed:.0f} s)")
    return TrainResult(out, summary["final"], model=raw_model)
