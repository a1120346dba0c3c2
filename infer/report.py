"""The run's report: per-image overlap with ground-truth masks, ``report.csv`` and ``summary.json``.

Ground-truth masks are found with ``core.files.MaskIndex``; any nonzero value is
foreground. Per image (all pages together):

- ``iou``: IoU of the mask as written (after the polarity rule);
- ``iou_any_polarity``: max(IoU(mask), IoU(not mask)), the seed notebook's metric;
- ``dice``; pixel counts ``n_pixels``, ``n_foreground`` (written mask),
  ``n_mask_foreground`` (ground truth) and ``n_intersection``.

``summary.json`` follows the contract in DESIGN.md (modelled on nnU-Net's)::

    {"n_images", "n_written", "n_failed", "n_skipped",
     "failed": [{"input", "error"}],
     "mean": {"iou", "iou_any_polarity", "dice"},
     "metric_per_case": [{"input", "output", "status", "mask", "iou", ...}]}

It is written on every run. ``mean`` holds the averages over the inputs that
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
gives the bytes back) and report.csv writes as the name's own bytes (read it with
``encoding="utf-8", errors="surrogateescape"``). Names that are UTF-8 are written as
before, byte for byte.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from unsupseg.core.atomic import atomic_text
from unsupseg.core.errors import ImageReadError, OutputError
from unsupseg.core.imageio import read_mask
from unsupseg.core.metrics import dice, iou, iou_any_polarity

METRICS = ("iou", "iou_any_polarity", "dice")
log = logging.getLogger(__name__)


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


def evaluate(case: CaseResult, pred: np.ndarray, mask_path: Path) -> None:
    """Fill the overlap metrics of ``case``: written mask ``pred`` (P, H, W) vs the mask file."""
    gt = read_mask(mask_path)
    if gt.shape != pred.shape:
        raise ImageReadError(
            f"{mask_path}: mask shape {_shape(gt)} does not match the image {_shape(pred)}; "
            "masks must have the image's size and page count"
        )
    case.mask = str(mask_path)
    case.iou, case.iou_any_polarity, case.dice = iou(pred, gt), iou_any_polarity(pred, gt), dice(pred, gt)
    case.n_mask_foreground, case.n_intersection = int(np.count_nonzero(gt)), int(np.count_nonzero(pred & gt))


def _shape(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape[1:])) + (f" x {a.shape[0]} pages" if a.shape[0] > 1 else "")


FIELDS = tuple(f.name for f in fields(CaseResult))


def describe_error(error: BaseException) -> str:
    """A failed input's reason as one message: ours name the file already, others get their type."""
    return str(error) if isinstance(error, ImageReadError) else f"{type(error).__name__}: {error}"


