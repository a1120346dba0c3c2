"""``run_folder``: segment a folder (or list, or file) of images the way ``seginfer`` does.

    inputs --gather, plan--> items --overwrite / resume rule--> engine (read, segment, write)
           --> report rows (spooled to disk) --> summary.json, report.csv, manifest seginfer.json
           --> report.html (with ``html``, from those files)

Python users get the same files, overwrite and resume rules as the command:

    from unsupseg.infer import RunOptions, run_folder
    result = run_folder("images/", "masks/", RunOptions(masks="truth/", outputs=("prob",)))
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from unsupseg.core.atomic import write_text_atomic
from unsupseg.core.errors import OutputExistsError
from unsupseg.infer.api import Segmenter, SegmenterConfig
from unsupseg.infer.engine import Engine, LocalEngine
from unsupseg.infer.inputs import InputError, Inputs, Plan, gather_inputs, plan_items
from unsupseg.infer.report import Report
from unsupseg.infer.report_html import PageResult, build_report
from unsupseg.infer.runfiles import RunFiles
from unsupseg.infer.work import ItemResult, ItemWork

# packages whose versions the manifest records
MANIFEST_PACKAGES = (
    "unsupseg",
    "onnxruntime-gpu",
    "onnxruntime",
    "numpy",
    "tifffile",
    "imageio",
    "pillow",
    "click",
)


@dataclass
class RunOptions:
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)  # model, device, tiles...
    recursive: bool = False  # include sub-folders of an input folder
    shard: tuple[int, int] | None = None  # (I, N): the I-th of N slices of the inputs
    fmt: str = "png"  # "png" or "tif" for single-page masks
    outputs: tuple[str, ...] = ()  # extra per-image outputs by writer name, e.g. ("prob",)
    masks: str | os.PathLike | None = None  # ground-truth folder: report.csv and metrics
    overwrite: bool = False  # replace existing outputs
    skip_existing: bool = False  # keep inputs whose outputs exist, process the rest (resume)
    html: bool = False  # write report.html (and report_files/) at the end (report_html.py)


@dataclass
class RunResult:
    files: RunFiles  # where summary.json, report.csv and the manifest were written
    summary: dict  # summary.json without its per-case rows: counts, "failed", "mean"
    table: str  # the short text table seginfer prints
    seconds: float  # wall time of the segmentation itself
    segmenter: Segmenter  # what ran (model card, provider, device)
    page: PageResult | None = None  # report.html with RunOptions.html

    @property
    def n_failed(self) -> int:
        return self.summary["n_failed"]


class RunProgress(Protocol):
    """Callbacks of a run, e.g. a progress bar (all called in the caller's thread)."""

    def start(self, n_items: int, segmenter: Segmenter, engine: Engine) -> None: ...

    def item(self, result: ItemResult) -> None: ...


class _Silent:
    def start(self, n_items, segmenter, engine) -> None:
        pass

    def item(self, result) -> None:
        pass


def run_folder(
    inputs: str | os.PathLike | Inputs,
    output: str | os.PathLike,
    options: RunOptions | None = None,
    engine: Engine | None = None,
    progress: RunProgress | None = None,
    args: dict | None = None,
) -> RunResult:
    """Segment ``inputs`` into ``output``; returns the counts and where the run files are.

    Raises before anything is written: ``InputError`` (no images, output inside the
    input, conflicting options), ``OutputExistsError`` (outputs exist and neither
    ``overwrite`` nor ``skip_existing``), ``ModelFileError``/``DeviceError`` (model or
    device), ``ImageReadError`` (the masks folder). Per-input failures do not raise:
    they are in ``result.report.failed`` and summary.json. ``args``: the arguments to
    record in the manifest (default: the options).
    """
    options = options or RunOptions()
    engine = engine or LocalEngine()
    progress = progress or _Silent()
    output = Path(output)
    items, work = plan_run(inputs, output, options)
    segmenter = engine.open(options.segmenter)
    progress.start(len(items), segmenter, engine)

    output.mkdir(parents=True, exist_ok=True)
    files = RunFiles(output, options.shard)
    manifest = _manifest(args if args is not None else _options_args(options), segmenter, len(items))
    write_text_atomic(files.manifest, _json(manifest))
    # per-case rows go to a hidden temporary file beside the summary (removed when the run
    # ends, however it ends): memory stays flat in the number of inputs
    with Report(n_images=len(items), spool=files.spool()) as report:

        def on_result(result: ItemResult) -> None:
            if result.case is not None:
                report.add(result.case)
            if result.error is not None:
                report.fail(result.src, result.error)
            progress.item(result)

        start = time.perf_counter()
        engine.run(items, work, on_result)
        elapsed = time.perf_counter() - start
        report.write(files.summary, files.report if options.masks is not None else None)
        summary, table = report.summary(with_cases=False), report.table()
    manifest.update(
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(elapsed, 3),
        images_per_second=round(report.n_written / elapsed, 2) if elapsed > 0 else None,
        n_written=report.n_written,
        n_failed=report.n_failed,
    )
    write_text_atomic(files.manifest, _json(manifest))
    page = None
    if options.html:  # from the files just written: the same page segreport --html makes
        page = build_report(files.summary, [files.manifest], files.html)
    return RunResult(files, summary, table, elapsed, segmenter, page)


def plan_run(inputs: str | os.PathLike | Inputs, output: Path, options: RunOptions) -> tuple[Plan, ItemWork]:
    """The run's items and their work, after every check that needs no model (cheap, nothing written)."""
    if options.overwrite and options.skip_existing:
        raise InputError("--overwrite and --skip-existing exclude each other; pick one")
    if not isinstance(inputs, Inputs):
        inputs = gather_inputs(inputs, options.recursive)
    items = plan_items(inputs, output, options.shard)
    work = ItemWork.from_options(options)
    if not options.overwrite and not options.skip_existing:
        check_overwrite(items, work)
    return items, work


def check_overwrite(items: Plan, work: ItemWork) -> None:
    """Raise OutputExistsError naming an existing output and the two ways forward."""
    found = (p for item in items for p in work.existing_outputs(item))
    first = next(found, None)
    if first is not None:
        more = sum(1 for _ in found)
        others = f" (and {more} more)" if more else ""
        raise OutputExistsError(
            f"{first} already exists{others}; pass --overwrite to replace existing masks "
            "or --skip-existing to keep them and process only the rest"
        )


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def _options_args(options: RunOptions) -> dict:
    args = asdict(options)
    args["segmenter"]["device"] = str(options.segmenter.device)  # asdict made it a dict
    return args


def _manifest(args: dict, segmenter: Segmenter, n_images: int) -> dict:
    import platform
    from importlib import metadata

    versions = {}
    for pkg in MANIFEST_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "command": sys.argv,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()},
        "model": {"path": str(segmenter.model_path), "card": segmenter.card.to_dict()},
        "threshold": segmenter.threshold,
        "foreground": segmenter.foreground,
        "provider": segmenter.provider,
        "device": segmenter.device,
        "cuda_not_used": segmenter.session.fallback_reason,
        "threads": segmenter.session.threads,
        "n_images": n_images,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cwd": os.getcwd(),  # relative input paths in summary.json start here (segreport --html)
    }
