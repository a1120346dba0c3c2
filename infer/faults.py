"""Which errors are the output's, and stop a run, rather than one input's.

A run writes into one output folder. When that folder cannot take files any more
(the file system is full, read-only, the folder was removed, permission denied, the
device fails), every later input would fail the same way: the run stops at the first
one instead, with one message (``RunStopped``). Everything else that goes wrong while
an input is read, segmented or written (an unreadable file, a name too long, a
ground-truth mask of the wrong size) fails that input alone.

``output_fault`` decides, from the exception and the output folder; ``ItemWork`` asks
it for every failed write, so every engine (threads, Ray actors, worker processes)
classifies the same way, and ``run_folder`` stops on the first fault it is handed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from unsupseg.core.errors import OutputError

# errno -> what it means for the output folder (the run cannot go on)
FATAL_ERRNOS = {
    errno.ENOSPC: "the output's file system is full",
    errno.EDQUOT: "the disk quota of the output is used up",
    errno.EROFS: "the output is on a read-only file system",
    errno.EACCES: "permission denied in the output folder",
    errno.EPERM: "the output folder does not allow this operation",
    errno.EIO: "the output's device reports an input/output error",
    errno.ESTALE: "the output folder's network file handle is stale (was it removed on the server?)",
}
_MISSING = (errno.ENOENT, errno.ENOTDIR)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and its causes (libraries wrap OSError in their own types)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def output_fault(error: BaseException, output: str | os.PathLike | None) -> str | None:
    """Why ``error``, raised while writing into the folder ``output``, stops the run; None
    when it is a problem of one input only."""
    for e in _chain(error):
        if isinstance(e, OutputError):
            return str(e)
        if not isinstance(e, OSError) or e.errno is None:
            continue
        if e.errno in FATAL_ERRNOS:
            return f"{e.strerror or e} ({FATAL_ERRNOS[e.errno]})"
        if e.errno in _MISSING and output is not None and not os.path.isdir(output):
            return f"the output folder was removed during the run ({e.strerror or e})"
        if e.errno in _MISSING and output is not None and _inside(output, e.filename, e.filename2):
            # a file this run wrote in the output vanished: the folder is being removed (rmtree
            # empties it before it removes it) or cleaned by something else; either way the output
            if _gone_soon(output):
                return f"the output folder was removed during the run ({e.strerror or e})"
            return f"a file written in the output folder vanished: is it being removed? ({_describe(e)})"
    return None


def _gone_soon(folder: str | os.PathLike, wait_s: float = 1.0) -> bool:
    """Whether ``folder`` disappears within ``wait_s`` (a removal that is emptying it)."""
    import time

    end = time.monotonic() + wait_s
    while os.path.isdir(folder):
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)
    return True


def _inside(folder: str | os.PathLike, *paths: object) -> bool:
    """Whether any of ``paths`` (str or os.PathLike; others ignored) lies in ``folder``."""
    root = os.path.abspath(folder)
    for path in paths:
        if isinstance(path, str | os.PathLike):
            p = os.path.abspath(os.fspath(path))
            if os.path.commonpath([root, p]) == root:
                return True
    return False


def _describe(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename is not None else ""
    return f"{where}{e.strerror or e}"


def describe_fault(error: BaseException, output: str | os.PathLike | None) -> str:
    """What went wrong in a run-level step (the lock, the manifest, the report), in words."""
    if isinstance(error, OSError):
        return output_fault(error, output) or _describe(error)
    return str(error)


def output_error(error: OSError, what: str, output: str | os.PathLike | None) -> OutputError:
    """An OSError of a run-level step as an OutputError: every such step writes into the
    output folder, so each is the output's problem."""
    return OutputError(f"cannot {what}: {describe_fault(error, output)}")
