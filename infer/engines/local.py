"""``seginfer --engine local``: one process, one onnxruntime session, reader and writer threads.

Every per-item step is ``ItemWork``'s (items.py); this engine decides which thread runs
each, and in what order. The protocol it implements is base.py's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from unsupseg.infer.engines.base import ctrl_c_deferred
from unsupseg.infer.inputs import Item
from unsupseg.infer.items import ItemResult, ItemWork, OnResult
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig
from unsupseg.infer.writers import Segmentation


class LocalEngine:
    """One onnxruntime session here, with threads reading and writing around it.

    A small thread pool reads and normalises the next few images while onnxruntime
    runs the current batch, and writes outputs while the next batch runs; files go to
    the threads a chunk (a batch's worth) at a time, so the threads and the inference
    loop hand over the GIL once per chunk, not once per file. Both queues are bounded
    (``depth`` images), so memory stays flat however many files there are.
    """

    name = "local"
    summary = "one process, one onnxruntime session, reader and writer threads."
    options: dict[str, str] = {}  # command-line option -> argument of the constructor
    chosen_by_options = False

    def __init__(
        self, io_threads: int = 4, depth: int = 0, chunk: int = 0, segmenter: Segmenter | None = None
    ):
        self.io_threads = io_threads  # reader/writer threads
        self.depth = depth  # images read ahead / waiting / being written; 0 = max(8, 2 * batch size)
        self.chunk = chunk  # files per reader/writer task; 0 = the batch size
        self.segmenter = segmenter

    def open(self, config: SegmenterConfig) -> Segmenter:
        self.segmenter = config.build()
        return self.segmenter

    def describe(self) -> dict:
        threads = self.segmenter.session.threads if self.segmenter is not None else None
        return {"name": self.name, "processes": 1, "threads": threads, "io_threads": self.io_threads}

    def run(self, items: Iterable[Item], work: ItemWork, on_result: OnResult) -> None:
        if self.segmenter is None:
            raise RuntimeError("LocalEngine.run before open(): pass a segmenter or call open(config)")
        depth = self.depth or max(8, 2 * self.segmenter.batch_size)
        chunk = max(1, min(self.chunk or self.segmenter.batch_size, depth))
        with ThreadPoolExecutor(max_workers=self.io_threads, thread_name_prefix="seginfer-io") as pool:
            run = _LocalRun(self.segmenter, work, on_result, pool, depth, chunk)
            try:
                run.run(items)
            except BaseException:
                # a stop or Ctrl-C: cancel what has not started, let started writes finish their
                # rename, and report the ones that finished (their files are on disk)
                pool.shutdown(wait=True, cancel_futures=True)
                run.report_finished()
                raise


def _each(fn: Callable, args: list) -> list:
    """``[fn(*a) for a in args]``, with an input's exception in its place (one task, many files)."""
    out = []
    for a in args:
        try:
            out.append(fn(*a))
        except Exception as e:
            out.append(e)
    return out


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Read:
    """An item in flight with its pages as read (kept only when a writer needs them)."""

    __slots__ = ("item", "image")

    def __init__(self, item: Item, image: np.ndarray | None):
        self.item, self.image = item, image


class _LocalRun:
    """One run of the local engine: read ahead -> segment (this thread) -> write behind."""

    def __init__(self, seg: Segmenter, work: ItemWork, on_result: OnResult, pool, depth: int, chunk: int):
        self.seg, self.work, self.on_result, self.pool = seg, work, on_result, pool
        self.depth, self.chunk = depth, chunk
        self.n_chunks = max(1, depth // chunk)  # chunks in flight per queue
        self.writes: deque[tuple[list[Item], Future]] = deque()  # chunks being written (or kept)
        self.to_write: list[tuple[Item, Segmentation]] = []
        self.unreported: deque[tuple[Item, object]] = deque()  # results of the chunk being reported

    def run(self, items: Iterable[Item]) -> None:
        keep_image = self.work.needs_image
        stream = self.seg.predict_stream(
            self._prepared(items), max_pending=self.depth, with_prob=self.work.needs_prob
        )
        for key, result in stream:
            item, image = (key.item, key.image) if keep_image else (key, None)
            if isinstance(result, BaseException):
                self.on_result(self.work.failed(item, result))
            else:
                self.to_write.append((item, Segmentation(result[0], result[1], image)))
                if len(self.to_write) >= self.chunk:
                    self._flush()
            del result, key
        if self.to_write:
            self._flush()
        self._drain(0)

    def _todo(self, items: Iterable[Item]) -> Iterator[Item]:
        """The inputs to segment; with --skip-existing, the others are kept (and evaluated)."""
        for item in items:
            found = self.work.kept_mask(item)
            if found is None:
                yield item
                continue
            self.writes.append(([item], self.pool.submit(_each, self.work.keep, [(item, found)])))
            self._drain(self.n_chunks)

    def _prepared(self, items: Iterable[Item]) -> Iterator[tuple[object, object]]:
        """(key, normalised pages) of the readable inputs, read a few chunks ahead in the threads."""
        prepare, seg = self.work.prepare, self.seg
        chunks = _chunks(((item, seg) for item in self._todo(items)), self.chunk)  # prepare's arguments
        queue: deque[tuple[list, Future]] = deque()
        for chunk in chunks:  # fill the read-ahead queue
            queue.append((chunk, self.pool.submit(_each, prepare, chunk)))
            if len(queue) >= self.n_chunks:
                break
        while queue:  # then submit one chunk for each one taken
            nxt = next(chunks, None)
            if nxt is not None:
                queue.append((nxt, self.pool.submit(_each, prepare, nxt)))
            yield from self._take(queue.popleft(), self.work.needs_image)

    def _take(self, entry: tuple[list, Future], keep_image: bool) -> Iterator[tuple[object, object]]:
        chunk, fut = entry
        results = fut.result()
        del fut, entry  # the future would keep the pages alive while they are segmented
        for (item, _), result in zip(chunk, results, strict=True):
            if isinstance(result, Exception):  # unreadable or unusable input: name it, go on
                self.on_result(self.work.failed(item, result))
            else:
                pages, prepared = result
                yield (_Read(item, pages) if keep_image else item), prepared
                del pages, prepared
        del results

    def _flush(self) -> None:
        chunk = [item for item, _ in self.to_write]
        self.writes.append((chunk, self.pool.submit(_each, self.work.write, list(self.to_write))))
        self.to_write.clear()
        self._drain(self.n_chunks)

    def _drain(self, limit: int) -> None:
        """Report finished writes in order; wait for the oldest while more than ``limit`` are queued."""
        while self.writes and (len(self.writes) > limit or self.writes[0][1].done()):
            chunk, fut = self.writes[0]
            results = fut.result()  # where Ctrl-C lands: the chunk stays queued for report_finished
            with ctrl_c_deferred():  # a chunk is moved from the queue into the report whole
                self.writes.popleft()
                self.unreported.extend(zip(chunk, results, strict=True))
                self._report()

    def _report(self) -> None:
        while self.unreported:
            item, result = self.unreported.popleft()
            self.on_result(result if isinstance(result, ItemResult) else self.work.failed(item, result))

    def report_finished(self) -> None:
        """After the run stopped (the pool shut down): report the writes that did finish, in order,
        so the summary lists every mask on disk."""
        self._report()
        for chunk, fut in self.writes:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.unreported.extend(zip(chunk, fut.result(), strict=True))
        self.writes.clear()
        self._report()
