"""The run's report: per-image overlap with ground-truth masks, ``report.csv`` and ``summary.json``.

Masks are matched to inputs by relative path (any image suffix: ``a/b.png``
matches ``a/b.tif``), else by a unique file stem anywhere under the masks
folder; any nonzero value is foreground. Per image (all pages together):

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
itself was unreadable (that input is written *and* failed).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath

import numpy as np

from unsupseg.core.errors import ImageReadError
from unsupseg.core.imageio import is_image_path, read_mask, temp_path_beside
from unsupseg.core.metrics import dice, iou, iou_any_polarity

METRICS = ("iou", "iou_any_polarity", "dice")


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


class MaskIndex:
    """Ground-truth masks under a folder, looked up by relative path or by stem."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ImageReadError(
                f"{self.root}: masks folder not found; pass --masks DIR with ground-truth masks"
            )
        self._by_rel: dict[str, Path] = {}
        self._by_stem: dict[str, list[Path]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if not is_image_path(path):
                    continue
                rel = PurePosixPath(path.relative_to(self.root).as_posix())
                self._by_rel.setdefault(str(rel.with_suffix("")), path)
                self._by_stem.setdefault(rel.stem, []).append(path)

    def __len__(self) -> int:
        return len(self._by_rel)

    def find(self, rel: PurePosixPath) -> Path | None:
        """Mask for the input at relative path ``rel``, or None."""
        hit = self._by_rel.get(str(rel.with_suffix("")))
        if hit is not None:
            return hit
        same_stem = self._by_stem.get(rel.stem, [])
        return same_stem[0] if len(same_stem) == 1 else None


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


def _write_atomic(path: Path, write) -> None:
    """``write(text_file)`` into a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _shape(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape[1:])) + (f" x {a.shape[0]} pages" if a.shape[0] > 1 else "")


class Report:
    """Collects cases and failures; writes report.csv and summary.json."""

    def __init__(self, n_images: int = 0):
        self.n_images = n_images
        self.cases: list[CaseResult] = []
        self.failed: list[dict[str, str]] = []
        self.n_written = 0

    def add(self, case: CaseResult) -> None:
        self.cases.append(case)
        self.n_written += case.status == "written"

    def fail(self, input: str | os.PathLike, error: BaseException | str) -> str:
        """Record a failed input; returns the message (path and reason)."""
        if isinstance(error, BaseException):
            msg = str(error) if isinstance(error, ImageReadError) else f"{type(error).__name__}: {error}"
        else:
            msg = error
        self.failed.append({"input": str(input), "error": msg})
        return msg

    @property
    def n_failed(self) -> int:
        return len({f["input"] for f in self.failed})

    @property
    def n_skipped(self) -> int:
        return sum(c.status == "skipped" for c in self.cases)

    @property
    def evaluated(self) -> list[CaseResult]:
        """Cases with metrics, sorted by input: means do not depend on completion order,
        so a run, its shards merged (segreport) and a Ray run give the same bytes."""
        return sorted((c for c in self.cases if c.iou is not None), key=lambda c: c.input)

    def mean(self) -> dict[str, float | None]:
        ev = self.evaluated
        return {m: (float(np.mean([getattr(c, m) for c in ev])) if ev else None) for m in METRICS}

    def summary(self, with_cases: bool = True) -> dict:
        failed = sorted(self.failed, key=lambda f: f["input"])
        return {
            "n_images": self.n_images,
            "n_written": self.n_written,
            "n_failed": self.n_failed,
            "n_skipped": self.n_skipped,
            "failed": failed,
            "mean": self.mean(),
            **(
                {"metric_per_case": [asdict(c) for c in sorted(self.cases, key=lambda c: c.input)]}
                if with_cases
                else {}
            ),
        }

    def write(self, summary_path: Path, csv_path: Path | None = None) -> None:
        """Write summary.json (and report.csv) atomically, one case at a time.

        The text is what ``json.dumps(self.summary(), indent=2)`` gives, but the per-case
        rows are encoded and written one by one, so memory stays flat however many
        inputs there were (a 10,000-file summary no longer builds ~40 MB of dicts).
        """
        cases = sorted(self.cases, key=lambda c: c.input)

        def summary_json(f) -> None:
            head = self.summary(with_cases=False)
            text = json.dumps({**head, "metric_per_case": []}, indent=2)
            if not cases:
                f.write(text + "\n")
                return
            f.write(text[: text.rindex("[]")] + "[")
            for i, c in enumerate(cases):
                row = json.dumps(asdict(c), indent=2).replace("\n", "\n    ")
                f.write(("," if i else "") + "\n    " + row)
            f.write("\n  ]\n}\n")

        _write_atomic(summary_path, summary_json)
        if csv_path is not None:

            def report_csv(f) -> None:
                writer = csv.DictWriter(
                    f, fieldnames=[fl.name for fl in fields(CaseResult)], lineterminator="\n"
                )
                writer.writeheader()
                for c in cases:
                    writer.writerow(asdict(c))

            _write_atomic(csv_path, report_csv)

    def table(self) -> str:
        """A short text table: counts, and mean metrics when masks were matched."""
        lines = [
            f"images {self.n_images}   written {self.n_written}   skipped {self.n_skipped}   "
            f"failed {self.n_failed}"
        ]
        ev = self.evaluated
        if ev:
            lines.append(f"{'metric':<18}{'mean':>8}{'min':>8}{'max':>8}   n={len(ev)}")
            for m in METRICS:
                vals = np.array([getattr(c, m) for c in ev])
                lines.append(f"{m:<18}{vals.mean():8.4f}{vals.min():8.4f}{vals.max():8.4f}")
            n_missing = len(self.cases) - len(ev)
            if n_missing:
                lines.append(
                    f"{n_missing} input(s) had no matching mask (listed in summary.json with mask null)"
                )
        return "\n".join(lines)
