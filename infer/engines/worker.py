"""The worker side of ``ProcessEngine`` (processes.py): one process, one share of the items.

Each worker builds its own ``Segmenter`` (its own onnxruntime session with ``threads``
intra-op threads; none is inherited from the main process), then does every step of each
item of the chunks the main process hands it, with ``ItemWork`` (``run_items``, items.py):
keep (``--skip-existing``) or read, normalise, segment (pages of several items share
onnxruntime calls), write and evaluate, and sends the results back. The steps run one
after the other in one thread: the other workers are the overlap, and a worker without
reader and writer threads spends less CPU per image (no interpreter lock handed back and
forth). Messages, on two pipes:

    main -> worker   ("work", ItemWork, served)  once, after the run lock is taken (served: the
                                               main process's session, when it runs the model)
                     ("items", [(src, rel, out_base), ...])  one chunk (Items as tuples), on request
                     ("end",) | ("stop",)      no more items | stop now (fatal fault, Ctrl-C)
                     ("prob", array | str)     served model: a batch's output, or why it failed
    worker -> main   ("ready", pid) | ("failed", why)     after the model is loaded, or not
                     ("results", [ItemResult, ...], want)  results; want: send the next chunk
                     ("batch", array)          served model: run this batch
                     ("done", stats)           after its last result (its CPU seconds: all,
                                               in the kernel, before "ready"); then it exits

A worker asks for the next chunk as it starts one, so one chunk waits while one is
processed, and it always finishes a chunk without needing more input (the main process
may hold back an answer: see dispatch.py). A reader thread drains the main
process's pipe into queues, so the main process never blocks on a send. Ctrl-C is the
main process's to handle: workers ignore SIGINT and stop when told to, or when the
main process's pipe closes (it died).

With a served model (``--device cuda``: one session per GPU), the worker's Segmenter
runs batches through ``RemoteSession``, which sends them to the main process's session;
reading, normalising, padding, the foreground rule and writing stay in the workers.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np

from unsupseg.infer.inputs import Item
from unsupseg.infer.items import run_items
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (picklable)."""

    config: SegmenterConfig  # the run's segmenter settings
    threads: int  # onnxruntime intra-op threads of the worker's own session
    flush: int  # results sent back in groups of this many (and at the end of each chunk)
    served: bool = False  # the main process runs the model (GPU): no session of the worker's own


class _Stopped(BaseException):
    """Raised from a worker's result callback once the main process said stop (a BaseException,
    like KeyboardInterrupt, so no ``except Exception`` on the way swallows it)."""


class RemoteSession:
    """The model of the main process (one session per GPU), as a worker's Segmenter sees it:
    ``run`` sends the batch there and waits for its output."""

    def __init__(self, served: dict, send, replies: queue.SimpleQueue):
        self.card, self.provider, self.device = served["card"], served["provider"], served["device"]
        self.threads, self.fallback_reason, self.path = served["threads"], None, served["path"]
        self._send, self._replies = send, replies

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._send(("batch", np.ascontiguousarray(batch, dtype=np.float32)))
        _, out = self._replies.get()
        if isinstance(out, str):
            raise RuntimeError(out)
        return out


def worker_main(spec: WorkerSpec, index: int, tasks, results) -> None:
    """The body of worker process ``index``: ``tasks`` and ``results`` are its two pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process stops the workers
    worker = Worker(spec, tasks, results)
    try:
        worker.start()
    except (BrokenPipeError, EOFError, ConnectionError):
        return  # the main process is gone: nothing to report to
    except BaseException as e:
        why = "".join(traceback.format_exception_only(type(e), e)).strip()
        try:
            results.send(("failed", why))
        except OSError:
            pass
        raise SystemExit(1) from None


class Worker:
    """One worker process's side of a run: its model, its inbox, its chunks and their results."""

    def __init__(self, spec: WorkerSpec, tasks, results):
        self.spec, self.tasks, self.results = spec, tasks, results
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # work, items, end, stop
        self.replies: queue.SimpleQueue = queue.SimpleQueue()  # served model: batch outputs
        self.stopping = threading.Event()
        self.raised = False  # _Stopped raised once in the current chunk
        self.buffer: list = []  # results not sent yet

    def start(self) -> None:
        spec = self.spec
        seg = None if spec.served else spec.config.build(threads=spec.threads)  # loads the model
        start_cpu = time.process_time()  # start-up: unpickling the spec, loading the model
        self.results.send(("ready", os.getpid()))
        threading.Thread(target=self._receive, name="seginfer-inbox", daemon=True).start()
        msg = self._next()
        if msg[0] == "work":
            if spec.served:
                session = RemoteSession(msg[2], self.results.send, self.replies)
                seg = spec.config.build(threads=spec.threads, session=session)
            self._serve(seg, msg[1])
        times = os.times()
        stats = {"cpu_s": time.process_time(), "sys_s": times.system, "start_cpu_s": start_cpu}
        self.results.send(("done", stats))

    def _next(self) -> tuple:
        """The next message for this worker's main thread (a message that could not be read raises)."""
        msg = self.inbox.get()
        if msg[0] == "unreadable":
            raise RuntimeError(f"a message from the main process could not be read: {msg[1]}")
        return msg

    def _receive(self) -> None:
        """Drain the main process's pipe into the queues (the main process never blocks on a send)."""
        while True:
            try:
                msg = self.tasks.recv()
            except (EOFError, OSError):  # the main process is gone (or closed the pipe): stop
                self.stopping.set()
                self.inbox.put(("stop",))
                self.replies.put(("prob", "the main process is gone"))
                return
            except Exception as e:  # e.g. a writer class this process cannot import
                self.inbox.put(("unreadable", f"{type(e).__name__}: {e}"))
                continue
            if msg[0] == "prob":
                self.replies.put(msg)
                continue
            if msg[0] == "stop":
                self.stopping.set()
            self.inbox.put(msg)

    def _serve(self, seg: Segmenter, work) -> None:
        """Chunks until told to end or stop: ask for the next one, process this one, send its results."""
        self.results.send(("results", [], True))
        while not self.stopping.is_set():
            msg = self._next()
            if msg[0] != "items":
                return
            if not self.stopping.is_set():
                self.results.send(("results", [], True))  # the next chunk comes while this one runs
            self.raised = False
            try:
                run_items(seg, work, [Item(*t) for t in msg[1]], self._on_result)
            except _Stopped:
                pass
            self._flush()

    def _on_result(self, result) -> None:
        self.buffer.append(result)
        if self.stopping.is_set() and not self.raised:
            self.raised = True
            raise _Stopped  # no new step; the write that gave this result has finished
        if len(self.buffer) >= self.spec.flush:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.results.send(("results", self.buffer, False))
            self.buffer = []
