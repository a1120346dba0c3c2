"""What every engine does with one input: read it, then write (or keep) and evaluate its outputs.

Engines differ only in where and how concurrently these steps run (threads here,
Ray actors, worker processes); the steps themselves, and so the files and the
report rows, are the same. ``ItemWork`` is picklable and holds no open resources.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from unsupseg.core.files import MaskIndex
from unsupseg.core.imageio import read_mask, read_pages
from unsupseg.infer.inputs import Item
from unsupseg.infer.report import CaseResult, describe_error, evaluate
from unsupseg.infer.writers import WRITERS, MaskWriter, OutputWriter, Segmentation


@dataclass
class ItemResult:
    """What became of one input, as an engine reports it to the run (picklable)."""

    src: str  # the input file
    case: CaseResult | None = None  # its report row; None when nothing was written or kept
    error: str | None = None  # why it failed (names the file); a row *and* an error: bad ground truth
    rows: dict[str, list[dict]] = field(default_factory=dict)  # per-run table rows from writers


class ItemWork:
    """The writers of a run, the ground truth and the resume rule, applied to one item at a time.

    The mask writer runs last: a mask on disk means every output of its input is there,
    whenever a run was stopped.
    """

    def __init__(
        self,
        mask: MaskWriter,
        extras: Sequence[OutputWriter] = (),
        masks: MaskIndex | None = None,
        skip_existing: bool = False,
    ):
        self.mask = mask
        self.extras = tuple(extras)
        self.writers = (*self.extras, mask)
        self.masks = masks
        self.skip_existing = skip_existing

    @classmethod
    def from_options(cls, options) -> ItemWork:
        """From ``RunOptions``: the mask writer, the named extra outputs, the ``--masks`` index."""
        unknown = [name for name in options.outputs if name not in WRITERS]
        if unknown:
            raise ValueError(f"unknown output(s) {unknown}; choose from {sorted(WRITERS)}")
        extras = [WRITERS[name].from_options(options) for name in options.outputs]
        masks = MaskIndex(options.masks) if options.masks is not None else None
        return cls(MaskWriter.from_options(options), extras, masks, options.skip_existing)

    @property
    def needs_prob(self) -> bool:
        return any(w.needs_prob for w in self.writers)

    @property
    def needs_image(self) -> bool:
        return any(w.needs_image for w in self.writers)

    def existing_outputs(self, item: Item) -> list[str]:
        """The outputs of ``item`` already on disk (for the overwrite check)."""
        return [p for w in self.writers for p in w.candidates(item) if os.path.exists(p)]

    def done(self, item: Item) -> str | None:
        """With ``skip_existing``: the mask of an input whose outputs all exist (it is kept), else None."""
        if not self.skip_existing:
            return None
        found = self.mask.existing(item)
        if found is None or any(w.existing(item) is None for w in self.extras):
            return None
        return found

    def read(self, item: Item) -> np.ndarray:
        """The input's pages as read and checked (``read_pages``)."""
        return read_pages(item.src)

    def write(self, item: Item, seg: Segmentation) -> ItemResult:
        """Write every output of one segmented input, then evaluate its mask."""
        if self.masks is not None and seg.truth is None:
            found = self.masks.find(item.rel)  # writers may draw it (--overlays)
            seg.truth = None if found is None else str(found)
        try:
            for writer in self.writers:
                writer.write(item, seg)
        except Exception as e:  # the input fails, nothing of it was kept (each writer is atomic)
            return ItemResult(item.src, error=describe_error(e))
        case = CaseResult(item.src, self.mask.path(item, seg.pages), "written", n_pixels=seg.mask.size)
        case.n_foreground = int(np.count_nonzero(seg.mask))
        return self._evaluated(item, case, seg.mask)

    def keep(self, item: Item, mask_path: str) -> ItemResult:
        """An input whose outputs exist (``--skip-existing``): its row, evaluated when it has ground truth."""
        case = CaseResult(item.src, mask_path, "skipped")
        if self.masks is None or self.masks.find(item.rel) is None:
            return ItemResult(item.src, case)
        try:
            mask = read_mask(mask_path)
        except Exception as e:
            return ItemResult(item.src, error=describe_error(e))
        case.n_pixels, case.n_foreground = int(mask.size), int(np.count_nonzero(mask))
        return self._evaluated(item, case, mask)

    def failed(self, item: Item, error: BaseException) -> ItemResult:
        return ItemResult(item.src, error=describe_error(error))

    def _evaluated(self, item: Item, case: CaseResult, mask: np.ndarray) -> ItemResult:
        truth = self.masks.find(item.rel) if self.masks is not None else None
        if truth is not None:
            try:
                evaluate(case, mask, truth)
            except Exception as e:  # a bad ground-truth file fails this input, not the run
                return ItemResult(item.src, case, describe_error(e))
        return ItemResult(item.src, case)
