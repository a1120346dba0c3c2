"""Checkpoint -> int8 ONNX file: static QDQ quantisation calibrated on real inputs.

The fp32 model is exported and verified with ``export_onnx`` first; then
``onnxruntime.quantization`` runs shape inference and graph clean-up
(``quant_pre_process``), feeds calibration images through the model to collect
activation ranges (MinMax), and writes QuantizeLinear/DequantizeLinear pairs
around every quantisable operator (QDQ format): activations unsigned 8-bit,
weights signed 8-bit per output channel (U8S8), the combination onnxruntime's CPU
kernels run fastest with VNNI. onnxruntime fuses each DQ -> Conv -> Q pattern
into an integer convolution when the session is made.

Calibration data is what the model will see: images normalised with the model
card's ``Normalization`` and reflect-padded to a multiple of 8 exactly as
``seginfer`` does. ``calibration`` is a folder of images (PNG, JPEG, BMP, TIFF) or
an .npz in the notebook format (``image_train`` is used). The int8 file keeps the
model card (``quantization`` set to ``"int8-qdq"``), passes ``onnx.checker``, is
loaded with seginfer's own session code, and its masks are compared with the fp32
model's on the calibration images before it is written (atomically).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg.core.atomic import temp_path_beside
from unsupseg.core.errors import UnsupsegError
from unsupseg.core.imageio import is_image_path, read_image
from unsupseg.core.modelcard import INPUT_NAME, ModelCard
from unsupseg.core.normalize import Normalization
from unsupseg.export.export import OPSET, ExportError, check_output, export_onnx, set_metadata
from unsupseg.train.checkpoint import load_model

QUANTIZATION = "int8-qdq"
MAX_CALIBRATION = 200  # images (pages) used for calibration; more adds time, not accuracy
CALIBRATION_BATCH = 16  # images of one shape per calibration call
MIN_AGREEMENT = 0.95  # int8 masks must agree with fp32 on this fraction of pixels, or nothing is written


class CalibrationError(ExportError):
    """The calibration data cannot be used; nothing was written."""


@dataclass
class QuantizeReport:
    path: Path
    card: ModelCard
    n_calibration: int  # calibration images (pages) used
    mask_agreement: float  # fraction of pixels whose int8 mask equals the fp32 mask (calibration images)
    max_abs_diff: float  # largest |p_int8 - p_fp32| on the calibration images
    size_bytes: int
    fp32_size_bytes: int


# ----------------------------------------------------------------------------- calibration data
def calibration_images(
    calibration: str | os.PathLike, norm: Normalization, multiple: int = 8, limit: int = MAX_CALIBRATION
) -> list[np.ndarray]:
    """Normalised, padded (H', W') float32 images from a folder of images or an .npz."""
    from unsupseg.core.padding import pad_to_multiple

    path = Path(calibration)
    if path.is_dir():
        files = sorted(
            (Path(d) / f for d, _, names in os.walk(path) for f in names if is_image_path(Path(f))),
            key=lambda p: p.as_posix(),
        )
        if not files:
            raise CalibrationError(
                f"{path}: no images (.png, .jpg, .bmp, .tif) found for calibration; pass a folder of "
                "training images or an .npz with image_train"
            )
        pages = []
        for f in files:
            try:
                pages.extend(read_image(f))
            except UnsupsegError as e:
                raise CalibrationError(f"calibration image unusable: {e}; remove it or fix it") from e
            if len(pages) >= limit:
                break
    elif path.is_file() and path.suffix.lower() == ".npz":
        from unsupseg.core.data import load_npz

        try:
            pages = list(load_npz(path)["image_train"][:limit])
        except UnsupsegError as e:
            raise CalibrationError(f"calibration data unusable: {e}") from e
    elif path.exists():
        raise CalibrationError(
            f"{path}: calibration data must be a folder of images or an .npz with image_train "
            f"(got a {path.suffix or 'suffix-less'} file)"
        )
    else:
        raise CalibrationError(f"{path}: no such calibration folder or .npz")
    return [pad_to_multiple(norm(np.asarray(p, dtype=np.float32)), multiple) for p in pages[:limit]]


def _batches(images: list[np.ndarray], size: int = CALIBRATION_BATCH) -> Iterator[np.ndarray]:
    """(B, 1, H, W) float32 batches of images that share a shape, in first-seen order."""
    by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
    for im in images:
        by_shape.setdefault(im.shape, []).append(im)
    for group in by_shape.values():
        for k in range(0, len(group), size):
            yield np.stack(group[k : k + size])[:, None].astype(np.float32)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over the calibration batches."""

    def __init__(self, images: list[np.ndarray]):
        self.images = images
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._it = _batches(self.images)


