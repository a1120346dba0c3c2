"""The engines by name, and the one place that picks the engine of a run.

``ENGINES`` (name -> class) is what ``seginfer --engine`` offers (with ``auto``), what its
``--help`` says of each (the class's ``summary``) and what the ``auto`` rule picks from. An
``EngineChoice`` is an engine as the command line asks for it: a name, or ``auto``, and the
engine options given; it is checked when made (an option of another engine, or an engine
whose package is missing, is an ``EngineChoiceError``). ``choose_engine`` turns it into the
run's engine once the inputs are known.

The ``auto`` rule: an option of an engine that its options choose (``--workers``: worker
processes) picks that engine. Otherwise worker processes (``ProcessEngine``) when all of
these hold, else one process (``LocalEngine``):

- more than one worker fits: ``cores // threads >= 2`` (``threads`` = ``--threads``, default 1);
- at least ``MIN_INPUTS`` inputs: starting the workers (about half a second: an interpreter
  that imports numpy and onnxruntime, then one fork per worker) is then a small part of the run;
- the images run whole: no page of a few sampled inputs (their headers only) has a side above
  ``--tile-size`` after padding. A page that runs in tiles keeps one session busy with all the
  cores by itself (large convolutions split well over intra-op threads), and the processes
  could not share one image; one process with all threads is the faster way there.

``RULE`` is the rule in words for ``seginfer --help``. To add an engine: a module with its
class (base.py says what it has) and one entry in ``ENGINES``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from unsupseg.core.errors import ImageReadError
from unsupseg.core.imageio import page_size
from unsupseg.core.padding import round_up
from unsupseg.infer.engines.base import Engine
from unsupseg.infer.engines.local import LocalEngine
from unsupseg.infer.engines.processes import ProcessEngine
from unsupseg.infer.engines.ray import RayEngine
from unsupseg.infer.errors import EngineChoiceError
from unsupseg.infer.inputs import Item
from unsupseg.infer.model.segmenter import SegmenterConfig
from unsupseg.infer.model.session import usable_cores
from unsupseg.infer.model.tiles import TileGrid

ENGINES: dict[str, type] = {cls.name: cls for cls in (LocalEngine, ProcessEngine, RayEngine)}
AUTO = "auto"
NAMES = (AUTO, *ENGINES)  # seginfer --engine's choices
OPTIONS = tuple(option for cls in ENGINES.values() for option in cls.options)  # every engine option

MIN_INPUTS = 64  # fewer inputs: one process (the workers' start-up would be much of the run)
SAMPLE = 16  # inputs whose headers are read, spread over the run

RULE = (
    f"auto: worker processes when at least {MIN_INPUTS} images run whole (no side above --tile-size) "
    "and cores / --threads >= 2; otherwise one process (large tiled images: one session with all "
    "cores)."
)


def engine_help() -> str:
    """``seginfer --engine``'s help: each engine's summary, then the auto rule."""
    engines = " ".join(f"{name}: {cls.summary}" for name, cls in ENGINES.items())
    return f"Where the images are segmented. {engines} {RULE}"


def _flags(options) -> str:
    return " and ".join("--" + option.replace("_", "-") for option in options)


@dataclass(frozen=True)
class EngineChoice:
    """An engine by name (one of ``ENGINES``, or ``auto``) with the engine options given
    (option -> value; None or absent: not given). Raises EngineChoiceError when they do not fit."""

    name: str = AUTO
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise EngineChoiceError(f"unknown engine {self.name!r}; choose from {', '.join(NAMES)}")
        given = {option for option, value in self.options.items() if value}
        # engines that only their name picks first: their options are never the auto rule's
        for name, cls in sorted(ENGINES.items(), key=lambda e: e[1].chosen_by_options):
            if name == self.name or not given & set(cls.options):
                continue
            if not cls.chosen_by_options:
                verb = "needs" if len(cls.options) == 1 else "need"
                raise EngineChoiceError(f"{_flags(cls.options)} {verb} --engine {name}")
            if self.name != AUTO:
                raise EngineChoiceError(
                    f"{_flags(o for o in cls.options if o in given)} needs --engine {name} (or auto), "
                    f"not --engine {self.name}"
                )
        require = getattr(ENGINES.get(self.name), "require", None)
        if require is not None:
            require()  # the engine's package, installed or named in an EngineChoiceError

    def engine(self, items: Sequence[Item], config: SegmenterConfig) -> Engine:
        """The engine this choice names, for these items (``auto``: by the rule)."""
        name = self.name if self.name != AUTO else self._auto(items, config)
        cls = ENGINES[name]
        return cls(**{arg: self.options.get(option) for option, arg in cls.options.items()})

    def _auto(self, items: Sequence[Item], config: SegmenterConfig) -> str:
        for name, cls in ENGINES.items():
            if cls.chosen_by_options and any(self.options.get(option) for option in cls.options):
                return name
        if usable_cores() // (config.threads or 1) < 2 or len(items) < MIN_INPUTS:
            return LocalEngine.name
        if any(_tiled(item, config) for item in _sample(items)):
            return LocalEngine.name
        return ProcessEngine.name


def choose_engine(
    engine: Engine | EngineChoice | None, items: Sequence[Item], config: SegmenterConfig
) -> Engine:
    """The run's engine: the one given, or the one a choice names (None: ``auto``)."""
    if engine is None:
        engine = EngineChoice()
    if isinstance(engine, EngineChoice):
        return engine.engine(items, config)
    return engine


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
