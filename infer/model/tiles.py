"""Large pages, tile by tile: overlapping tiles, their blend, and a page segmented in bounded memory.

An image whose padded side exceeds ``tile_size`` is cut into tiles of at most
``tile_size`` per side, neighbours overlapping by ``overlap`` pixels; the last tile
of a row or column is shifted back to end at the border, so all tiles of one image
have one shape and batch together. Probabilities are blended with linear ramps
across each overlap (no ramp at the image border), so seams disappear and pixels
near a tile edge, where the network lacks context, count least.

An image that needs tiling never exists as a full float32 copy: ``TiledPages`` keeps
the pixels as read (uint8 for an 8-bit PNG) with their normalisation bounds, each
tile is normalised as it is cut, tile probabilities are blended into a band of rows
(``RowBlender``) that is thresholded and dropped as soon as no later tile touches
it, and the polarity rule adds up its sums band by band (``run_tiled_page``). The
probabilities and mask are the ones a whole-image blend gives, value for value.

Defaults: 1024x1024 tiles keep the largest activation of the widest network around
256 MiB per image; 64 pixels of overlap is about twice the receptive field of the
three-level encoder-decoder (~40 px).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from unsupseg.core.normalize import Normalization
from unsupseg.core.padding import round_up
from unsupseg.core.polarity import RegionSums

DEFAULT_TILE_SIZE = 1024
DEFAULT_OVERLAP = 64


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering [0, length), neighbours overlapping >= overlap."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(size: int, overlap: int, start: int, length: int) -> np.ndarray:
    w = np.ones(size, dtype=np.float32)
    if overlap <= 0:
        return w
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if start > 0:
        w[:overlap] = np.minimum(w[:overlap], ramp)
    if start + size < length:
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one padded (H, W) image."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int

    @classmethod
    def for_shape(cls, height: int, width: int, tile_size: int, overlap: int, multiple: int) -> TileGrid:
        """Tiles for a padded image; tile_size and overlap are rounded to ``multiple``."""
        tile = max(multiple, tile_size // multiple * multiple)
        ov = min(round_up(overlap, multiple), tile // 2) if overlap > 0 else 0
        return cls(height, width, min(tile, height), min(tile, width), ov)

    @property
    def is_single(self) -> bool:
        return self.tile_h == self.height and self.tile_w == self.width

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for y in tile_starts(self.height, self.tile_h, self.overlap):
            for x in tile_starts(self.width, self.tile_w, self.overlap):
                yield y, x

    def __len__(self) -> int:
        ny = len(tile_starts(self.height, self.tile_h, self.overlap))
        nx = len(tile_starts(self.width, self.tile_w, self.overlap))
        return ny * nx

    def weight(self, y: int, x: int) -> np.ndarray:
        """Blending weight (tile_h, tile_w) of the tile starting at (y, x)."""
        wy = _ramp(self.tile_h, self.overlap, y, self.height)
        wx = _ramp(self.tile_w, self.overlap, x, self.width)
        return np.outer(wy, wx)


class TileBlender:
    """Accumulates weighted tile probabilities of one image; ``result()`` is their blend."""

    def __init__(self, grid: TileGrid):
        self.grid = grid
        self.acc = np.zeros((grid.height, grid.width), dtype=np.float32)
        self.norm = np.zeros((grid.height, grid.width), dtype=np.float32)

    def add(self, y: int, x: int, prob: np.ndarray) -> None:
        w = self.grid.weight(y, x)
        sl = np.s_[y : y + self.grid.tile_h, x : x + self.grid.tile_w]
        self.acc[sl] += prob * w
        self.norm[sl] += w

    def result(self) -> np.ndarray:
        return self.acc / self.norm


class RowBlender:
    """``TileBlender`` over a band of rows: the same float32 sums, a bounded buffer.

    Tiles must be added in ``TileGrid`` order (row by row). ``pop(y0, y1)`` returns
    the blended rows [y0, y1) once no tile still to come overlaps them (y0 is the
    first row not popped yet) and frees them. ``rows``: the most rows in flight at
    once (from the first popped-not-yet row to the end of the last added tile).
    """

    def __init__(self, grid: TileGrid, rows: int):
        self.grid = grid
        self.base = 0  # image row of buffer row 0
        rows = min(rows, grid.height)
        self.acc = np.zeros((rows, grid.width), dtype=np.float32)
        self.norm = np.zeros((rows, grid.width), dtype=np.float32)

    def add(self, y: int, x: int, prob: np.ndarray) -> None:
        w = self.grid.weight(y, x)
        r = y - self.base
        if r < 0 or r + self.grid.tile_h > len(self.acc):
            raise ValueError(f"tile at row {y} is outside the rows in flight [{self.base}, +{len(self.acc)})")
        sl = np.s_[r : r + self.grid.tile_h, x : x + self.grid.tile_w]
        self.acc[sl] += prob * w
        self.norm[sl] += w

    def pop(self, y0: int, y1: int) -> np.ndarray:
        if y0 != self.base or y1 < y0:
            raise ValueError(f"rows must be popped in order: next is {self.base}, got [{y0}, {y1})")
        k = min(y1 - y0, len(self.acc))
        out = self.acc[:k] / self.norm[:k]
        for buf in (self.acc, self.norm):  # keep the rows still in flight at the top, clear the rest
            buf[: len(buf) - k] = buf[k:]
            buf[len(buf) - k :] = 0.0
        self.base = y1
        return out


# ----------------------------------------------------------------------------- a page in tiles
@dataclass(eq=False)
class TiledPages:
    """Pages of an image that runs in tiles, kept as read and normalised tile by tile.

    ``normalization.apply(raw[page][tile], bounds[page])`` is exactly that tile of the
    normalised page (the mapping is elementwise).
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


