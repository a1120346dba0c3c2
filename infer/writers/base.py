"""The output-writer interface: one kind of per-image output (mask, probability map, ...).

A writer says which files an input produces, how to write them (atomically: a
temporary name, then a rename), and which files count as existing for the
overwrite check and ``--skip-existing``. Writers are built once per run from the
run's options and must be picklable: engines send them to worker processes.

A writer may also add rows to a per-run table (``table``, ``fields``, ``rows``; e.g.
``objects.csv``): the rows travel in ``ItemResult.rows`` to the run, which spools
them and writes ``TABLE.csv`` sorted by input. An input kept by ``--skip-existing``
gets its rows from its files on disk (``restore``), so a resumed run writes the same
table.

Instance labels are made once per input, on first use (``Segmentation.labels``), and
shared by every writer and the metrics that need them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from unsupseg.core.labels import Labeling
from unsupseg.infer.inputs import Item


@dataclass
class Segmentation:
    """One segmented input, as writers receive it."""

    mask: np.ndarray  # (P, H, W) bool, the foreground
    prob: np.ndarray | None  # (P, H, W) float32 foreground probability (when a writer needs it)
    image: np.ndarray | None  # (P, H, W) pages as read (when a writer needs them)
    labeling: Labeling = field(default_factory=Labeling)  # how ``labels`` are made (ItemWork sets it)
    known_labels: np.ndarray | None = None  # the labels, once made (or read back from disk)
    truth: str | None = None  # the input's ground-truth mask file (--masks), when it has one

    @property
    def pages(self) -> int:
        return self.mask.shape[0]

    @property
    def labels(self) -> np.ndarray:
        """Instance labels (P, H, W) of the mask, made on first use and kept for the other writers.

        On a tiled image this runs on the whole page's mask after blending, so objects
        are never cut at tile or band seams.
        """
        if self.known_labels is None:
            self.known_labels = self.labeling.label(self.mask)
        return self.known_labels


class OutputWriter(ABC):
    """One kind of per-image output. Subclasses set ``name`` and implement the three methods."""

    name: str = ""  # the output's name in RunOptions.outputs and the registry
    needs_prob: bool = False  # write() needs Segmentation.prob
    needs_image: bool = False  # write() or rows() need Segmentation.image (the pages as read)
    table: str = ""  # the per-run table this writer adds rows to (run file TABLE.csv); "" for none
    fields: tuple[str, ...] = ()  # that table's columns

    @classmethod
    def from_options(cls, options) -> OutputWriter:
        """The writer for a run's ``RunOptions`` (override to read writer-specific options)."""
        return cls()

    @abstractmethod
    def paths(self, item: Item, pages: int) -> list[str]:
        """The files this writer produces for ``item`` when it has ``pages`` pages."""

    @abstractmethod
    def candidates(self, item: Item) -> list[str]:
        """Every file a run could have produced for ``item`` (before its page count is known)."""

    @abstractmethod
    def write(self, item: Item, seg: Segmentation) -> None:
        """Write the outputs of one input atomically; raise on failure (the input fails)."""

    def rows(self, item: Item, seg: Segmentation) -> list[dict]:
        """The table rows of one input (``fields`` as keys); called for written and kept inputs."""
        return []

    def restore(self, item: Item, seg: Segmentation) -> None:  # noqa: B027  (an optional hook)
        """For an input kept by ``--skip-existing``: put what this writer's files hold back into
        ``seg`` (e.g. the label image), so ``rows`` gives what the first run gave."""

    def existing(self, item: Item) -> str | None:
        """The first of ``candidates`` that exists, or None."""
        return next((p for p in self.candidates(item) if os.path.exists(p)), None)
