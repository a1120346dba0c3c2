"""``seginfer --engine processes``: N worker processes, each with its own onnxruntime session.

    main: plan --chunks of items--> worker 1..N: read, normalise, segment, write (ItemWork)
          <--results, in chunks--  (report rows, table rows, errors; a few hundred bytes per input)

On the CPU every worker holds one onnxruntime session with a few intra-op threads
(``threads``, default 1) and does every per-item step for its share of the items, so
N workers use N cores with no interpreter lock between them; the main process only
plans, hands out chunks, reports results and shows progress. With CUDA (``served``),
the main process holds the one session of the GPU (I/O binding) and runs the batches
the workers send it; reading, normalising, padding, the foreground rule and writing
stay in the workers (worker.py). The workers are started and ended as a pool (pool.py); one
loop in the main process hands out their chunks and reports their results (dispatch.py).

Chunks: a worker asks for the next chunk as it starts one. Chunks shrink towards the
end of the run (a quarter of a worker's share of what is left, between one batch and
four), so the workers finish together.

Workers start in ``open`` (they load the model while the run takes its lock) with the
``forkserver`` start method where the platform has it, else ``spawn``: never ``fork``,
which would copy the main process's onnxruntime session and its threads' state. The
fork server is a fresh interpreter that imports the worker module once (and loads
onnxruntime's CUDA libraries when a device check will look for them: forkserver_preload.py);
each worker is forked from it.

A worker that dies (killed, out of memory, a crashing decoder) is reported on stderr and
replaced; the items it held go back to the queue, each to be retried alone in a worker
that holds nothing else, so an input that kills its worker twice fails by itself with
the reason, and no input is lost. A stop (a fatal result, Ctrl-C, an error) tells every
worker to stop: each lets its started writes finish and sends their results, which are
reported, then exits.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Sequence

from unsupseg.infer.engines.dispatch import Dispatch
from unsupseg.infer.engines.pool import WorkerPool
from unsupseg.infer.engines.worker import WorkerSpec
from unsupseg.infer.inputs import Item
from unsupseg.infer.items import ItemWork, OnResult
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig
from unsupseg.infer.model.session import cuda_problem, usable_cores

log = logging.getLogger(__name__)

START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class ProcessEngine:
    """N worker processes, each reading, segmenting and writing its share of the items."""

    name = "processes"
    summary = (
        "worker processes, each with its own session of --threads threads, reading, segmenting and "
        "writing its share (with --device cuda the main process runs the one GPU session and the "
        "workers feed it)."
    )
    options = {"workers": "workers"}  # command-line option -> argument of the constructor
    chosen_by_options = True  # with --engine auto, --workers means this engine

    def __init__(
        self,
        workers: int | None = None,
        serve: bool | None = None,
        start_method: str | None = None,
        max_restarts: int | None = None,
    ):
        self.workers = workers  # None: cores // threads (CPU); cores - 1 when the model is served
        self.serve = serve  # the main process runs the model; None: when it runs on a GPU
        self.start_method = start_method or START_METHOD
        self.max_restarts = max_restarts  # worker deaths before the run stops; None: 2 + 2 per worker
        self.pool: WorkerPool | None = None
        self.segmenter: Segmenter | None = None
        self.config: SegmenterConfig | None = None
        self.stats: dict = {}
        self.n_workers = 0

    # -- the Engine protocol -----------------------------------------------------------
    def open(self, config: SegmenterConfig) -> Segmenter:
        """Start the workers (they load their models meanwhile), then load the model here: its
        errors (bad file, unusable device) raise here, after the workers are ended."""
        threads = config.threads or 1
        served = self._serves(config)
        cores = usable_cores()
        self.n_workers = n = self.workers or (max(1, cores - 1) if served else max(1, cores // threads))
        self.spec = WorkerSpec(config=config, threads=threads, flush=config.batch_size, served=served)
        self.config = config
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            # with --device cpu no process looks for CUDA: its libraries would only cost memory
            cuda_check = config.device.kind != "cpu"
            preload = "forkserver_preload" if cuda_check else "worker"
            ctx.set_forkserver_preload(["__main__", f"unsupseg.infer.engines.{preload}"])
        t0 = time.perf_counter()
        self.pool = WorkerPool(ctx, self.spec, n, self.max_restarts)
        self.stats = {"start_s": round(time.perf_counter() - t0, 3), "worker_deaths": 0, "retried": 0}
        try:
            self.segmenter = seg = config.build(threads=threads)
        except BaseException:
            self.close()
            raise
        if served and not seg.device.startswith("cuda"):
            log.info("the model is served by the main process on %s (CUDA not used)", seg.device)
        return seg

    def _serves(self, config: SegmenterConfig) -> bool:
        """Whether the main process runs the model: with a GPU (``--device cuda``, or ``auto`` where
        CUDA works), unless told (``serve``)."""
        if self.serve is not None:
            return self.serve
        if config.device.kind == "auto":
            return cuda_problem(config.device.index) is None
        return config.device.kind == "cuda"

    def _served(self) -> dict | None:
        """What a worker needs to present the main process's session as its own (RemoteSession)."""
        if not self.spec.served:
            return None
        s = self.segmenter.session
        names = ("card", "provider", "device", "threads", "path")
        return {name: getattr(s, name) for name in names}

    def run(self, items: Sequence[Item], work: ItemWork, on_result: OnResult) -> None:
        if self.pool is None:
            raise RuntimeError("ProcessEngine.run before open(config)")
        try:
            Dispatch(self.pool, self.segmenter, self._served(), self.stats, work, on_result, items).run()
        finally:
            self.close()

    def close(self) -> None:
        """End the workers (those that said they are done are waited for). Idempotent."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def describe(self) -> dict:
        """The engine as the manifest records it."""
        spec = self.spec
        return {
            "name": self.name,
            "workers": self.n_workers,
            "threads_per_worker": None if spec.served else spec.threads,
            "model": "served by the main process" if spec.served else "one session per worker",
            "start_method": self.start_method,
            **self.stats,
        }
