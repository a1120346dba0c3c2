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
import hashlib
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
from torch.utils.data import DataLoader, Dataset

from unsupseg import __version__
from unsupseg.core.errors import ModelFileError, OutputExistsError, UnsupsegError
from unsupseg.core.modelcard import ModelCard
from unsupseg.core.normalize import Normalization
from unsupseg.core.padding import pad_to_multiple
from unsupseg.train.augment import apply_augment, build_augment
from unsupseg.train.config import TrainConfig
from unsupseg.train.data import DataError, builtin_splits, load_folder, load_npz, normalize_stack
from unsupseg.train.loss import chan_vese_loss
from unsupseg.train.model import SIZE_MULTIPLE, build_model

CHECKPOINT_FORMAT = "unsupseg-checkpoint/1"
SERIES = ("loss", "fidelity", "tv", "iou")


# ----------------------------------------------------------------------------- devices
def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit device that cannot run is an error."""
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
def noisier_input(image: np.ndarray, norm: Normalization, strength: float) -> np.ndarray:
    """The network's training input: ``image`` plus Gaussian noise, normalised.

    The noise std is drawn per image from U(0, strength) times the image's normalisation
    range (p_high - p_low), so it is relative to the image's own contrast. The loss still
    measures the image as observed: the network learns to recover, from a noisier view,
    the partition that fits the real image, i.e. it learns to denoise (the Noisier2Noise
    idea, Moran et al. 2020). No labels are involved.
    """
    if strength <= 0:
        return norm(image)
    lo, hi = norm.bounds(image)
    std = np.random.uniform(0.0, strength) * (hi - lo)
    noisy = image.astype(np.float32) + np.random.normal(0.0, std, size=image.shape).astype(np.float32)
    return norm(noisy)


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


class CropDataset(Dataset):
    """Random square crops (input, image, mask) from normalised images of any size."""

    def __init__(
        self, items, crop: int, length: int, augment: str, norm: Normalization, input_noise: float = 0.0
    ):
        self.items = items
        self.crop = crop
        self.length = length
        self.transform = build_augment(augment) if augment != "none" else None
        self.norm = norm
        self.input_noise = input_noise

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        item = self.items[i % len(self.items)]
        img = item.image
        msk = item.mask if item.mask is not None else np.zeros(img.shape, dtype=bool)
        h, w = img.shape
        c = self.crop
        if h < c or w < c:  # small images are reflected up to the crop size
            ph, pw = max(0, c - h), max(0, c - w)
            img = np.pad(img, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "symmetric")
            msk = np.pad(msk, ((0, ph), (0, pw)), mode="constant")
            h, w = img.shape
        y = np.random.randint(0, h - c + 1)
        x = np.random.randint(0, w - c + 1)
        crop = np.ascontiguousarray(img[y : y + c, x : x + c])
        t_img = torch.from_numpy(crop)[None]
        t_msk = torch.from_numpy(np.ascontiguousarray(msk[y : y + c, x : x + c]))[None]
        t_inp = t_img
        if self.input_noise > 0:
            # the image is already normalised (range ~[0, 1]); noise is relative to that range
            t_inp = torch.from_numpy(noisier_input(crop, Normalization(clip=False), self.input_noise))[None]
            t_inp = t_inp.clamp(0, 1)
        if self.transform is not None:
            t_inp, t_img, t_msk = apply_augment(self.transform, t_inp, t_img, t_msk)
        return t_inp, t_img, t_msk


@dataclass
class PreparedData:
    train: Dataset
    test: list  # list of (image (1,1,H,W) batches, mask) tensors ready for evaluation
    train_eval: list  # the training images in the same form, for the final train IoU
    has_masks: bool
    source: str
    grid_train: tuple[np.ndarray, np.ndarray] = field(default=None)  # 10 images + masks for the grid
    grid_test: tuple[np.ndarray, np.ndarray] = field(default=None)


def _batches(images: np.ndarray, masks: np.ndarray, size: int) -> list:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    y = torch.from_numpy(np.ascontiguousarray(masks).astype(bool)).unsqueeze(1)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _grid_pick(images: np.ndarray, masks: np.ndarray, n: int = 10):
    idx = np.linspace(0, len(images) - 1, min(n, len(images))).astype(int)
    return images[idx], masks[idx]


def prepare_data(cfg: TrainConfig, norm: Normalization, log: Callable[[str], None]) -> PreparedData:
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

    def warn(p, msg):
        log(f"skipped {msg}")

    items = load_folder(path, norm, cfg.masks, on_error=warn)
    has_masks = cfg.masks is not None and any(it.mask is not None for it in items)
    if cfg.masks is not None and not has_masks:
        log(f"warning: no mask in {cfg.masks} matches an image in {path}; IoU will not be reported")
    # Evaluation ("test") runs on every full image, padded to a multiple of 8; IoU on
    # images that have a mask. Images without a mask get an all-false mask and are
    # excluded from IoU via the has_mask flag kept alongside.
    test = []
    for it in items:
        h, w = it.image.shape
        img = pad_to_multiple(it.image, SIZE_MULTIPLE)
        m = np.zeros(img.shape, dtype=bool)
        if it.mask is not None:
            m[:h, :w] = it.mask
        test.append(
            (
                torch.from_numpy(np.ascontiguousarray(img))[None, None],
                torch.from_numpy(m)[None, None],
                (h, w, it.mask is not None),
            )
        )
    gi = np.linspace(0, len(items) - 1, min(10, len(items))).astype(int)
    side = cfg.crop
    grid_imgs, grid_msks = [], []
    for i in gi:
        im = items[i].image
        mk = items[i].mask if items[i].mask is not None else np.zeros(im.shape, bool)
        im = np.pad(im, ((0, max(0, side - im.shape[0])), (0, max(0, side - im.shape[1]))), mode="edge")
        mk = np.pad(mk, ((0, max(0, side - mk.shape[0])), (0, max(0, side - mk.shape[1]))))
        grid_imgs.append(im[:side, :side])
        grid_msks.append(mk[:side, :side])
    grid = (np.stack(grid_imgs), np.stack(grid_msks))
    log(f"{len(items)} image(s) from {path}" + (f", masks from {cfg.masks}" if has_masks else ""))
    return PreparedData(
        train=CropDataset(
            items, cfg.crop, max(cfg.samples_per_epoch, cfg.batch_size), cfg.augment, norm, cfg.input_noise
        ),
        test=test,
        train_eval=test,  # folder: every image is both trained on (as crops) and evaluated whole
        has_masks=has_masks,
        source=str(path),
        grid_train=grid,
        grid_test=grid,
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


# ----------------------------------------------------------------------------- checkpoints
def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    for key in ("model_config", "state_dict", "card"):
        if key not in ckpt:
            raise ModelFileError(f"{path}: checkpoint lacks '{key}'; it is truncated or from another tool")
    return ckpt


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- the run
def _check_run_dir(out: Path, overwrite: bool, resume: bool) -> None:
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
    """
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    _check_run_dir(out, overwrite, resume)
    state = None
    if resume:
        state = load_checkpoint(out / "last.pt")
        saved = TrainConfig.from_dict(state["train_config"])
        if resume_epochs is not None:
            saved.epochs = resume_epochs
        saved.device, saved.threads, saved.out = cfg.device, cfg.threads, cfg.out
        cfg = saved

    init_state = None
    if cfg.init_from and state is None:
        # fine-tuning: the network's shape comes from the checkpoint
        init_state = load_checkpoint(cfg.init_from)
        src = init_state["model_config"]
        cfg.arch, cfg.width = src["arch"], src["width"]
        cfg.context, cfg.init = src.get("context", False), src.get("init", "default")
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    seed_everything(cfg.seed)
    norm = cfg.normalization()
    data = prepare_data(cfg, norm, log)  # raises DataError before anything is written
    out.mkdir(parents=True, exist_ok=True)

    mcfg = cfg.model_config()
    model = build_model(mcfg)
    if cfg.init_from and state is None:
        model.load_state_dict(init_state["state_dict"])
        log(f"starting from the weights of {cfg.init_from}")
    model = model.to(device)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise UnsupsegError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=gen)
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
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        best_loss = float(state.get("best_loss", best_loss))
        elapsed_before = float(state.get("elapsed_s", 0.0))
        torch.set_rng_state(state["torch_rng"])
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
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "card": card(metrics).to_dict(),
            "train_config": cfg.to_dict(),
            "epoch": epoch,
        }

    log(
        f"training {mcfg.arch} width {mcfg.width} on {data.source} for {cfg.epochs} epochs "
        f"(preset {cfg.preset}, device {device})"
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
            np.random.seed(cfg.seed * 100003 + epoch)  # crop positions, reproducible on resume
            tr = train_epoch(model, loader, opt, sched, cfg.alpha, device, data.has_masks)
            te = evaluate(model, data.test, cfg.alpha, device, data.has_masks)
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
                _atomic_torch_save(weights_ckpt(_nan_to_none(row), epoch + 1), out / "best.pt")
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
            _atomic_torch_save(resume_state, out / "last.pt")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    elapsed = elapsed_before + time.perf_counter() - t_start
    final = _nan_to_none(history[-1]) if history else {}
    # The running train IoU is measured on augmented (noisier) inputs while the weights
    # move; the final train IoU is measured like the test IoU: eval mode, inputs as is.
    train_eval = evaluate(model, data.train_eval, cfg.alpha, device, data.has_masks) if history else {}
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
    }
    _write_metrics(out, history, summary)
    if interrupted:
        log(
            f"interrupted after epoch {len(history)}; state saved to {out / 'last.pt'}. "
            f"Continue with: segtrain --out {out} --resume"
        )
        return TrainResult(out, summary["final"], interrupted=True)

    _atomic_torch_save(weights_ckpt(final, len(history)), out / "model.pt")
    if plots:
        from unsupseg.train.plots import save_plots

        save_plots(out / "plots", history, model, data, device, has_masks=data.has_masks)
    log(f"wrote {out / 'model.pt'} ({elapsed:.0f} s)")
    return TrainResult(out, summary["final"])
