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

Large images (a padded side above ``tile_size``) never exist as a full float32
copy: ``prepare`` keeps the pixels as read (uint8 for an 8-bit PNG) with their
percentile bounds, each tile is normalised as it is cut, tile probabilities are
blended into a band of rows that is thresholded and dropped as soon as no later
tile touches it, and the polarity rule works from running sums. Per pixel that
leaves the image as read and the bool mask (plus the float32 probability only
when it is asked for: ``predict`` and ``--save-prob``), instead of the image, its
normalised copy, the blend accumulators and the probability in float32. The
probabilities and mask are the ones the whole-image blend gives, value for value;
only the polarity sums are added up band by band (float64 across bands), which
can only matter for an image whose two regions have the same mean to ~1e-7.
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
from unsupseg.core.normalize import Normalization, histogram_dtype
from unsupseg.infer.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    RowBlender,
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


def _polarity_flip(sum_in: float, total: float, n_in: int, n: int, rule: str) -> bool:
    """``apply_polarity``'s decision from region sums (tiled pages, summed band by band)."""
    if rule == "model" or n_in == 0 or n_in == n:
        return False
    mean_in, mean_out = sum_in / n_in, (total - sum_in) / (n - n_in)
    return mean_in < mean_out if rule == "bright" else mean_in > mean_out


