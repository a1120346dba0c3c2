"""The training loop: data -> network -> Chan-Vese loss -> optimiser step, epoch after epoch.

``run_training`` settles the configuration, device and data; ``_train`` is the loop itself,
top to bottom. Per epoch it records the mean and standard deviation over mini-batches of
the loss, its fidelity and TV terms and the polarity-free IoU on the training and the
test split, as the seed notebook does, and writes best.pt and last.pt; at the end
model.pt, metrics, plots and report.html (the files: ``unsupseg.train.runfolder``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from unsupseg.core.errors import UnsupsegError
from unsupseg.train import distributed
from unsupseg.train.checkpoint import load_checkpoint, load_resume_state, save_checkpoint, weights_checkpoint
from unsupseg.train.config import TrainConfig
from unsupseg.train.device import (
    epoch_noise_seed,
    rank_seed,
    resolve_device,
    seed_everything,
    set_cpu_threads,
)
from unsupseg.train.epoch import evaluate, train_epoch  # tests replace loop.train_epoch
from unsupseg.train.metrics import epoch_row, nan_to_none
from unsupseg.train.model import build_model
from unsupseg.train.prepare import PreparedData, make_loader, prepare_data
from unsupseg.train.runfolder import check_run_dir, metrics_summary, write_metrics


@dataclass
class Run:
    """What one training run needs, settled before its first epoch."""

    cfg: TrainConfig  # the configuration in force (on --resume: the saved one)
    data: PreparedData  # training set, evaluation images, grid images
    device: torch.device  # where this process trains
    dist_ctx: distributed.DistContext  # rank layout (a single process unless started by torchrun)
    log: Callable[[str], None]  # messages (silent on ranks other than 0)
    progress: bool = True  # show the epoch bar
    plots: bool = True  # write plots/*.png at the end
    resume_state: dict | None = None  # --resume: the contents of last.pt
    init_state: dict | None = None  # --init-from: the checkpoint whose weights training starts from

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)


@dataclass
class Progress:
    """What the epochs so far left behind; restored from last.pt on --resume."""

    history: list[dict] = field(default_factory=list)  # one metrics.csv row per finished epoch
    start_epoch: int = 0  # epochs finished before this process started
    best_loss: float = float("inf")  # lowest test loss so far (the weights in best.pt)
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run


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
        cfg, resume_state, init_state = _settle_config(cfg, overwrite, resume, resume_epochs, dist_ctx)
        device = resolve_device(cfg.device, dist_ctx.local_rank if dist_ctx.enabled else None)
        if device.type == "cpu":
            set_cpu_threads(cfg.threads, dist_ctx)  # processes sharing a machine share its cores
        distributed.setup(dist_ctx, device)
        seed_everything(cfg.seed)
        data = prepare_data(cfg, cfg.normalization(), log, dist_ctx, device)  # raises before writing
        try:
            run = Run(cfg, data, device, dist_ctx, log, progress, plots, resume_state, init_state)
            return _train(run)
        finally:
            data.close()
    finally:
        distributed.teardown(dist_ctx)


def _settle_config(
    cfg: TrainConfig,
    overwrite: bool,
    resume: bool,
    resume_epochs: int | None,
    dist_ctx: distributed.DistContext,
) -> tuple[TrainConfig, dict | None, dict | None]:
    """Check the run folder; (configuration in force, last.pt on --resume, --init-from checkpoint)."""
    out = Path(cfg.out)
    check_run_dir(out, overwrite, resume, remove=dist_ctx.is_main)
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
        return saved, state, None
    if cfg.init_from:
        # fine-tuning: the network's shape comes from the checkpoint
        init_state = load_checkpoint(cfg.init_from)
        src = init_state["model_config"]
        cfg.arch, cfg.width = src["arch"], src["width"]
        cfg.context, cfg.init = src.get("context", False), src.get("init", "default")
        return cfg, None, init_state
    return cfg, None, None


def _train(run: Run) -> TrainResult:
    """Build the network, optimiser and loader, train the epochs, then write the results."""
    from tqdm.auto import tqdm

    cfg, data, out, main = run.cfg, run.data, run.out, run.dist_ctx.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    net, model = _build_network(run)  # net is evaluated, saved, exported; model (DDP-wrapped) trains
    opt = build_optimizer(cfg, model.parameters())
    gen = torch.Generator().manual_seed(cfg.seed)  # the loader's shuffling order
    loader, sampler = make_loader(data, cfg, run.dist_ctx, gen)
    sched = build_scheduler(cfg, opt, total_steps=max(1, len(loader)) * cfg.epochs)
    past = Progress() if run.resume_state is None else _restore(run, net, opt, sched, gen)
    processes = f", {run.dist_ctx.world_size} processes" if run.dist_ctx.enabled else ""
    run.log(
        f"training {cfg.arch} width {cfg.width} on {data.source} for {cfg.epochs} epochs "
        f"(preset {cfg.preset}, device {run.device}{processes})"
    )
    t_start = time.perf_counter()
    interrupted = False
    bar = tqdm(
        range(past.start_epoch, cfg.epochs),
        initial=past.start_epoch,
        total=cfg.epochs,
        desc="epochs",
        disable=not run.progress,
        unit="ep",
    )
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            np.random.seed(epoch_noise_seed(cfg.seed, epoch, run.dist_ctx.rank))  # in-memory data's noise
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            tr = train_epoch(model, loader, opt, sched, cfg.alpha, run.device, data.has_masks)
            if not main:
                continue  # rank 0 evaluates and writes; the others go on to the next epoch
            te = evaluate(net, data.test, cfg.alpha, run.device, data.has_masks)
            row = epoch_row(epoch, tr, te, lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
            past.history.append(row)
            bar.set_postfix(_bar_text(tr, te, data.has_masks))
            weights = weights_checkpoint(net, cfg, nan_to_none(row), epoch + 1)
            if te["loss_mean"] < past.best_loss:
                past.best_loss = te["loss_mean"]
                save_checkpoint(weights, out / "best.pt")
            elapsed = past.elapsed_before + time.perf_counter() - t_start
            save_checkpoint(_resume_checkpoint(weights, opt, sched, gen, past, elapsed), out / "last.pt")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return _finish(run, net, past, interrupted, elapsed=past.elapsed_before + time.perf_counter() - t_start)


# ----------------------------------------------------------------------------- the parts
def _build_network(run: Run) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(net, model): the network on its device, and what trains it (net, or DDP around it)."""
    net = build_model(run.cfg.model_config())
    if run.init_state is not None:
        net.load_state_dict(run.init_state["state_dict"])
        run.log(f"starting from the weights of {run.cfg.init_from}")
    net = net.to(run.device)
    if not run.dist_ctx.enabled:
        return net, net
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    model = DistributedDataParallel(net, device_ids=device_ids)
    # ranks start from rank 0's weights (DDP broadcasts them); their random draws differ
    torch.manual_seed(rank_seed(run.cfg.seed, run.dist_ctx.rank))
    return net, model


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise UnsupsegError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def build_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int):
    """One-cycle (warm-up, then cosine decay over the whole run) or None for a constant rate."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps)
    if cfg.schedule != "constant":
        raise UnsupsegError(f"unknown schedule {cfg.schedule!r}; choose constant or onecycle")
    return None


def _restore(run: Run, net, opt, sched, gen: torch.Generator) -> Progress:
    """--resume: weights, optimiser, schedule, history and random states from last.pt."""
    state, cfg, rank = run.resume_state, run.cfg, run.dist_ctx.rank
    net.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None and state.get("scheduler"):
        sched.load_state_dict(state["scheduler"])
    past = Progress(
        history=list(state["history"]),
        start_epoch=int(state["epoch"]),
        best_loss=float(state.get("best_loss", float("inf"))),
        elapsed_before=float(state.get("elapsed_s", 0.0)),
    )
    torch.set_rng_state(state["torch_rng"])
    if rank > 0:
        torch.manual_seed(rank_seed(cfg.seed, rank, resumed_at=past.start_epoch))
    gen.set_state(state["loader_rng"])
    np.random.seed(cfg.seed + past.start_epoch)
    run.log(f"resuming {run.out} at epoch {past.start_epoch}/{cfg.epochs}")
    return past


def _resume_checkpoint(weights: dict, opt, sched, gen, past: Progress, elapsed: float) -> dict:
    """last.pt: the weights checkpoint plus all that ``_restore`` reads back."""
    return dict(
        weights,
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict() if sched is not None else None,
        history=past.history,
        best_loss=past.best_loss,
        elapsed_s=elapsed,
        torch_rng=torch.get_rng_state(),
        loader_rng=gen.get_state(),
    )


def _bar_text(train: dict, test: dict, has_masks: bool) -> dict[str, str]:
    post = {"loss": f"{train['loss_mean']:.4f}"}
    if has_masks:
        post.update(iou=f"{train['iou_mean']:.1f}", test_iou=f"{test['iou_mean']:.1f}")
    return post


def _finish(run: Run, net, past: Progress, interrupted: bool, elapsed: float) -> TrainResult:
    """After the epochs: one state on every rank; on rank 0 the final metrics, model.pt, plots."""
    if not interrupted:
        distributed.sync_buffers(net, run.dist_ctx)  # every rank ends with rank 0's exact state
    if not run.dist_ctx.is_main:
        return TrainResult(run.out, {}, interrupted=interrupted, model=net)
    cfg, data, out, history = run.cfg, run.data, run.out, past.history
    final = nan_to_none(history[-1]) if history else {}
    # The running train IoU is measured on augmented (noisier) inputs while the weights
    # move; the final train IoU is measured like the test IoU: eval mode, inputs as is.
    train_eval = evaluate(net, data.train_eval, cfg.alpha, run.device, data.has_masks) if history else {}
    if data.has_masks and history:
        final["train_iou_running"] = final.get("train_iou_mean")
        final["train_iou_mean"] = train_eval["iou_mean"]
    summary = metrics_summary(
        final,
        best_loss=past.best_loss,
        interrupted=interrupted,
        elapsed=elapsed,
        data=data,
        cfg=cfg,
        device=run.device,
        processes=run.dist_ctx.world_size,
    )
    write_metrics(out, history, summary)
    if interrupted:
        run.log(
            f"interrupted after epoch {len(history)}; state saved to {out / 'last.pt'}. "
            f"Continue with: segtrain --out {out} --resume"
        )
        return TrainResult(out, summary["final"], interrupted=True, model=net)
    save_checkpoint(weights_checkpoint(net, cfg, final, len(history)), out / "model.pt")
    if run.plots:
        from unsupseg.train.plots import save_plots

        save_plots(out / "plots", history, net, data, run.device, has_masks=data.has_masks)
    from unsupseg.train.report_html import write_train_report

    write_train_report(out, history, summary, net, data, run.device)  # curves as SVG: no matplotlib
    run.log(f"wrote {out / 'model.pt'} ({elapsed:.0f} s)")
    return TrainResult(out, summary["final"], model=net)
