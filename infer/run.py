"""``run_folder``: segment a folder (or list, or file) of images the way ``seginfer`` does.

    inputs --gather, plan--> items --overwrite / resume rule--> run lock, stale files removed
           --> engine (read, segment, write) --> report and table rows (spooled to disk)
           --> summary.json, report.csv, objects.csv, manifest seginfer.json
           --> report.html (with ``html``, from those files)

Python users get the same files, overwrite and resume rules as the command:

    from unsupseg.infer import RunOptions, run_folder
    result = run_folder("images/", "masks/", RunOptions(masks="truth/", outputs=("prob",)))

The engine is the one passed, or the one an ``EngineChoice`` names; by default (``auto``)
``engines/registry.py`` picks it for the machine and the images (worker processes for many
small images: a script that calls ``run_folder`` must then do so under
``if __name__ == "__main__":``, as Python's multiprocessing requires).

A failed input fails alone; a failed output stops the run (``faults.py``): the run
raises ``RunStopped`` after writing the summary of what it did, when it can.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from unsupseg.core.atomic import write_text_atomic, writing_for
from unsupseg.core.errors import OutputError, OutputExistsError
from unsupseg.core.imageio import PILLOW_MAX_PIXELS
from unsupseg.infer.engines.base import Engine, describe_engine
from unsupseg.infer.engines.registry import EngineChoice, choose_engine
from unsupseg.infer.errors import InputError, RunStopped
from unsupseg.infer.faults import describe_fault, output_error
from unsupseg.infer.html.page import PageResult, build_report
from unsupseg.infer.inputs import Inputs, Plan, gather_inputs, plan_items
from unsupseg.infer.items import ItemResult, ItemWork
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig
from unsupseg.infer.report import Report, describe_error
from unsupseg.infer.runfiles import RunFiles
from unsupseg.infer.runlock import RunLock
from unsupseg.infer.sample import DEFAULT_SAMPLE, sample_pages

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
    outputs: tuple[str, ...] = ()  # extra per-image outputs by writer name: "prob", "labels", "rois"
    masks: str | os.PathLike | None = None  # ground-truth folder: report.csv and metrics
    overwrite: bool = False  # replace existing outputs
    skip_existing: bool = False  # keep inputs whose outputs exist, process the rest (resume)
    max_megapixels: float | None = PILLOW_MAX_PIXELS / 1e6  # larger pages are refused; None: no limit
    html: bool = False  # write report.html (and report_files/) at the end (html/page.py)
    adaptation: dict | None = None  # the record of the adaptation that made the model (seginfer --adapt)
    quality: bool = True  # score every mask without labels (quality.py; report.csv's quality column)


@dataclass
class RunResult:
    files: RunFiles  # where summary.json, report.csv and the manifest were written
    summary: dict  # summary.json without its per-case rows: counts, "failed", "mean"
    summary_text: str  # the summary in a few lines, as seginfer prints it
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
    engine: Engine | EngineChoice | None = None,
    progress: RunProgress | None = None,
    args: dict | None = None,
) -> RunResult:
    """Segment ``inputs`` into ``output``; returns the counts and where the run files are.

    Raises before anything is written: ``InputError`` (no images, output inside the
    input, conflicting options), ``OutputExistsError`` (outputs exist and neither
    ``overwrite`` nor ``skip_existing``), ``ModelFileError``/``DeviceError`` (model or
    device), ``ImageReadError`` (the masks folder), ``RunLockedError`` (a run of the same
    run files into ``output`` is on), ``EngineChoiceError`` (an engine's options that do
    not fit it). Per-input failures do not raise: they are in ``result.summary["failed"]``
    and summary.json. When the output fails (file system full
    or read-only, folder removed, permission denied) the run stops and raises
    ``RunStopped``: every mask on disk is complete, the summary so far is written when it
    can be, and ``skip_existing`` resumes. ``args``: the arguments to record in the
    manifest (default: the options).
    """
    options = options or RunOptions()
    progress = progress or _Silent()
    output = Path(output)
    items, work = plan_run(inputs, output, options)
    config, structure = resolve_structure(items, work, options.segmenter)
    engine = choose_engine(engine, items, config)
    segmenter = engine.open(config)
    work.set_structure(segmenter.structure, segmenter.cleanup)
    files = RunFiles(output, options.shard)
    try:
        return _run(items, work, engine, segmenter, files, options, progress, args, structure)
    finally:
        close = getattr(engine, "close", None)  # an engine with processes of its own ends them
        if close is not None:
            close()


def _run(
    items: Plan,
    work: ItemWork,
    engine: Engine,
    segmenter: Segmenter,
    files: RunFiles,
    options: RunOptions,
    progress: RunProgress,
    args: dict | None,
    structure: dict,
) -> RunResult:
    """The run once planned and its engine open: lock, manifest, segment, report."""
    output = files.folder
    lock = RunLock(files)
    try:
        lock.acquire()  # makes the folder; refuses a second run; removes stale files
    except OutputError as e:
        raise RunStopped(str(e), len(items), 0) from None
    # Run-level files carry the lock holder's tag and never re-create a removed output folder.
    with lock, writing_for(lock.owner, output):
        lock.clean = False  # until the run has ended well: else its record stays for the next run
        work.bind(output, lock.owner)
        progress.start(len(items), segmenter, engine)
        recorded = args if args is not None else _options_args(options)
        manifest = _manifest(recorded, segmenter, engine, len(items))
        manifest["structure"] = structure
        if options.adaptation is not None:
            manifest["adaptation"] = options.adaptation
        report = _start(files, manifest, len(items), work)
        with report:
            elapsed, stop = _segment(engine, items, work, report, progress)
            summary_written, unwritten = _write_report(report, files, options, stop)
            summary, text = report.summary(with_cases=False), report.summary_text()
        unwritten += _finish_manifest(files, manifest, report, elapsed, engine, summary["quality"])
        page = _html_page(files, unwritten) if options.html and stop is None and not unwritten else None
        lock.clean = stop is None and not unwritten  # else the next run removes what this one left
    if stop is not None and not isinstance(stop, OutputError):
        raise stop  # Ctrl-C or a bug: the summary of what was done is written, the error goes on
    if stop is not None or unwritten:
        raise RunStopped(
            str(stop) if stop is not None else unwritten[0],
            len(items),
            report.n_written,
            report.n_skipped,
            str(files.summary) if summary_written else None,
            tuple(unwritten),
        )
    return RunResult(files, summary, text, elapsed, segmenter, page)


def _start(files: RunFiles, manifest: dict, n_items: int, work: ItemWork) -> Report:
    """Write the manifest and open the report's spool; RunStopped when the output refuses."""
    try:
        write_text_atomic(files.manifest, _json(manifest))
        return Report(n_images=n_items, spool=files.spool(), tables=work.tables)
    except OSError as e:
        raise RunStopped(str(output_error(e, "write the run files", files.folder)), n_items, 0) from None
    except OutputError as e:
        raise RunStopped(str(e), n_items, 0) from None


