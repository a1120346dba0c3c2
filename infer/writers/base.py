"""The output-writer interface: one kind of per-image output (mask, probability map, ...).

A writer says which files an input produces, how to write them (atomically: a
temporary name, then a rename), and which files count as existing for the
overwrite check and ``--skip-existing``. Writers are built once per run from the
run's options and must be picklable: engines send them to worker processes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from unsupseg.infer.inputs import Item


@dataclass
class Segmentation:
    """One segmented input, as writers receive it."""

    mask: np.ndarray  # (P, H, W) bool, the foreground
    prob: np.ndarray | None  # (P, H, W) float32 foreground probability (when a writer needs it)
    image: np.ndarray | None  # (P, H, W) pages as read (when a writer needs them)
    truth: str | None = None  # the input's ground-truth mask file (--masks), when it has one

    @property
    def pages(self) -> int:
        return self.mask.shape[0]


class OutputWriter(ABC):
    """One kind of per-image output. Subclasses set ``name`` and implement the three methods."""

    name: str = ""  # the output's name in RunOptions.outputs and the registry
    needs_prob: bool = False  # write() needs Segmentation.prob
    needs_image: bool = False  # write() needs Segmentation.image (the pages as read)

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

    def existing(self, item: Item) -> str | None:
        """The first of ``candidates`` that exists, or None."""
        return next((p for p in self.candidates(item) if os.path.exists(p)), None)
