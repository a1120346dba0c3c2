"""The errors ``unsupseg.infer`` raises on purpose, beside core's (``unsupseg.core.errors``).

Each message says what went wrong and how to go on. The commands map these and core's
errors to their exit codes in one place, ``cli/exits.py``.
"""

from __future__ import annotations

from unsupseg.core.errors import OutputError, UnsupsegError


class InputError(UnsupsegError):
    """The --input/--output combination cannot be run (no images, output inside input...)."""


class RunLockedError(UnsupsegError):
    """Another live run writes the same run files into the same folder."""


class MergeError(UnsupsegError):
    """The shard files of a folder cannot be merged (none, missing shards, mixed runs)."""


class EngineChoiceError(UnsupsegError):
    """The engine asked for cannot be used: an option that belongs to another engine, or the
    engine's package is not installed."""


class EngineError(UnsupsegError):
    """The engine cannot run the job as a whole (a cluster without GPUs, a worker that died...)."""


class RunStopped(OutputError):
    """A run stopped because of its output; what was done is kept (complete masks, the
    summary so far when it could be written) and ``skip_existing`` resumes it."""

    def __init__(
        self,
        reason: str,
        n_images: int,
        n_written: int,
        n_skipped: int = 0,
        summary: str | None = None,
        unwritten: tuple[str, ...] = (),
    ):
        self.reason = reason  # what happened, naming the file or folder
        self.n_images, self.n_written, self.n_skipped = n_images, n_written, n_skipped
        self.summary = summary  # path of the summary written so far, None when it could not be
        self.unwritten = unwritten  # run files that could not be written, each with why
        super().__init__(f"{reason}. {self.progress()} Resume with skip_existing (--skip-existing).")

    def progress(self) -> str:
        """How far the run got and where that is recorded."""
        kept = f" ({self.n_skipped} more kept from before)" if self.n_skipped else ""
        done = f"{self.n_written} of {self.n_images} masks written{kept}, none partial"
        where = [f"summary so far in {self.summary}"] if self.summary else []
        if not self.summary and not self.unwritten:
            where = ["no summary written"]
        return "; ".join([done, *where, *self.unwritten]) + "."