class NormalisedPages:
    """The ``TiledPages`` interface over pages that are already normalised (P, H, W) float32."""

    def __init__(self, norm: np.ndarray):
        self.norm = norm
        self.shape = norm.shape

    def normalised(self, page: int, rows, cols) -> np.ndarray:
        return self.norm[page][rows][:, cols]


def _cut(index_map: np.ndarray, start: int, size: int, n: int):
    """Rows (or columns) [start, start + size) of the padded page, as source indices."""
    return slice(start, start + size) if start + size <= n else index_map[start : start + size]


def run_tiled_page(
    src: TiledPages | NormalisedPages,
    page: int,
    grid: TileGrid,
    infer: Callable[[list[np.ndarray]], np.ndarray | None],
    batch: int,
    threshold: float,
    rule: str,
    mask_out: np.ndarray,
    prob_out: np.ndarray | None,
) -> bool | None:
    """Segment one large page tile by tile; returns the polarity decision (flip?), None on failure.

    ``infer(tiles)`` runs a list of (tile_h, tile_w) tiles and returns their
    probabilities (None when onnxruntime failed; the caller records the error).
    ``mask_out`` (H, W) bool receives region 1 (before the polarity rule), ``prob_out``
    the probabilities when given. The tiles run in the same batches and are blended
    in the same order as one whole-image blend would, so every value is the same.
    """
    h, w = src.shape[1:]
    # padded pixel -> source pixel: the reflect padding of pad_to_multiple, as index maps
    mode = "reflect" if min(h, w) > 1 else "edge"
    row_map = np.pad(np.arange(h), (0, grid.height - h), mode=mode)
    col_map = np.pad(np.arange(w), (0, grid.width - w), mode=mode)
    sums = RegionSums.for_rule(rule)
    starts = list(grid)
    chunks = [starts[k : k + batch] for k in range(0, len(starts), batch)]
    # rows in flight at most: from the first row of a batch to the end of its last tile
    blender = RowBlender(grid, max(c[-1][0] - c[0][0] for c in chunks) + grid.tile_h)
    done_rows = 0  # rows [0, done_rows) are final and thresholded
    for k, chunk in enumerate(chunks):
        tiles = [
            src.normalised(page, _cut(row_map, y, grid.tile_h, h), _cut(col_map, x, grid.tile_w, w))
            for y, x in chunk
        ]
        probs = infer(tiles)
        del tiles
        if probs is None:
            return None
        for (y, x), prob in zip(chunk, probs, strict=True):
            blender.add(y, x, prob)
        # tiles come row by row: rows above the next tile to run are final
        final = chunks[k + 1][0][0] if k + 1 < len(chunks) else grid.height
        if final > done_rows:
            prob = blender.pop(done_rows, final)[: max(0, min(final, h) - done_rows), :w]  # crop padding
            _finish_rows(src, page, done_rows, prob, threshold, rule, mask_out, prob_out, sums)
            done_rows = final
    return sums.flip(rule)


def _finish_rows(src, page, y0, prob, threshold, rule, mask_out, prob_out, sums: RegionSums) -> None:
    """Threshold final rows [y0, y0 + len(prob)) and add them to the polarity sums."""
    y1 = y0 + len(prob)
    if y0 >= y1:
        return
    w = prob.shape[1]
    if prob_out is not None:
        prob_out[y0:y1] = prob
    region = mask_out[y0:y1]
    np.greater_equal(prob, threshold, out=region)
    if rule == "model":
        return
    # in slices of rows: a float32 copy of a few MB at a time, never the page
    step = max(1, (1 << 20) // max(w, 1))
    for r in range(y0, y1, step):
        r1 = min(r + step, y1)
        sums.add(src.normalised(page, slice(r, r1), slice(0, w)), region[r - y0 : r1 - y0], r, len(mask_out))
