"""The worker processes of ``--engine processes``, as the main process holds them: start them,
replace one that died, end them all.

Each worker is a process (``worker.py``'s ``worker_main``) with two pipes: tasks (main ->
worker) and results (worker -> main). ``WorkerHandle`` is the main process's view of one
worker: its pipes, the items in its hands and where it is in its run.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from unsupseg.infer.engines.worker import WorkerSpec, worker_main
from unsupseg.infer.inputs import Item

GUARD_HINT = (
    'a script that calls run_folder must do so under `if __name__ == "__main__":`, '
    "as Python's multiprocessing requires"
)


@dataclass(eq=False)
class WorkerHandle:
    """The main process's handle on one worker process."""

    index: int
    process: BaseProcess
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


class WorkerPool:
    """``n`` worker processes started with ``spec`` from the multiprocessing context ``ctx``.

    ``max_deaths``: worker deaths before the run stops (None: 2 + 2 per worker).
    """

    def __init__(self, ctx: BaseContext, spec: WorkerSpec, n: int, max_deaths: int | None = None):
        self.ctx, self.spec = ctx, spec
        self.max_deaths = max_deaths if max_deaths is not None else 2 + 2 * n
        self.workers: list[WorkerHandle] = [self._start(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.workers)

    def _start(self, index: int) -> WorkerHandle:
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
        return WorkerHandle(index, process, task_w, result_r, time.perf_counter())

    def replace(self, dead: WorkerHandle) -> WorkerHandle:
        """Start a worker in place of one that died."""
        dead.process.join(timeout=5)
        for conn in (dead.tasks, dead.results):
            conn.close()
        new = self._start(dead.index)
        self.workers[self.workers.index(dead)] = new
        return new

    def close(self) -> None:
        """Wait for the workers that said they are done; end the others (a run that never ran,
        or a second Ctrl-C). Idempotent."""
        for w in self.workers:
            if not w.done and w.process.is_alive():
                w.process.terminate()
        for w in self.workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            for conn in (w.tasks, w.results):
                conn.close()
        self.workers = []
