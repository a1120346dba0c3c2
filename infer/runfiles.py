"""The names of a run's own files in its output folder, for ``seginfer``, ``segreport`` and the merge.

    summary.json   always             report.csv   always              seginfer.json   the manifest
    objects.csv    with --labels (a per-run table: ``table("objects")``)
    .seginfer.lock while a run of these files is on (runlock.py), removed when it ends
    report.html    with --html, and its previews in report_files/ (the page's name + "_files")

A shard ``--shard I/N`` adds ``-shard-I-of-N`` to each name, so shards writing into
one folder never clobber each other (nor wait for each other's lock); ``segreport``
merges them into the plain names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from unsupseg.core.atomic import temp_path_beside

SHARD_SUMMARY = re.compile(r"summary-shard-(\d+)-of-(\d+)\.json")
SHARD_SUMMARY_GLOB = "summary-shard-*-of-*.json"


@dataclass(frozen=True)
class RunFiles:
    folder: Path  # the run's output folder
    shard: tuple[int, int] | None = None  # (I, N) of --shard I/N

    @property
    def suffix(self) -> str:
        return "" if self.shard is None else f"-shard-{self.shard[0]}-of-{self.shard[1]}"

    @property
    def summary(self) -> Path:
        return Path(self.folder) / f"summary{self.suffix}.json"

    @property
    def report(self) -> Path:
        return Path(self.folder) / f"report{self.suffix}.csv"

    @property
    def manifest(self) -> Path:
        return Path(self.folder) / f"seginfer{self.suffix}.json"

    @property
    def objects(self) -> Path:
        return self.table("objects")

    def table(self, name: str) -> Path:
        """The CSV of a per-run table (``objects`` -> ``objects.csv``)."""
        return Path(self.folder) / f"{name}{self.suffix}.csv"

    @property
    def lock(self) -> Path:
        """The run lock of these files (hidden; it holds the live run's record)."""
        return Path(self.folder) / f".seginfer{self.suffix}.lock"

    @property
    def html(self) -> Path:
        return Path(self.folder) / f"report{self.suffix}.html"

    def spool(self) -> Path:
        """A fresh hidden temporary file beside the summary for the run's spooled rows."""
        return temp_path_beside(self.summary)

    def shard_files(self, i: int, n: int) -> RunFiles:
        """The files of shard ``i`` of ``n`` in the same folder."""
        return RunFiles(self.folder, (i, n))
