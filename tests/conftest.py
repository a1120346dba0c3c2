"""Shared pytest fixtures."""

from __future__ import annotations

import numpy as np
import pytest


# -- inference fixtures (tests/test_infer_*.py): a torch-free ONNX model and synthetic images --
def _build_infer_test_model(path, kernel: int = 3) -> None:
    """A stand-in for an exported unsupseg model, built with onnx.helper (no torch).

    image (N, 1, H, W) -> kernel x kernel mean Conv (zero pads) -> Sub 0.5 -> Mul 20 -> Sigmoid -> prob.
    On normalised images it marks bright regions as region 1.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard

    pad = kernel // 2
    weight = np.full((1, 1, kernel, kernel), 1.0 / kernel**2, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "w"], ["mean"], pads=[pad] * 4),
        helper.make_node("Sub", ["mean", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME]),
    ]
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array(20.0, dtype=np.float32), "gain"),
    ]
    dims = ["N", 1, "H", "W"]
    graph = helper.make_graph(
        nodes,
        "test-mean",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)],
        initializer=inits,
    )
    # ir_version 10: what onnxruntime >= 1.20 reads (newer onnx defaults to a newer IR).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    # bright objects: the rule most tests are written for; tests of "auto" pass foreground=
    helper.set_model_props(model, ModelCard(arch="test-mean", width=1, polarity="bright").to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="session")
def infer_model_path(tmp_path_factory):
    """Path of a tiny torch-free unsupseg-style ONNX model (3x3 mean, bright = region 1)."""
    path = tmp_path_factory.mktemp("infer_model") / "test-mean.onnx"
    _build_infer_test_model(path)
    return path


def _disk_image(h: int, w: int, seed: int = 0, noise: float = 0.08, n_disks: int = 2):
    """(image float32 in ~[0, 1], mask bool): bright disks (0.8) on a dark background (0.2) + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(n_disks):
        r = rng.uniform(0.12, 0.25) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    image = np.where(mask, 0.8, 0.2) + rng.normal(0, noise, (h, w))
    return image.astype(np.float32), mask


@pytest.fixture(scope="session")
def infer_disk_image():
    """Factory: ``infer_disk_image(h, w, seed=0)`` -> (image float32, mask bool)."""
    return _disk_image


# -- export fixtures (tests/test_export.py, tests/test_bioimageio.py): tiny trained checkpoints --
def _train_few_steps(folder, arch: str, width: int):
    """model.pt of a 2-epoch run on 64 generated 32x32 images (the seed preset for arch 'seed')."""
    from unsupseg.core.data import generate, save_npz
    from unsupseg.train.config import make_config
    from unsupseg.train.loop import run_training

    xtr, ytr = generate(64, seed=21)
    xte, yte = generate(32, seed=22)
    save_npz(folder / "d.npz", {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
    cfg = make_config(
        "seed" if arch == "seed" else "default",
        data=str(folder / "d.npz"),
        out=str(folder / "run"),
        width=width,
        epochs=2,
        threads=1,
    )
    run_training(cfg, log=lambda m: None, progress=False, plots=False)
    return folder / "run" / "model.pt"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: ``tiny_checkpoint(arch, width)`` -> path of a briefly trained model.pt, trained
    once per session for each (arch, width); callers must not modify the file."""
    cache = {}

    def make(arch: str = "unet", width: int = 8):
        if (arch, width) not in cache:
            folder = tmp_path_factory.mktemp(f"train_{arch}{width}")
            cache[arch, width] = _train_few_steps(folder, arch, width)
        return cache[arch, width]

    return make


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a folder on a fresh tmpfs of that size (root only), unmounted at the end."""
    import subprocess

    mounts = []

    def mount(size: str):
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where, options: str) -> None:
    """Change the mount options of a ``tmpfs`` folder (``size=8m``, ``ro``, ``rw``)."""
    import subprocess

    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


class FailingOutput:
    """An output folder that makes writes fail: on a 32 KiB tmpfs as root (a real "No space left
    on device"), else under a read-only sub-folder ``b`` ("Permission denied"). ``clear()``
    removes the fault so that a ``--skip-existing`` run can finish the work."""

    def __init__(self, tmp_path, tmpfs):
        import os

        self.root = os.geteuid() == 0
        if self.root:
            self.fs = tmpfs("32k")
            self.out = self.fs / "out"
            self.error = "No space left on device"
        else:
            self.out = tmp_path / "out"
            (self.out / "b").mkdir(parents=True)
            (self.out / "b").chmod(0o555)
            self.error = "Permission denied"

    def clear(self) -> None:
        if self.root:
            remount(self.fs, "size=8m")
        else:
            (self.out / "b").chmod(0o755)


@pytest.fixture
def failing_output(tmp_path, tmpfs):
    """A FailingOutput (its tmpfs, if any, is unmounted at the end of the test)."""
    return FailingOutput(tmp_path, tmpfs)
