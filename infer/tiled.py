"""Large pages, tile by tile, in bounded memory.

An image that needs tiling never exists as a full float32 copy: ``TiledPages`` keeps
the pixels as read (uint8 for an 8-bit PNG) with their normalisation bounds, each
tile is normalised as it is cut, tile probabilities are blended into a band of rows
(``RowBlender``) that is thresholded and dropped as soon as no later tile touches
it, and the polarity rule adds up its sums band by band. The probabilities and mask
are the ones a whole-image blend gives, value for value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from unsupseg.core.normalize import Normalization
from unsupseg.core.polarity import RegionSums
from unsupseg.infer.tiling import RowBlender, TileGrid


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
