"""``seginfer --engine ray``: the same run, spread over a Ray cluster with Ray Data.

    items --ray.data.from_items--> map_batches(SegmentActor, concurrency=K actors)
          --> per-file result rows --> driver: Report --> summary.json

Each actor holds one ``Segmenter`` (one onnxruntime session; ``num_gpus=1`` per
actor on CUDA) and runs the local engine on its batch of files: it reads them,
segments, writes the outputs atomically (temp file + rename) into the output
folder, which must be a shared file system path every node sees under the same
name, and returns one ``ItemResult`` per input. The driver hands them to the run
as the local engine does, so outputs, ``summary.json``, exit codes and
``--skip-existing`` resume are the same. Ray is imported only here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
from collections.abc import Sequence

from unsupseg.infer.engines.local import LocalEngine
from unsupseg.infer.errors import EngineChoiceError, EngineError
from unsupseg.infer.inputs import Item
from unsupseg.infer.items import ItemResult, ItemWork, OnResult
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig

INSTALL_HINT = 'pip install "unsupseg[ray]"'
MAX_FILES_PER_BATCH = 256  # files per actor call: small enough to balance, large enough to batch


def require_ray():
    """Import ray (and ray.data) or raise EngineChoiceError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise EngineChoiceError(f"--engine ray needs Ray ({e}); install it with: {INSTALL_HINT}") from None
    return ray


class SegmentActor:
    """Ray Data UDF: one Segmenter per actor; a batch of files in, one pickled ItemResult per input out."""

    def __init__(self, config: SegmenterConfig, work: ItemWork, cwd: str):
        try:  # relative --input/--output paths mean what they meant to the driver
            os.chdir(cwd)
        except OSError as e:
            raise EngineError(
                f"worker cannot enter the driver's folder {cwd} ({e}); pass absolute --input/--output "
                "paths on a file system all nodes share"
            ) from None
        self.engine = LocalEngine(segmenter=config.build())
        self.work = work

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        columns = zip(batch["src"], batch["rel"], batch["out_base"], strict=True)
        items = [Item(str(s), str(r), str(o)) for s, r, o in columns]
        results: list[ItemResult] = []
        self.engine.run(items, self.work, results.append)
        return {"result": np.array([pickle.dumps(r) for r in results], dtype=object)}


class RayEngine:
    """A pool of actors on a Ray cluster (``address`` None: a local Ray started for the run)."""

    name = "ray"
    summary = f"a Ray cluster ({INSTALL_HINT}; --output on a file system all nodes share)."
    options = {"ray_address": "address", "ray_actors": "actors"}  # command-line option -> argument
    chosen_by_options = False  # --ray-address and --ray-actors need --engine ray
    require = staticmethod(require_ray)  # Ray installed, or an EngineChoiceError saying how

    def __init__(self, address: str | None = None, actors: int | None = None):
        self.address = address
        self.actors = actors  # pool size; None = one per GPU with cuda, else cluster CPUs // threads
        self.config: SegmenterConfig | None = None

    def describe(self) -> dict:
        return {"name": self.name, "address": self.address, "actors": self.actors}

    def open(self, config: SegmenterConfig) -> Segmenter:
        """Check the model on the driver's CPU (the GPUs, if any, are on the workers)."""
        require_ray()
        self.config = config
        return config.build(device="cpu")

    def run(self, items: Sequence[Item], work: ItemWork, on_result: OnResult) -> None:
        ray = require_ray()
        if not items:
            return
        started = not ray.is_initialized()
        if started:
            ray.init(
                address=self.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
            )
        if not logging.getLogger().isEnabledFor(logging.DEBUG):  # seginfer -vv shows Ray Data's log
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        try:
            ds = self._dataset(ray, items, work)
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for payload in batch["result"]:
                        on_result(pickle.loads(payload))
            except ray.exceptions.RayError as e:  # an actor could not start or died: the run stops
                raise EngineError(f"the Ray job failed: {e}") from None
        finally:
            if started:
                ray.shutdown()

    def _dataset(self, ray, items: Sequence[Item], work: ItemWork):
        """The Ray Data pipeline: items -> map_batches(SegmentActor) over a pool of actors."""
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        config = self.config or SegmenterConfig()
        threads = config.threads or 1  # CPUs per actor
        kind = config.device.kind
        gpus = ray.cluster_resources().get("GPU", 0)
        if kind == "cuda" and gpus < 1:
            raise EngineError(
                f"--device {config.device}: the Ray cluster has no GPU; use --device cpu or auto, "
                "or add GPU workers to the cluster"
            )
        use_gpu = kind == "cuda" or (kind == "auto" and gpus >= 1)
        device = "cuda" if use_gpu and kind == "auto" else config.device
        actor_config = dataclasses.replace(config, threads=threads, device=device)
        cpus = ray.cluster_resources().get("CPU", 1)
        pool = self.actors or max(1, int(gpus) if use_gpu else int(cpus // threads))
        per_batch = max(1, min(MAX_FILES_PER_BATCH, math.ceil(len(items) / (4 * pool))))
        rows = [{"src": i.src, "rel": i.rel, "out_base": i.out_base} for i in items]
        ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(items) / per_batch))
        return ds.map_batches(
            SegmentActor,
            fn_constructor_kwargs={"config": actor_config, "work": work, "cwd": os.getcwd()},
            batch_size=per_batch,
            batch_format="numpy",
            concurrency=pool,
            num_cpus=0 if use_gpu else threads,
            num_gpus=1 if use_gpu else 0,
        )