# ----------------------------------------------------------------------------- export
def _compare(fp32_path: Path, int8_path: Path, images: list[np.ndarray], threshold: float):
    """(mask agreement, max |p_int8 - p_fp32|) over the images, with seginfer's session code."""
    from unsupseg.infer.model.session import OnnxSession

    ref_sess, q_sess = OnnxSession(fp32_path, device="cpu"), OnnxSession(int8_path, device="cpu")
    agree = total = 0
    worst = 0.0
    for batch in _batches(images):
        ref, got = ref_sess.run(batch), q_sess.run(batch)
        agree += int(np.count_nonzero((ref >= threshold) == (got >= threshold)))
        total += ref.size
        worst = max(worst, float(np.max(np.abs(ref - got))))
    return agree / total, worst


def export_int8(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    calibration: str | os.PathLike,
    overwrite: bool = False,
    opset: int = OPSET,
    log: Callable[[str], None] = print,
    limit: int = MAX_CALIBRATION,
) -> QuantizeReport:
    """Export ``checkpoint`` to an int8 (static QDQ) ONNX file, calibrated on ``calibration``."""
    import onnx

    output = Path(output)
    check_output(output, overwrite)
    # Calibration data first: a bad folder or file fails in a second, before the export runs.
    _, ckpt_card, _ = load_model(checkpoint)
    images = calibration_images(calibration, ckpt_card.normalization, ckpt_card.size_multiple, limit)

    with tempfile.TemporaryDirectory(prefix="unsupseg-int8-") as tmpdir:
        fp32_path, q_path = Path(tmpdir) / "fp32.onnx", Path(tmpdir) / "int8.onnx"
        fp32 = export_onnx(checkpoint, fp32_path, opset=opset, log=log)
        card = fp32.card
        log(f"  calibrating on {len(images)} image(s) from {calibration}")
        _quantize(fp32_path, q_path, images, str(checkpoint), log)

        proto = onnx.load(str(q_path))
        card.quantization = QUANTIZATION
        set_metadata(proto, card)
        proto.doc_string = onnx.load(str(fp32_path), load_external_data=False).doc_string + (
            " Weights int8 per channel, activations uint8 (static QDQ)."
        )
        onnx.checker.check_model(proto, full_check=True)
        agreement, worst = _save_if_close(proto, output, fp32_path, images, card.threshold, log)
    size = output.stat().st_size
    log(
        f"wrote {output} ({size / 1e6:.2f} MB int8 QDQ, fp32 {fp32.size_bytes / 1e6:.2f} MB, "
        f"{len(images)} calibration images)"
    )
    return QuantizeReport(output, card, len(images), agreement, worst, size, fp32.size_bytes)


def _quantize(fp32_path: Path, q_path: Path, images: list, source: str, log) -> None:
    """onnxruntime's static QDQ quantisation (int8 weights per channel, uint8 activations)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre_path = fp32_path.with_name("pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
    except Exception as e:  # onnxruntime's pre-processing is optional: quantise the plain export
        log(f"  quant_pre_process skipped ({type(e).__name__}: {e})")
        pre_path = fp32_path
    try:
        quantize_static(
            str(pre_path),
            str(q_path),
            _Reader(images),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    except Exception as e:
        raise ExportError(f"{source}: int8 quantisation failed ({type(e).__name__}: {e})") from e


def _save_if_close(
    proto, output: Path, fp32_path: Path, images, threshold: float, log
) -> tuple[float, float]:
    """Save the int8 file only when its masks agree with fp32's; returns (agreement, max |dp|)."""
    import onnx

    tmp_out = temp_path_beside(output)
    try:
        onnx.save_model(proto, str(tmp_out), save_as_external_data=False)
        agreement, worst = _compare(fp32_path, tmp_out, images, threshold)
        log(
            f"  int8 vs fp32 on the calibration images: masks agree on {100 * agreement:.3f}% of "
            f"pixels, max |p_int8 - p_fp32| = {worst:.3f}"
        )
        if agreement < MIN_AGREEMENT:
            raise ExportError(
                f"{output}: int8 masks agree with fp32 on only {100 * agreement:.2f}% of pixels "
                f"(need {100 * MIN_AGREEMENT:.0f}%); use the fp32 export or calibrate on images "
                "like the ones you will segment. The file was not written"
            )
        os.replace(tmp_out, output)
    finally:
        tmp_out.unlink(missing_ok=True)
    return agreement, worst
