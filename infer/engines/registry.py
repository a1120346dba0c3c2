"""Which engine runs a folder when none is named (``seginfer --engine auto``, ``run_folder``
without an engine): the one that is faster for this machine and these images.

Worker processes (``ProcessEngine``) when all of these hold, else one process (``LocalEngine``):

- more than one worker fits: ``cores // threads >= 2`` (``threads`` = ``--threads``, default 1);
- at least ``MIN_INPUTS`` inputs: starting the workers (about half a second: an interpreter
  that imports numpy and onnxruntime, then one fork per worker) is then a small part of the run;
- the images run whole: no page of a few sampled inputs (their headers only) has a side above
  ``--tile-size`` after padding. A page that runs in tiles keeps one session busy with all the
  cores by itself (large convolutions split well over intra-op threads), and the processes
  could not share one image; one process with all threads is the faster way there.

``--workers N`` asks for worker processes whatever the rule says. ``RULE`` is the rule in
words for ``seginfer --help``.
"""

from __future__ import annotations

from collections.abc import Sequence

from unsupseg.core.errors import ImageReadError
from unsupseg.core.imageio import page_size
from unsupseg.core.padding import round_up
from unsupseg.infer.engines.base import Engine
from unsupseg.infer.engines.local import LocalEngine
from unsupseg.infer.inputs import Item
from unsupseg.infer.model.segmenter import SegmenterConfig
from unsupseg.infer.model.session import usable_cores
from unsupseg.infer.model.tiles import TileGrid

MIN_INPUTS = 64  # fewer inputs: one process (the workers' start-up would be much of the run)
SAMPLE = 16  # inputs whose headers are read, spread over the run

RULE = (
    f"auto: worker processes when at least {MIN_INPUTS} images run whole (no side above --tile-size) "
    "and cores / --threads >= 2; otherwise one process (large tiled images: one session with all "
    "cores)."
)


def choose_engine(items: Sequence[Item], config: SegmenterConfig, workers: int | None = None) -> Engine:
    """The engine for these items (see the module docstring)."""
    from unsupseg.infer.engines.processes import ProcessEngine

    if workers is not None:
        return ProcessEngine(workers)
    if usable_cores() // (config.threads or 1) < 2 or len(items) < MIN_INPUTS:
        return LocalEngine()
    if any(_tiled(item, config) for item in _sample(items)):
        return LocalEngine()
    return ProcessEngine()


def _sample(items: Sequence[Item]) -> list[Item]:
    """Up to ``SAMPLE`` items spread evenly over the run (first and last included)."""
    n = len(items)
    if n <= SAMPLE:
        return list(items)
    return [items[round(k * (n - 1) / (SAMPLE - 1))] for k in range(SAMPLE)]


def _tiled(item: Item, config: SegmenterConfig) -> bool:
    """Whether the item's pages run in tiles (from its header; an unreadable one counts as not)."""
    try:
        h, w = page_size(item.src)
    except ImageReadError:
        return False
    m = 8  # the size multiple of unsupseg's models (the model is not loaded yet)
    grid = TileGrid.for_shape(round_up(h, m), round_up(w, m), config.tile_size, config.tile_overlap, m)
    return not grid.is_single
