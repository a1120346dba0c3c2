"""Per-image intensity normalisation, the one place preprocessing is defined.

Each image is mapped with robust percentiles: ``(x - p_low) / (p_high - p_low)``
clipped to [0, 1]. Percentiles (not min/max) keep one hot pixel from
squashing the contrast; per image (not per data set) makes 8-bit, 16-bit and
float inputs look alike to the network. The parameters are stored in every
checkpoint and ONNX file so that inference applies exactly what training saw.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Normalization:
    method: str = "percentile"  # only "percentile" for now
    low: float = 1.0  # lower percentile mapped to 0
    high: float = 99.0  # upper percentile mapped to 1
    clip: bool = True  # clip the result to [0, 1]

    def __post_init__(self) -> None:
        if self.method != "percentile":
            raise ValueError(f"unknown normalisation method {self.method!r}; use 'percentile'")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"need 0 <= low < high <= 100, got low={self.low}, high={self.high}")

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        """The intensities mapped to 0 and 1: the low and high percentiles of the image.

        Equal to ``np.percentile(image, (low, high))`` (its default linear method), with
        one ``np.partition`` for both: about 3x faster on small images, where it is a
        large share of seginfer's per-image cost.
        """
        a = np.asarray(image, dtype=np.float32).ravel()
        n = a.size
        q = np.array([self.low, self.high], dtype=np.float64) / 100.0 * (n - 1)
        below = np.floor(q).astype(np.intp)
        above = np.minimum(below + 1, n - 1)
        part = np.partition(a, np.unique(np.concatenate([below, above])))
        frac = q - below
        lo, hi = part[below] * (1.0 - frac) + part[above] * frac
        return float(lo), float(hi)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalise one 2-D image (any dtype) to float32 in [0, 1]."""
        x = np.asarray(image, dtype=np.float32)
        lo, hi = self.bounds(x)
        scale = hi - lo
        if not np.isfinite(scale) or scale <= 0:
            # A flat image has no contrast to keep; map it to zeros.
            return np.zeros_like(x, dtype=np.float32)
        out = (x - np.float32(lo)) * np.float32(1.0 / scale)
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Normalization:
        return cls(**json.loads(text))