@dataclass(eq=False)
class TiledPages:
    """Pages of an image that runs in tiles, kept as read and normalised tile by tile.

    ``prepare`` returns this instead of a float32 copy when the image needs tiling:
    ``normalization.apply(raw[page][tile], bounds[page])`` is exactly that tile of
    the normalised page (the mapping is elementwise).
    """

    raw: np.ndarray  # (P, H, W) as read: uint8 / uint16 / ... or float32
    bounds: list[tuple[float, float]]  # per page: the intensities mapped to 0 and 1
    normalization: Normalization

    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw.shape

    def normalised(self, page: int, rows, cols) -> np.ndarray:
        """float32 normalised ``raw[page][rows][:, cols]`` (slices or index arrays)."""
        part = self.raw[page][rows][:, cols]
        return self.normalization.apply(part, self.bounds[page])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole normalised stack (the full float32 copy this class exists to avoid)."""
        out = np.empty(self.raw.shape, dtype=np.float32)
        for i, (page, b) in enumerate(zip(self.raw, self.bounds, strict=True)):
            self.normalization.apply(page, b, out=out[i])
        return out if dtype is None else out.astype(dtype, copy=False)


class _NormalisedPages:
    """The same interface as TiledPages over an already normalised (P, H, W) array."""

    def __init__(self, norm: np.ndarray):
        self.norm = norm
        self.shape = norm.shape

    def normalised(self, page: int, rows, cols) -> np.ndarray:
        return self.norm[page][rows][:, cols]


@dataclass(eq=False)
class _Job:
    """One image in flight: its normalised pages and the probabilities filled in so far."""

    key: Hashable
    norm: np.ndarray | TiledPages | None  # (P, H, W) float32 normalised, or raw pages for tiles
    prob: np.ndarray | None  # (P, H, W) float32, filled as batches return (None: tiled, not kept)
    remaining: int  # pages not yet complete
    error: BaseException | None = None
    mask: np.ndarray | None = None  # (P, H, W) bool, filled band by band for tiled pages
    flip: list[bool] | None = None  # tiled pages: the polarity rule's decision per page


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
        self._grids: dict[tuple[int, int], TileGrid] = {}  # image shape -> its tiles

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

    def prepare(self, pages: np.ndarray, source: str = "image") -> np.ndarray | TiledPages:
        """Check and normalise raw pages (P, H, W) with the model card's normalisation.

        Returns the float32 normalised pages, or, for an image that runs in tiles, a
        ``TiledPages`` holding the pages as given (8/16-bit integer data is not
        converted) and their bounds: each tile is normalised when it is cut.
        """
        pages = np.asarray(pages)
        if not histogram_dtype(pages.dtype):
            pages = np.asarray(pages, dtype=np.float32)
        check_pages(pages, source)
        norm = self.card.normalization
        bounds = [norm.bounds(p) for p in pages]
        h, w = pages.shape[1:]
        if not self._grid(h, w).is_single:
            return TiledPages(pages, bounds, norm)
        if len(pages) == 1:
            return norm.apply(pages[0], bounds[0])[None]
        out = np.empty(pages.shape, dtype=np.float32)
        for i, (page, b) in enumerate(zip(pages, bounds, strict=True)):
            norm.apply(page, b, out=out[i])
        return out

    def _grid(self, h: int, w: int) -> TileGrid:
        grid = self._grids.get((h, w))
        if grid is None:
            hp, wp = round_up(h, self.multiple), round_up(w, self.multiple)
            grid = TileGrid.for_shape(hp, wp, self.tile_size, self.tile_overlap, self.multiple)
            if len(self._grids) < 1024:  # folders have a few image sizes; do not grow without bound
                self._grids[(h, w)] = grid
        return grid

    # -- streams of images ---------------------------------------------------------
    def predict_stream(
        self,
        items: Iterable[tuple[Hashable, np.ndarray | TiledPages]],
        max_pending: int | None = None,
        with_prob: bool = True,
    ) -> Iterator[tuple[Hashable, tuple[np.ndarray, np.ndarray | None] | BaseException]]:
        """Normalised pages in, ``(key, (mask, prob))`` or ``(key, error)`` out, in completion order.

        Pages of the same padded shape, from different images, share onnxruntime
        calls of up to ``batch_size`` (fewer where that would exceed ``max_batch_pixels``);
        large pages run tile by tile. At most ``max_pending`` images (default
        ``4 * batch_size``) wait for a batch to fill. ``with_prob=False``: ``prob`` is
        None, and tiled images never hold a full-size probability.
        """
        max_pending = max_pending or 4 * self.batch_size
        buckets: dict[tuple[int, int], list] = {}  # padded shape -> [(job, page, padded array)]
        pending: list[_Job] = []
        n_done = 0  # jobs finished since the last collect
        for key, norm in items:
            p, h, w = norm.shape
            grid = self._grid(h, w)
            if grid.is_single:
                norm = np.asarray(norm)
                job = _Job(key, norm, np.empty((p, h, w), dtype=np.float32), p)
                pending.append(job)
                shape = (grid.height, grid.width)
                batch = self.batch_for(grid.height, grid.width)
                for i in range(p):
                    bucket = buckets.setdefault(shape, [])
                    bucket.append((job, i, pad_to_multiple(norm[i], self.multiple)))
                    if len(bucket) >= batch:
                        n_done += self._run_bucket(buckets.pop(shape))
            else:
                prob = np.empty((p, h, w), dtype=np.float32) if with_prob else None
                job = _Job(key, norm, prob, p, mask=np.empty((p, h, w), dtype=bool), flip=[])
                pending.append(job)
                for i in range(p):
                    self._run_tiled(job, i, grid)
                job.norm = None  # the pages as read are not needed any more
                n_done += 1
            del norm
            if len(pending) >= max_pending:
                for shape in list(buckets):
                    n_done += self._run_bucket(buckets.pop(shape))
            if n_done:
                n_done = 0
                yield from self._collect(pending, with_prob)
        for shape in list(buckets):
            self._run_bucket(buckets.pop(shape))
        yield from self._collect(pending, with_prob)

    def _collect(self, pending: list[_Job], with_prob: bool = True) -> Iterator:
        done = [j for j in pending if j.remaining == 0 or j.error is not None]
        if not done:
            return
        pending[:] = [j for j in pending if not (j.remaining == 0 or j.error is not None)]
        for job in done:
            if job.error is not None:
                yield job.key, job.error
                continue
            if job.mask is not None:  # tiled: thresholded band by band, polarity decided per page
                for i, flip in enumerate(job.flip):
                    if flip:
                        np.logical_not(job.mask[i], out=job.mask[i])
                        if job.prob is not None:
                            np.subtract(1.0, job.prob[i], out=job.prob[i])
                result = job.mask, job.prob
            else:
                masks = np.empty(job.prob.shape, dtype=bool)
                for i in range(len(job.prob)):
                    masks[i], job.prob[i] = apply_polarity(
                        job.norm[i], job.prob[i], self.threshold, self.foreground
                    )
                result = masks, (job.prob if with_prob else None)
            yield job.key, result

    def _infer(self, arrays: list[np.ndarray], jobs: list[_Job]) -> np.ndarray | None:
        """(B, h, w) arrays -> (B, h, w) probabilities; on failure mark the jobs failed."""
        try:
            return self.session.run(np.stack(arrays)[:, None])[:, 0]
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

    def _run_tiled(self, job: _Job, page: int, grid: TileGrid) -> None:
        """One large page, tile by tile: normalise each tile, blend, threshold finished rows.

        The tiles run in the same batches and are blended in the same order as one
        whole-image blend would, so every probability is the same float32 value;
        rows are thresholded (and their polarity sums taken) as soon as no later
        tile overlaps them, and then dropped.
        """
        src = job.norm if isinstance(job.norm, TiledPages) else _NormalisedPages(np.asarray(job.norm))
        h, w = src.shape[1:]
        # padded pixel -> source pixel: the reflect padding of pad_to_multiple, as index maps
        mode = "reflect" if min(h, w) > 1 else "edge"
        row_map = np.pad(np.arange(h), (0, grid.height - h), mode=mode)
        col_map = np.pad(np.arange(w), (0, grid.width - w), mode=mode)

        def cut(idx_map: np.ndarray, start: int, size: int, n: int):
            return slice(start, start + size) if start + size <= n else idx_map[start : start + size]

        sums = [0.0, 0.0, 0]  # sum of normalised values inside the region, over all, region size

        def finish_rows(y0: int, y1: int) -> None:
            prob = blender.pop(y0, y1)[: max(0, min(y1, h) - y0), :w]  # crop the padding
            y1 = y0 + len(prob)
            if y0 >= y1:
                return
            if job.prob is not None:
                job.prob[page, y0:y1] = prob
            region = job.mask[page, y0:y1]
            np.greater_equal(prob, self.threshold, out=region)
            del prob
            if self.foreground != "model":
                # in slices of rows: a float32 copy of a few MB at a time, never the page
                step = max(1, (1 << 20) // max(w, 1))
                for r in range(y0, y1, step):
                    r1 = min(r + step, y1)
                    norm = src.normalised(page, slice(r, r1), slice(0, w)).ravel()
                    inside = region[r - y0 : r1 - y0].ravel()
                    sums[0] += float(np.dot(norm, inside.astype(norm.dtype)))
                    sums[1] += float(norm.sum(dtype=np.float64))
                sums[2] += int(np.count_nonzero(region))

        starts = list(grid)
        step = self.batch_for(grid.tile_h, grid.tile_w)
        chunks = [starts[k : k + step] for k in range(0, len(starts), step)]
        # rows in flight at most: from the first row of a batch to the end of its last tile
        blender = RowBlender(grid, max(c[-1][0] - c[0][0] for c in chunks) + grid.tile_h)
        done_rows = 0  # rows [0, done_rows) are final and thresholded
        for k, chunk in enumerate(chunks):
            tiles = [
                src.normalised(page, cut(row_map, y, grid.tile_h, h), cut(col_map, x, grid.tile_w, w))
                for y, x in chunk
            ]
            probs = self._infer(tiles, [job])
            del tiles
            if probs is None:
                return
            for (y, x), prob in zip(chunk, probs, strict=True):
                blender.add(y, x, prob)
            # tiles come row by row: rows above the next tile to run are final
            final = chunks[k + 1][0][0] if k + 1 < len(chunks) else grid.height
            if final > done_rows:
                finish_rows(done_rows, final)
                done_rows = final
        n = h * w
        job.flip.append(_polarity_flip(sums[0], sums[1], sums[2], n, self.foreground))
        job.remaining -= 1
