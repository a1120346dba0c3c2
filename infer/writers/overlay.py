"""``--overlays``: ``OUT/a/b_overlay.png``, the input in gray (1st/99th percentiles -> black/white)
with the mask's outline in orange and, with ``--masks``, the ground truth's outline in sky blue
(``core/overlay.py``). With ``--labels`` each object is outlined in its own colour instead.

A multi-page input gives one RGB page per input page in ``b_overlay.tif``, as its mask is a
multi-page ``.tif``. A ground-truth file that cannot be read or has another shape is left
out of the picture (the report names the problem; the overlay is still written). Memory:
one RGB copy of the page (3 bytes a pixel) and a few boolean temporaries.
"""

from __future__ import annotations

import io
import os

import numpy as np

from unsupseg.core.atomic import atomic_path, write_bytes_atomic
from unsupseg.core.imageio import TIFF_SUFFIXES, read_mask
from unsupseg.core.overlay import display_u8, render_overlay
from unsupseg.infer.inputs import Item
from unsupseg.infer.writers.base import OutputWriter, Segmentation


class OverlayWriter(OutputWriter):
    name = "overlay"
    needs_image = True

    def __init__(self, with_labels: bool = False):
        self.with_labels = with_labels  # outline each instance label in its own colour

    @classmethod
    def from_options(cls, options) -> OverlayWriter:
        # the label image is Segmentation.labels, made once per input when --labels is on
        return cls(with_labels="labels" in options.outputs)

    def paths(self, item: Item, pages: int) -> list[str]:
        return [item.out_base + ("_overlay.tif" if pages > 1 else "_overlay.png")]

    def candidates(self, item: Item) -> list[str]:
        paths = self.paths(item, 1)
        if os.path.splitext(item.src)[1].lower() in TIFF_SUFFIXES:
            paths += self.paths(item, 2)  # a TIFF input may be multi-page
        return paths

    def write(self, item: Item, seg: Segmentation) -> None:
        truth = _truth(seg)
        labels = seg.labels if self.with_labels else None
        pages = [
            render_overlay(
                display_u8(seg.image[p]),
                seg.mask[p],
                None if truth is None else truth[p],
                None if labels is None else labels[p],
            )
            for p in range(seg.pages)
        ]
        path = self.paths(item, seg.pages)[0]
        if seg.pages == 1:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(pages[0]).save(buf, format="PNG", compress_level=1)
            write_bytes_atomic(path, buf.getbuffer())
        else:
            import tifffile

            with atomic_path(path) as tmp:
                tifffile.imwrite(tmp, np.stack(pages), photometric="rgb", compression="zlib")


def _truth(seg: Segmentation) -> np.ndarray | None:
    """The ground truth to outline, or None (none given, unreadable, or of another shape)."""
    if seg.truth is None:
        return None
    try:
        truth = read_mask(seg.truth)
    except Exception:  # named by the evaluation that follows, which fails the input's row
        return None
    return truth if truth.shape == seg.mask.shape else None