def _html_page(files: RunFiles, unwritten: list[str]) -> PageResult | None:
    """report.html of a finished run, the page segreport --html makes from the same files."""
    try:
        return build_report(files.summary, [files.manifest], files.html)
    except (OSError, OutputError) as e:
        unwritten.append(f"{files.html.name} not written: {describe_fault(e, files.folder)}")
        return None


def _segment(
    engine: Engine, items: Plan, work: ItemWork, report: Report, progress
) -> tuple[float, BaseException | None]:
    """Run the engine into the report: (seconds, the error that stopped it or None).

    A fatal result (the output failed) raises OutputError here, in the driving thread,
    which stops every engine the same way: no new inputs, started writes finish (and an
    engine may still report those; they are recorded, later fatal results are not).
    """

    stop: list[OutputError] = []  # the first fatal result; later results are only recorded

    def on_result(result: ItemResult) -> None:
        if result.fatal:
            if not stop:
                stop.append(OutputError(result.error))
                raise stop[0]
            return
        if result.case is not None:
            report.add(result.case)  # OutputError when the spool's disk is full
        for table, rows in result.rows.items():
            report.add_rows(table, result.src, rows)
        if result.error is not None:
            report.fail(result.src, result.error)
        progress.item(result)

    start = time.perf_counter()
    try:
        engine.run(items, work, on_result)
    except BaseException as e:  # the output failed, Ctrl-C or a bug: the summary so far is written first
        return time.perf_counter() - start, e
    return time.perf_counter() - start, None


