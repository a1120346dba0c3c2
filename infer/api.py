"""Python API: ``Segmenter(model=..., device=...).predict(image) -> (mask, prob)``.

Everything between a raw image and its mask lives here, and the ``seginfer``
command uses exactly this class:

    pages (P, H, W) --normalise (model card)--> pad to x8 or tile --> batch --> onnxruntime
          --> crop / blend --> threshold --> polarity --> mask (P, H, W) bool, prob (P, H, W)

Polarity (which of the two regions is foreground), per page:

- ``bright``: the region whose mean normalised intensity is higher;
- ``dark``: the region whose mean is lower;
- ``model``: the network's region 1 (prob >= threshold) as is.

The returned probability is that of the *foreground*: when the polarity rule
picks the network's region 0, ``prob`` is ``1 - p``. A page whose prediction is
all one region keeps the network's labelling.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from unsupseg.core.errors import ImageReadError, ModelFileError
from unsupseg.core.imageio import check_pages
from unsupseg.core.modelcard import POLARITY_RULES, ModelCard
from unsupseg.infer.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    TileBlender,
    TileGrid,
    pad_to_multiple,
    round_up,
)

DEFAULT_BATCH_SIZE = 8
# Pixels per onnxruntime call: batches of large images or tiles are cut to this many
# pixels (at least one image). A 1024x1024 batch already keeps the CPU busy, while the
# network's activations (~250 MB per megapixel at width 16) grow with the batch.
MAX_BATCH_PIXELS = DEFAULT_TILE_SIZE * DEFAULT_TILE_SIZE


def default_model_path() -> Path:
    """The model shipped inside the package (infer/models/default.onnx)."""
    path = Path(str(resources.files("unsupseg.infer") / "models" / "default.onnx"))
    if not path.is_file():
        raise ModelFileError(
            f"no packaged default model at {path}; pass --model MODEL.onnx "
            "(or build the default one with `make model`)"
        )
    return path


def apply_polarity(
    norm: np.ndarray, prob: np.ndarray, threshold: float, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """One page: normalised image (H, W), network prob (H, W) -> (mask bool, foreground prob)."""
    region = prob >= threshold
    if rule == "model":
        return region, prob
    n_in = np.count_nonzero(region)
    if n_in == 0 or n_in == region.size:
        return region, prob
    # region sums with one dot product instead of two boolean gathers (3-10x faster on
    # small images, where this runs once per image on the inference thread)
    flat = norm.ravel()
    sum_in = float(np.dot(flat, region.ravel().astype(flat.dtype)))
    mean_in = sum_in / n_in
    mean_out = (float(flat.sum(dtype=np.float64)) - sum_in) / (region.size - n_in)
    flip = mean_in < mean_out if rule == "bright" else mean_in > mean_out
    if flip:
        return ~region, (1.0 - prob).astype(np.float32)
    return region, prob


@dataclass(eq=False)
class _Job:
    """One image in flight: its normalised pages and the probabilities filled in so far."""

    key: Hashable
    norm: np.ndarray  # (P, H, W) float32, normalised
    prob: np.ndarray  # (P, H, W) float32, filled as batches return
    remaining: int  # pages not yet complete
    error: BaseException | None = None


class Segmenter:
    """Segment images with an unsupseg ONNX model.

    Args:
        model: path of an .onnx file; None uses the packaged default model.
        device: "auto" (CUDA when it works, else CPU), "cpu", "cuda" or "cuda:N".
        threads: CPU threads for onnxruntime; None = all usable cores.
        tile_size: images with a (padded) side above this run in overlapping tiles.
        tile_overlap: overlap between neighbouring tiles, pixels.
        batch_size: images (or tiles) of one padded shape per onnxruntime call.
        max_batch_pixels: fewer images per call when a batch would exceed this many pixels.
        threshold: probability threshold; None = the model card's.
        foreground: "bright" | "dark" | "model"; None = the model card's rule.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        threads: int | None = None,
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_OVERLAP,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        foreground: str | None = None,
        max_batch_pixels: int = MAX_BATCH_PIXELS,
    ):
        from unsupseg.infer.session import OnnxSession

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_pixels < 1:
            raise ValueError(f"max_batch_pixels must be >= 1, got {max_batch_pixels}")
        if tile_overlap < 0 or tile_overlap * 2 >= tile_size:
            raise ValueError(
                f"tile_overlap must be >= 0 and < tile_size / 2, got {tile_overlap} and {tile_size}"
            )
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if foreground is not None and foreground not in POLARITY_RULES:
            raise ValueError(f"foreground must be one of {POLARITY_RULES}, got {foreground!r}")
        self.model_path = Path(model) if model is not None else default_model_path()
        self.session = OnnxSession(self.model_path, device=device, threads=threads)
        self.card: ModelCard = self.session.card
        self.multiple = max(1, int(self.card.size_multiple))
        self.tile_size = max(tile_size, self.multiple)
        self.tile_overlap = tile_overlap
        self.batch_size = batch_size
        self.max_batch_pixels = max_batch_pixels
        self.threshold = float(self.card.threshold if threshold is None else threshold)
        self.foreground = foreground or self.card.polarity

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider actually running the model."""
        return self.session.provider

    @property
    def device(self) -> str:
        return self.session.device

    def batch_for(self, height: int, width: int) -> int:
        """Images (or tiles) of this padded shape per onnxruntime call."""
        return max(1, min(self.batch_size, self.max_batch_pixels // (height * width)))

    # -- single images -------------------------------------------------------------
    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw image (H, W) or pages (P, H, W), any dtype -> (mask bool, foreground prob), same shape."""
        arr = np.asarray(image)
        if arr.ndim not in (2, 3):
            raise ImageReadError(
                f"predict takes an (H, W) image or (P, H, W) pages, got shape {arr.shape}; "
                "convert colour to gray first (unsupseg.core.imageio.read_image does)"
            )
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
            raise ImageReadError(
                f"predict got shape {arr.shape}, which looks like a colour image (H, W, C); pass gray "
                "(H, W) or pages (P, H, W): unsupseg.core.imageio.read_image converts colour to gray"
            )
        pages = arr[None] if arr.ndim == 2 else arr
        norm = self.prepare(pages)
        ((_, result),) = list(self.predict_stream([(0, norm)]))
        if isinstance(result, BaseException):
            raise result
        mask, prob = result
        return (mask[0], prob[0]) if arr.ndim == 2 else (mask, prob)

    def prepare(self, pages: np.ndarray, source: str = "image") -> np.ndarray:
        """Check and normalise raw pages (P, H, W) with the model card's normalisation."""
        pages = np.asarray(pages, dtype=np.float32)
        check_pages(pages, source)
        norm = self.card.normalization
        return np.stack([norm(p) for p in pages]).astype(np.float32, copy=False)

    # -- streams of images ---------------------------------------------------------
    def predict_stream(
        self, items: Iterable[tuple[Hashable, np.ndarray]], max_pending: int | None = None
    ) -> Iterator[tuple[Hashable, tuple[np.ndarray, np.ndarray] | BaseException]]:
        """Normalised pages in, ``(key, (mask, prob))`` or ``(key, error)`` out, in completion order.

        Pages of the same padded shape, from different images, share onnxruntime
        calls of up to ``batch_size`` (fewer where that would exceed ``max_batch_pixels``);
        large pages run tile by tile. At most ``max_pending`` images (default
        ``4 * batch_size``) wait for a batch to fill.
        """
        max_pending = max_pending or 4 * self.batch_size
        buckets: dict[tuple[int, int], list] = {}  # padded shape -> [(job, page, padded array)]
        pending: list[_Job] = []
        for key, norm in items:
            p, h, w = norm.shape
            job = _Job(key, norm, np.empty((p, h, w), dtype=np.float32), p)
            pending.append(job)
            grid = TileGrid.for_shape(
                round_up(h, self.multiple),
                round_up(w, self.multiple),
                self.tile_size,
                self.tile_overlap,
                self.multiple,
            )
            for i in range(p):
                if grid.is_single:
                    bucket = buckets.setdefault((grid.height, grid.width), [])
                    bucket.append((job, i, pad_to_multiple(norm[i], self.multiple)))
                    if len(bucket) >= self.batch_for(grid.height, grid.width):
                        self._run_bucket(buckets.pop((grid.height, grid.width)))
                else:
                    self._run_tiled(job, i, grid)
            if len(pending) >= max_pending:
                for shape in list(buckets):
                    self._run_bucket(buckets.pop(shape))
            yield from self._collect(pending)
        for shape in list(buckets):
            self._run_bucket(buckets.pop(shape))
        yield from self._collect(pending)

    def _collect(self, pending: list[_Job]) -> Iterator:
        done = [j for j in pending if j.remaining == 0 or j.error is not None]
        if not done:
            return
        pending[:] = [j for j in pending if not (j.remaining == 0 or j.error is not None)]
        for job in done:
            if job.error is not None:
                yield job.key, job.error
                continue
            masks = np.empty(job.prob.shape, dtype=bool)
            for i in range(len(job.prob)):
                masks[i], job.prob[i] = apply_polarity(
                    job.norm[i], job.prob[i], self.threshold, self.foreground
                )
            yield job.key, (masks, job.prob)

    def _infer(self, arrays: list[np.ndarray], jobs: list[_Job]) -> np.ndarray | None:
        """(B, h, w) arrays -> (B, h, w) probabilities; on failure mark the jobs failed."""
        try:
            return self.session.run(np.stack(arrays)[:, None])[:, 0]
        except Exception as e:  # onnxruntime's error types; the image(s) fail, the run goes on
            err = RuntimeError(f"onnxruntime failed on a batch of shape {np.shape(arrays)}: {e}")
            for job in jobs:
                job.error = job.error or err
            return None

    def _run_bucket(self, bucket: list) -> None:
        bucket = [b for b in bucket if b[0].error is None]
        if not bucket:
            return
        probs = self._infer([b[2] for b in bucket], [b[0] for b in bucket])
        if probs is None:
            return
        for (job, i, _), prob in zip(bucket, probs, strict=True):
            h, w = job.prob.shape[1:]
            job.prob[i] = prob[:h, :w]
            job.remaining -= 1

    def _run_tiled(self, job: _Job, page: int, grid: TileGrid) -> None:
        padded = pad_to_multiple(job.norm[page], self.multiple)
        blender = TileBlender(grid)
        starts = list(grid)
        step = self.batch_for(grid.tile_h, grid.tile_w)
        for k in range(0, len(starts), step):
            chunk = starts[k : k + step]
            tiles = [padded[y : y + grid.tile_h, x : x + grid.tile_w] for y, x in chunk]
            probs = self._infer(tiles, [job])
            if probs is None:
                return
            for (y, x), prob in zip(chunk, probs, strict=True):
                blender.add(y, x, prob)
        h, w = job.prob.shape[1:]
        job.prob[page] = blender.result()[:h, :w]
        job.remaining -= 1
