"""``seginfer --engine processes``: N worker processes, each with its own onnxruntime session.

    main: plan --chunks of items--> worker 1..N: read, normalise, segment, write (ItemWork)
          <--results, in chunks--  (report rows, table rows, errors; a few hundred bytes per input)

On the CPU every worker holds one onnxruntime session with a few intra-op threads
(``threads``, default 1) and does every per-item step for its share of the items, so
N workers use N cores with no interpreter lock between them; the main process only
plans, hands out chunks, reports results and shows progress. With CUDA (``served``),
the main process holds the one session of the GPU (I/O binding) and runs the batches
the workers send it; reading, normalising, padding, the foreground rule and writing
stay in the workers (worker.py).

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
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice

from unsupseg.infer.engines.base import OnResult
from unsupseg.infer.engines.worker import WorkerSpec, worker_main
from unsupseg.infer.inputs import Item
from unsupseg.infer.items import ItemWork
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig
from unsupseg.infer.model.session import usable_cores

log = logging.getLogger(__name__)

START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
GUARD_HINT = (
    'a script that calls run_folder must do so under `if __name__ == "__main__":`, '
    "as Python's multiprocessing requires"
)


@dataclass(eq=False)
class _Worker:
    """The main process's handle on one worker process."""

    index: int
    process: mp.process.BaseProcess
    tasks: object  # Connection: main -> worker
    results: object  # Connection: worker -> main
    started: float  # time.perf_counter() at start
    held: dict[str, tuple[Item, bool]] = field(default_factory=dict)  # src -> (item, retried) in its hands
    ready: bool = False  # its model is loaded
    waiting: bool = False  # asked for a chunk, not answered yet
    ended: bool = False  # told to end or stop
    done: bool = False  # said done (a clean end)
    solo: bool = False  # holds one retried input: nothing else until it is reported


def why_ended(exitcode: int | None) -> str:
    """A worker process's end in words."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        oom = " (the out-of-memory killer sends it)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{oom}"
    return f"exited with code {exitcode}"


class ProcessEngine:
    """N worker processes, each reading, segmenting and writing its share of the items."""

    name = "processes"

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
        self.pool: list[_Worker] = []
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
        self.ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            # with --device cpu no process looks for CUDA: its libraries would only cost memory
            cuda_check = config.device.kind != "cpu"
            preload = (
                "unsupseg.infer.engines.forkserver_preload" if cuda_check else "unsupseg.infer.engines.worker"
            )
            self.ctx.set_forkserver_preload(["__main__", preload])
        t0 = time.perf_counter()
        self.pool = [self._start(i) for i in range(n)]
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
            from unsupseg.infer.model.session import cuda_problem

            return cuda_problem(config.device.index) is None
        return config.device.kind == "cuda"

    def session_info(self) -> dict | None:
        """What a worker needs to present the main process's session as its own (RemoteSession)."""
        if not self.spec.served:
            return None
        s = self.segmenter.session
        names = ("card", "provider", "device", "threads", "path")
        return {name: getattr(s, name) for name in names}

    def run(self, items: Sequence[Item], work: ItemWork, on_result: OnResult) -> None:
        if not self.pool:
            raise RuntimeError("ProcessEngine.run before open(config)")
        from unsupseg.infer.engines.dispatch import Dispatch

        try:
            Dispatch(self, work, on_result, items).run()
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the workers that said they are done; end the others (a run that never ran,
        or a second Ctrl-C). Idempotent."""
        for w in self.pool:
            if not w.done and w.process.is_alive():
                w.process.terminate()
        for w in self.pool:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            for conn in (w.tasks, w.results):
                conn.close()
        self.pool = []

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

    # -- workers ---------------------------------------------------------------------------
    def _start(self, index: int) -> _Worker:
        task_r, task_w = self.ctx.Pipe(duplex=False)
        result_r, result_w = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(
            target=worker_main,
            args=(self.spec, index, task_r, result_w),
            name=f"seginfer-worker-{index}",
            daemon=True,
        )
        process.start()
        task_r.close()  # the worker's ends: closed here, so a dead worker reads as EOF
        result_w.close()
        return _Worker(index, process, task_w, result_r, time.perf_counter())

    def replace(self, dead: _Worker) -> _Worker:
        """Start a worker in place of one that died."""
        dead.process.join(timeout=5)
        for conn in (dead.tasks, dead.results):
            conn.close()
        new = self._start(dead.index)
        self.pool[self.pool.index(dead)] = new
        return new

    def limit(self) -> int:
        return self.max_restarts if self.max_restarts is not None else 2 + 2 * len(self.pool)


def chunk_size(left: int | None, workers: int, batch: int) -> int:
    """Items per chunk: a quarter of a worker's share of what is left, within [batch, 4 * batch]."""
    if left is None:
        return 4 * batch
    return max(batch, min(4 * batch, left // (4 * max(1, workers))))


def take(items, n: int) -> list:
    return list(islice(items, n))
