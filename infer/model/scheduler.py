"""Batching: pages of many images share onnxruntime calls.

Pages of the same padded shape, from different images, are collected in a bucket
per shape and run together, ``batch_size`` at a time (fewer where a batch would
exceed ``max_batch_pixels``); a page too large for one call runs tile by tile
(``tiles.run_tiled_page``). Images come back in completion order, each with its
mask and foreground probability, or with the error that failed it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from unsupseg.core.padding import pad_to_multiple
from unsupseg.core.polarity import apply_polarity
from unsupseg.infer.model.tiles import NormalisedPages, TiledPages, run_tiled_page


@dataclass(eq=False)
class _Job:
    """One image in flight: its pages and the probabilities filled in so far."""

    key: Hashable
    pages: np.ndarray | None  # (P, H, W) float32 normalised (whole pages); None once done with
    prob: np.ndarray | None  # (P, H, W) float32, filled as batches return (None: tiled, not kept)
    remaining: int  # pages not yet complete
    error: BaseException | None = None
    mask: np.ndarray | None = None  # tiled pages: (P, H, W) bool, filled band by band
    flip: list[bool] | None = None  # tiled pages: the polarity rule's decision per page

    @property
    def finished(self) -> bool:
        return self.remaining == 0 or self.error is not None


class BatchScheduler:
    """Runs streams of prepared images for one ``Segmenter`` (see ``Segmenter.predict_stream``)."""

    def __init__(self, segmenter):
        self.seg = segmenter
        self.buckets: dict[tuple[int, int], list] = {}  # padded shape -> [(job, page, padded array)]
        self.pending: list[_Job] = []

    def run(
        self, items: Iterable[tuple[Hashable, np.ndarray | TiledPages]], max_pending: int, with_prob: bool
    ) -> Iterator[tuple[Hashable, tuple[np.ndarray, np.ndarray | None] | BaseException]]:
        n_done = 0  # jobs finished since the last collect
        for key, pages in items:
            n_done += self._submit(key, pages, with_prob)
            del pages
            if len(self.pending) >= max_pending:
                n_done += self._flush()
            if n_done:
                n_done = 0
                yield from self._collect(with_prob)
        self._flush()
        yield from self._collect(with_prob)

    def _submit(self, key: Hashable, pages, with_prob: bool) -> int:
        """Queue (or, for tiled pages, run) one image; returns the number of jobs completed."""
        p, h, w = pages.shape
        grid = self.seg.grid(h, w)
        if not grid.is_single:
            prob = np.empty((p, h, w), dtype=np.float32) if with_prob else None
            job = _Job(key, None, prob, p, mask=np.empty((p, h, w), dtype=bool), flip=[])
            self.pending.append(job)
            src = pages if isinstance(pages, TiledPages) else NormalisedPages(np.asarray(pages))
            batch = self.seg.batch_for(grid.tile_h, grid.tile_w)
            for i in range(p):
                infer = lambda tiles: self._infer(tiles, [job])  # noqa: E731
                prob_out = job.prob[i] if job.prob is not None else None
                flip = run_tiled_page(
                    src, i, grid, infer, batch, self.seg.threshold, self.seg.foreground, job.mask[i], prob_out
                )
                if flip is None:
                    break
                job.flip.append(flip)
                job.remaining -= 1
            return 1
        pages = np.asarray(pages)
        job = _Job(key, pages, np.empty((p, h, w), dtype=np.float32), p)
        self.pending.append(job)
        shape = (grid.height, grid.width)
        batch = self.seg.batch_for(grid.height, grid.width)
        n_done = 0
        for i in range(p):
            bucket = self.buckets.setdefault(shape, [])
            bucket.append((job, i, pad_to_multiple(pages[i], self.seg.multiple)))
            if len(bucket) >= batch:
                n_done += self._run_bucket(self.buckets.pop(shape))
        return n_done

    def _flush(self) -> int:
        return sum(self._run_bucket(self.buckets.pop(shape)) for shape in list(self.buckets))

    def _collect(self, with_prob: bool) -> Iterator:
        done = [j for j in self.pending if j.finished]
        if not done:
            return
        self.pending = [j for j in self.pending if not j.finished]
        for job in done:
            if job.error is not None:
                yield job.key, job.error
            elif job.mask is not None:  # tiled: thresholded band by band, polarity decided per page
                for i, flip in enumerate(job.flip):
                    if flip:
                        np.logical_not(job.mask[i], out=job.mask[i])
                        if job.prob is not None:
                            np.subtract(1.0, job.prob[i], out=job.prob[i])
                yield job.key, (self._cleaned(job.mask), job.prob)
            else:
                masks = np.empty(job.prob.shape, dtype=bool)
                for i in range(len(job.prob)):
                    masks[i], job.prob[i] = apply_polarity(
                        job.pages[i], job.prob[i], self.seg.threshold, self.seg.foreground
                    )
                yield job.key, (self._cleaned(masks), job.prob if with_prob else None)

    def _cleaned(self, masks: np.ndarray) -> np.ndarray:
        """The post-processing of the Segmenter (fill holes, drop specks), page by page, in place.
        With a structure step, the clean-up follows the step instead (``ItemWork.write``, ``predict``)."""
        if self.seg.cleanup.active and not self.seg.structure_active:
            for page in masks:
                self.seg.cleanup.apply(page)
        return masks

    def _infer(self, arrays: list[np.ndarray], jobs: list[_Job]) -> np.ndarray | None:
        """(B, h, w) arrays -> (B, h, w) probabilities; on failure mark the jobs failed."""
        try:
            return self.seg.session.run(np.stack(arrays)[:, None])[:, 0]
        except Exception as e:  # onnxruntime's error types; the image(s) fail, the run goes on
            err = RuntimeError(f"onnxruntime failed on a batch of shape {np.shape(arrays)}: {e}")
            for job in jobs:
                job.error = job.error or err
            return None

    def _run_bucket(self, bucket: list) -> int:
        """Run one batch; returns the number of jobs it completed (or failed)."""
        bucket = [b for b in bucket if b[0].error is None]
        if not bucket:
            return 0
        probs = self._infer([b[2] for b in bucket], [b[0] for b in bucket])
        if probs is None:
            return len(bucket)
        n_done = 0
        for (job, i, _), prob in zip(bucket, probs, strict=True):
            h, w = job.prob.shape[1:]
            job.prob[i] = prob[:h, :w]
            job.remaining -= 1
            n_done += job.remaining == 0
        return n_done
