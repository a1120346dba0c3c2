"""Merge the run files of ``seginfer --shard I/N`` into the report one run would write.

Each shard writes ``summary-shard-I-of-N.json`` (and ``report-shard-I-of-N.csv``
with ``--masks``, ``objects-shard-I-of-N.csv`` with ``--labels``) into the shared
output folder. ``merge_shards`` reads all N summaries back into one ``Report``: the
per-case rows and failures are joined, the counts summed and the means recomputed
over the cases, and the shards' table rows (``objects``) are spooled as they are
(strings, so their bytes do not change), so ``Report.write`` gives ``summary.json`` /
``report.csv`` / ``objects.csv`` with the same bytes as a single ``seginfer`` run over
all inputs (rows sorted by input, same key order).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from unsupseg.infer.errors import MergeError
from unsupseg.infer.report import FIELDS, OPTIONAL_FIELDS, CaseResult, Report
from unsupseg.infer.runfiles import SHARD_SUMMARY, SHARD_SUMMARY_GLOB, RunFiles
from unsupseg.infer.writers import WRITERS

_BASE_FIELDS = set(FIELDS)  # in every row
_ALLOWED_FIELDS = _BASE_FIELDS | set(OPTIONAL_FIELDS)
# the per-run tables a shard may have written: name -> columns
_TABLES = {w.table: w.fields for w in WRITERS.values() if w.table}


@dataclass
class Merged:
    report: Report  # all shards' cases, failures and table rows
    n_shards: int  # N of the I/N shards found
    with_csv: bool  # the shards wrote report-shard-*.csv (every shard does; older ones only with --masks)
    tables: tuple[str, ...] = ()  # the per-run tables the shards wrote (e.g. "objects")


def shard_summaries(folder: Path) -> tuple[int, dict[int, Path]]:
    """(N, {I: path}) of the complete set of summary-shard-I-of-N.json files in ``folder``."""
    found: dict[int, dict[int, Path]] = {}
    for path in sorted(Path(folder).glob(SHARD_SUMMARY_GLOB)):
        m = SHARD_SUMMARY.fullmatch(path.name)
        if m:
            found.setdefault(int(m[2]), {})[int(m[1])] = path
    if not found:
        raise MergeError(
            f"{folder}: no summary-shard-I-of-N.json files; run `seginfer --shard I/N --output {folder}` "
            "for every shard first"
        )
    if len(found) > 1:
        runs = ", ".join(f"{len(v)} of {n}" for n, v in sorted(found.items()))
        raise MergeError(
            f"{folder}: shard files of runs with different N ({runs}); "
            "remove the files of the runs you do not want to merge"
        )
    ((n, shards),) = found.items()
    missing = [i for i in range(1, n + 1) if i not in shards]
    if missing:
        names = ", ".join(f"{i}/{n}" for i in missing)
        raise MergeError(
            f"{folder}: shard(s) {names} have no summary-shard-I-of-{n}.json; run them "
            f"(`seginfer --shard I/{n} ...`, add --skip-existing to resume a stopped one) and merge again"
        )
    return n, shards


def merge_shards(folder: Path, spool: Path | None = None) -> Merged:
    """Read every shard summary of ``folder`` into one Report.

    ``spool``: a temporary file for the Report's rows (see ``Report``; the caller closes
    the report). With it, one shard's parsed summary is in memory at a time, not the
    rows of all shards.
    """
    folder = Path(folder)
    try:
        n, shards = shard_summaries(folder)
    except BaseException:
        if spool is not None:
            Path(spool).unlink(missing_ok=True)
        raise
    tables = tuple(t for t in _TABLES if any(RunFiles(folder, (i, n)).table(t).exists() for i in shards))
    report = Report(spool=spool, tables={t: _TABLES[t] for t in tables})
    try:
        _merge_into(report, n, shards)
        for table in tables:
            _merge_table(report, table, [RunFiles(folder, (i, n)).table(table) for i in sorted(shards)])
    except BaseException:
        report.close()
        raise
    with_csv = any(RunFiles(folder, (i, n)).report.exists() for i in shards)
    return Merged(report, n, with_csv, tables)


def _merge_table(report: Report, table: str, paths: list[Path]) -> None:
    """Spool the rows of every shard's TABLE-shard-I-of-N.csv (values kept as the strings written)."""
    cols = list(_TABLES[table])
    for path in paths:
        if not path.exists():  # a shard with no inputs of its own writes the table anyway; be lenient
            continue
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != cols:
                raise MergeError(
                    f"{path}: columns {header} are not those of {table}.csv {cols}; was it written by "
                    "another unsupseg version? Re-run that shard"
                )
            batch: list[list[str]] = []
            key = None
            for row in reader:
                if row[0] != key and batch:  # one input's rows at a time, keyed by its "image"
                    report.add_rows(table, key, batch)
                    batch = []
                key = row[0]
                batch.append(row)
            if batch:
                report.add_rows(table, key, batch)


def _merge_into(report: Report, n: int, shards: dict[int, Path]) -> None:
    seen: dict[str, int] = {}  # input -> its shard: one string per input, the rows are spooled
    for i, path in sorted(shards.items()):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            report.n_images += int(summary["n_images"])
            rows, failed = summary["metric_per_case"], summary["failed"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MergeError(
                f"{path}: not a seginfer summary ({type(e).__name__}: {e}); re-run shard {i}/{n}"
            ) from None
        if "stopped" in summary:
            raise MergeError(
                f"{path}: shard {i}/{n} stopped before its end ({summary['stopped']}); resume it with "
                f"`seginfer --shard {i}/{n} ... --skip-existing` and merge again"
            )
        for row in rows:
            if not _BASE_FIELDS <= set(row) <= _ALLOWED_FIELDS:
                raise MergeError(
                    f"{path}: a metric_per_case row has keys {sorted(row)}, expected {sorted(_BASE_FIELDS)} "
                    f"and optionally {list(OPTIONAL_FIELDS)}; was it written by another unsupseg version? "
                    f"Re-run shard {i}/{n}"
                )
            if row["input"] in seen:
                raise MergeError(
                    f"{row['input']} is in shard {seen[row['input']]}/{n} and {i}/{n}; the shards "
                    "came from different input lists. Re-run all shards with the same --input"
                )
            seen[row["input"]] = i
            report.add(CaseResult(**row))
        report.failed.extend({"input": f["input"], "error": f["error"]} for f in failed)
        del summary, rows  # one shard's parsed summary at a time
