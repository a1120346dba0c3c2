"""``seginfer --engine ray``: the same run, spread over a Ray cluster with Ray Data.

    items --ray.data.from_items--> map_batches(SegmentActor, concurrency=K actors)
          --> per-file result rows --> driver: Report --> summary.json

Each actor holds one ``Segmenter`` (one onnxruntime session; ``num_gpus=1`` per
actor on CUDA) and runs ``pipeline.run`` on its batch of files: it reads them,
segments, writes the masks atomically (temp file + rename) into the output
folder, which must be a shared file system path every node sees under the same
name, and returns one row per case and per failure. The driver joins the rows
into the same ``Report`` as the local engine, so outputs, ``summary.json``, exit
codes and ``--skip-existing`` resume are the same. Ray is imported only here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict

from unsupseg.core.errors import UnsupsegError
from unsupseg.infer.pipeline import Item, RunOptions
from unsupseg.infer.report import CaseResult, Report

INSTALL_HINT = 'pip install "unsupseg[ray]"'
MAX_FILES_PER_BATCH = 256  # files per actor call: small enough to balance, large enough to batch


class RayEngineError(UnsupsegError):
    """Ray is missing, or the cluster cannot run the job (no GPU for --device cuda...)."""


def require_ray():
    """Import ray (and ray.data) or raise RayEngineError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayEngineError(f"--engine ray needs Ray ({e}); install it with: {INSTALL_HINT}") from None
    return ray


class SegmentActor:
    """Ray Data UDF: one Segmenter per actor; a batch of files in, result rows out."""

    def __init__(self, segmenter_kwargs: dict, options: RunOptions, cwd: str):
        from unsupseg.infer.api import Segmenter
        from unsupseg.infer.report import MaskIndex

        try:  # relative --input/--output paths mean what they meant to the driver
            os.chdir(cwd)
        except OSError as e:
            raise RayEngineError(
                f"worker cannot enter the driver's folder {cwd} ({e}); pass absolute --input/--output "
                "paths on a file system all nodes share"
            ) from None
        self.segmenter = Segmenter(**segmenter_kwargs)
        self.options = options
        self.index = MaskIndex(options.masks) if options.masks is not None else None

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from unsupseg.infer import pipeline

        columns = zip(batch["src"], batch["rel"], batch["out_base"], strict=True)
        items = [Item(str(s), str(r), str(o)) for s, r, o in columns]
        report = pipeline.run(self.segmenter, items, self.options, Report(len(items)), mask_index=self.index)
        rows = [("case", c.input, json.dumps(asdict(c))) for c in report.cases]
        rows += [("failed", f["input"], f["error"]) for f in report.failed]
        kind, inputs, payload = zip(*rows, strict=True) if rows else ((), (), ())
        return {
            "kind": np.array(kind, dtype=object),
            "input": np.array(inputs, dtype=object),
            "payload": np.array(payload, dtype=object),
        }


def run(
    items: Sequence[Item],
    options: RunOptions,
    segmenter_kwargs: dict,
    report: Report,
    address: str | None = None,
    actors: int | None = None,
    on_done: Callable[[str, str | None], None] | None = None,
) -> Report:
    """Run ``items`` on Ray (``address`` None: a local Ray for this run); results land in ``report``.

    ``segmenter_kwargs`` builds each actor's Segmenter (``threads`` = CPUs per actor,
    default 1). ``actors``: size of the actor pool; None = one per GPU with
    ``device`` cuda, else cluster CPUs // threads. ``on_done(input, error_or_None)``
    is called once per input result (and once per failure).
    """
    ray = require_ray()
    on_done = on_done or (lambda src, err: None)
    if not items:
        return report
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # seginfer -vv shows Ray Data's log
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        kwargs = dict(segmenter_kwargs)
        threads = kwargs.get("threads") or 1
        kwargs["threads"] = threads
        device = str(kwargs.get("device", "auto"))
        gpus = ray.cluster_resources().get("GPU", 0)
        if device.startswith("cuda") and gpus < 1:
            raise RayEngineError(
                f"--device {device}: the Ray cluster has no GPU; use --device cpu or auto, "
                "or add GPU workers to the cluster"
            )
        use_gpu = device.startswith("cuda") or (device == "auto" and gpus >= 1)
        if use_gpu and device == "auto":
            kwargs["device"] = "cuda"
        cpus = ray.cluster_resources().get("CPU", 1)
        pool = actors or max(1, int(gpus) if use_gpu else int(cpus // threads))
        per_batch = max(1, min(MAX_FILES_PER_BATCH, math.ceil(len(items) / (4 * pool))))
        rows = [{"src": i.src, "rel": i.rel, "out_base": i.out_base} for i in items]
        ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(items) / per_batch))
        ds = ds.map_batches(
            SegmentActor,
            fn_constructor_kwargs={"segmenter_kwargs": kwargs, "options": options, "cwd": os.getcwd()},
            batch_size=per_batch,
            batch_format="numpy",
            concurrency=pool,
            num_cpus=0 if use_gpu else threads,
            num_gpus=1 if use_gpu else 0,
        )
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows = list(zip(batch["kind"], batch["input"], batch["payload"], strict=True))
                failed = {src for kind, src, _ in rows if kind == "failed"}
                for kind, src, payload in rows:
                    if kind == "case":
                        report.add(CaseResult(**json.loads(payload)))
                        if src not in failed:  # once per input, as in the local run
                            on_done(src, None)
                    else:
                        on_done(src, report.fail(src, str(payload)))
        except ray.exceptions.RayError as e:  # an actor could not start or died: the run stops
            raise RayEngineError(f"the Ray job failed: {e}") from None
    finally:
        if started:
            ray.shutdown()
    return report
