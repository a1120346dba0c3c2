"""Write a file under a temporary name beside it, then rename it over the target.

A crash, Ctrl-C or ``kill -9`` never leaves a half-written file under the real name:
the rename is atomic on one file system. Temporary names are hidden and carry the
writer's process id (``.NAME.PID.N.part``), so threads and processes writing into
one folder never collide, and a leftover of a killed process can be told apart
from the file of a live one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".part"
_counter = itertools.count()


def _create_temp(path: str) -> tuple[int, str]:
    """(open fd, name) of a fresh temporary file next to ``path``."""
    head, name = os.path.split(path)
    while True:
        tmp = os.path.join(head, f".{name}.{os.getpid()}.{next(_counter)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a leftover of a killed run with a recycled pid
            continue


def _create_temp_in_folder(path: str) -> tuple[int, str]:
    try:
        return _create_temp(path)
    except FileNotFoundError:  # the folder is not there yet (checked only then: one syscall less per file)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
    The folder is created when it does not exist."""
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
def atomic_text(path: str | os.PathLike) -> Iterator:
    """Yield a text file (UTF-8, ``newline=""``) that replaces ``path`` when the block ends."""
    with replacing(path) as (fd, _), open(fd, "w", encoding="utf-8", newline="") as f:
        yield f


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file (JSON, CSV, Markdown) under a temporary name and rename it."""
    with atomic_text(path) as f:
        f.write(text)