class _CaseSpool:
    """Case rows in a temporary SQLite file (stdlib): appended as they come, read back
    sorted by input with SQLite's own external sort, so memory stays flat however many
    inputs a run has. Keys are the input's UTF-8 bytes (``surrogatepass``: any file
    name), whose byte order is Python's string order; ties keep insertion order."""

    BATCH = 512  # rows per INSERT

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = None
        with self._output():
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=OFF")
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.execute("PRAGMA cache_size=-256")  # KiB: SQLite's page cache must not grow with the rows
            self.db.execute("PRAGMA temp_store=FILE")  # its sort spills to temporary files, not memory
            self.db.execute(
                "CREATE TABLE cases "
                "(seq INTEGER PRIMARY KEY, key BLOB, iou REAL, iou_any REAL, dice REAL, row TEXT)"
            )
        self.pending: list[tuple] = []
        self.n = 0

    @contextlib.contextmanager
    def _output(self) -> Iterator[None]:
        """SQLite's errors on the spool ("database or disk is full", "attempt to write a readonly
        database", "disk I/O error") are the output folder's: the run stops with OutputError."""
        try:
            yield
        except sqlite3.Error as e:
            raise OutputError(f"cannot keep the report rows in {self.path.parent}: {e}") from e

    def add(self, case: CaseResult) -> None:
        row = json.dumps([getattr(case, f) for f in FIELDS])
        key = case.input.encode("utf-8", "surrogatepass")
        self.pending.append((key, case.iou, case.iou_any_polarity, case.dice, row))
        self.n += 1
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            with self._output():
                if self.db.in_transaction:  # a failed batch left its transaction open
                    self.db.execute("ROLLBACK")
                self.db.execute("BEGIN")
                self.db.executemany(
                    "INSERT INTO cases (key, iou, iou_any, dice, row) VALUES (?, ?, ?, ?, ?)", self.pending
                )
                self.db.execute("COMMIT")
            self.pending = []

    def rows(self, order: str = "key, seq") -> Iterator[CaseResult]:
        self.flush()
        for (row,) in self.db.execute(f"SELECT row FROM cases ORDER BY {order}"):
            yield CaseResult(*json.loads(row))

    def metrics(self) -> dict[str, np.ndarray]:
        """The metrics of the evaluated cases, sorted by input (as ``Report.evaluated``)."""
        self.flush()
        cur = self.db.execute("SELECT iou, iou_any, dice FROM cases WHERE iou IS NOT NULL ORDER BY key, seq")
        vals = np.array(cur.fetchall(), dtype=np.float64).reshape(-1, 3)
        return {m: vals[:, k] for k, m in enumerate(METRICS)}

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:  # e.g. the output went read-only: the next run removes it (runlock.py)
            log.warning("could not remove the report spool %s (%s); the next run removes it", self.path, e)


