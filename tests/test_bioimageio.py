"""segexport --bioimageio: the bioimage.io model package, checked by bioimageio.core itself.

Offline: every package is built and tested inside ``offline()``, which makes any attempt to
open a network connection (or resolve a host name) fail and be recorded, and the test
asserts that none was made. The description has no URLs (citations are DOIs, checked by
pattern) and no GitHub user names (those are looked up online), so bioimageio.spec's
validation and bioimageio.core's test run from the package's local files alone.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from unsupseg.export.cli import main as segexport
from unsupseg.export.export import ATOL, RTOL

# ----------------------------------------------------------------------------- offline guard
_REAL_CONNECT = socket.socket.connect


@contextlib.contextmanager
def offline():
    """Refuse and record every network connection and host name lookup; assert there was none."""
    attempts = []

    def connect(self, address, *args):
        if self.family == getattr(socket, "AF_UNIX", None):
            return _REAL_CONNECT(self, address, *args)
        attempts.append(f"connect {address}")
        raise OSError(f"network access during an offline test: {address}")

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(f"getaddrinfo {host}")
        raise socket.gaierror(f"network access during an offline test: {host}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield attempts
    assert not attempts, f"the network was used: {attempts}"


def test_offline_guard_catches_connections():
    with pytest.raises(AssertionError, match="the network was used"):
        with offline():
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", 9), timeout=1)


# ----------------------------------------------------------------------------- packages
@pytest.fixture(scope="module")
def packages(tiny_checkpoint, tmp_path_factory):
    """Factory: package(kind) -> (checkpoint, package .zip, PackageReport), built once per kind.

    kinds: "default-unet" (the default preset's network, width 8, as the packaged default
    model) and "seed-preset" (the notebook's network and hyper-parameters, width 8).
    """
    from unsupseg.export.bioimageio import export_bioimageio

    cache = {}

    def make(kind: str):
        if kind not in cache:
            arch = {"default-unet": "unet", "seed-preset": "seed"}[kind]
            ckpt = tiny_checkpoint(arch, 8)
            out = tmp_path_factory.mktemp(f"bioimageio_{kind}") / f"{kind}.zip"
            with offline():
                report = export_bioimageio(ckpt, out, log=lambda m: None)
            cache[kind] = ckpt, out, report
        return cache[kind]

    return make


def _member(path, name: str) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(name)


def _onnx_of(package, tmp_path):
    onnx_path = tmp_path / "weights.onnx"
    onnx_path.write_bytes(_member(package, "weights.onnx"))
    return onnx_path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["default-unet", "seed-preset"])
def test_package_passes_bioimageio_core_test(packages, kind):
    """The model zoo's check: format validation, reproducing the test outputs, parameterized sizes."""
    from bioimageio.core import test_description

    _, package, report = packages(kind)
    assert report.test_status == "passed"
    with offline():
        summary = test_description(package)  # all onnxruntime providers, as `bioimageio test` does
    print(summary.format())
    assert summary.status == "passed", summary.format()
    names = {d.name: d.status for d in summary.details}
    assert names.get(f"bioimageio.spec format validation model {report.format_version}") == "passed", names
    assert names.get("Reproduce test outputs from test inputs (onnx)") == "passed", names
    assert sum(n.startswith("Run onnx inference for inputs with batch_size") for n in names) >= 2, names


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape,bits",
    [((64, 96), None), ((136, 200), 8), ((96, 248), 16)],
    ids=["float32-64x96", "uint8-136x200", "uint16-96x248"],
)
def test_package_predicts_like_seginfer(packages, tmp_path, shape, bits):
    """bioimageio.core runs the package (its pre-processing and ONNX): seginfer's probability map."""
    from bioimageio.core import load_description, predict

    from unsupseg.core.data import generate
    from unsupseg.infer.model.segmenter import Segmenter

    _, package, _ = packages("default-unet")
    x, _ = generate(1, *shape, sigma=(0.3, 0.6), seed=11, quantize=bits)
    image = x[0]
    with offline():
        descr = load_description(package)
        out = predict(model=descr, inputs=image[None, None])
    got = out.members["prob"].data.to_numpy()
    assert got.shape == (1, 1, *shape)
    # seginfer's probability map; foreground "model" keeps the network's region 1 (no polarity flip)
    seg = Segmenter(_onnx_of(package, tmp_path), device="cpu", threads=1, foreground="model")
    _, ref = seg.predict(image)
    diff = float(np.abs(got[0, 0] - ref).max())
    print(f"{shape} {image.dtype}: max |bioimageio.core - seginfer| = {diff:.3e}")
    np.testing.assert_allclose(got[0, 0], ref, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_package_description(packages, tmp_path):
    """Axes, sizes, pre-processing, weights, test tensors and documentation as the issue asks."""
    import onnx
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_5

    from unsupseg.infer.model.segmenter import Segmenter

    ckpt, package, report = packages("default-unet")
    card = report.card
    with offline():
        d = load_description(package)
    assert isinstance(d, v0_5.ModelDescr), d
    assert d.format_version.startswith("0.5.")

    (image,) = d.inputs
    batch, channel, y, x = image.axes
    assert isinstance(batch, v0_5.BatchAxis) and batch.size is None  # free batch
    assert isinstance(channel, v0_5.ChannelAxis) and len(channel.channel_names) == 1
    for axis, name in ((y, "y"), (x, "x")):
        assert str(axis.id) == name and isinstance(axis.size, v0_5.ParameterizedSize)
        assert axis.size.min == card.size_multiple and axis.size.step == card.size_multiple
    ops = [p.id for p in image.preprocessing]
    assert ops == ["ensure_dtype", "scale_range", "clip", "ensure_dtype"], ops
    scale = image.preprocessing[1].kwargs
    assert (scale.min_percentile, scale.max_percentile) == (card.normalization.low, card.normalization.high)
    assert [str(a) for a in scale.axes] == ["y", "x"]  # per image, not over the batch
    clip = image.preprocessing[2].kwargs
    assert (clip.min, clip.max) == (0.0, 1.0)

    (prob,) = d.outputs
    for axis, name in zip(prob.axes[2:], ("y", "x"), strict=True):
        assert isinstance(axis.size, v0_5.SizeReference)
        assert (str(axis.size.tensor_id), str(axis.size.axis_id)) == (str(image.id), name)
    # the network ends in a sigmoid: no sigmoid (nor binarize) after it
    assert [p.id for p in prob.postprocessing] == ["ensure_dtype"]
    assert d.config.model_extra["unsupseg"]["model_card"]["threshold"] == card.threshold

    proto = onnx.load_from_string(_member(package, "weights.onnx"))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert d.weights.onnx is not None and d.weights.onnx.opset_version == opset >= 18
    assert {p.key: p.value for p in proto.metadata_props}["unsupseg.checkpoint_sha256"].strip('"') == (
        card.checkpoint_sha256
    )

    # test tensors: produced by seginfer's own pipeline on the exported model
    test_in = np.load(io.BytesIO(_member(package, "test_input.npy")))
    test_out = np.load(io.BytesIO(_member(package, "test_output.npy")))
    assert test_in.shape == test_out.shape and test_in.shape[:2] == (1, 1)
    assert test_in.max() > 2.0  # raw intensities: only the pre-processing maps them to [0, 1]
    seg = Segmenter(_onnx_of(package, tmp_path), device="cpu", threads=1, foreground="model")
    np.testing.assert_allclose(seg.predict(test_in[0, 0])[1], test_out[0, 0], rtol=RTOL, atol=ATOL)

    readme = _member(package, "README.md").decode()
    for text in ("without labels", "Chan-Vese", "## Validation", "polarity", "cannot be expressed", "doi:"):
        assert text in readme, text
    assert f"{card.test_iou:.1f}%" in readme
    assert any(c.doi is not None for c in d.cite)

    from PIL import Image

    (cover,) = d.covers
    with Image.open(io.BytesIO(_member(package, str(cover.source)))) as im:
        assert im.format == "PNG" and im.size[0] == 2 * im.size[1]


@pytest.mark.slow
def test_default_model_package_is_under_1_mb(packages):
    """The default network (a width-8 unet, as the packaged model) packages in under 1 MB."""
    from unsupseg.train.config import TrainConfig

    _, package, report = packages("default-unet")
    default = TrainConfig()
    assert (report.card.arch, report.card.width) == (default.arch, default.width)
    size = package.stat().st_size
    print(f"package of the default network: {size / 1e6:.2f} MB")
    assert size == report.size_bytes < 1_000_000


@pytest.mark.slow
def test_bioimageio_command_passes_offline(packages):
    """`bioimageio test PACKAGE`, the command the README gives, in a fresh process without network."""
    _, package, _ = packages("default-unet")
    guard = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n"
        "    sys.stderr.write('NETWORK ACCESS %r\\n' % (a[1:],)); raise OSError('offline')\n"
        "socket.socket.connect = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "sys.argv = ['bioimageio'] + sys.argv[1:]\n"
        "from bioimageio.core.__main__ import main\n"
        "main()\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", guard, "test", str(package), "--devices", '["CPUExecutionProvider"]'],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = r.stdout + r.stderr
    print(output[-3000:])
    assert r.returncode == 0, output[-3000:]
    assert "NETWORK ACCESS" not in output
    assert "Reproduce test outputs from test inputs (onnx)" in output


