"""What ``seginfer`` shows on the terminal: the banner and progress bar, one line per failed
input, and the message of a run that had to stop (exit code 3) with the command that resumes it."""

from __future__ import annotations

import shlex
import sys

import click
from click.core import ParameterSource

# options left out of the resume command: it adds --skip-existing, and the rest is noise there
_NOT_RESUMED = ("overwrite", "skip_existing")


class Progress:
    """The banner, the progress bar and one line per failed input, on stderr."""

    def __init__(self, quiet: bool, device: str):
        self.quiet, self.device = quiet, device
        self.bar = None
        self.n_failed = 0

    def start(self, n_items: int, segmenter, engine) -> None:
        from tqdm import tqdm

        if not self.quiet:
            reason = segmenter.session.fallback_reason
            why = f" (CUDA not used: {reason})" if reason else ""
            where = (
                f"Ray actors, --device {self.device}"
                if engine.name == "ray"
                else f"{segmenter.provider} on {segmenter.device}{why}, {_how(engine)}"
            )
            click.echo(f"seginfer: {where}, {n_items} images", err=True)
        self.bar = tqdm(
            total=n_items,
            unit="img",
            disable=self.quiet,
            file=sys.stderr,
            dynamic_ncols=True,
            desc="seginfer",
        )

    def item(self, result) -> None:
        if result.error is not None:
            where = "" if result.error.startswith(str(result.src)) else f"{result.src}: "
            self.bar.write(f"seginfer: failed: {where}{result.error}", file=sys.stderr)
            self.n_failed += 1
            self.bar.set_postfix(failed=self.n_failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _how(engine) -> str:
    """How an engine runs, in a few words for the banner: processes and threads."""
    from unsupseg.infer.engines.base import describe_engine

    d = describe_engine(engine)
    if d.get("name") == "processes":
        threads = d.get("threads_per_worker")
        each = f"{_n(threads, 'thread')} each" if threads else "feeding the session here"
        return f"{_n(d['workers'], 'worker process', 'worker processes')} ({each})"
    if d.get("name") == "local":
        return f"one process ({_n(d['threads'], 'thread')})"
    return f"engine {d.get('name')}"


def _n(k: int, one: str, many: str | None = None) -> str:
    return f"{k} {one if k == 1 else many or one + 's'}"


def resume_command(ctx: click.Context) -> str:
    """The command line that resumes this run: the options given, --skip-existing instead of
    --overwrite (shell-quoted: names with spaces or newlines stay one word)."""
    words = [ctx.info_name or "seginfer"]
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name in _NOT_RESUMED:
            continue
        if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
            continue
        value, flag = ctx.params.get(name), max(param.opts, key=len)
        if param.count:
            words += [flag] * int(value or 0)
        elif param.is_flag:
            words += [flag] if value else []
        elif isinstance(value, tuple):  # --shard I/N, parsed to (I, N)
            words += [flag, "/".join(map(str, value))]
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join([*words, "--skip-existing"])


def stop_message(error, resume: str) -> str:
    """The lines of a run stopped by its output (``RunStopped``): what happened, how far it got,
    how to go on."""
    return (
        f"seginfer: stopped: {error.reason}\n"
        f"seginfer: {error.progress()}\n"
        "seginfer: fix the output (free space, permissions, the folder), then resume with:\n"
        f"  {resume}"
    )
