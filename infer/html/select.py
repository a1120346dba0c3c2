"""Which inputs the HTML report shows, chosen from a run's rows in one pass with bounded memory.

A run of 100,000 images cannot show 100,000 thumbnails. The page shows

- the **worst** ``worst`` inputs: lowest IoU of the mask as written when the run has
  ground truth; without it the lowest label-free quality score (``infer/quality.py``,
  the rows' ``quality``); for rows without one (written by an older version) the most
  extreme masks, lowest min(f, 1 - f) for the foreground fraction f (a nearly empty or
  nearly full mask is the usual failure of a two-region model: nothing found, or the
  background taken);
- a **random** ``random`` of all inputs: the ones with the smallest hash of their input
  path (SHA-1), a uniform sample that is the same for a run and for its shards merged
  (each shard's smallest hashes contain the merged run's), and stable between builds;
- the **failed** inputs (up to ``failed`` in the grid; the table lists more).

``Selector`` takes the rows one at a time (``read_summary`` streams them from
summary.json) and keeps at most ``2 * (worst + random)`` of them, plus the histogram
counts: memory does not grow with the number of inputs. With ground truth it also keeps
(quality, IoU) of up to ``SCATTER`` inputs, the smallest hashes again, for the page's scatter plot.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

WORST = 200  # inputs shown as the worst
RANDOM = 200  # inputs shown as a random sample
FAILED = 200  # failed inputs shown in the grid
BINS = 20  # histogram bins over [0, 1]
SCATTER = 2000  # inputs in the scatter plot of quality against IoU (a uniform sample)
BY = ("iou", "quality", "fraction")  # what "worst" can mean


def name_hash(input_path: str) -> str:
    """The SHA-1 hex digest of an input path as recorded (any file name: surrogates kept)."""
    return hashlib.sha1(input_path.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Entry:
    """One input shown on the page."""

    input: str  # the input path as recorded in summary.json
    row: dict | None = None  # its metric_per_case row (None: it failed before a mask was written)
    error: str | None = None  # why it failed
    tags: set[str] = field(default_factory=set)  # "worst", "random", "failed"
    score: float | None = None  # the value it is ranked by (lower is worse)

    @property
    def key(self) -> str:
        """A file-name-safe key of the input (its previews are KEY.jpg ...)."""
        return name_hash(self.input)[:20]

    @property
    def fraction(self) -> float | None:
        if not self.row or not self.row.get("n_pixels"):
            return None
        return self.row["n_foreground"] / self.row["n_pixels"]


@dataclass
class Selection:
    by: str  # "iou", "quality" or "fraction": what "worst" means
    entries: list[Entry]  # what the grid shows, worst first (failures first of all)
    n_rows: int  # rows read (inputs with a mask written or kept)
    n_scored: int  # rows with a score (an IoU, or a known foreground fraction)
    n_worst: int  # shown as worst
    n_random: int  # shown as the random sample
    n_failed: int  # failed inputs in the run
    n_failed_shown: int  # failed inputs in the grid
    histogram: list[int]  # counts over BINS equal bins of [0, 1] of the score's source value
    scatter: list[tuple[float, float]] = field(default_factory=list)  # (quality, iou) of a sample
    n_pairs: int = 0  # rows with both a quality score and an IoU


class Selector:
    """Feed ``add`` every case row and ``fail`` every failure; ``result`` gives the Selection."""

    def __init__(self, by: str, worst: int = WORST, random: int = RANDOM, failed: int = FAILED):
        if by not in BY:
            raise ValueError(f"rank by one of {', '.join(BY)}, got {by!r}")
        self.by, self.k_worst, self.k_random, self.k_failed = by, worst, random, failed
        self._worst: list[tuple[float, str, dict]] = []
        self._random: list[tuple[str, dict]] = []
        self.failures: list[dict] = []
        self.histogram = [0] * BINS
        self.n_rows = self.n_scored = self.n_pairs = 0
        self._pairs: list[tuple[str, float, float]] = []  # (hash, quality, iou), the smallest hashes

    def add(self, row: dict) -> None:
        self.n_rows += 1
        value = self._value(row)
        if value is not None:
            self.n_scored += 1
            self.histogram[min(int(value * BINS), BINS - 1)] += 1
            score = self._score(value)
            self._worst.append((score, row["input"], row))
            if len(self._worst) >= 2 * self.k_worst + 64:
                self._worst = sorted(self._worst, key=_rank)[: self.k_worst]
        key = name_hash(row["input"])
        self._random.append((key, row))
        if len(self._random) >= 2 * self.k_random + 64:
            self._random = sorted(self._random, key=lambda t: t[0])[: self.k_random]
        if row.get("quality") is not None and row.get("iou") is not None:
            self.n_pairs += 1
            self._pairs.append((key, row["quality"], row["iou"]))
            if len(self._pairs) >= 2 * SCATTER + 64:
                self._pairs = sorted(self._pairs)[:SCATTER]

    def fail(self, failure: dict) -> None:
        self.failures.append(failure)

    def _value(self, row: dict) -> float | None:
        if self.by in ("iou", "quality"):
            return row.get(self.by)
        return row["n_foreground"] / row["n_pixels"] if row.get("n_pixels") else None

    def _score(self, value: float) -> float:
        """The rank of a row's value (lower is worse): the fraction's distance from 0 or 1."""
        return min(value, 1.0 - value) if self.by == "fraction" else value

    def result(self) -> Selection:
        worst = sorted(self._worst, key=_rank)[: self.k_worst]
        random = sorted(self._random, key=lambda t: t[0])[: self.k_random]
        entries: dict[str, Entry] = {}
        for score, name, row in worst:
            entries[name] = Entry(name, row, tags={"worst"}, score=score)
        for _, row in random:
            e = entries.setdefault(row["input"], Entry(row["input"], row))
            e.tags.add("random")
            if e.score is None:
                v = self._value(row)
                e.score = None if v is None else self._score(v)
        failures = sorted(self.failures, key=lambda f: f["input"])
        shown_failed = failures[: self.k_failed]
        for f in shown_failed:
            e = entries.setdefault(f["input"], Entry(f["input"]))
            e.error, e.tags = f["error"], e.tags | {"failed"}
        order = sorted(
            entries.values(),
            key=lambda e: ("failed" not in e.tags, e.score is None, e.score or 0.0, e.input),
        )
        return Selection(
            by=self.by,
            entries=order,
            n_rows=self.n_rows,
            n_scored=self.n_scored,
            n_worst=len(worst),
            n_random=len(random),
            n_failed=len({f["input"] for f in failures}),
            n_failed_shown=len(shown_failed),
            histogram=self.histogram,
            scatter=[(q, i) for _, q, i in sorted(self._pairs)[:SCATTER]],
            n_pairs=self.n_pairs,
        )


def _rank(t: tuple[float, str, dict]) -> tuple[float, str]:
    return t[0], t[1]


# ----------------------------------------------------------------------------- summary.json, streamed
_ROWS_KEY = '"metric_per_case": ['
_CHUNK = 1 << 20


def read_summary(path: str | os.PathLike) -> tuple[dict, Iterator[dict]]:
    """(head, rows) of a summary.json: the head without ``metric_per_case``, and its rows one
    at a time, parsed from the file in 1 MB chunks (a summary of 100,000 rows is never all in
    memory). A file laid out otherwise than seginfer writes it (rows not last) is read whole.
    """
    f = open(path, encoding="utf-8")  # noqa: SIM115  (closed by the generator, or below)
    try:
        buf = ""
        while _ROWS_KEY not in buf:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            buf += chunk
        at = buf.find(_ROWS_KEY)
        if at < 0:
            f.close()
            data = json.loads(buf)
            rows = data.pop("metric_per_case", [])
            return data, iter(rows)
        head = json.loads(buf[:at].rstrip().rstrip(",") + "}")
    except BaseException:
        f.close()
        raise
    return head, _rows(f, buf[at + len(_ROWS_KEY) :], path)


def _rows(f, buf: str, path) -> Iterator[dict]:
    decoder = json.JSONDecoder()
    pos = 0
    with f:
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                row, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                chunk = f.read(_CHUNK)
                if not chunk:
                    raise ValueError(f"{path}: summary.json ends inside metric_per_case; re-run") from None
                buf, pos = buf[pos:] + chunk, 0
                continue
            yield row
            pos = end
            if pos > _CHUNK:  # drop what was parsed
                buf, pos = buf[pos:], 0