# ----------------------------------------------------------------------------- bad input
def _export(args):
    return CliRunner().invoke(segexport, [str(a) for a in args])


def _leftovers(folder, keep=()):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_not_a_checkpoint_leaves_nothing(tmp_path):
    p = tmp_path / "model.pt"
    p.write_text("hello")
    r = _export([p, tmp_path / "m.zip", "--bioimageio"])
    assert r.exit_code == 2 and "model.pt: not a readable unsupseg checkpoint" in r.output
    assert _leftovers(tmp_path, keep={"model.pt"}) == []


def test_foreign_torch_file_leaves_nothing(tmp_path):
    import torch

    p = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, p)
    r = _export([p, tmp_path / "m.zip", "--bioimageio"])
    assert r.exit_code == 2 and "other.pt: not an unsupseg checkpoint" in r.output
    assert _leftovers(tmp_path, keep={"other.pt"}) == []


@pytest.mark.parametrize(
    "args,message",
    [
        (["out.onnx", "--bioimageio"], "out.onnx: a bioimage.io package should end in .zip"),
        (["out.zip"], "out.zip: add --bioimageio to write a bioimage.io package"),
        (["out.zip", "--bioimageio", "--int8", "--calibration", "."], "--bioimageio packages the float32"),
        (["out.onnx", "--author", "Ada"], "--test-image and --author go with --bioimageio"),
    ],
    ids=["onnx-suffix", "zip-without-flag", "int8", "author-without-flag"],
)
def test_option_errors(tmp_path, tiny_checkpoint, args, message):
    ckpt = tiny_checkpoint("unet", 4)
    r = _export([ckpt, tmp_path / args[0], *args[1:]])
    assert r.exit_code == 2 and message in r.output, r.output
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_invalid_description_leaves_nothing(tmp_path, tiny_checkpoint):
    """bioimage.io author names may not contain '/': the spec's own validation says so, exit 2."""
    r = _export([tiny_checkpoint("unet", 4), tmp_path / "m.zip", "--bioimageio", "--author", "Ada/Lovelace"])
    assert r.exit_code == 2 and "m.zip: the bioimage.io description is not valid" in r.output, r.output
    assert _leftovers(tmp_path) == []


