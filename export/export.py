"""Checkpoint -> one self-contained ONNX file, checked against torch before it is kept.

Follows timm/utils/onnx.py: the model in eval mode, named input and output, dynamic
axes, ``onnx.checker`` with ``full_check``, then a numeric comparison of onnxruntime
(CPU) against torch on the same inputs with stated tolerances. The exporter is
``torch.onnx.export(..., dynamo=True)``; height and width are exported as symbolic
multiples of 8, the batch as a free symbol, and the dims are named
``batch``/``height``/``width`` in the file. Weights are stored inside the one file.
The model card (normalisation, threshold, size multiple, polarity rule, IoU, source
checkpoint hash) goes into ``metadata_props``, so seginfer needs nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg import __version__
from unsupseg.core.atomic import temp_path_beside
from unsupseg.core.errors import OutputExistsError, UnsupsegError
from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard

OPSET = 18
RTOL = 1e-3
ATOL = 1e-5
# (batch, height, width) checked at export time: two batch sizes, square and non-square
VERIFY_SHAPES = ((1, 32, 32), (3, 64, 64), (1, 136, 200), (3, 136, 200))


class ExportError(UnsupsegError):
    """The export or its verification failed; nothing was written."""


@dataclass
class ExportReport:
    path: Path
    card: ModelCard
    max_abs_diff: float
    mask_agreement: float  # fraction of pixels whose thresholded value agrees
    size_bytes: int
    checks: list  # [(shape, kind, max_abs_diff)]


def _rename_dims(model_proto) -> None:
    """Give the symbolic dims of input and output the names batch/height/width."""
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for d, name in zip(dims, ("batch", None, "height", "width"), strict=False):
            if name is not None and not d.HasField("dim_value"):
                d.dim_param = name


def verification_inputs(shapes=VERIFY_SHAPES, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Uniform random and generated (normalised) images for every shape."""
    from unsupseg.core.data import generate
    from unsupseg.core.normalize import Normalization

    rng = np.random.default_rng(seed)
    norm = Normalization()
    out = []
    for b, h, w in shapes:
        out.append(("random", rng.random((b, 1, h, w), dtype=np.float32)))
        imgs, _ = generate(b, h, w, sigma=(0.1, 0.8), seed=seed + h * w + b)
        out.append(("generated", np.stack([norm(im) for im in imgs])[:, None].astype(np.float32)))
    return out


