"""Section "training": the training step in memory vs a short ``segtrain`` run (images/s), and
the figures of the last ``make train`` (runs/default/metrics.json)."""

from __future__ import annotations

import json
import subprocess
import time

from bench.common import ROOT, SEGTRAIN, BenchError, Section, Shared, fmt, generated_batch
from bench.prose import Prose
from bench.timing import median, spread, time_side_by_side

TEXT = Prose(__file__)
TITLE = "Training"


def run(shared: Shared) -> Section:
    from unsupseg.train.config import make_config

    st = shared.settings
    cfg = make_config("default")
    intro = TEXT(
        "intro",
        arch=cfg.arch,
        width=cfg.width,
        batch=cfg.batch_size,
        optimizer=cfg.optimizer,
        threads=st.threads,
    )
    sec = Section("training", TITLE, intro)
    step_ips = _step_rate(shared, cfg)
    n_train, epochs = (64, 1) if st.quick else (1000, 1)
    metrics, wall = _segtrain(shared, n_train, epochs)
    run_ips = n_train * epochs / metrics["wall_time_s"]
    rows = [
        [
            "training step (in memory)",
            fmt(median(step_ips)),
            f"median of {st.repeats}, range {spread(step_ips)}",
        ],
        [
            f"segtrain, {n_train:,} images x {epochs} epoch",
            fmt(run_ips),
            f"wall {metrics['wall_time_s']:.1f} s in the run ({wall:.1f} s with start-up)",
        ],
    ]
    sec.table("training throughput (CPU)", ["what", "images/s", "how"], rows)
    make_train = _make_train(sec)
    sec.data = {
        "step_images_per_s": median(step_ips),
        "step_all": step_ips,
        "segtrain_images_per_s": run_ips,
        "segtrain_wall_s": metrics["wall_time_s"],
        "segtrain_images": n_train,
        "segtrain_epochs": epochs,
        "make_train": make_train,
    }
    if run_ips < 0.5 * median(step_ips):
        sec.notes.append(TEXT("slow-segtrain", percent=f"{100 * run_ips / median(step_ips):.0f}"))
    return sec


def _step_rate(shared: Shared, cfg) -> list[float]:
    """images/s of forward, Chan-Vese loss, backward and optimiser step, one value per repeat."""
    import torch

    from unsupseg.train.loss import chan_vese_loss
    from unsupseg.train.model import build_model

    st = shared.settings
    torch.set_num_threads(st.threads)
    model = build_model(cfg.model_config())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=cfg.weight_decay)
    x = torch.from_numpy(generated_batch(cfg.batch_size, 32, 32, seed=11, card=shared.card))

    def step():
        u = model(x)
        loss, _, _ = chan_vese_loss(x, u, cfg.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time_side_by_side({"step": step}, st.repeats, min_time=0.2 if st.quick else 1.0)["step"]
    return [cfg.batch_size / s for s in t]


def _segtrain(shared: Shared, n_train: int, epochs: int) -> tuple[dict, float]:
    """A short segtrain run: (its metrics.json, wall seconds with start-up)."""
    from unsupseg.core.data import generate, save_npz

    st = shared.settings
    data_args = []
    if st.quick:
        xtr, ytr = generate(n_train, seed=21)
        xte, yte = generate(32, seed=22)
        npz = st.work / "train_small.npz"
        save_npz(npz, {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
        data_args = ["--data", str(npz)]
    out = st.work / "segtrain"
    cmd = SEGTRAIN + [
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--threads",
        str(st.threads),
        "--device",
        "cpu",
        "--no-plots",
        "-q",
        "--overwrite",
        *data_args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"segtrain failed: {proc.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text()), wall


def _make_train(sec: Section) -> dict | None:
    """The last `make train` run's figures (a table and a note), or None when it has not run."""
    mt = ROOT / "runs" / "default" / "metrics.json"
    if not mt.is_file():
        sec.notes.append(TEXT("make-train-missing"))
        return None
    m = json.loads(mt.read_text())
    make_train = {
        "wall_time_s": m.get("wall_time_s"),
        "final_test_iou": m.get("final", {}).get("test_iou"),
        "final_train_iou": m.get("final", {}).get("train_iou"),
        "epochs": m.get("config", {}).get("epochs"),
        "device": m.get("config", {}).get("device"),
    }
    sec.table(
        "`make train` (runs/default/metrics.json)",
        ["epochs", "wall time", "final test IoU %", "final train IoU %"],
        [
            [
                fmt(make_train["epochs"]),
                f"{make_train['wall_time_s'] / 60:.1f} min" if make_train["wall_time_s"] else "-",
                fmt(make_train["final_test_iou"], 4),
                fmt(make_train["final_train_iou"], 4),
            ]
        ],
    )
    sec.notes.append(TEXT("make-train"))
    return make_train
