"""The run's report: per-image overlap with ground-truth masks, ``report.csv`` and ``summary.json``.

Ground-truth masks are found with ``core.files.MaskIndex``; any nonzero value is
foreground. Per image (all pages together):

- ``iou``: IoU of the mask as written (after the polarity rule);
- ``iou_any_polarity``: max(IoU(mask), IoU(not mask)), the seed notebook's metric;
- ``dice``; pixel counts ``n_pixels``, ``n_foreground`` (written mask),
  ``n_mask_foreground`` (ground truth) and ``n_intersection``;
- ``quality``: the label-free score of the mask in [0, 1] (``quality.py``), with or without
  ground truth; summary.json's ``quality`` holds its mean, median and lowest decile, and the
  warning when the median is low.

``summary.json`` (its layout modelled on nnU-Net's; docs/seginfer.md documents it)::

    {"n_images", "n_written", "n_failed", "n_skipped",
     "failed": [{"input", "error"}],
     "mean": {"iou", "iou_any_polarity", "dice"},
     "quality": {"n", "mean", "median", "lowest_decile", "warn_below", "warning"},
     "metric_per_case": [{"input", "output", "status", "mask", "iou", ..., "quality"}]}

It is written on every run, and report.csv with it. ``mean`` holds the averages over the inputs that
have a mask; its values are ``null`` when none has (no ``--masks``, or no
match). Inputs without a mask are in ``metric_per_case`` with ``mask: null``
and ``null`` metrics; they are not failures. ``n_skipped`` counts masks left
in place by ``--skip-existing`` (they are still evaluated against ``--masks``),
so ``n_images == n_written + n_skipped + n_failed`` unless a ground-truth mask
itself was unreadable (that input is written *and* failed). A run that had to stop
(its output failed, or it was interrupted) writes the summary of what it did, with
``"stopped": "why"`` before ``metric_per_case``; a complete run has no such key.

File names are carried losslessly, whatever their bytes: names that are not UTF-8
reach Python as PEP 383 surrogate escapes (byte 0xE9 -> ``"\udce9"``), which
summary.json keeps as the JSON escape ``\udce9`` (``os.fsencode(json.loads(...))``
gives the bytes back) and the CSV files write as the name's own bytes (read them with
``encoding="utf-8", errors="surrogateescape"``). Names that are UTF-8 are written as
they are, byte for byte.

Objects (``--labels``) and instance ground truth add fields, and only then (a run without
them has the base fields alone):

- with ``--labels`` every row has ``n_objects`` and the summary ``"n_objects"`` (total);
- a ground truth that is an instance label image (integer, more than two values) adds
  ``INSTANCE_FIELDS`` (``core/instance.py``: precision, recall, F1, AP at IoU 0.5,
  AP 0.5:0.95, mean matched IoU, panoptic quality) to its row, and their means (over
  the images with instance ground truth) to ``"mean"``; its pixel metrics stay.

report.csv has the base columns plus the optional ones any row of the run has. Per-run
tables such as ``objects.csv`` are spooled beside the cases (``spool.py``) and written
sorted by input the same way.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from unsupseg.core.atomic import atomic_text
from unsupseg.core.errors import ImageReadError
from unsupseg.core.imageio import read_mask_values
from unsupseg.core.instance import INSTANCE_FIELDS, instance_metrics, is_instance_labels
from unsupseg.core.metrics import dice, iou, iou_any_polarity
from unsupseg.infer.quality import summarise
from unsupseg.infer.spool import RunSpool

METRICS = ("iou", "iou_any_polarity", "dice")
# instance metrics averaged in "mean" (the object counts are not)
INSTANCE_METRICS = tuple(f for f in INSTANCE_FIELDS if not f.startswith("n_"))
MEAN_FIELDS = METRICS + INSTANCE_METRICS
QUALITY = "quality"  # the label-free score (quality.py): summarised apart from the metrics' "mean"


@dataclass(slots=True)
class CaseResult:
    input: str  # the input file
    output: str  # the mask written (or left in place by --skip-existing)
    status: str  # "written" or "skipped"
    mask: str | None = None  # matched ground-truth mask, None when there is none
    iou: float | None = None  # IoU of the written mask with the ground truth
    iou_any_polarity: float | None = None  # max(IoU(mask), IoU(~mask)), the notebook's metric
    dice: float | None = None
    n_pixels: int = 0  # pixels over all pages
    n_foreground: int = 0  # foreground pixels of the written mask
    n_mask_foreground: int | None = None  # foreground pixels of the ground truth
    n_intersection: int | None = None
    quality: float | None = None  # label-free score of the mask in [0, 1] (quality.py); None: not computed
    # optional: in the row only when set (a run without --labels or instance ground truth has none)
    n_objects: int | None = None  # objects in the label image (--labels)
    n_true_objects: int | None = None  # objects in an instance ground truth
    n_pred_objects: int | None = None  # objects of the mask as labelled, matched against them
    precision: float | None = None  # at IoU 0.5, StarDist's matching rule
    recall: float | None = None
    f1: float | None = None
    ap50: float | None = None  # TP / (TP + FP + FN) at IoU 0.5
    ap50_95: float | None = None  # its mean over IoU 0.5, 0.55, ..., 0.95
    mean_matched_iou: float | None = None
    panoptic_quality: float | None = None


def evaluate(case: CaseResult, pred: np.ndarray, mask_path: Path, labels=None, per_page: bool = True) -> None:
    """Fill the metrics of ``case``: written mask ``pred`` (P, H, W) vs the ground-truth file.

    Pixel metrics always; when the file is an instance label image, also the instance
    metrics of ``labels()`` (a callable giving the mask's labels, computed only then).
    """
    values = read_mask_values(mask_path)
    if values.shape != pred.shape:
        raise ImageReadError(
            f"{mask_path}: mask shape {_shape(values)} does not match the image {_shape(pred)}; "
            "masks must have the image's size and page count (skipped for metrics)"
        )
    gt = values != 0
    case.mask = str(mask_path)
    case.iou, case.iou_any_polarity, case.dice = iou(pred, gt), iou_any_polarity(pred, gt), dice(pred, gt)
    case.n_mask_foreground, case.n_intersection = int(np.count_nonzero(gt)), int(np.count_nonzero(pred & gt))
    if labels is not None and is_instance_labels(values):
        for name, value in instance_metrics(values, labels(), per_page).items():
            setattr(case, name, value)


def _shape(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape[1:])) + (f" x {a.shape[0]} pages" if a.shape[0] > 1 else "")


ALL_FIELDS = tuple(f.name for f in fields(CaseResult))
OPTIONAL_FIELDS = ("n_objects", *INSTANCE_FIELDS)  # in a row only when set
FIELDS = tuple(f for f in ALL_FIELDS if f not in OPTIONAL_FIELDS)  # in every row
_BASE = frozenset(FIELDS)


def case_row(case: CaseResult) -> dict:
    """A case as its summary row: every base field, and the optional ones that are set.

    Read field by field (every field is a scalar or a string): ``dataclasses.asdict`` deep-copies
    each value, which would be most of the run's own cost per input (the report runs in the
    driving process, the serial part of every engine)."""
    return {k: v for k in ALL_FIELDS if (v := getattr(case, k)) is not None or k in _BASE}


def describe_error(error: BaseException) -> str:
    """A failed input's reason as one message: ours name the file already, others get their type."""
    return str(error) if isinstance(error, ImageReadError) else f"{type(error).__name__}: {error}"


