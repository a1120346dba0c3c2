"""``seginfer --adapt``: adapt the model to the input folder without labels, once, then segment
every input with it, in one command.

    plan the run (every check of a plain run; nothing is written before they pass)
      -> sample the inputs (infer/sample.py: 32 spread over the folder, 2 pages each, large
         pages cut to their central 1024 x 1024 window; unreadable and constant ones named)
      -> the packaged network's pace on 4 of them, which sets the adaptation's deadline
         (``deadline``)
      -> the structure step, decided as plain seginfer decides it (infer/run.resolve_structure:
         a probe of 16 inputs, no torch)
      -> a step fits, or the deadline leaves too little to load torch and train: the packaged
         network with the step in its card (export/adapt.keep_network, no torch); else the
         network is fine-tuned within the deadline (export/adapt.adapt_pages, torch)
         -> OUT/adapted.onnx, loadable with --model
      -> the median quality score (infer/quality.py) of 8 of the sample's pages with the adapted
         model and, when the network was trained, with the packaged one (else the same masks);
         the adaptation's seconds count all of this
      -> the run, with that model, its record in seginfer.json and report.html

This is the command line's layer: it joins the torch-free run (infer) and the adaptation
(export, which needs torch) and is the one place in ``infer`` that imports ``export``, inside
the function that runs only with ``--adapt``. Plain ``seginfer`` never loads torch.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from unsupseg.core.errors import DataError, OutputExistsError
from unsupseg.infer.quality import quality
from unsupseg.infer.run import RunOptions, plan_run, resolve_structure
from unsupseg.infer.sample import ADAPT_INPUTS, ADAPT_PAGES_PER_INPUT, sample_pages, spread

ADAPTED = "adapted.onnx"  # the adapted model's name in the output folder
INSTALL = 'pip install "unsupseg[train]"  (make install installs it)'
# the before/after quality medians are taken on this many of the sample's pages, spread over it: each
# page is segmented twice more (packaged, adapted), and a median of 8 pages moves little
QUALITY_PAGES = 8
# the adaptation takes at most this share of the run (issue 21: 25% of a 1,000-image run), and
# between these bounds: a folder of a few images still gets MIN_S (the structure step's decision
# and a little more); on 2 CPU cores the network is trained only when the deadline leaves at least
# train/adapt_run.py's MIN_TRAINING_S (folders of a few thousand 512x512 images, or a GPU)
SHARE = 0.25
PACE_PAGES = 4  # the run's pace is measured on this many of the sample's pages
# the network is fine-tuned only when the deadline leaves at least the seconds that importing torch and
# loading the model take (about 3-5 s on 2 cores) and train/adapt_run.py's MIN_TRAINING_S (not imported:
# that module needs torch; tests/test_adapt.py keeps the two equal)
TORCH_START_S, MIN_TRAINING_S = 5.0, 5.0
MIN_S, MAX_S = 10.0, 60.0


def check_adapt(params: dict) -> None:
    """Usage errors of --adapt, before anything runs: torch missing, --model, --shard."""
    missing = [m for m in ("torch", "onnx") if not _importable(m)]
    if missing:
        raise click.UsageError(
            f"--adapt trains the network and needs {' and '.join(missing)}, which are not installed: "
            f"{INSTALL}; or run seginfer without --adapt"
        )
    if params["model"] is not None:
        raise click.BadParameter(
            "--adapt starts from the packaged model; to adapt your own, run segtrain --data DIR "
            "--init-from MODEL.pt, then segexport, then seginfer --model",
            param_hint="--model",
        )
    if params["shard"] is not None:
        i, n = params["shard"]
        raise click.UsageError(
            "--adapt with --shard would adapt each shard to a different sample; adapt once, then "
            "shard: `seginfer --input IN --output OUT --adapt --adapt-only` (writes OUT/adapted.onnx), "
            f"then `seginfer --input IN --output OUT --model OUT/{ADAPTED} --shard {i}/{n}` in every job"
        )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def adapt_first(
    input_path: Path, output: Path, options: RunOptions, log, seconds: float | None = None
) -> tuple[RunOptions, dict]:
    """Adapt to a sample of the run's inputs and write OUT/adapted.onnx; returns the run's options
    with that model, and the adaptation's record. With --skip-existing an adapted.onnx already in
    OUT is used again (a resumed run keeps the model its masks came from); without --overwrite an
    existing one is refused. ``seconds`` (--adapt-seconds): the adaptation's time, all told;
    None: ``deadline``'s share of the run."""
    path = output / ADAPTED
    if path.exists() and options.skip_existing:
        log(f"using {path} again (--skip-existing: the masks already written came from it)")
        return _with_model(options, path), {"reused": str(path)}
    if path.exists() and not options.overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to adapt again and replace it")
    items, work = plan_run(input_path, output, options)  # every check of the run, nothing written
    started = time.perf_counter()
    sample = sample_pages(items, work.read, ADAPT_INPUTS, pages_per_input=ADAPT_PAGES_PER_INPUT)
    for skipped in sample.skipped:
        log(f"adapting without {skipped['input']}: {skipped['why']}")
    if not sample.pages:
        raise DataError("no usable image to adapt to (every one was unreadable or constant)")
    from unsupseg.export.adapt import adapt_pages, keep_network

    pages = [sample.pages[i] for i in spread(len(sample.pages), QUALITY_PAGES)]
    network = options.segmenter.build(structure="none")  # the packaged network alone
    page_s = _pace(network, pages[:PACE_PAGES])
    run_s = len(items) * page_s * len(sample.pages) / max(1, len(set(sample.sources)))
    budget = seconds if seconds is not None else deadline(run_s)
    why = "--adapt-seconds" if seconds is not None else f"segmenting {len(items)} input(s): ~{run_s:.0f} s"
    log(f"adapting within {budget:.0f} s ({why})")
    # the structure step, decided as plain seginfer decides it (a probe of the folder, no torch)
    _, found = resolve_structure(items, work, options.segmenter)
    structure = {"kind": found["kind"], "context": found["context"], "evidence": found.get("evidence") or {}}
    structure["evidence"].setdefault("asked" if found["from"] == "--structure" else "from", found["from"])
    left = budget - (time.perf_counter() - started)
    output.mkdir(parents=True, exist_ok=True)
    if structure["kind"] != "none" or left < TORCH_START_S + MIN_TRAINING_S:
        if structure["kind"] != "none":
            why = f"the {structure['kind']} step writes the masks from the image"
            votes = structure["evidence"].get("votes", found["from"])
            log(f"structure: {structure['kind']} ({votes}): {why}")
        else:
            why = (
                f"the adaptation's deadline ({budget:.0f} s) leaves {max(left, 0):.0f} s, under the "
                f"{TORCH_START_S + MIN_TRAINING_S:.0f} s that loading torch and training take at least: "
                "the network is not trained"
            )
            log(f"structure: none; {why}")
        spent = time.perf_counter() - started
        n_pages = len(sample.pages)
        adaptation = keep_network(network.card, structure, path, n_pages, sample.skipped, why, spent, log)
    else:  # no step fits and there is time: the network is fine-tuned (torch)
        adaptation = adapt_pages(
            sample.pages,
            path,
            sample.sources,
            sample.skipped,
            device=str(options.segmenter.device),
            threads=options.segmenter.threads or 0,
            structure="none",
            log=log,
            deadline_s=left,
        )
    adapted = _with_model(options, path)
    record = {"path": str(path), **adaptation.record, "deadline_s": round(budget, 1)}
    after = _median_quality(items, work, adapted, pages)
    if adaptation.record["trained"]:  # the network path: no step fits, so plain seginfer's masks are the
        # packaged network's own
        packaged = replace(options, segmenter=replace(options.segmenter, structure="none"))
        before = _median_quality(items, work, packaged, pages)
    else:  # the packaged network and the step plain seginfer would decide on its own probe of the folder
        before = after
    record["quality"] = {"pages": len(pages), "median_before": before, "median_after": after}
    record["seconds"] = round(time.perf_counter() - started, 2)  # adapting, all told: sample, quality
    log(
        f"median quality score of the sample's masks: {record['quality']['median_before']:.2f} with the "
        f"packaged model, {record['quality']['median_after']:.2f} adapted"
    )
    return adapted, record


