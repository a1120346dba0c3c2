"""The run's rows on disk: report cases and per-run tables (``objects.csv``) in one temporary SQLite file.

Rows are appended as inputs finish and read back sorted by input with SQLite's own
external sort, so memory stays flat however many inputs (or objects) a run has. Keys
are the input's UTF-8 bytes (``surrogatepass``: any file name), whose byte order is
Python's string order; ties keep insertion order, so one input's rows stay in the
order its writer gave them. stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from unsupseg.core.errors import OutputError

log = logging.getLogger(__name__)


def _key(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class RunSpool:
    """Cases (one JSON row each, plus the columns the means need) and table rows, on disk.

    ``mean_fields``: the case fields averaged in the summary; each gets a REAL column so
    the means are one sorted SELECT, never a parse of every row.
    """

    BATCH = 512  # rows per INSERT

    def __init__(self, path: Path | None, mean_fields: Sequence[str]):
        self.path = Path(path) if path is not None else None  # None: an in-memory database
        self.mean_fields = tuple(mean_fields)
        where = str(self.path) if self.path is not None else ":memory:"
        self.db = None
        with self._output():
            self.db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=OFF")
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.execute("PRAGMA cache_size=-256")  # KiB: SQLite's page cache must not grow with the rows
            self.db.execute("PRAGMA temp_store=FILE")  # its sort spills to temporary files, not memory
            cols = "".join(f", m{k} REAL" for k in range(len(self.mean_fields)))
            self.db.execute(f"CREATE TABLE cases (seq INTEGER PRIMARY KEY, key BLOB, row TEXT{cols})")
            self.db.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, tab TEXT, key BLOB, row TEXT)")
        self._insert_case = (
            f"INSERT INTO cases (key, row{''.join(f', m{k}' for k in range(len(self.mean_fields)))}) "
            f"VALUES (?, ?{', ?' * len(self.mean_fields)})"
        )
        self.pending_cases: list[tuple] = []
        self.pending_rows: list[tuple] = []

    @contextlib.contextmanager
    def _output(self) -> Iterator[None]:
        """SQLite's errors on the spool ("database or disk is full", "attempt to write a readonly
        database", "disk I/O error") are the output folder's: the run stops with OutputError."""
        try:
            yield
        except sqlite3.Error as e:
            where = self.path.parent if self.path is not None else "memory"
            raise OutputError(f"cannot keep the report rows in {where}: {e}") from e

    # -- writing -------------------------------------------------------------------
    def add_case(self, key: str, row: dict) -> None:
        """One case: ``row`` (JSON-able dict) and its ``mean_fields`` values (None when absent)."""
        means = tuple(map(row.get, self.mean_fields))
        self.pending_cases.append((_key(key), json.dumps(row), *means))
        if len(self.pending_cases) >= self.BATCH:
            self.flush()

    def add_rows(self, table: str, key: str, rows: Sequence[Sequence]) -> None:
        """Rows (value lists in the table's column order) of one input for ``table``."""
        k = _key(key)
        self.pending_rows.extend((table, k, json.dumps(list(r))) for r in rows)
        if len(self.pending_rows) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not (self.pending_cases or self.pending_rows):
            return
        with self._output():
            if self.db.in_transaction:  # a failed batch left its transaction open
                self.db.execute("ROLLBACK")
            self.db.execute("BEGIN")
            if self.pending_cases:
                self.db.executemany(self._insert_case, self.pending_cases)
            if self.pending_rows:
                self.db.executemany("INSERT INTO rows (tab, key, row) VALUES (?, ?, ?)", self.pending_rows)
            self.db.execute("COMMIT")
        self.pending_cases, self.pending_rows = [], []

    # -- reading -------------------------------------------------------------------
    def cases(self, order: str = "key, seq") -> Iterator[dict]:
        self.flush()
        for (row,) in self.db.execute(f"SELECT row FROM cases ORDER BY {order}"):
            yield json.loads(row)

    def means_input(self, field: str) -> np.ndarray:
        """The non-null values of one mean field, sorted by input (the order of the summary's rows)."""
        self.flush()
        col = f"m{self.mean_fields.index(field)}"
        cur = self.db.execute(f"SELECT {col} FROM cases WHERE {col} IS NOT NULL ORDER BY key, seq")
        return np.array([v for (v,) in cur.fetchall()], dtype=np.float64)

    def table_rows(self, table: str) -> Iterator[list]:
        """The rows of ``table``, sorted by input, then in the order they were added."""
        self.flush()
        cur = self.db.execute("SELECT row FROM rows WHERE tab = ? ORDER BY key, seq", (table,))
        for (row,) in cur:
            yield json.loads(row)

    def to_memory(self) -> bool:
        """Move the rows into an in-memory database and remove the file (frees its disk space);
        False when there is no file or the rows cannot be read back."""
        if self.path is None or self.db is None:
            return False
        memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        try:
            if self.db.in_transaction:  # a batch the full disk refused: its rows are still pending
                self.db.execute("ROLLBACK")
            self.db.backup(memory)
        except sqlite3.Error:
            memory.close()
            return False
        self.close()
        self.db, self.path = memory, None
        self.flush()  # the pending rows, into memory
        return True

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.path is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:  # e.g. the output went read-only: the next run removes it (runlock.py)
            log.warning("could not remove the report spool %s (%s); the next run removes it", self.path, e)