class Report:
    """Collects cases, failures and table rows; writes summary.json, report.csv and the tables.

    ``spool``: a path for a temporary file (removed by ``close()``) that holds the
    per-case and table rows instead of memory; the summary and CSVs are streamed from
    it in the same order and with the same bytes. Without it the rows are kept in an
    in-memory database. ``tables``: name -> columns of the per-run tables (``objects``).
    """

    def __init__(
        self,
        n_images: int = 0,
        spool: str | os.PathLike | None = None,
        tables: dict[str, Sequence[str]] | None = None,
    ):
        self.n_images = n_images
        self.tables = {name: tuple(cols) for name, cols in (tables or {}).items()}
        self._spool = RunSpool(Path(spool) if spool is not None else None, (*MEAN_FIELDS, QUALITY))
        self.failed: list[dict[str, str]] = []
        self.n_written = 0
        self.n_skipped = 0
        self.n_cases = 0
        self.n_objects: int | None = None  # total over the cases that counted objects (--labels)
        self._optional: set[str] = set()  # optional fields some case has
        self.stopped: str | None = None  # why the run stopped before its end (summary.json "stopped")

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spool file (if any); the counts stay, the rows are gone."""
        self._spool.close()

    def unspool(self, max_rows: int = 100_000) -> bool:
        """Move the rows from the spool file into memory and remove the file, when there are at
        most ``max_rows`` cases: a run stopped by a full disk frees the spool's space for its summary."""
        return self.n_cases <= max_rows and self._spool.to_memory()

    @property
    def cases(self) -> list[CaseResult]:
        """All cases in the order they were added."""
        return [CaseResult(**row) for row in self._spool.cases(order="seq")]

    def add(self, case: CaseResult) -> None:
        row = case_row(case)
        self._spool.add_case(case.input, row)
        self._optional.update(k for k in row if k not in FIELDS)
        self.n_cases += 1
        self.n_written += case.status == "written"
        self.n_skipped += case.status == "skipped"
        if case.n_objects is not None:
            self.n_objects = (self.n_objects or 0) + case.n_objects

    def add_rows(self, table: str, input: str, rows: Sequence[dict | Sequence]) -> None:
        """Rows of one input for a per-run table: dicts with its columns, or value lists in column order."""
        if table not in self.tables:
            raise KeyError(f"no table {table!r} in this report (tables: {sorted(self.tables)})")
        cols = self.tables[table]
        self._spool.add_rows(table, input, [[r[c] for c in cols] if isinstance(r, dict) else r for r in rows])

    def fail(self, input: str | os.PathLike, error: BaseException | str) -> str:
        """Record a failed input; returns the message (path and reason)."""
        msg = describe_error(error) if isinstance(error, BaseException) else error
        self.failed.append({"input": str(input), "error": msg})
        return msg

    @property
    def n_failed(self) -> int:
        return len({f["input"] for f in self.failed})

    @property
    def csv_fields(self) -> list[str]:
        """report.csv's columns: the base fields, then the optional ones some case has."""
        return [*FIELDS, *(f for f in OPTIONAL_FIELDS if f in self._optional)]

    def sorted_cases(self) -> Iterator[CaseResult]:
        """Cases sorted by input: the rows do not depend on completion order, so a run,
        its shards merged (segreport) and a Ray run give the same bytes."""
        return (CaseResult(**row) for row in self._spool.cases())

    def _metrics(self) -> dict[str, np.ndarray]:
        """Each mean field's values over the cases that have it, sorted by input."""
        return {m: self._spool.means_input(m) for m in MEAN_FIELDS}

    def mean(self) -> dict[str, float | None]:
        """Pixel metrics (None without ground truth); instance metrics only when some case has them."""
        vals = self._metrics()
        out = {m: (float(np.mean(vals[m])) if len(vals[m]) else None) for m in METRICS}
        out.update({m: float(np.mean(vals[m])) for m in INSTANCE_METRICS if len(vals[m])})
        return out

    def quality(self) -> dict | None:
        """summary.json's ``quality`` (``quality.summarise``): None when no case has a score."""
        return summarise(self._spool.means_input(QUALITY))

    def summary(self, with_cases: bool = True) -> dict:
        failed = sorted(self.failed, key=lambda f: f["input"])
        return {
            "n_images": self.n_images,
            "n_written": self.n_written,
            "n_failed": self.n_failed,
            "n_skipped": self.n_skipped,
            "failed": failed,
            "mean": self.mean(),
            "quality": self.quality(),
            **({"n_objects": self.n_objects} if self.n_objects is not None else {}),
            **({"stopped": self.stopped} if self.stopped is not None else {}),
            **({"metric_per_case": [case_row(c) for c in self.sorted_cases()]} if with_cases else {}),
        }

    def write(
        self, summary_path: Path, csv_path: Path | None = None, tables: dict[str, Path] | None = None
    ) -> None:
        """Write summary.json (and report.csv, and each table's CSV) atomically, one row at a time."""
        for name, path in (tables or {}).items():
            self.write_table(name, path)
        self.write_summary(summary_path)
        if csv_path is not None:
            self.write_csv(csv_path)

    def write_summary(self, path: Path) -> None:
        """summary.json, atomically. The text is what ``json.dumps(self.summary(), indent=2)``
        gives, but the per-case rows are encoded and written one by one (streamed from the
        spool), so memory stays flat however many inputs there were."""
        head = self.summary(with_cases=False)
        text = json.dumps({**head, "metric_per_case": []}, indent=2)
        with atomic_text(path) as f:
            if not self.n_cases:
                f.write(text + "\n")
                return
            f.write(text[: text.rindex("[]")] + "[")
            for i, c in enumerate(self.sorted_cases()):
                row = json.dumps(case_row(c), indent=2).replace("\n", "\n    ")
                f.write(("," if i else "") + "\n    " + row)
            f.write("\n  ]\n}\n")

    def write_csv(self, path: Path) -> None:
        """report.csv, atomically, one row per case sorted by input."""
        _write_csv(path, self.csv_fields, (case_row(c) for c in self.sorted_cases()))

    def write_table(self, name: str, path: Path) -> None:
        """One per-run table as CSV (its columns, rows sorted by input), atomically."""
        cols = self.tables[name]
        _write_csv(path, cols, (dict(zip(cols, row, strict=True)) for row in self._spool.table_rows(name)))

    def summary_text(self) -> str:
        """The summary as a few lines of text: counts, objects, and the mean metrics when masks
        were matched (what seginfer and segreport print)."""
        lines = [
            f"images {self.n_images}   written {self.n_written}   skipped {self.n_skipped}   "
            f"failed {self.n_failed}" + (f"   objects {self.n_objects}" if self.n_objects is not None else "")
        ]
        q = self.quality()
        if q is not None:
            lines.append(
                f"quality (label-free, 0..1)   median {q['median']:.2f}   mean {q['mean']:.2f}   "
                f"lowest decile {q['lowest_decile']:.2f}   n={q['n']}"
            )
        metrics = self._metrics()
        n_ev = len(metrics["iou"])
        if n_ev:
            lines.append(f"{'metric':<18}{'mean':>8}{'min':>8}{'max':>8}   n={n_ev}")
            for m in METRICS + INSTANCE_METRICS:
                vals = metrics[m]
                if len(vals):
                    lines.append(f"{m:<18}{vals.mean():8.4f}{vals.min():8.4f}{vals.max():8.4f}")
            n_inst = len(metrics["f1"])
            if n_inst:
                lines.append(f"instance metrics at IoU 0.5 (StarDist's matching) over {n_inst} image(s)")
            n_missing = self.n_cases - n_ev
            if n_missing:
                lines.append(
                    f"{n_missing} input(s) had no matching mask (listed in summary.json with mask null)"
                )
        return "\n".join(lines)


def _write_csv(path: Path, fields: Sequence[str], rows) -> None:
    """A CSV of dict rows, atomically; names that are not UTF-8 as their own bytes (module docstring)."""
    with atomic_text(path, errors="surrogateescape") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n")
        # csv quotes a field with a newline but not one with a carriage return (it only looks for
        # the line terminator's characters): a row with one quotes every field
        quoted = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writeheader()
        for row in rows:
            cr = any(isinstance(v, str) and "\r" in v for v in row.values())
            (quoted if cr else writer).writerow(row)
