"""segexport --int8: static QDQ quantisation, metadata, agreement with fp32, bad calibration data."""

import numpy as np
import pytest
from click.testing import CliRunner

from unsupseg.core.data import generate, save_npz
from unsupseg.core.modelcard import ModelCard
from unsupseg.export.cli import main as segexport
from unsupseg.export.quantize import QUANTIZATION, export_int8
from unsupseg.train.config import make_config
from unsupseg.train.loop import run_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few-step trained default U-Net (width 8) and its training .npz."""
    d = tmp_path_factory.mktemp("quant")
    xtr, ytr = generate(64, seed=21)
    xte, yte = generate(32, seed=22)
    save_npz(d / "d.npz", {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
    cfg = make_config("default", data=str(d / "d.npz"), out=str(d / "run"), width=8, epochs=2, threads=1)
    run_training(cfg, log=lambda m: None, progress=False, plots=False)
    return d / "run" / "model.pt", d / "d.npz"


@pytest.fixture(scope="module")
def quantized(trained, tmp_path_factory):
    ckpt, npz = trained
    out = tmp_path_factory.mktemp("q") / "model-int8.onnx"
    report = export_int8(ckpt, out, npz, log=lambda m: None)
    fp32 = out.with_name("model.onnx")
    from unsupseg.export.export import export_onnx

    export_onnx(ckpt, fp32, log=lambda m: None)
    return out, fp32, report


@pytest.mark.slow
def test_int8_file_loads_with_quantization_metadata(quantized):
    import onnx

    from unsupseg.infer.model.session import OnnxSession

    out, _, report = quantized
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    card = ModelCard.from_metadata({p.key: p.value for p in proto.metadata_props})
    assert card.quantization == QUANTIZATION == report.card.quantization
    assert card.normalization.method == "percentile" and card.size_multiple == 8
    assert len(card.checkpoint_sha256) == 64
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    sess = OnnxSession(out, device="cpu", threads=1)
    assert sess.card.quantization == QUANTIZATION
    for shape in [(1, 1, 32, 32), (3, 1, 40, 56)]:
        p = sess.run(np.random.rand(*shape).astype(np.float32))
        assert p.shape == shape and np.isfinite(p).all()
    assert report.size_bytes < report.fp32_size_bytes
    assert not list(out.parent.glob(".*.part"))


@pytest.mark.slow
@pytest.mark.parametrize("size", [(32, 32), (64, 96)])
def test_int8_masks_agree_with_fp32(quantized, size):
    """Thresholded int8 and fp32 probabilities agree on >= 98% of the pixels of unseen generated images."""
    from unsupseg.core.normalize import Normalization
    from unsupseg.infer.model.session import OnnxSession

    out, fp32, report = quantized
    print(f"calibration: agreement {report.mask_agreement:.5f}, max |diff| {report.max_abs_diff:.3f}")
    assert report.mask_agreement >= 0.98
    x, _ = generate(16, *size, sigma=(0.05, 0.5), seed=99)
    norm = Normalization()
    batch = np.stack([norm(im) for im in x])[:, None]
    p32 = OnnxSession(fp32, device="cpu", threads=1).run(batch)
    p8 = OnnxSession(out, device="cpu", threads=1).run(batch)
    agree = float(np.mean((p32 >= 0.5) == (p8 >= 0.5)))
    print(f"{size}: int8 vs fp32 mask agreement {agree:.5f}, max |diff| {np.abs(p32 - p8).max():.3f}")
    assert agree >= 0.98


@pytest.mark.slow
def test_cli_int8_with_a_folder_of_images(trained, tmp_path):
    import imageio.v3 as iio

    ckpt, _ = trained
    (tmp_path / "cal").mkdir()
    x, _ = generate(6, 40, 56, sigma=(0.2, 0.5), seed=5, quantize=8)
    for i, im in enumerate(x):
        iio.imwrite(tmp_path / "cal" / f"{i}.png", im)
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(segexport, [str(ckpt), str(out), "--int8", "--calibration", str(tmp_path / "cal")])
    assert r.exit_code == 0, r.output
    assert out.is_file() and "calibrating on 6 image(s)" in r.output


def _int8(args):
    return CliRunner().invoke(segexport, [str(a) for a in args])


def test_int8_needs_calibration(trained, tmp_path):
    r = _int8([trained[0], tmp_path / "q.onnx", "--int8"])
    assert r.exit_code == 2 and "--int8 needs --calibration DATA" in r.output


def test_calibration_folder_without_images(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    r = _int8([trained[0], tmp_path / "q.onnx", "--int8", "--calibration", tmp_path / "empty"])
    assert r.exit_code == 2, r.output
    assert "no images (.png, .jpg, .bmp, .tif) found for calibration" in r.output
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.part"))


def test_calibration_file_of_the_wrong_kind(trained, tmp_path):
    bad = tmp_path / "images.csv"
    bad.write_text("1,2,3\n")
    r = _int8([trained[0], tmp_path / "q.onnx", "--int8", "--calibration", bad])
    assert r.exit_code == 2, r.output
    assert "calibration data must be a folder of images or an .npz with image_train" in r.output
    assert not list(tmp_path.glob("*.onnx"))


def test_calibration_npz_without_image_train(trained, tmp_path):
    bad = tmp_path / "other.npz"
    np.savez(bad, weights=np.zeros(3))
    r = _int8([trained[0], tmp_path / "q.onnx", "--int8", "--calibration", bad])
    assert r.exit_code == 2, r.output
    assert "calibration data unusable" in r.output and "image_train" in r.output


def test_corrupt_calibration_image(trained, tmp_path):
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "broken.png").write_bytes(b"\x89PNG not really")
    r = _int8([trained[0], tmp_path / "q.onnx", "--int8", "--calibration", tmp_path / "cal"])
    assert r.exit_code == 2, r.output
    assert "calibration image unusable" in r.output and "broken.png" in r.output


def test_existing_output_is_refused(trained, tmp_path):
    out = tmp_path / "q.onnx"
    out.write_bytes(b"old")
    r = _int8([trained[0], out, "--int8", "--calibration", trained[1]])
    assert r.exit_code == 2 and "q.onnx: exists; pass --overwrite to replace it" in r.output
    assert out.read_bytes() == b"old"