def test_missing_extra_names_the_fix(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioimageio.core", None)  # import fails as if not installed
    r = _export([tiny_checkpoint("unet", 4), tmp_path / "m.zip", "--bioimageio"])
    assert r.exit_code == 2 and "pip install 'unsupseg[bioimageio]'" in r.output, r.output
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path, tiny_checkpoint):
    ckpt = tiny_checkpoint("unet", 4)
    out = tmp_path / "m.zip"
    out.write_bytes(b"old")
    r = _export([ckpt, out, "--bioimageio"])
    assert r.exit_code == 2 and "m.zip: exists; pass --overwrite to replace it" in r.output
    assert out.read_bytes() == b"old"
    with offline():
        r = _export([ckpt, out, "--bioimageio", "--overwrite", "--author", "Ada Lovelace"])
    assert r.exit_code == 0, r.output
    assert zipfile.is_zipfile(out) and b"Ada Lovelace" in _member(out, "rdf.yaml")
    assert _leftovers(tmp_path) == ["m.zip"]  # no temporary folder or part file


def test_too_small_test_image_is_refused(tmp_path, tiny_checkpoint):
    import imageio.v3 as iio

    small = tmp_path / "small.png"
    iio.imwrite(small, np.zeros((4, 30), dtype=np.uint8))
    r = _export([tiny_checkpoint("unet", 4), tmp_path / "m.zip", "--bioimageio", "--test-image", small])
    assert r.exit_code == 2 and "small.png: 4x30 is smaller than the model's size multiple 8" in r.output
    assert _leftovers(tmp_path, keep={"small.png"}) == []


