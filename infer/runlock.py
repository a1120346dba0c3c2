"""One run per set of run files at a time, and removing what a killed run left behind.

``RunLock(files)`` is held for the whole of a run (``seginfer``, ``segreport``). It is
an OS file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows) on a hidden file
beside the run's files, ``.seginfer.lock`` or ``.seginfer-shard-I-of-N.lock``: a run
of the same files (two unsharded runs, two runs of one shard) is refused
(``RunLockedError``), shards of one job run side by side, and the OS releases the lock
however the process ends, ``kill -9`` included. The stdlib call is used rather than
the ``filelock`` package: its 4.x releases fall back to a marker file (which a
``kill -9`` leaves behind, locked forever) where the file system has no ``flock``,
with only a Python warning; here that case is a warning on stderr and a run without
the lock, never a stale one.

The lock file holds the holder's record (owner tag, host, pid, start time) while it
runs; only a clean end removes it. A record found on taking the lock is therefore that
of a run that was killed or stopped: its temporary files and report spool (tagged with
its owner, ``core.atomic``, Ray actors' included) are removed, on whichever host it
ran, and so are the temporary files of processes of this machine that no longer
exist. Files of other hosts' runs are left alone: their PIDs mean nothing here.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from unsupseg.core.atomic import owner_tag, remove_stale_temps
from unsupseg.infer.errors import RunLockedError
from unsupseg.infer.faults import output_error
from unsupseg.infer.runfiles import RunFiles

log = logging.getLogger(__name__)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # file system without locks


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` without waiting: True when taken, False when another process holds it."""
    if sys.platform == "win32":  # pragma: no cover - the CI runs on Linux
        import msvcrt

        try:
            os.lseek(fd, 1 << 30, os.SEEK_SET)  # a byte far past the record: readers are not blocked
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except PermissionError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return {}  # being written, or damaged: someone's, unknown whose
    return record if isinstance(record, dict) else {}


class RunLock:
    """Hold the lock of one run-file set (a context manager); see the module docstring."""

    def __init__(self, files: RunFiles):
        self.files = files
        self.path = Path(files.lock)
        self.owner = owner_tag()  # the tag of this run's temporary files
        self.fd: int | None = None
        self.locked = False  # False on a file system without locks (warned)
        self.previous: dict | None = None  # the record of a killed or stopped run found on taking the lock
        self.removed: list[str] = []  # its leftovers (and this host's other dead writers') removed
        self.clean = True  # False: the run did not end well; its record stays for the next run to act on

    def __enter__(self) -> RunLock:
        if self.fd is None:
            self.acquire()
        return self

    def acquire(self) -> None:
        """Make the folder, take the lock (RunLockedError when a live run holds it) and remove
        the stale files; an OSError of these steps is the output's (OutputError)."""
        try:
            os.makedirs(self.files.folder, exist_ok=True)
            self._acquire()
            self._remove_stale()
        except OSError as e:
            self.release()
            raise output_error(e, f"start a run in {self.files.folder}", self.files.folder) from None
        except BaseException:
            self.release()
            raise

    def __exit__(self, *exc) -> None:
        self.release(clean=self.clean)

    def _acquire(self) -> None:
        for _ in range(8):  # retried only when a finishing run removed the file we opened
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                taken = _try_lock(fd)
            except OSError as e:
                if e.errno not in _NO_LOCKS:
                    os.close(fd)
                    raise
                log.warning(
                    "%s: the file system does not support file locks (%s); a second run into this folder "
                    "is not refused, and only this host's leftovers are cleaned",
                    self.files.folder,
                    e.strerror,
                )
                self.fd, self.locked = fd, False
                return
            if not taken:
                holder = _read(fd)
                os.close(fd)
                raise RunLockedError(self._busy(holder))
            if not self._same_file(fd):
                os.close(fd)
                continue
            self.fd, self.locked = fd, True
            self.previous = _read(fd)
            record = {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
            return
        raise RunLockedError(f"{self.path}: could not take the run lock; another run keeps replacing it")

    def _same_file(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``path`` (a finishing holder removes it)."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _busy(self, holder: dict | None) -> str:
        who = "another run"
        if holder:
            pid, host, started = holder.get("pid"), holder.get("host"), holder.get("started")
            who = f"another run (pid {pid} on {host}, started {started})"
        return (
            f"{who} is writing {self.files.summary.name} and its masks into {self.files.folder}; "
            "wait for it to end, or choose another --output (shards of one job, --shard I/N, may run "
            "at the same time)"
        )

    def _remove_stale(self) -> None:
        """Remove the temporary files (``.NAME.OWNER.N.part``, the report spool too) whose writer is
        gone for sure: the killed previous holder's (any host), and dead processes' of this host."""
        gone = frozenset()
        if self.locked and self.previous is not None:
            owner = self.previous.get("owner")
            if isinstance(owner, str) and owner != self.owner:
                gone = frozenset([owner])
        self.removed = remove_stale_temps(self.files.folder, gone)
        if self.removed:
            killed = f" by a run that was killed or stopped (pid {self.previous.get('pid')})" if gone else ""
            log.warning(
                "removed %d temporary file(s) left%s in %s", len(self.removed), killed, self.files.folder
            )

    def release(self, clean: bool = True) -> None:
        """Release the lock, removing the record after a clean end; idempotent."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if self.locked and clean:
                os.unlink(self.path)  # still holding the lock: nobody else took this file
        except OSError as e:  # read-only by now: the record stays, and the next run cleans up after us
            log.debug("could not remove %s: %s", self.path, e)
        finally:
            os.close(fd)
