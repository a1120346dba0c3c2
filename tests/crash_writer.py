"""A test output writer that kills the worker process writing with it (tests/test_infer_processes.py).

It writes no file. In a worker process of ``ProcessEngine`` (never in the process that runs
the test) ``write`` sends SIGKILL to its own process:

- ``poison``: every time it writes an input whose path contains this text;
- ``marker``: once per run, on the worker's ``after``-th write, by whichever worker creates
  the file ``marker`` first (O_EXCL: one death however many workers there are).

Worker processes import this module by name to unpickle the writer (it is on the test
process's ``sys.path``, which they inherit). ``SETTINGS`` is read in the test's process when a
run makes its writers (``from_options``); the values travel with the writer.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

from unsupseg.infer.writers import OutputWriter

SETTINGS: dict = {}


class CrashWriter(OutputWriter):
    name = "crash"

    def __init__(self, poison: str | None = None, marker: str | None = None, after: int = 1):
        self.poison, self.marker, self.after = poison, marker, after
        self.writes = 0  # this process's writes

    @classmethod
    def from_options(cls, options) -> CrashWriter:
        return cls(**SETTINGS)

    def paths(self, item, pages):
        return []

    def candidates(self, item):
        return []

    def write(self, item, seg) -> None:
        if multiprocessing.parent_process() is None:  # the test's own process: never
            return
        self.writes += 1
        if self.poison is not None and self.poison in item.src:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.marker is not None and self.writes == self.after:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)
