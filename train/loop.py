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

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from unsupseg import __version__
from unsupseg.core.errors import UnsupsegError
from unsupseg.core.modelcard import ModelCard
from unsupseg.train import distributed
from unsupseg.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from unsupseg.train.config import TrainConfig
from unsupseg.train.device import (
    epoch_noise_seed,
    rank_seed,
    resolve_device,
    seed_everything,
    set_cpu_threads,
)
from unsupseg.train.loss import chan_vese_loss
from unsupseg.train.metrics import SERIES, batch_iou_any_polarity, epoch_row, nan_to_none, summarise
from unsupseg.train.model import build_model
from unsupseg.train.prepare import prepare_data
from unsupseg.train.runfolder import check_run_dir, metrics_summary, write_metrics


# ----------------------------------------------------------------------------- one epoch
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
    return summarise(vals)


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
    return summarise(vals)


# ----------------------------------------------------------------------------- the run
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
    check_run_dir(out, overwrite, resume, remove=main)
    state = None
    if resume:
        state = load_checkpoint(out / "last.pt")
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
        set_cpu_threads(cfg.threads, dist_ctx)  # processes sharing a machine share its cores
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
        torch.manual_seed(rank_seed(cfg.seed, dist_ctx.rank))
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
            torch.manual_seed(rank_seed(cfg.seed, dist_ctx.rank, resumed_at=start_epoch))
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
            np.random.seed(epoch_noise_seed(cfg.seed, epoch, dist_ctx.rank))
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            tr = train_epoch(model, loader, opt, sched, cfg.alpha, device, data.has_masks)
            if not main:
                continue  # rank 0 evaluates and writes; the others go on to the next epoch
            te = evaluate(raw_model, data.test, cfg.alpha, device, data.has_masks)
            row = epoch_row(epoch, tr, te, lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
            history.append(row)
            post = {"loss": f"{tr['loss_mean']:.4f}"}
            if data.has_masks:
                post.update(iou=f"{tr['iou_mean']:.1f}", test_iou=f"{te['iou_mean']:.1f}")
            bar.set_postfix(post)
            if te["loss_mean"] < best_loss:
                best_loss = te["loss_mean"]
                save_checkpoint(weights_ckpt(nan_to_none(row), epoch + 1), out / "best.pt")
            resume_state = weights_ckpt(nan_to_none(row), epoch + 1)
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
    final = nan_to_none(history[-1]) if history else {}
    # The running train IoU is measured on augmented (noisier) inputs while the weights
    # move; the final train IoU is measured like the test IoU: eval mode, inputs as is.
    train_eval = evaluate(raw_model, data.train_eval, cfg.alpha, device, data.has_masks) if history else {}
    if data.has_masks and history:
        final["train_iou_running"] = final.get("train_iou_mean")
        final["train_iou_mean"] = train_eval["iou_mean"]
    summary = metrics_summary(
        final,
        best_loss=best_loss,
        interrupted=interrupted,
        elapsed=elapsed,
        data=data,
        cfg=cfg,
        device=device,
        processes=dist_ctx.world_size,
    )
    write_metrics(out, history, summary)
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
