"""The engine protocol: where and how concurrently the items of a run are segmented.

Every engine implements the same small protocol, ``Engine``: ``open`` loads the
model where the run is driven (the run's manifest describes that Segmenter) and
``run`` processes items with an ``ItemWork``, calling ``on_result`` once per input,
in the driving thread. ``on_result`` raises when the run must stop (``run_folder``
does so on a fatal result: the output failed); the engine then takes no new inputs,
lets the writes it started finish (each is atomic: no partial file) and lets the
error propagate. ``LocalEngine`` (local.py) runs here with threads;
``ProcessEngine`` (processes.py) in worker processes of this machine, each with
its own session; ``RayEngine`` (ray.py) spreads the items over a Ray cluster.
``registry.py`` names them and picks between the first two when no engine is named.

To add an engine, implement the protocol and add the class to ``registry.ENGINES``. Its class
attributes serve the command line: ``summary`` (its sentence in ``seginfer --help``),
``options`` (the command-line options it takes: option -> argument of its constructor),
``chosen_by_options`` (whether giving one of them with ``--engine auto`` picks it) and,
optionally, ``require()`` (raises EngineChoiceError when its package is missing). Optional
methods: ``describe()`` (what the manifest records about the engine) and ``close()``
(``run_folder`` calls it after the run, or after a failure between ``open`` and ``run``: end
what ``open`` started).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from unsupseg.infer.inputs import Item
from unsupseg.infer.items import ItemWork, OnResult
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig


class Engine(Protocol):
    name: str  # seginfer --engine NAME
    summary: str  # what it is, in one sentence of --help
    options: dict[str, str]  # command-line option -> argument of the constructor
    chosen_by_options: bool  # --engine auto with one of its options means this engine

    def open(self, config: SegmenterConfig) -> Segmenter:
        """Load the model for this run; errors (bad model file, unusable device) raise here."""

    def run(self, items: Iterable[Item], work: ItemWork, on_result: OnResult) -> None:
        """Process ``items`` in order of submission; ``on_result`` once per input, in this thread.
        An exception from ``on_result`` stops the run: no new inputs, started writes finish, re-raise."""


def describe_engine(engine) -> dict:
    """What the manifest records about an engine: its ``describe()``, or at least its name."""
    describe = getattr(engine, "describe", None)
    return describe() if describe is not None else {"name": engine.name}


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Ctrl-C during the block takes effect when it ends: a finished write is never taken off the
    queue without reaching the report (the summary lists every mask on disk). Python runs signal
    handlers in the main thread only, so elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(*caught[0])  # the default handler raises KeyboardInterrupt
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