def _write_report(
    report: Report, files: RunFiles, options: RunOptions, stop: BaseException | None
) -> tuple[bool, list[str]]:
    """Write summary.json (and report.csv): (summary written?, the files not written, with why)."""
    if isinstance(stop, OutputError):
        report.stopped = str(stop)
        report.unspool()  # on a full disk, the spool's space is the summary's best chance
    elif isinstance(stop, KeyboardInterrupt):
        report.stopped = "interrupted (Ctrl-C)"
    elif stop is not None:
        report.stopped = describe_error(stop)
    csv = files.report  # always: its quality column is there with or without --masks
    unwritten = []
    for name in report.tables:  # per-run tables first: the summary is the mark of a finished run
        try:
            report.write_table(name, files.table(name))
        except (OSError, OutputError) as e:
            unwritten.append(f"{files.table(name).name} not written: {describe_fault(e, files.folder)}")
    for path, write in ((files.summary, report.write_summary), (csv, report.write_csv)):
        try:
            write(path)
        except (OSError, OutputError) as e:
            lost = path.name if path == csv else f"{path.name} and {csv.name}"
            return path == csv, [*unwritten, f"{lost} not written: {describe_fault(e, files.folder)}"]
    return True, unwritten


def _finish_manifest(
    files: RunFiles, manifest: dict, report: Report, elapsed: float, engine: Engine, quality: dict | None
) -> list[str]:
    """Complete the manifest with the run's figures (``quality``: summary.json's, whose "warning"
    says when the median score is low); returns why it could not be, if so."""
    manifest.update(
        engine=describe_engine(engine),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(elapsed, 3),
        images_per_second=round(report.n_written / elapsed, 2) if elapsed > 0 else None,
        n_written=report.n_written,
        n_failed=report.n_failed,
        quality=quality,
        **({"stopped": report.stopped} if report.stopped is not None else {}),
    )
    try:
        write_text_atomic(files.manifest, _json(manifest))
    except OSError as e:
        return [f"{files.manifest.name} not updated: {describe_fault(e, files.folder)}"]
    return []


def resolve_structure(items: Plan, work: ItemWork, config: SegmenterConfig) -> tuple[SegmenterConfig, dict]:
    """The run's structure step (core/structure/): the one asked (``--structure``) or the model
    card's, and for "auto" the one ``detect_structure`` finds on a sample of the inputs (the
    network's masks of up to ``DEFAULT_SAMPLE`` inputs spread over the folder). Returns the
    configuration with the step fixed, and its record for the manifest.

    The probe runs on the CPU of this process whatever ``device`` says: it is a measurement of at
    most ``DEFAULT_SAMPLE`` windows of at most 1024 x 1024 (seconds), and with ``--engine ray``
    this process (the driver) need not have the cluster's GPU. The run itself uses ``device``,
    and says so and stops when that device cannot run."""
    asked = config.structure
    probe = config.build(structure="none", device="cpu")  # the network alone: what detection measures
    wanted = asked or probe.card.structure
    if wanted != "auto":
        context = config.structure_context
        if context is None:  # the card's context belongs to the card's step
            context = probe.card.structure_context if wanted == probe.card.structure else {}
        return replace(config, structure=wanted, structure_context=context), {
            "kind": wanted,
            "from": "--structure" if asked else "model card",
            "context": context,
        }
    from unsupseg.core.structure.detect import detect_structure

    start = time.perf_counter()
    sample = sample_pages(items, work.read, DEFAULT_SAMPLE)
    probs = [probe.predict(page)[1] for page in sample.pages]
    found = detect_structure(sample.pages, probs)
    record = {
        "kind": found.structure.kind,
        "from": "auto: detected on a sample of the inputs",
        "context": found.structure.context,
        "evidence": found.evidence,
        "sample": sample.sources,
        "skipped": sample.skipped,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return replace(config, structure=found.structure.kind, structure_context=found.structure.context), record


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


def _manifest(args: dict, segmenter: Segmenter, engine: Engine, n_images: int) -> dict:
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
        "labeling": segmenter.labeling.describe(),  # how instance labels are made (--split's method)
        "provider": segmenter.provider,
        "device": segmenter.device,
        "cuda_not_used": segmenter.session.fallback_reason,
        "threads": segmenter.session.threads,
        "engine": describe_engine(engine),
        "n_images": n_images,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cwd": os.getcwd(),  # relative input paths in summary.json start here (segreport --html)
    }