@pytest.mark.slow
def test_own_test_image_is_cropped_to_the_size_multiple(tmp_path, tiny_checkpoint):
    """--test-image: an odd-sized 8-bit image becomes the test input, centre-cropped to multiples of 8."""
    import imageio.v3 as iio
    from PIL import Image

    from unsupseg.core.data import generate

    x, _ = generate(1, 100, 150, sigma=(0.3, 0.3), seed=9, quantize=8)
    iio.imwrite(tmp_path / "cells.png", x[0])
    out = tmp_path / "m.zip"
    with offline():
        r = _export([tiny_checkpoint("unet", 4), out, "--bioimageio", "--test-image", tmp_path / "cells.png"])
    assert r.exit_code == 0, r.output
    test_in = np.load(io.BytesIO(_member(out, "test_input.npy")))
    assert test_in.shape == (1, 1, 96, 144) and test_in.dtype == np.float32
    np.testing.assert_array_equal(test_in[0, 0], x[0][2:98, 3:147])
    with Image.open(io.BytesIO(_member(out, "cover.png"))) as im:
        assert im.size[0] == 2 * im.size[1]


@pytest.mark.slow
def test_package_that_fails_its_test_is_not_written(tmp_path, tiny_checkpoint, monkeypatch):
    from types import SimpleNamespace

    import unsupseg.export.bioimageio.package as bio

    error = SimpleNamespace(msg="x")
    detail = SimpleNamespace(name="Reproduce test outputs", status="failed", errors=[error])
    failed = SimpleNamespace(status="failed", details=[detail], format=lambda: "failed")
    monkeypatch.setattr(bio, "run_bioimageio_test", lambda path: failed)
    out = tmp_path / "m.zip"
    r = _export([tiny_checkpoint("unet", 4), out, "--bioimageio"])
    assert r.exit_code == 2 and "bioimageio.core's test of the package did not pass" in r.output
    assert "Reproduce test outputs: x" in r.output
    assert _leftovers(tmp_path) == []


def test_one_onnxruntime_distribution():
    """The extra must not add plain onnxruntime beside onnxruntime-gpu: they share the module name."""
    installed = set()
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(name)
            installed.add(name)
    assert len(installed) == 1, installed


def test_help_shows_the_bioimageio_example():
    r = _export(["--help"])
    assert r.exit_code == 0 and "--bioimageio" in r.output
    assert "segexport runs/default/model.pt model.bioimageio.zip --bioimageio" in r.output


def test_adapted_model_with_a_log_curve_is_refused(tmp_path, tiny_checkpoint):
    """bioimage.io's pre-processing has no log curve: the export says so and writes nothing."""
    from unsupseg.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint("unet", 8))
    ckpt["card"]["normalization"]["log_k"] = 10.0
    save_checkpoint(ckpt, tmp_path / "adapted.pt")
    r = _export([tmp_path / "adapted.pt", tmp_path / "out.zip", "--bioimageio"])
    assert r.exit_code == 2 and "cannot express" in r.output and "segexport MODEL.pt MODEL.onnx" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted.pt"]
