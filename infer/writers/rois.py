"""``--rois``: ImageJ ROIs ``OUT/a/b_rois.zip``, one polygon per object, for Fiji's ROI Manager.

Written with the ``roifile`` package (Christoph Gohlke's reader/writer of ImageJ's ROI
format). Each object of ``Segmentation.labels`` becomes a polygon traced around its
pixels (``skimage.measure.find_contours`` at level 0.5 on the object's own mask: the
outer boundary, through the midpoints of its border pixels' edges), in ImageJ's
coordinates, where pixel (x, y) has its centre at (x + 0.5, y + 0.5). Holes are not
part of a polygon ROI. ROIs are named ``LLLL`` (the label) on a single page and
``PPPP-LLLL`` with their stack position on multi-page images.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from unsupseg.core.atomic import write_bytes_atomic
from unsupseg.infer.inputs import Item
from unsupseg.infer.writers.base import OutputWriter, Segmentation


def object_polygons(labels: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """(page, label, (n, 2) x/y points in ImageJ coordinates) for each object, by page then label."""
    from scipy import ndimage
    from skimage.measure import find_contours

    labels = np.asarray(labels)
    pages = labels[None] if labels.ndim == 2 else labels
    out = []
    for p, page in enumerate(pages):
        for index, box in enumerate(ndimage.find_objects(page)):
            if box is None:
                continue
            label = index + 1
            crop = np.pad(page[box] == label, 1).astype(np.float32)
            contour = max(find_contours(crop, 0.5), key=len)  # (row, col), the outer boundary
            y = contour[:, 0] + (box[0].start - 1) + 0.5
            x = contour[:, 1] + (box[1].start - 1) + 0.5
            out.append((p, label, np.stack([x, y], axis=1)[:-1]))  # find_contours closes the ring
    return out


def rois_zip(labels: np.ndarray) -> bytes:
    """The bytes of an ImageJ ROI set (.zip) with one polygon per object of ``labels``."""
    from roifile import ROI_TYPE, ImagejRoi

    multipage = np.ndim(labels) == 3 and np.shape(labels)[0] > 1
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for page, label, points in object_polygons(labels):
            name = f"{page + 1:04d}-{label:04d}" if multipage else f"{label:04d}"
            roi = ImagejRoi.frompoints(points, name=name, position=page if multipage else None)
            roi.roitype = ROI_TYPE.POLYGON
            zf.writestr(name + ".roi", roi.tobytes())
    return buf.getvalue()


class RoisWriter(OutputWriter):
    name = "rois"

    def paths(self, item: Item, pages: int) -> list[str]:
        return [item.out_base + "_rois.zip"]

    def candidates(self, item: Item) -> list[str]:
        return self.paths(item, 1)

    def write(self, item: Item, seg: Segmentation) -> None:
        write_bytes_atomic(self.paths(item, seg.pages)[0], rois_zip(seg.labels))
