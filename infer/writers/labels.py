"""``--labels``: instance labels ``OUT/a/b_labels.tif`` (uint16, uint32 above 65,535 objects; 0 =
background) and their rows in the run's ``objects.csv``.

The labels are ``Segmentation.labels`` (connected components of the mask, split by a
watershed with ``--split``, ``--split-method`` choosing its markers; ``core/labels.py``), made
once per input and shared with ``--rois`` and the instance metrics. Each object's
measurements (``core/objects.py``, intensities on the image as read) become one row of
``objects.csv``; an input kept by ``--skip-existing`` is measured again from its label image
on disk, so a resumed run writes the same table.
"""

from __future__ import annotations

from unsupseg.core.errors import ImageReadError
from unsupseg.core.imageio import read_labels, write_labels
from unsupseg.core.objects import OBJECT_FIELDS, measure_objects
from unsupseg.infer.inputs import Item
from unsupseg.infer.writers.base import OutputWriter, Segmentation


class LabelsWriter(OutputWriter):
    name = "labels"
    needs_image = True  # intensities of objects.csv
    table = "objects"
    fields = ("image", *OBJECT_FIELDS)

    def paths(self, item: Item, pages: int) -> list[str]:
        return [item.out_base + "_labels.tif"]

    def candidates(self, item: Item) -> list[str]:
        return self.paths(item, 1)

    def write(self, item: Item, seg: Segmentation) -> None:
        labels = seg.labels
        write_labels(self.paths(item, seg.pages)[0], labels[0] if seg.pages == 1 else labels)

    def rows(self, item: Item, seg: Segmentation) -> list[dict]:
        return [{"image": item.src, **row} for row in measure_objects(seg.labels, seg.image)]

    def restore(self, item: Item, seg: Segmentation) -> None:
        path = self.paths(item, seg.pages)[0]
        labels = read_labels(path)
        if labels.shape != seg.mask.shape:
            raise ImageReadError(
                f"{path}: label image {labels.shape} does not match its mask {seg.mask.shape}; "
                "rerun this input with --overwrite"
            )
        seg.known_labels = labels
