"""Multi-process training: torch DDP launched by torchrun, 2 gloo processes on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unsupseg.core.data import builtin_splits, generate, save_npz
from unsupseg.train.checkpoint import load_checkpoint
from unsupseg.train.model import ModelConfig, build_model

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _folder(root: Path, n: int = 12) -> Path:
    x, _ = generate(n, 40, 48, seed=9, quantize=8)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(x[i]).save(root / f"{i:03d}.png")
    return root


@pytest.fixture
def small_npz_for_ddp(tmp_path):
    splits = builtin_splits(0)
    small = {k: v[:64] for k, v in splits.items()}
    path = tmp_path / "small.npz"
    save_npz(path, small)
    return path


@pytest.mark.parametrize("source", ["npz", "folder"])
def test_two_gloo_ranks_end_with_the_same_weights(tmp_path, source, small_npz_for_ddp):
    data = small_npz_for_ddp if source == "npz" else _folder(tmp_path / "images")
    out = tmp_path / "out"
    out.mkdir()
    r = _torchrun(str(WORKER), str(out), str(data), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [torch.load(out / f"rank{i}.pt", weights_only=True) for i in (0, 1)]
    s0, s1 = ranks[0]["state_dict"], ranks[1]["state_dict"]
    assert s0.keys() == s1.keys()
    for k in s0:  # parameters and BatchNorm buffers alike
        assert torch.equal(s0[k], s1[k]), k
    # the ranks trained on different samples: their losses differ, yet the weights agree
    assert ranks[0]["losses"] != ranks[1]["losses"] and len(ranks[0]["losses"]) == 2
    ckpt = load_checkpoint(out / "run" / "model.pt")
    assert ckpt["epoch"] == 2
    assert all(torch.equal(ckpt["state_dict"][k], s0[k]) for k in s0)  # rank 0 wrote the run folder
    torch.manual_seed(0)  # the run's seed: the weights it started from
    start = build_model(ModelConfig(arch="unet", width=4, context=True)).state_dict()
    assert any(not torch.equal(start[k], s0[k]) for k in s0 if k.endswith("weight"))  # training moved them


def test_segtrain_under_torchrun_writes_one_run_folder_and_resumes(tmp_path):
    images = _folder(tmp_path / "images")
    out = tmp_path / "run"
    r = _torchrun(
        "-m",
        "unsupseg.train.cli",
        "--data",
        str(images),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--preset",
        "seed",
        "--arch",
        "unet",
        "--width",
        "4",
        "--crop",
        "32",
        "--samples-per-epoch",
        "32",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-plots",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "last.pt",
        "metrics.csv",
        "metrics.json",
        "model.pt",
        "report.html",  # written by rank 0 alone, like the rest
    ]
    assert r.stderr.count("training unet") == 1  # only rank 0 speaks
    assert np.isfinite(metrics["final"]["train_loss"])

    r = _torchrun(
        "-m", "unsupseg.train.cli", "--out", str(out), "--resume", "--epochs", "2", "-q", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_checkpoint(out / "model.pt")["epoch"] == 2
    assert len(json.loads((out / "metrics.json").read_text())["config"]) and (out / "plots").is_dir()
