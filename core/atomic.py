"""Write a file under a temporary name beside it, then rename it over the target.

A crash, Ctrl-C or ``kill -9`` never leaves a half-written file under the real name:
the rename is atomic on one file system. Temporary names are hidden and say whose
they are, ``.NAME.OWNER.N.part``: OWNER is ``MACHINE-PID`` of the writing process
(or of the run it writes for, see ``writing_for``), MACHINE being the host name
plus, on Linux, the PID namespace, so that a leftover of a killed process can be
told apart from the file of a live one even when several hosts or containers
write into one shared folder (``stale_temp``). NAME is cut short when the whole
name would pass 255 bytes, so any name the file system allows can be written.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import itertools
import os
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEMP_SUFFIX = ".part"
NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, xfs, NFS, tmpfs, APFS)
_counter = itertools.count()
# .NAME.OWNER.N.part; OWNER has no dots. Older versions wrote a bare PID as OWNER.
_TEMP_NAME = re.compile(r"\.(?P<name>.*)\.(?P<owner>[A-Za-z0-9-]+)\.(?P<n>\d+)\.part", re.DOTALL)


def _machine() -> str:
    """This host (and PID namespace) as a tag of letters, digits and dashes."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    try:  # containers that share a host name (host networking) have their own PID namespace
        ns = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"; the same on every host's root
        host += "-" + re.sub(r"\D", "", ns)
    except OSError:
        pass
    return host[:80]


_MACHINE = _machine()


def owner_tag(pid: int | None = None) -> str:
    """``MACHINE-PID`` of this process (or of ``pid`` on this machine)."""
    return f"{_MACHINE}-{os.getpid() if pid is None else pid}"


@dataclass(frozen=True)
class _Policy:
    owner: str | None = None  # the tag of temporary names (None: this process's)
    root: str | None = None  # folders are created only below it, never it


_NO_POLICY = _Policy()
_policy: contextvars.ContextVar[_Policy | None] = contextvars.ContextVar("unsupseg_atomic", default=None)


def _current() -> _Policy:
    return _policy.get() or _NO_POLICY


@contextlib.contextmanager
def writing_for(owner: str | None = None, root: str | os.PathLike | None = None) -> Iterator[None]:
    """Inside the block (this thread or task), temporary names carry ``owner`` (a run's tag,
    ``owner_tag()`` of the process that holds the run's lock) instead of this process's,
    and a missing folder is created only below ``root``: when ``root`` itself is gone,
    writes fail with FileNotFoundError instead of re-creating it (a run whose output
    folder was removed must stop, not write into a new one)."""
    token = _policy.set(_Policy(owner, None if root is None else os.fspath(root)))
    try:
        yield
    finally:
        _policy.reset(token)


def temp_name(name: str, owner: str, n: int) -> str:
    """``.NAME.OWNER.N.part``, NAME shortened (by bytes) so the whole stays within NAME_MAX."""
    tail = f".{owner}.{n}{TEMP_SUFFIX}"
    room = NAME_MAX - 1 - len(tail)
    raw = os.fsencode(name)
    if len(raw) > room:
        name = os.fsdecode(raw[:room])
    return f".{name}{tail}"


def _create_temp(path: str) -> tuple[int, str]:
    """(open fd, name) of a fresh temporary file next to ``path``."""
    head, name = os.path.split(path)
    owner = _current().owner or owner_tag()
    while True:
        tmp = os.path.join(head, temp_name(name, owner, next(_counter)))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a leftover of a killed run with a recycled pid
            continue


def _make_folder(folder: str) -> None:
    """``os.makedirs(folder)``, but never the policy's root or above it."""
    root = _current().root
    folder = folder or "."
    rel = os.path.relpath(folder, root) if root is not None else os.pardir
    if rel == os.curdir:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), root)  # root is gone
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):  # no root, or not below it
        os.makedirs(folder, exist_ok=True)
        return
    path = root
    for part in rel.split(os.sep):  # mkdir one level at a time: fails when root is gone
        path = os.path.join(path, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)


def _create_temp_in_folder(path: str) -> tuple[int, str]:
    try:
        return _create_temp(path)
    except FileNotFoundError:  # the folder is not there yet (checked only then: one syscall less per file)
        _make_folder(os.path.dirname(path))
        return _create_temp(path)


def temp_path_beside(path: str | os.PathLike) -> Path:
    """A fresh, empty temporary file next to ``path`` (same file system: rename is atomic).

    Created with O_EXCL and mode 0o666 minus the umask, as open() would (mkstemp's 0600
    would hide the outputs from other users).
    """
    fd, tmp = _create_temp(os.fspath(path))
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(fd, tmp)``, a fresh temporary file beside ``path`` (the caller closes fd);
    rename it over ``path`` when the block ends, remove it if the block raises.
    The folder is created when it does not exist (see ``writing_for`` for the limit)."""
    path = os.fspath(path)
    fd, tmp = _create_temp_in_folder(path)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write ``path``'s content to (with any library); it is
    renamed over ``path`` when the block ends, removed if the block raises."""
    with replacing(path) as (fd, tmp):
        os.close(fd)
        yield tmp


def write_bytes_atomic(path: str | os.PathLike, data) -> None:
    """Write ``data`` (bytes-like) with one open and one write loop, then rename it over ``path``."""
    with replacing(path) as (fd, _):
        try:
            view = memoryview(data)
            while view.nbytes:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_text(path: str | os.PathLike, errors: str = "strict") -> Iterator:
    """Yield a text file (UTF-8, ``newline=""``) that replaces ``path`` when the block ends.
    ``errors="surrogateescape"`` writes file names that are not UTF-8 as their own bytes."""
    with replacing(path) as (fd, _), open(fd, "w", encoding="utf-8", errors=errors, newline="") as f:
        yield f


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file (JSON, CSV, Markdown) under a temporary name and rename it."""
    with atomic_text(path) as f:
        f.write(text)


# -- leftovers of killed writers ------------------------------------------------------
def temp_owner(filename: str) -> str | None:
    """The OWNER of a temporary name ``.NAME.OWNER.N.part``, or None for any other name."""
    m = _TEMP_NAME.fullmatch(filename)
    return m["owner"] if m else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a recycled pid counts as alive: the safe side)."""
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there; assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_temp(filename: str, gone_owners: frozenset[str] = frozenset()) -> bool:
    """Whether ``filename`` is a temporary file whose writer is gone for sure.

    Yes when its owner is in ``gone_owners`` (e.g. the last holder of a run lock this
    process now holds, whichever host it ran on), or when its owner is a process of this
    machine that no longer exists. Owners on other machines are never guessed at: their
    PIDs mean nothing here. Names of older versions (a bare PID) count as this machine's.
    """
    owner = temp_owner(filename)
    if owner is None:
        return False
    if owner in gone_owners:
        return True
    machine, _, pid = owner.rpartition("-")
    if machine not in ("", _MACHINE) or not pid.isdigit():
        return False
    return int(pid) != os.getpid() and not pid_alive(int(pid))


def remove_stale_temps(folder: str | os.PathLike, gone_owners: frozenset[str] = frozenset()) -> list[str]:
    """Remove the temporary files under ``folder`` (hidden sub-folders skipped) whose writer is
    gone for sure (``stale_temp``); returns their paths. A file that vanishes meanwhile (another
    run removed it) is skipped; any other OSError is raised."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX) and stale_temp(name, gone_owners):
                path = os.path.join(dirpath, name)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed.append(path)
    return removed
