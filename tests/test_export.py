"""segexport: torch/ONNX parity, dynamic axes, metadata and bad input."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard
from unsupseg.core.polarity import apply_polarity
from unsupseg.export.cli import main as segexport
from unsupseg.export.export import ATOL, RTOL, export_onnx, verification_inputs
from unsupseg.train.checkpoint import load_model


@pytest.fixture(scope="module", params=[("seed", 8), ("unet", 8)], ids=["seed", "default-unet"])
def exported(request, tiny_checkpoint, tmp_path_factory):
    arch, width = request.param
    ckpt = tiny_checkpoint(arch, width)
    onnx_path = tmp_path_factory.mktemp(f"export_{arch}") / "model.onnx"
    report = export_onnx(ckpt, onnx_path, log=lambda m: None)
    return ckpt, onnx_path, report


def _ort(path):
    from unsupseg.infer.model.session import OnnxSession

    return OnnxSession(path, device="cpu")


@pytest.mark.slow
def test_parity_torch_vs_onnxruntime(exported):
    ckpt, onnx_path, report = exported
    model, card, _ = load_model(ckpt)
    sess = _ort(onnx_path)
    worst, agree, total = 0.0, 0, 0
    for kind, x in verification_inputs(seed=7):
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(x)
        diff = float(np.abs(ref - got).max())
        print(f"{kind} {x.shape}: max abs diff {diff:.3e}")
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
        worst = max(worst, diff)
        agree += int(np.count_nonzero((ref >= card.threshold) == (got >= card.threshold)))
        total += ref.size
    print(f"max abs diff {worst:.3e}; mask agreement {agree / total:.6f}")
    assert agree / total >= 0.9999
    assert report.max_abs_diff <= ATOL + RTOL


@pytest.mark.slow
def test_file_has_symbolic_batch_height_width(exported):
    import onnx

    _, onnx_path, _ = exported
    proto = onnx.load(str(onnx_path))
    for vi in (proto.graph.input[0], proto.graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        assert dims == ["batch", 1, "height", "width"], dims
    sess = _ort(onnx_path)
    for shape in [(1, 1, 40, 56), (5, 1, 40, 56), (2, 1, 96, 24), (7, 1, 96, 24)]:
        assert sess.run(np.random.rand(*shape).astype(np.float32)).shape == shape


@pytest.mark.slow
def test_file_is_self_contained_with_metadata(exported):
    import onnx

    from unsupseg.train.checkpoint import sha256_file

    ckpt, onnx_path, report = exported
    assert not list(onnx_path.parent.glob("*.data"))  # no external weights
    assert not list(onnx_path.parent.glob(".*.part"))
    proto = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    card = ModelCard.from_metadata(meta)
    assert card.checkpoint_sha256 == sha256_file(ckpt)
    assert card.size_multiple == 8 and card.threshold == 0.5 and card.polarity == "auto"
    assert card.normalization.method == "percentile"
    assert card.package_version
    assert json.loads(meta["unsupseg.input_name"]) == INPUT_NAME
    assert json.loads(meta["unsupseg.output_name"]) == OUTPUT_NAME
    assert card.test_iou is not None and 0 <= card.test_iou <= 100
    assert report.size_bytes == onnx_path.stat().st_size
    assert proto.opset_import[0].version >= 18


@pytest.mark.slow
def test_seginfer_masks_match_torch_masks(exported, tmp_path):
    """seginfer's masks equal the torch model's masks (same normalisation, polarity rule)."""
    import imageio.v3 as iio

    from unsupseg.core.data import generate
    from unsupseg.core.normalize import Normalization
    from unsupseg.infer.cli.seginfer import main as seginfer

    ckpt, onnx_path, _ = exported
    model, card, _ = load_model(ckpt)
    x, _ = generate(6, 40, 64, sigma=(0.1, 0.4), seed=3, quantize=8)
    (tmp_path / "in").mkdir()
    for i, im in enumerate(x):
        iio.imwrite(tmp_path / "in" / f"{i}.png", im)
    r = CliRunner().invoke(
        seginfer,
        [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(onnx_path),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    norm = Normalization(**card.normalization.__dict__)
    total = agree = 0
    for i, im in enumerate(x):
        xn = norm(im.astype(np.float32))
        with torch.no_grad():
            u = model(torch.from_numpy(xn)[None, None])[0, 0].numpy()
        region = apply_polarity(xn, u, card.threshold, card.polarity)[0]  # the card's rule (auto)
        got = iio.imread(tmp_path / "out" / f"{i}.png") > 0
        agree += int(np.count_nonzero(got == region))
        total += region.size
    assert agree / total >= 0.9999, agree / total


# ----------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def good_ckpt(tiny_checkpoint):
    return tiny_checkpoint("unet", 4)


def _export(args):
    return CliRunner().invoke(segexport, [str(a) for a in args])


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "model.pt"
    p.write_text("hello")
    r = _export([p, tmp_path / "m.onnx"])
    assert r.exit_code == 2 and "model.pt: not a readable unsupseg checkpoint" in r.output
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob(".*part"))


def test_truncated_checkpoint(tmp_path, good_ckpt):
    p = tmp_path / "cut.pt"
    p.write_bytes(good_ckpt.read_bytes()[:2000])
    r = _export([p, tmp_path / "m.onnx"])
    assert r.exit_code == 2 and "cut.pt: not a readable unsupseg checkpoint" in r.output
    assert not list(tmp_path.glob("*.onnx"))


def test_foreign_torch_file(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, p)
    r = _export([p, tmp_path / "m.onnx"])
    assert r.exit_code == 2 and "other.pt: not an unsupseg checkpoint" in r.output


def test_unknown_architecture(tmp_path, good_ckpt):
    ckpt = torch.load(good_ckpt, weights_only=True)
    ckpt["model_config"]["arch"] = "transformer"
    p = tmp_path / "weird.pt"
    torch.save(ckpt, p)
    r = _export([p, tmp_path / "m.onnx"])
    assert r.exit_code == 2 and "weird.pt: unknown model in checkpoint" in r.output
    assert "transformer" in r.output


def test_missing_output_folder(tmp_path, good_ckpt):
    r = _export([good_ckpt, tmp_path / "nope" / "m.onnx"])
    assert r.exit_code == 2 and "output folder does not exist; create it first" in r.output


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path, good_ckpt):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    r = _export([good_ckpt, out])
    assert r.exit_code == 2 and "m.onnx: exists; pass --overwrite to replace it" in r.output
    assert out.read_bytes() == b"old"
    r = _export([good_ckpt, out, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() != b"old" and not list(tmp_path.glob(".*part"))


def test_help_has_an_example():
    r = _export(["--help"])
    assert r.exit_code == 0 and "Example:" in r.output
