"""The structure rule of a run: which step turns the network's masks into the written ones, with
its folder-level context, applied page by page (for every engine alike, and for the Python API).

    network -> prob -> threshold + foreground rule -> mask --Structure.apply--> mask -> clean-up

``kind`` is one of ``STRUCTURES`` (never "auto": ``detect.py`` resolves that from a sample of
the folder before the run starts). The step sees each page as read (its own normalisation, so
the model card's input curve does not change what it measures), the mask after the foreground
rule and the probability of that foreground.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unsupseg.core.structure import STRUCTURES


@dataclass(frozen=True)
class Structure:
    kind: str = "none"  # one of STRUCTURES
    context: dict = field(default_factory=dict)  # the step's folder-level measurements (JSON)

    def __post_init__(self) -> None:
        if self.kind not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.kind!r}")

    @property
    def active(self) -> bool:
        """False for "none": the network's masks are written as they are."""
        return self.kind != "none"

    def apply(self, pages: np.ndarray, masks: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
        """The written masks of one image: (P, H, W) pages as read, masks and probabilities of the
        foreground (None: the step decides from the image alone). Returns a new (P, H, W) bool array."""
        if not self.active:
            return masks
        from unsupseg.core.structure import apply as apply_step

        out = np.empty(masks.shape, dtype=bool)
        for k in range(len(masks)):
            prob = None if probs is None else probs[k]
            out[k] = apply_step(self.kind, pages[k], masks[k], prob, self.context)
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "context": dict(self.context)}