class Report:
    """Collects cases and failures; writes report.csv and summary.json.

    ``spool``: a path for a temporary file (removed by ``close()``) that holds the
    per-case rows instead of memory; the summary and CSV are streamed from it in the
    same order and with the same bytes. Without it the rows are kept in ``cases``.
    """

    def __init__(self, n_images: int = 0, spool: str | os.PathLike | None = None):
        self.n_images = n_images
        self._spool = _CaseSpool(Path(spool)) if spool is not None else None
        self._cases: list[CaseResult] = []
        self.failed: list[dict[str, str]] = []
        self.n_written = 0
        self.n_skipped = 0
        self.n_cases = 0
        self.stopped: str | None = None  # why the run stopped before its end (summary.json "stopped")

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spool file (if any); the counts stay, the rows are gone."""
        if self._spool is not None:
            self._spool.close()

    def unspool(self, max_rows: int = 100_000) -> bool:
        """Move the rows from the spool file into memory and remove the file, when there are at
        most ``max_rows``: a run stopped by a full disk frees the spool's space for its summary."""
        if self._spool is None or self.n_cases > max_rows:
            return False
        self._cases = list(self._spool.rows(order="seq"))
        self._spool.close()
        self._spool = None
        return True

    @property
    def cases(self) -> list[CaseResult]:
        """All cases in the order they were added (read back from the spool if there is one)."""
        if self._spool is None:
            return self._cases
        return list(self._spool.rows(order="seq"))

    def add(self, case: CaseResult) -> None:
        if self._spool is None:
            self._cases.append(case)
        else:
            self._spool.add(case)
        self.n_cases += 1
        self.n_written += case.status == "written"
        self.n_skipped += case.status == "skipped"

    def fail(self, input: str | os.PathLike, error: BaseException | str) -> str:
        """Record a failed input; returns the message (path and reason)."""
        msg = describe_error(error) if isinstance(error, BaseException) else error
        self.failed.append({"input": str(input), "error": msg})
        return msg

    @property
    def n_failed(self) -> int:
        return len({f["input"] for f in self.failed})

    def sorted_cases(self) -> Iterator[CaseResult]:
        """Cases sorted by input: the rows do not depend on completion order, so a run,
        its shards merged (segreport) and a Ray run give the same bytes."""
        if self._spool is not None:
            return self._spool.rows()
        return iter(sorted(self._cases, key=lambda c: c.input))

    @property
    def evaluated(self) -> list[CaseResult]:
        """Cases with metrics, sorted by input."""
        return [c for c in self.sorted_cases() if c.iou is not None]

    def _metrics(self) -> dict[str, np.ndarray]:
        if self._spool is not None:
            return self._spool.metrics()
        ev = self.evaluated
        return {m: np.array([getattr(c, m) for c in ev], dtype=np.float64) for m in METRICS}

    def mean(self) -> dict[str, float | None]:
        vals = self._metrics()
        return {m: (float(np.mean(v)) if len(v) else None) for m, v in vals.items()}

    def summary(self, with_cases: bool = True) -> dict:
        failed = sorted(self.failed, key=lambda f: f["input"])
        return {
            "n_images": self.n_images,
            "n_written": self.n_written,
            "n_failed": self.n_failed,
            "n_skipped": self.n_skipped,
            "failed": failed,
            "mean": self.mean(),
            **({"stopped": self.stopped} if self.stopped is not None else {}),
            **({"metric_per_case": [asdict(c) for c in self.sorted_cases()]} if with_cases else {}),
        }

    def write(self, summary_path: Path, csv_path: Path | None = None) -> None:
        """Write summary.json (and report.csv) atomically, one case at a time."""
        self.write_summary(summary_path)
        if csv_path is not None:
            self.write_csv(csv_path)

    def write_summary(self, path: Path) -> None:
        """summary.json, atomically. The text is what ``json.dumps(self.summary(), indent=2)``
        gives, but the per-case rows are encoded and written one by one (streamed from the
        spool when there is one), so memory stays flat however many inputs there were."""
        head = self.summary(with_cases=False)
        text = json.dumps({**head, "metric_per_case": []}, indent=2)
        with atomic_text(path) as f:
            if not self.n_cases:
                f.write(text + "\n")
                return
            f.write(text[: text.rindex("[]")] + "[")
            for i, c in enumerate(self.sorted_cases()):
                row = json.dumps(asdict(c), indent=2).replace("\n", "\n    ")
                f.write(("," if i else "") + "\n    " + row)
            f.write("\n  ]\n}\n")

    def write_csv(self, path: Path) -> None:
        """report.csv, atomically, one row per case sorted by input; names that are not UTF-8
        as their own bytes (see the module docstring)."""
        with atomic_text(path, errors="surrogateescape") as f:
            writer = csv.DictWriter(f, fieldnames=list(FIELDS), lineterminator="\n")
            # csv quotes a field with a newline but not one with a carriage return (it only looks for
            # the line terminator's characters): a name with one makes its row quote every field
            quoted = csv.DictWriter(f, fieldnames=list(FIELDS), lineterminator="\n", quoting=csv.QUOTE_ALL)
            writer.writeheader()
            for c in self.sorted_cases():
                row = asdict(c)
                cr = any(isinstance(v, str) and "\r" in v for v in row.values())
                (quoted if cr else writer).writerow(row)

    def table(self) -> str:
        """A short text table: counts, and mean metrics when masks were matched."""
        lines = [
            f"images {self.n_images}   written {self.n_written}   skipped {self.n_skipped}   "
            f"failed {self.n_failed}"
        ]
        metrics = self._metrics()
        n_ev = len(metrics["iou"])
        if n_ev:
            lines.append(f"{'metric':<18}{'mean':>8}{'min':>8}{'max':>8}   n={n_ev}")
            for m in METRICS:
                vals = metrics[m]
                lines.append(f"{m:<18}{vals.mean():8.4f}{vals.min():8.4f}{vals.max():8.4f}")
            n_missing = self.n_cases - n_ev
            if n_missing:
                lines.append(
                    f"{n_missing} input(s) had no matching mask (listed in summary.json with mask null)"
                )
        return "\n".join(lines)
