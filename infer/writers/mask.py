"""The mask: 0/255 uint8, ``OUT/a/b.png`` (or ``.tif`` with ``--format tif``); multi-page
inputs always give a multi-page ``.tif``."""

from __future__ import annotations

import os

from unsupseg.core.imageio import TIFF_SUFFIXES, write_mask
from unsupseg.infer.inputs import Item
from unsupseg.infer.writers.base import OutputWriter, Segmentation

FORMATS = ("png", "tif")


class MaskWriter(OutputWriter):
    name = "mask"

    def __init__(self, fmt: str = "png"):
        if fmt not in FORMATS:
            raise ValueError(f"mask format must be one of {FORMATS}, got {fmt!r}")
        self.fmt = fmt

    @classmethod
    def from_options(cls, options) -> MaskWriter:
        return cls(options.fmt)

    def path(self, item: Item, pages: int) -> str:
        return item.out_base + (".tif" if pages > 1 or self.fmt == "tif" else ".png")

    def paths(self, item: Item, pages: int) -> list[str]:
        return [self.path(item, pages)]

    def candidates(self, item: Item) -> list[str]:
        paths = [self.path(item, 1)]
        if self.fmt == "png" and os.path.splitext(item.src)[1].lower() in TIFF_SUFFIXES:
            paths.append(self.path(item, 2))  # a TIFF input may be multi-page
        return paths

    def write(self, item: Item, seg: Segmentation) -> None:
        mask = seg.mask
        write_mask(self.path(item, seg.pages), mask[0] if seg.pages == 1 else mask)
