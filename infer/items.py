"""What every engine does with one input: keep it, or read and normalise it, then, once it is
segmented, write and evaluate its outputs; or name why it failed.

    item --kept_mask--> keep (--skip-existing: its row from the files on disk)
         --prepare----> (pages as read, normalised pages) --Segmenter--> (mask, prob)
                        --write--> outputs on disk, report row, table rows
         --failed-----> the input's error (or the output's: fatal)

Engines differ only in where and how concurrently these steps run (threads, Ray actors,
worker processes); the steps themselves, and so the files and the report rows, are
``ItemWork``'s. ``run_items`` runs them one input after the other in one thread: what a
worker process does with its chunk, and the smallest engine. ``ItemWork`` is picklable
and holds no open resources.

It also decides, for every engine alike, whether a failure is the input's (that
input fails, the run goes on) or the output's (``faults.output_fault``: the result
is ``fatal`` and ``run_folder`` stops the run). After a fatal fault this copy of the
work does nothing more: the other inputs in a worker's hands come back fatal at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from unsupseg.core.atomic import writing_for
from unsupseg.core.errors import OutputError
from unsupseg.core.files import MaskIndex
from unsupseg.core.imageio import PILLOW_MAX_PIXELS, read_mask, read_pages
from unsupseg.core.labels import Labeling, count_objects
from unsupseg.core.structure.rule import Structure
from unsupseg.infer.faults import output_fault
from unsupseg.infer.inputs import Item
from unsupseg.infer.model.postprocess import Cleanup
from unsupseg.infer.model.segmenter import Segmenter
from unsupseg.infer.model.tiles import TiledPages
from unsupseg.infer.quality import quality as quality_score
from unsupseg.infer.report import CaseResult, describe_error, evaluate
from unsupseg.infer.writers import WRITERS, MaskWriter, OutputWriter, Segmentation


@dataclass
class ItemResult:
    """What became of one input, as an engine reports it to the run (picklable)."""

    src: str  # the input file
    case: CaseResult | None = None  # its report row; None when nothing was written or kept
    error: str | None = None  # why it failed (names the file); a row *and* an error: bad ground truth
    rows: dict[str, list[dict]] = field(default_factory=dict)  # per-run table rows from writers
    fatal: bool = False  # the error is the output's (disk full, read-only...): the run stops


OnResult = Callable[[ItemResult], None]  # an engine reports each input's result to the run with it


class ItemWork:
    """The writers of a run, the ground truth and the resume rule, applied to one item at a time.

    The mask writer runs last: a mask on disk means every output of its input is there,
    whenever a run was stopped. ``labeling`` says how instance labels are made (for the
    label and ROI outputs and for instance ground truth); they are made at most once per
    input, here in the writer layer, so every engine gets them unchanged.
    """

    def __init__(
        self,
        mask: MaskWriter,
        extras: Sequence[OutputWriter] = (),
        masks: MaskIndex | None = None,
        skip_existing: bool = False,
        labeling: Labeling | None = None,
        max_pixels: int | None = PILLOW_MAX_PIXELS,
        quality: bool = True,
    ):
        self.mask = mask
        self.extras = tuple(extras)
        self.writers = (*self.extras, mask)
        self.masks = masks
        self.skip_existing = skip_existing
        self.labeling = labeling or Labeling()
        self.counts_objects = any(w.name == "labels" for w in self.extras)  # n_objects in the report
        self.needs_prob = any(w.needs_prob for w in self.writers)  # the segmenter keeps the probability
        self.quality = quality  # score every mask (quality.py): it reads the pages as read
        self.needs_image = quality or any(w.needs_image for w in self.writers)  # the pages as read are kept
        self.tables = {w.table: w.fields for w in self.writers if w.table}  # per-run tables -> columns
        self.max_pixels = max_pixels  # pixels per page above which an input is refused (None: no limit)
        self.output: str | None = None  # the run's output folder (never re-created once gone)
        self.owner: str | None = None  # the tag of the run's temporary files (its lock holder's)
        self.stopped: str | None = None  # the output fault that ended this copy's work
        self.structure = Structure()  # the run's structure step ("none" until set_structure)
        self.cleanup = Cleanup()  # the clean-up after it (the segmenter's, when the step is active)

    def set_structure(self, structure: Structure, cleanup: Cleanup) -> None:
        """The structure step the run resolved (core/structure/), and the clean-up that follows it:
        the step reads the pages as read, so the writers get them then."""
        self.structure, self.cleanup = structure, cleanup
        self.needs_image = self.needs_image or structure.active

    def bind(self, output: str | os.PathLike, owner: str) -> None:
        """Attach the run: its output folder and the owner tag of its temporary files."""
        self.output, self.owner = os.fspath(output), owner

    @classmethod
    def from_options(cls, options) -> ItemWork:
        """From ``RunOptions``: the mask writer, the named extra outputs, the ``--masks`` index."""
        unknown = [name for name in options.outputs if name not in WRITERS]
        if unknown:
            raise ValueError(f"unknown output(s) {unknown}; choose from {sorted(WRITERS)}")
        extras = [WRITERS[name].from_options(options) for name in options.outputs]
        masks = MaskIndex(options.masks) if options.masks is not None else None
        mp = options.max_megapixels
        max_pixels = None if mp is None else round(mp * 1e6)
        mask = MaskWriter.from_options(options)
        labeling, quality = options.segmenter.labeling, options.quality
        return cls(mask, extras, masks, options.skip_existing, labeling, max_pixels, quality)

    def existing_outputs(self, item: Item) -> list[str]:
        """The outputs of ``item`` already on disk (for the overwrite check)."""
        return [p for w in self.writers for p in w.candidates(item) if os.path.exists(p)]

    def kept_mask(self, item: Item) -> str | None:
        """With ``skip_existing``: the mask of an input whose outputs all exist (the input is kept:
        ``keep``), else None."""
        if not self.skip_existing:
            return None
        found = self.mask.existing(item)
        if found is None or any(w.existing(item) is None for w in self.extras):
            return None
        return found

    def read(self, item: Item) -> np.ndarray:
        """The input's pages as read and checked (``read_pages``, with the run's pixel limit)."""
        if self.stopped is not None:
            raise OutputError(self.stopped)
        return read_pages(item.src, self.max_pixels)

    def prepare(self, item: Item, seg: Segmenter) -> tuple[np.ndarray | None, np.ndarray | TiledPages]:
        """Read the input (as ``read`` does) and normalise it for ``seg``: (its pages as read when a
        writer needs them, else None; the pages ``seg.predict_stream`` takes)."""
        if self.stopped is not None:  # ``read`` inline: no call more per input on the engines' path
            raise OutputError(self.stopped)
        pages = read_pages(item.src, self.max_pixels)
        return (pages if self.needs_image else None), seg.normalise(pages)

    def write(self, item: Item, seg: Segmentation) -> ItemResult:
        """Write every output of one segmented input (and its table rows), then evaluate its mask.

        Temporary files carry the run's owner tag and no folder above the output is
        re-created (``core.atomic.writing_for``). A failure fails this input, unless it is
        the output's (``output_fault``): then the result is fatal.
        """
        if self.stopped is not None:
            return ItemResult(item.src, error=self.stopped, fatal=True)
        seg.labeling = self.labeling
        if self.structure.active:
            try:
                seg.mask = self.structure.apply(seg.image, seg.mask, seg.prob)
            except Exception as e:  # the step failed on this input: it fails alone, named
                return ItemResult(item.src, error=describe_error(e))
            for page in seg.mask:
                self.cleanup.apply(page)
        if self.masks is not None and seg.truth is None:
            found = self.masks.find(item.rel)  # writers may draw it (--overlays)
            seg.truth = None if found is None else str(found)
        try:
            score = self._quality(seg)  # before the writers: a failure here leaves nothing written
            rows = self._rows(item, seg)
            with writing_for(self.owner, self.output):
                for writer in self.writers:
                    writer.write(item, seg)
        except Exception as e:  # nothing of the input was kept (each writer is atomic)
            fault = output_fault(e, self.output)
            if fault is None:
                return ItemResult(item.src, error=describe_error(e))
            fault = f"cannot write the outputs of {item.src} into {self.output}: {fault}"
            self.stopped = self.stopped or fault
            return ItemResult(item.src, error=fault, fatal=True)
        case = CaseResult(item.src, self.mask.path(item, seg.pages), "written", n_pixels=seg.mask.size)
        case.n_foreground = int(np.count_nonzero(seg.mask))
        case.quality = score
        return self._evaluated(item, case, seg, rows)

    def keep(self, item: Item, mask_path: str) -> ItemResult:
        """An input whose outputs exist (``--skip-existing``): its row, evaluated when it has ground
        truth, scored from its input and its mask on disk (the score reads nothing else, so it is the
        one the run that wrote the mask gave), and its table rows from the files on disk (as that
        run gave them)."""
        case = CaseResult(item.src, mask_path, "skipped")
        truth = self.masks is not None and self.masks.find(item.rel) is not None
        if not (truth or self.tables or self.counts_objects or self.quality):
            return ItemResult(item.src, case)
        try:
            mask = read_mask(mask_path)
            image = self.read(item) if self.needs_image and (self.tables or self.quality) else None
            seg = Segmentation(mask, None, image, self.labeling)
            for writer in self.extras:
                writer.restore(item, seg)
            rows = self._rows(item, seg)
            case.quality = self._quality(seg)
        except Exception as e:
            return ItemResult(item.src, error=describe_error(e))
        if truth:
            case.n_pixels, case.n_foreground = int(mask.size), int(np.count_nonzero(mask))
        return self._evaluated(item, case, seg, rows)

    def failed(self, item: Item, error: BaseException) -> ItemResult:
        """The result of an input whose reading or segmentation raised ``error``: that input's
        problem (an unreadable input file is never the output's), unless this work had stopped."""
        if isinstance(error, OutputError):
            return ItemResult(item.src, error=str(error), fatal=True)
        return ItemResult(item.src, error=describe_error(error))

    def _quality(self, seg: Segmentation) -> float | None:
        """The mask's label-free score (quality.py), or None when the run does not score."""
        if not self.quality:
            return None
        return quality_score(seg.image, seg.mask)

    def _rows(self, item: Item, seg: Segmentation) -> dict[str, list[dict]]:
        return {w.table: w.rows(item, seg) for w in self.writers if w.table}

    def _evaluated(self, item: Item, case: CaseResult, seg: Segmentation, rows: dict) -> ItemResult:
        if self.counts_objects:
            case.n_objects = count_objects(seg.labels, self.labeling.three_d)
        truth = self.masks.find(item.rel) if self.masks is not None else None
        if truth is not None:
            try:
                evaluate(case, seg.mask, truth, lambda: seg.labels, per_page=not self.labeling.three_d)
            except Exception as e:  # a bad ground-truth file fails this input, not the run
                return ItemResult(item.src, case, describe_error(e), rows)
        return ItemResult(item.src, case, rows=rows)


def run_items(seg: Segmenter, work: ItemWork, items: Iterable[Item], on_result: OnResult) -> None:
    """Every step of ``items``, in this thread: each input is kept (``--skip-existing``), or read
    and normalised as the batches need it (at most two batches' worth waiting), segmented with
    other inputs of its shape, written and evaluated; ``on_result`` once per input."""

    def prepared():
        for item in items:
            found = work.kept_mask(item)
            if found is not None:
                on_result(work.keep(item, found))
                continue
            try:
                image, pages = work.prepare(item, seg)
                yield (item, image), pages
            except Exception as e:  # unreadable or unusable input: name it, go on
                on_result(work.failed(item, e))

    stream = seg.predict_stream(prepared(), max_pending=2 * seg.batch_size, with_prob=work.needs_prob)
    for (item, image), result in stream:
        if isinstance(result, BaseException):
            on_result(work.failed(item, result))
        else:
            on_result(work.write(item, Segmentation(result[0], result[1], image)))