def deadline(run_s: float) -> float:
    """The adaptation's seconds for a run whose segmentation takes about ``run_s``: at most
    ``SHARE`` of the whole (adapting and segmenting), within [MIN_S, MAX_S]."""
    return float(min(MAX_S, max(MIN_S, run_s * SHARE / (1.0 - SHARE))))


def _median_quality(items, work, options: RunOptions, pages) -> float:
    """The median quality score (infer/quality.py) of the masks ``options``' model writes for the
    sample's ``pages``, with the structure step a run of the folder with that model would use."""
    if not pages:
        return float("nan")
    config, _ = resolve_structure(items, work, options.segmenter)
    seg = config.build()
    return round(float(np.median([quality(page, seg.predict(page)[0]) for page in pages])), 4)


def _pace(seg, pages) -> float:
    """Seconds the network ``seg`` takes per page (its second and later pages: the first pays for
    the session's warm-up), without the structure step: a low estimate of the run's pace, so the
    deadline errs short."""
    if not pages:
        return 0.0
    seg.predict(pages[0])
    t0 = time.perf_counter()
    for page in pages[1:]:
        seg.predict(page)
    return (time.perf_counter() - t0) / max(1, len(pages) - 1)


def _with_model(options: RunOptions, path: Path) -> RunOptions:
    return replace(options, segmenter=replace(options.segmenter, model=str(path)))
