"""``--save-prob``: the foreground probability as float32 ``OUT/a/b_prob.tif`` (one page per input page)."""

from __future__ import annotations

from unsupseg.core.imageio import write_float_tiff
from unsupseg.infer.inputs import Item
from unsupseg.infer.writers.base import OutputWriter, Segmentation


class ProbWriter(OutputWriter):
    name = "prob"
    needs_prob = True

    def paths(self, item: Item, pages: int) -> list[str]:
        return [item.out_base + "_prob.tif"]

    def candidates(self, item: Item) -> list[str]:
        return self.paths(item, 1)

    def write(self, item: Item, seg: Segmentation) -> None:
        write_float_tiff(self.paths(item, seg.pages)[0], seg.prob[0] if seg.pages == 1 else seg.prob)
