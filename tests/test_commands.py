"""The installed commands as a user runs them: segtrain, segexport, seginfer and segreport from the
virtual environment's bin folder, as subprocesses; their exit codes and the files they write
(DESIGN.md's command contracts). ``make demo`` runs the same chain on the built-in data in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
COMMANDS = ("segtrain", "segexport", "seginfer", "segreport")


def run(command: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """``command`` from the virtual environment's bin folder, in a fresh process."""
    exe = BIN / command
    assert exe.is_file(), f"{exe}: not installed (make install writes the console scripts)"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_and_version(command):
    from unsupseg import __version__

    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "Example:" in r.stdout and command in r.stdout.split("Example:")[1]
    r = run(command, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"{command}, version {__version__}", r.stdout


def test_a_usage_error_exits_2_and_writes_nothing(tmp_path):
    r = run("seginfer", "--input", tmp_path / "missing", "--output", tmp_path / "out")
    assert r.returncode == 2 and "does not exist" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short segtrain run (2 epochs of 64 generated images, width 4) and segexport of it."""
    from unsupseg.core.data import generate, save_npz

    root = tmp_path_factory.mktemp("commands")
    xtr, ytr = generate(64, seed=21)
    xte, yte = generate(32, seed=22)
    save_npz(root / "d.npz", {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
    r = run("segtrain", "--data", root / "d.npz", "--out", root / "run", "--epochs", 2, "--width", 4,
            "--threads", 2, "--seed", 0, "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r2 = run("segexport", root / "run" / "model.pt", root / "model.onnx")
    assert r2.returncode == 0, r2.stderr[-3000:]
    return root, r, r2


@pytest.mark.slow
def test_segtrain_writes_the_run_folder(trained):
    root, r, _ = trained
    run_dir = root / "run"
    for name in ("model.pt", "metrics.csv", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "plots").glob("*.png")), "no plots"
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert 0 <= final["train_iou"] <= 100 and 0 <= final["test_iou"] <= 100
    assert f"final test IoU: {final['test_iou']:.2f}" in r.stdout
    assert (run_dir / "metrics.csv").read_text().count("\n") == 3  # a header and one row per epoch


@pytest.mark.slow
def test_segexport_writes_one_checked_file_and_refuses_to_replace_it(trained):
    from unsupseg.infer import Segmenter

    root, _, r = trained
    onnx_path = root / "model.onnx"
    assert "max abs diff" in r.stdout + r.stderr
    assert [p.name for p in root.iterdir() if p.suffix == ".onnx" or p.name.startswith(".")] == ["model.onnx"]
    assert Segmenter(onnx_path, device="cpu").card.width == 4
    before = onnx_path.read_bytes()
    again = run("segexport", root / "run" / "model.pt", onnx_path)
    assert again.returncode == 2 and "exists; pass --overwrite to replace it" in again.stderr
    assert onnx_path.read_bytes() == before


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """make demo's sample folder (generated 8- and 16-bit images with masks) and one broken file."""
    root = tmp_path_factory.mktemp("sample")
    cmd = [sys.executable, "-m", "unsupseg.train.sample", str(root), "--n", "12"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return root


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_seginfer_writes_a_mask_per_input_and_the_report(trained, sample, tmp_path):
    import imageio.v3 as iio

    from unsupseg.core.imageio import read_pages

    root, _, _ = trained
    out = tmp_path / "out"
    args = ["--input", sample / "images", "--output", out, "--masks", sample / "masks", "--device", "cpu"]
    r = run("seginfer", *args, "--model", root / "model.onnx", "--html", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    inputs = sorted(p.relative_to(sample / "images") for p in (sample / "images").iterdir())
    assert len(inputs) == 12
    for rel in inputs:
        mask_path = out / rel.with_suffix(".png")  # --format png (the default), whatever the input
        assert mask_path.is_file(), rel
        mask = iio.imread(mask_path)
        assert mask.shape == read_pages(sample / "images" / rel)[0].shape and set(np.unique(mask)) <= {0, 255}
    s = _summary(out)
    assert (s["n_images"], s["n_written"], s["n_failed"], s["failed"]) == (12, 12, 0, [])
    assert set(s["mean"]) >= {"iou", "iou_any_polarity", "dice"} and 0 <= s["mean"]["iou"] <= 1
    assert len(s["metric_per_case"]) == 12
    for name in ("report.csv", "report.html", "seginfer.json"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_seginfer_exit_1_names_the_failed_input_and_writes_the_rest(trained, sample, tmp_path):
    import shutil

    root, _, _ = trained
    images = tmp_path / "images"
    shutil.copytree(sample / "images", images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "out"
    r = run(
        "seginfer",
        "--input",
        images,
        "--output",
        out,
        "--model",
        root / "model.onnx",
        "--device",
        "cpu",
        "-q",
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "broken.png" in r.stderr
    s = _summary(out)
    assert (s["n_images"], s["n_written"], s["n_failed"]) == (13, 12, 1)
    assert s["failed"][0]["input"].endswith("broken.png") and s["failed"][0]["error"]


@pytest.mark.slow
def test_segreport_merges_shards_into_the_unsharded_report(trained, sample, tmp_path):
    root, _, _ = trained
    common = ["--input", sample / "images", "--masks", sample / "masks", "--model", root / "model.onnx"]
    common += ["--device", "cpu", "-q"]
    whole, shards = tmp_path / "whole", tmp_path / "shards"
    assert run("seginfer", *common, "--output", whole).returncode == 0
    for i in (1, 2):
        r = run("seginfer", *common, "--output", shards, "--shard", f"{i}/2")
        assert r.returncode == 0, r.stderr[-3000:]
    assert not (shards / "summary.json").exists()
    r = run("segreport", shards, "--html", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("summary.json", "report.csv"):
        got = (shards / name).read_text().replace(str(shards), "OUT")
        assert got == (whole / name).read_text().replace(str(whole), "OUT"), name
    assert (shards / "report.html").is_file()
    again = run("segreport", shards, "-q")
    assert again.returncode == 2 and "--overwrite" in again.stderr, again.stderr
