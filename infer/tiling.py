"""Overlapping tiles for images too large for one onnxruntime call.

An image whose padded side exceeds ``tile_size`` is cut into tiles of at most
``tile_size`` per side, neighbours overlapping by ``overlap`` pixels; the last tile
of a row or column is shifted back to end at the border, so all tiles of one image
have one shape and batch together. Probabilities are blended with linear ramps
across each overlap (no ramp at the image border), so seams disappear and pixels
near a tile edge, where the network lacks context, count least.

Defaults: 1024x1024 tiles keep the largest activation of the widest network around
256 MiB per image; 64 pixels of overlap is about twice the receptive field of the
three-level encoder-decoder (~40 px).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from unsupseg.core.padding import pad_to_multiple, round_up  # noqa: F401  (re-exported)

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
