"""The exit codes of ``seginfer`` and ``segreport``, and the one place that maps the library's
errors to them.

    0  every input written (segreport: merged, no input failed)
    1  some inputs failed (named on stderr and in summary.json; the rest were written), or the
       engine could not run the job as a whole (EngineError)
    2  usage or input error: click's usage message names the option or file and the fix
    3  the output stopped the run (file system full or read-only, folder removed, permission
       denied): the message says how far it got and how to go on

Ctrl-C ends either command through click ("Aborted!", exit 1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from unsupseg.core.errors import DataError, DeviceError, ImageReadError, ModelFileError, OutputExistsError
from unsupseg.infer.errors import EngineChoiceError, EngineError, InputError, MergeError, RunLockedError

FAILED = 1
STOPPED = 3

# library errors that are usage errors (exit 2), each with the option it is about (None: the
# command as a whole)
USAGE_ERRORS: tuple[tuple[type[Exception], str | None], ...] = (
    (DeviceError, "--device"),
    (ModelFileError, "--model"),
    (InputError, None),
    (OutputExistsError, None),
    (ImageReadError, None),
    (RunLockedError, None),
    (MergeError, None),
    (EngineChoiceError, None),
    (DataError, None),
)


@contextmanager
def exit_codes(
    stops: tuple[type[BaseException], ...], stopped: Callable[[BaseException], str]
) -> Iterator[None]:
    """Turn what the block raises into the command's exit: an error of ``stops`` prints
    ``stopped(error)`` and exits 3, a usage error exits 2 naming its option, EngineError exits 1.
    Anything else goes on as it is."""
    try:
        yield
    except stops as e:
        click.echo(stopped(e), err=True)
        sys.exit(STOPPED)
    except EngineError as e:
        raise click.ClickException(str(e)) from None
    except tuple(cls for cls, _ in USAGE_ERRORS) as e:
        option = next(option for cls, option in USAGE_ERRORS if isinstance(e, cls))
        if option is None:
            raise click.UsageError(str(e)) from None
        raise click.BadParameter(str(e), param_hint=option) from None


def exit_if_failed(prog: str, n_failed: int, summary) -> None:
    """Exit 1 when inputs failed, naming the summary that lists them."""
    if n_failed:
        click.echo(f"{prog}: {n_failed} input(s) failed; see {summary}", err=True)
        sys.exit(FAILED)
