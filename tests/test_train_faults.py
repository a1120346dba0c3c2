"""segtrain under faults: killed with -9 mid-epoch it resumes from last.pt to the weights of an
uninterrupted run; a damaged last.pt is named, with the ways on."""

from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unsupseg.core.atomic import owner_tag
from unsupseg.train.checkpoint import load_checkpoint
from unsupseg.train.cli import main as segtrain

# seeded; one thread, so the sums of a step are in one order whatever the machine
ARGS = ["--width", "4", "--epochs", "3", "--no-plots", "-q", "--threads", "1", "--seed", "7"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    from unsupseg.core.data import generate, save_npz

    xtr, ytr = generate(256, seed=21)  # 8 steps of 32 per epoch: long enough to land in one
    xte, yte = generate(32, seed=22)
    path = tmp_path_factory.mktemp("train_faults") / "data.npz"
    save_npz(path, {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
    return path


@pytest.fixture(scope="module")
def uninterrupted(npz):
    out = npz.parent / "uninterrupted"
    r = CliRunner().invoke(segtrain, ["--data", str(npz), "--out", str(out), *ARGS])
    assert r.exit_code == 0, r.output
    return out


def _epoch_seconds(run) -> float:
    rows = (run / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("seconds")
    return statistics.median(float(r.split(",")[col]) for r in rows[1:])


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_kill_9_mid_epoch_then_resume_gives_the_same_weights(tmp_path, npz, uninterrupted, fraction):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "unsupseg.train.cli", "--data", str(npz), "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    while not (out / "last.pt").exists() and proc.poll() is None:  # epoch 1 has just been saved
        time.sleep(0.002)
    time.sleep(fraction * _epoch_seconds(uninterrupted))  # then into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "segtrain ended before the kill"
    # in epoch 2 (or 3, on a slow machine): an epoch saved, the run not finished
    assert load_checkpoint(out / "last.pt")["epoch"] in (1, 2) and not (out / "model.pt").exists()

    # what a kill during a checkpoint's save leaves (planted: the kill rarely lands there)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (out / f".last.pt.{owner_tag(ended.pid)}.0.part").write_bytes(b"half a checkpoint")

    r = CliRunner().invoke(segtrain, ["--out", str(out), "--resume", "-q", "--no-plots", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert not list(out.glob(".*.part"))  # the killed run's temporary files are removed
    got, want = (load_checkpoint(run / "model.pt")["state_dict"] for run in (out, uninterrupted))
    assert got.keys() == want.keys()
    diff = max(
        float((got[k].double() - want[k].double()).abs().max()) for k in want if want[k].is_floating_point()
    )
    print(f"max |resumed - uninterrupted| weight difference: {diff:.3g}")
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    losses = [
        np.loadtxt(run / "metrics.csv", delimiter=",", skiprows=1, usecols=(1,))
        for run in (out, uninterrupted)
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)  # the same epochs, the same losses


@pytest.fixture(scope="module")
def one_epoch_run(npz):
    """A run folder of one epoch: model.pt, best.pt and last.pt."""
    out = npz.parent / "one_epoch"
    args = ["--data", str(npz), "--out", str(out), "--width", "4", "--epochs", "1", "--no-plots", "-q"]
    r = CliRunner().invoke(segtrain, [*args, "--threads", "1"])
    assert r.exit_code == 0, r.output
    return out


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "zero bytes": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)),
    "model.pt copied over it": lambda p: shutil.copy(p.with_name("model.pt"), p),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_last_pt_is_named(tmp_path, one_epoch_run, kind):
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    DAMAGE[kind](out / "last.pt")
    r = CliRunner().invoke(segtrain, ["--out", str(out), "--resume", "-q", "--no-plots"])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())  # click wraps the message
    assert f"{out / 'last.pt'}: cannot resume" in text
    assert "--overwrite" in text and f"--init-from {out / 'best.pt'}" in text
    assert not isinstance(r.exception, (KeyError, RuntimeError))  # a message, not a traceback
