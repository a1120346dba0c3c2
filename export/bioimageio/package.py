"""``export_bioimageio``: checkpoint -> tested bioimage.io model package (.zip), written atomically.

The steps, in a temporary folder beside the output: the verified ONNX file (``export_onnx``),
the test and sample tensors and the cover (tensors.py, cover.py), the README (readme.py), the
description (description.py) zipped by ``save_bioimageio_package``, then bioimageio.core's
test of the zip on the CPU; the zip is renamed into place only if that passes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg.core.errors import OutputExistsError
from unsupseg.core.modelcard import ModelCard
from unsupseg.export.bioimageio.cover import write_cover
from unsupseg.export.bioimageio.description import build_description
from unsupseg.export.bioimageio.readme import readme_text
from unsupseg.export.bioimageio.tensors import default_test_image, load_test_image, write_test_tensors
from unsupseg.export.export import OPSET, ExportError, ExportReport, export_onnx

EXTRA_HINT = "install the extra: pip install 'unsupseg[bioimageio]'"
ONNX_DEVICE = "CPUExecutionProvider"  # the package is tested where seginfer's parity is checked
FILE_NAMES = {  # the package's members besides rdf.yaml
    "onnx": "weights.onnx",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "sample_input": "sample_input.tif",
    "sample_output": "sample_output.tif",
    "cover": "cover.png",
    "readme": "README.md",
}


@dataclass
class PackageReport:
    path: Path
    card: ModelCard
    size_bytes: int
    onnx_max_abs_diff: float  # |torch - onnxruntime| at export (export_onnx's verification)
    test_status: str  # bioimageio.core's test: "passed" (or "skipped" with verify=False)
    format_version: str  # model description format written, e.g. "0.5.12"


@dataclass
class _Source:
    """What the package is made from, read before anything is written."""

    train: dict  # the checkpoint's train_config
    epochs: int | None
    n_parameters: int
    name: str  # the package's name
    image: np.ndarray  # the test image (H, W) float32


def export_bioimageio(
    ckpt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    overwrite: bool = False,
    opset: int = OPSET,
    verify: bool = True,
    test_image: str | os.PathLike | None = None,
    authors: tuple[str, ...] = ("unsupseg",),
    name: str | None = None,
    log: Callable[[str], None] = print,
) -> PackageReport:
    """Export model.pt as a bioimage.io model package (.zip), test it, write it atomically.

    Everything is built in a temporary folder beside ``out_path`` and the zip is renamed
    into place only after bioimageio.core's test passed (``verify``); on any error
    nothing is left behind.
    """
    out_path = _check_output(out_path, overwrite)
    _require_bioimageio()
    source = _read_source(ckpt_path, test_image, name)  # typed errors for files that are not ours
    work = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
    try:
        files = {k: work / v for k, v in FILE_NAMES.items()}
        onnx_report = _write_weights(ckpt_path, files["onnx"], opset, verify, log)
        card = onnx_report.card  # with package version and checkpoint hash
        opset = _onnx_opset(files["onnx"])
        norm, prob = write_test_tensors(files, source.image, card)
        write_cover(norm, prob, card, files["cover"])
        readme = readme_text(card, source.train, source.epochs, opset, source.name)
        files["readme"].write_text(readme, encoding="utf-8")
        zip_path = work / "package.zip"
        descr = _save_package(zip_path, out_path, card, source, files, opset, authors)
        status = _test_package(zip_path, out_path, descr.format_version, verify, log)
        os.replace(zip_path, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = out_path.stat().st_size
    log(f"wrote {out_path} ({size / 1e6:.2f} MB, bioimage.io model format {descr.format_version})")
    return PackageReport(out_path, card, size, onnx_report.max_abs_diff, status, descr.format_version)


def _check_output(out_path: str | os.PathLike, overwrite: bool) -> Path:
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise ExportError(f"{out_path.parent}: output folder does not exist; create it first")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path}: exists; pass --overwrite to replace it")
    return out_path


def _require_bioimageio():
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError as e:
        raise ExportError(f"a bioimage.io package needs bioimageio.core ({e}); {EXTRA_HINT}") from e


def _read_source(
    ckpt_path: str | os.PathLike, test_image: str | os.PathLike | None, name: str | None
) -> _Source:
    from unsupseg.train.checkpoint import load_model

    model, card, ckpt = load_model(ckpt_path)  # typed errors for files that are not ours
    if card.normalization.log_k > 0:
        raise ExportError(
            f"{ckpt_path}: its normalisation ends in the curve log(1 + {card.normalization.log_k:g} x), "
            "which the bioimage.io description's pre-processing cannot express (a model adapted with "
            "`segtrain --data DIR`); export it as ONNX (`segexport MODEL.pt MODEL.onnx`) for seginfer, "
            "or package a model trained with `--preset default`"
        )
    return _Source(
        train=dict(ckpt.get("train_config") or {}),
        epochs=ckpt.get("epoch"),
        n_parameters=sum(int(p.numel()) for p in model.parameters()),
        name=name or f"unsupseg {card.arch} width {card.width}",
        image=default_test_image() if test_image is None else load_test_image(test_image, card.size_multiple),
    )


def _write_weights(
    ckpt_path: str | os.PathLike, onnx_path: Path, opset: int, verify: bool, log: Callable[[str], None]
) -> ExportReport:
    """export_onnx with its checks; its own "wrote" line would name the temporary folder."""
    onnx_log = lambda m: None if m.startswith("wrote ") else log(m)  # noqa: E731
    return export_onnx(ckpt_path, onnx_path, opset=opset, verify=verify, log=onnx_log)


def _onnx_opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _save_package(
    zip_path: Path,
    out_path: Path,
    card: ModelCard,
    source: _Source,
    files: dict[str, Path],
    opset: int,
    authors: tuple[str, ...],
):
    """Build the description and zip it with its files; returns the ModelDescr."""
    from bioimageio.spec import save_bioimageio_package

    try:  # pydantic's ValidationError is a ValueError, and so is an invalid written package
        descr = build_description(
            card, source.train, source.epochs, files, opset, source.name, authors, source.n_parameters
        )
        save_bioimageio_package(descr, output_path=zip_path)
    except ValueError as e:
        raise ExportError(
            f"{out_path}: the bioimage.io description is not valid ({e}); nothing was written"
        ) from e
    return descr


def _test_package(
    zip_path: Path, out_path: Path, format_version: str, verify: bool, log: Callable[[str], None]
) -> str:
    """bioimageio.core's test of the zip ("skipped" without ``verify``); ExportError unless it passed."""
    if not verify:
        return "skipped"
    summary = run_bioimageio_test(zip_path)
    if summary.status != "passed":
        raise ExportError(
            f"{out_path}: bioimageio.core's test of the package did not pass ({summary.status}); "
            f"nothing was written:\n{_failures(summary)}"
        )
    log(f"  bioimageio.core test: {summary.status} (format {format_version}, test outputs reproduced)")
    return summary.status


def run_bioimageio_test(path: Path, devices: tuple[str, ...] | None = (ONNX_DEVICE,)):
    """Run bioimageio.core's test of a package: format validation, reproduction of the test
    outputs, inference at several parameterized sizes. Returns the ValidationSummary."""
    from bioimageio.core import test_description

    return test_description(path, devices=None if devices is None else list(devices))


def _failures(summary) -> str:
    lines = []
    for detail in summary.details:
        if detail.status != "passed":
            lines.append(f"{detail.name}: " + "; ".join(e.msg for e in detail.errors)[:600])
    return "\n".join(lines) or summary.format()