def compare(model, onnx_path: Path, inputs, threshold: float, rtol=RTOL, atol=ATOL):
    """Run torch and onnxruntime (CPU, seginfer's own session code) on the same inputs.

    Returns (max_abs_diff, fraction of pixels whose thresholded value agrees, per-input
    checks [(shape, kind, max_abs_diff, within_tolerance)], all within tolerance).
    """
    import torch

    from unsupseg.infer.model.session import OnnxSession

    sess = OnnxSession(onnx_path, device="cpu")
    worst, agree_n, total_n, ok, checks = 0.0, 0, 0, True, []
    for kind, x in inputs:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).cpu().numpy()
        got = sess.run(x)
        diff = float(np.max(np.abs(ref - got)))
        close = bool(np.allclose(got, ref, rtol=rtol, atol=atol))
        ok &= close
        worst = max(worst, diff)
        agree_n += int(np.count_nonzero((ref >= threshold) == (got >= threshold)))
        total_n += ref.size
        checks.append((x.shape, kind, diff, close))
    return worst, agree_n / total_n, checks, ok


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse a missing output folder, or an existing file without ``overwrite``."""
    if not path.parent.is_dir():
        raise ExportError(f"{path.parent}: output folder does not exist; create it first")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")


def set_metadata(proto, card: ModelCard) -> None:
    """Replace the file's ``metadata_props`` with the model card."""
    del proto.metadata_props[:]
    for k, v in card.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def to_onnx(model, card: ModelCard, opset: int = OPSET, source: str = "model"):
    """The network as a checked ONNX ModelProto: dynamic batch/height/width, the card in its metadata."""
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    h8 = torch.export.Dim("h8", min=1, max=8192)
    w8 = torch.export.Dim("w8", min=1, max=8192)
    example = torch.rand(2, 1, 64, 96)
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch, 2: 8 * h8, 3: 8 * w8},),
            optimize=True,
            verbose=False,
        )
    except Exception as e:
        raise ExportError(f"{source}: torch.onnx.export failed ({type(e).__name__}: {e})") from e
    proto = program.model_proto
    _rename_dims(proto)
    set_metadata(proto, card)
    proto.producer_name = "unsupseg"
    proto.producer_version = __version__
    proto.doc_string = (
        f"unsupseg {card.arch} width {card.width}: input '{INPUT_NAME}' (batch, 1, height, width) float32, "
        f"normalised per image; output '{OUTPUT_NAME}' probability map; height and width multiples of "
        f"{card.size_multiple}."
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(
    ckpt_path: str | os.PathLike,
    onnx_path: str | os.PathLike,
    overwrite: bool = False,
    opset: int = OPSET,
    verify: bool = True,
    log: Callable[[str], None] = print,
) -> ExportReport:
    """Export model.pt to a single .onnx file, verify it, write it atomically."""

    from unsupseg.train.checkpoint import load_model, sha256_file

    ckpt_path, onnx_path = Path(ckpt_path), Path(onnx_path)
    check_output(onnx_path, overwrite)
    model, card, _ = load_model(ckpt_path)
    card.checkpoint_sha256 = sha256_file(ckpt_path)
    return export_model(model, card, onnx_path, opset, verify, log, source=str(ckpt_path))


def export_model(
    model,
    card: ModelCard,
    onnx_path: str | os.PathLike,
    opset: int = OPSET,
    verify: bool = True,
    log: Callable[[str], None] = print,
    source: str = "model",
) -> ExportReport:
    """A network in memory (torch) to a single .onnx file, verified, written atomically."""
    import onnx

    onnx_path = Path(onnx_path)
    card.package_version = __version__
    proto = to_onnx(model, card, opset, source=source)
    tmp = temp_path_beside(onnx_path)
    try:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        worst, agreement, checks = 0.0, 1.0, []
        if verify:
            worst, agreement, checks = _verify(model, tmp, card, onnx_path, log)
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)
    size = onnx_path.stat().st_size
    log(f"wrote {onnx_path} ({size / 1e6:.2f} MB, opset {opset}, max abs diff {worst:.2e})")
    return ExportReport(onnx_path, card, worst, agreement, size, checks)


def with_card(source: str | os.PathLike, card: ModelCard, onnx_path: str | os.PathLike) -> None:
    """Copy an exported ONNX file with another model card in its metadata (the weights unchanged:
    the adaptation keeps the packaged network when a structure step writes the masks), atomically."""
    import onnx

    proto = onnx.load_model(os.fspath(source))
    card.package_version = __version__
    set_metadata(proto, card)
    tmp = temp_path_beside(Path(onnx_path))
    try:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)


def _verify(model, path: Path, card: ModelCard, target: Path, log) -> tuple[float, float, list]:
    """Compare the saved file with torch; log each check; ExportError when one is out of tolerance."""
    worst, agreement, checks, ok = compare(model, path, verification_inputs(), card.threshold)
    for shape, kind, diff, close in checks:
        log(
            f"  verify {kind:9s} {tuple(shape)}: max |torch - onnxruntime| = {diff:.2e}"
            f"{'' if close else '  FAILED'}"
        )
    if not ok:
        raise ExportError(
            f"{target}: onnxruntime differs from torch by up to {worst:.3e} "
            f"(tolerance rtol {RTOL}, atol {ATOL}); the file was not written"
        )
    return worst, agreement, checks
