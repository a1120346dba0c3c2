"""The main process's side of one ``ProcessEngine`` run: hand out chunks, report results,
serve model batches, replace workers that die (through the pool, pool.py), stop them all
when the run must stop.

One thread, one loop: wait until a worker's pipe has a message or a worker process ended
(``multiprocessing.connection.wait`` on pipes and process sentinels), handle it, answer the
workers that asked for items. Memory stays flat: the items are taken from the plan as
chunks are handed out, and only the items in the workers' hands are kept (to retry them
when a worker dies); results go straight to ``on_result`` (the run spools them to disk).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from itertools import islice
from multiprocessing.connection import wait

from unsupseg.infer.engines.base import ctrl_c_deferred
from unsupseg.infer.engines.pool import GUARD_HINT, WorkerHandle, WorkerPool, why_ended
from unsupseg.infer.errors import EngineError
from unsupseg.infer.inputs import Item
from unsupseg.infer.items import ItemResult, ItemWork, OnResult
from unsupseg.infer.model.segmenter import Segmenter

log = logging.getLogger(__name__)


class Dispatch:
    """One run of a pool of workers. ``segmenter``: the main process's (its session runs the
    batches of a served model); ``served``: what the workers need to use that session (None:
    each worker has its own); ``stats``: the engine's figures for the manifest, updated here."""

    def __init__(
        self,
        pool: WorkerPool,
        segmenter: Segmenter,
        served: dict | None,
        stats: dict,
        work: ItemWork,
        on_result: OnResult,
        items: Iterable[Item],
    ):
        self.pool, self.segmenter, self.served, self.stats = pool, segmenter, served, stats
        self.work, self.on_result = work, on_result
        self.items = iter(items)
        self.left = len(items) if hasattr(items, "__len__") else None  # items not handed out yet
        self.retry: deque[Item] = deque()  # items of dead workers, each to be retried alone
        self.unreported: deque[ItemResult] = deque()  # results received but not reported (a stop)
        self.batch = segmenter.batch_size
        self.cpu0 = time.process_time()
        self.worker_cpu = 0.0  # CPU seconds of the workers that said done
        self.worker_sys = 0.0  # the part of it spent in the kernel (file system, pipes, page faults)
        self.worker_start = 0.0  # the part of it spent before "ready" (loading the model)
        self.dropping = False  # after a stop, once on_result raised again: the rest are dropped

    @property
    def live(self) -> list[WorkerHandle]:
        return [w for w in self.pool.workers if not w.done]

    def run(self) -> None:
        for w in self.pool.workers:
            w.tasks.send(("work", self.work, self.served))
        try:
            while self.live:
                self._step()
        except BaseException:
            self._stop()  # no new inputs; the workers' started writes finish and are reported
            raise
        finally:
            self.stats["cpu_s"] = {
                "main": round(time.process_time() - self.cpu0, 3),
                "workers": round(self.worker_cpu, 3),
                "workers_system": round(self.worker_sys, 3),
                "workers_start": round(self.worker_start, 3),
            }

    # -- the loop ----------------------------------------------------------------------------
    def _step(self) -> None:
        workers = self.live
        by_conn = {w.results: w for w in workers}
        by_sentinel = {w.process.sentinel: w for w in workers}
        ready = wait([*by_conn, *by_sentinel])
        for obj in ready:
            if obj in by_conn:
                with ctrl_c_deferred():  # results received reach the report whole (wait said: ready)
                    self._receive(by_conn[obj], self._report)
        for obj in ready:
            if obj in by_sentinel:
                self._ended(by_sentinel[obj])
        for w in self.live:
            self._answer(w)

    def _receive(self, w: WorkerHandle, report) -> bool:
        """Handle one message of worker ``w`` (results go to ``report``); False when its pipe is closed."""
        try:
            msg = w.results.recv()
        except (EOFError, OSError):
            return False  # it ended: its sentinel says how
        kind = msg[0]
        if kind == "results":
            for r in msg[1]:
                if w.held.pop(r.src, None) is not None and w.solo:
                    w.solo = False
            w.waiting = w.waiting or msg[2]
            report(msg[1])
        elif kind == "batch":
            self._serve(w, msg[1])
        elif kind == "ready":
            w.ready = True
            ready_s = round(time.perf_counter() - w.started, 3)
            self.stats["ready_s"] = max(ready_s, self.stats.get("ready_s", 0.0))
        elif kind == "done":
            w.done = True
            self.worker_cpu += msg[1]["cpu_s"]
            self.worker_sys += msg[1]["sys_s"]
            self.worker_start += msg[1]["start_cpu_s"]
        elif kind == "failed":
            raise EngineError(f"worker process {w.index} failed: {msg[1]}")
        return True

    def _report(self, results: list[ItemResult]) -> None:
        """``on_result`` for each; when it raises (the run stops), the rest wait for the stop."""
        self.unreported.extend(results)
        while self.unreported:
            self.on_result(self.unreported.popleft())

    def _serve(self, w: WorkerHandle, batch) -> None:
        """Run a worker's batch on the main process's session (the model is served) and reply."""
        try:
            out = self.segmenter.session.run(batch)
        except Exception as e:  # onnxruntime's error types: the worker fails that batch's images
            out = f"{type(e).__name__}: {e}"
        _send(w, ("prob", out))

    def _answer(self, w: WorkerHandle) -> None:
        """Answer a worker that asked for items: a retried item alone, the next chunk, or end.

        A worker holding a retried item gets nothing more until it is reported; a retried
        item goes only to a worker that holds nothing (so a second death names it). The
        worker finishes what it holds without more input, so holding back never stalls it.
        """
        if not w.waiting or w.ended or w.solo:
            return
        if self.retry:
            if w.held:
                return
            item = self.retry.popleft()
            w.held[item.src] = (item, True)
            w.solo, w.waiting = True, False
            _send(w, ("items", [(item.src, item.rel, item.out_base)]))
            return
        chunk = list(islice(self.items, chunk_size(self.left, len(self.pool), self.batch)))
        w.waiting = False
        if not chunk:
            w.ended = True
            _send(w, ("end",))
            return
        if self.left is not None:
            self.left -= len(chunk)
        w.held.update((item.src, (item, False)) for item in chunk)
        _send(w, ("items", [(i.src, i.rel, i.out_base) for i in chunk]))  # tuples pickle faster

    # -- a worker ended ------------------------------------------------------------------------
    def _ended(self, w: WorkerHandle) -> None:
        """A worker process ended: drain what it sent; if it died, retry or fail its items, replace it."""
        while not w.done and w.results.poll() and self._receive(w, self._report):
            pass
        w.process.join(timeout=5)
        if w.done:
            return
        why = why_ended(w.process.exitcode)
        if not w.ready:
            raise EngineError(
                f"worker process {w.index} {why} before its model was loaded (see the error above, if any); "
                + GUARD_HINT
            )
        stats = self.stats
        stats["worker_deaths"] += 1
        retry = [item for item, retried in w.held.values() if not retried]
        failed = [item for item, retried in w.held.values() if retried]
        log.warning(
            "worker process %d (pid %d) %s; %d input(s) in its hands are retried%s",
            w.index,
            w.process.pid,
            why,
            len(retry),
            f", {failed[0].src} failed" if failed else "",
        )
        stats["retried"] += len(retry)
        self.retry.extend(retry)
        w.held.clear()
        if stats["worker_deaths"] > self.pool.max_deaths:
            raise EngineError(
                f"worker processes died {stats['worker_deaths']} times (the last one {why}); "
                "the run stops. Try fewer --workers (memory) or --engine local"
            )
        new = self.pool.replace(w)
        new.tasks.send(("work", self.work, self.served))
        self._report([self._died(item, why) for item in failed])

    def _died(self, item: Item, why: str) -> ItemResult:
        error = EngineError(
            f"{item.src}: the worker process segmenting it died twice ({why}); "
            "the input may be too large for the memory, or crash its decoder"
        )
        return ItemResult(item.src, error=str(error))

    # -- stopping ------------------------------------------------------------------------------
    def _stop(self) -> None:
        """Tell every worker to stop, then report what they finished (each started write ends
        whole) and wait for them; a second Ctrl-C ends them at once."""
        for w in self.live:
            w.ended = True
            _send(w, ("stop",))
        report = self._report_after_stop
        report([])
        try:
            while self.live:
                workers = self.live
                by_conn = {w.results: w for w in workers}
                by_sentinel = {w.process.sentinel: w for w in workers}
                for obj in wait([*by_conn, *by_sentinel]):
                    if obj in by_conn:
                        self._receive(by_conn[obj], report)
                    elif by_sentinel[obj] in self.live:  # died while stopping: its inputs were not written
                        w = by_sentinel[obj]
                        w.done = True
                        w.process.join(timeout=5)
        except KeyboardInterrupt:
            self.pool.close()
        except EngineError as e:
            log.warning("%s", e)
            self.pool.close()

    def _report_after_stop(self, results: list[ItemResult]) -> None:
        """Report results after a stop; once ``on_result`` raises again, the rest are dropped."""
        self.unreported.extend(results)
        while self.unreported and not self.dropping:
            try:
                self.on_result(self.unreported.popleft())
            except BaseException as e:  # the run is already stopping with its first error
                log.debug("not reported after the stop: %s", e)
                self.dropping = True
        self.unreported.clear()


def _send(w: WorkerHandle, msg: tuple) -> None:
    """Send to a worker; one that died meanwhile is handled when its process's end is seen."""
    try:
        w.tasks.send(msg)
    except OSError:
        pass


def chunk_size(left: int | None, workers: int, batch: int) -> int:
    """Items per chunk: a quarter of a worker's share of what is left, within [batch, 4 * batch]."""
    if left is None:
        return 4 * batch
    return max(batch, min(4 * batch, left // (4 * max(1, workers))))
