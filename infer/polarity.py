"""Which of the network's two regions is the foreground: one rule, per page.

The network splits a page into region 1 (prob >= threshold) and region 0; without
labels it cannot know which one is the object. The rule (``--foreground``):

- ``bright``: the region whose mean normalised intensity is higher;
- ``dark``: the region whose mean is lower;
- ``model``: region 1 as is.

The decision needs only sums over the page, so whole pages and pages run tile by
tile (added band by band) use the same ``RegionSums``. A page that is all one
region keeps the network's labelling. When the rule picks region 0, the mask is
inverted and the probability becomes that of the foreground, ``1 - p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unsupseg.core.modelcard import POLARITY_RULES  # noqa: F401  (the rule names, re-exported)


@dataclass
class RegionSums:
    """Running sums over a page (or the rows of it seen so far)."""

    sum_in: float = 0.0  # sum of normalised intensities inside region 1
    total: float = 0.0  # sum of normalised intensities over all pixels
    n_in: int = 0  # pixels in region 1
    n: int = 0  # pixels

    def add(self, norm: np.ndarray, region: np.ndarray) -> None:
        """Add a block of the page: normalised intensities and the region-1 mask, same shape."""
        flat = norm.ravel()
        # region sums with one dot product instead of two boolean gathers (3-10x faster on
        # small images, where this runs once per image on the inference thread)
        self.sum_in += float(np.dot(flat, region.ravel().astype(flat.dtype)))
        self.total += float(flat.sum(dtype=np.float64))
        self.n_in += int(np.count_nonzero(region))
        self.n += region.size

    def flip(self, rule: str) -> bool:
        """True when the rule picks region 0 as the foreground."""
        if rule == "model" or self.n_in == 0 or self.n_in == self.n:
            return False
        mean_in = self.sum_in / self.n_in
        mean_out = (self.total - self.sum_in) / (self.n - self.n_in)
        return mean_in < mean_out if rule == "bright" else mean_in > mean_out


def apply_polarity(
    norm: np.ndarray, prob: np.ndarray, threshold: float, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """One page: normalised image (H, W), network prob (H, W) -> (mask bool, foreground prob)."""
    region = prob >= threshold
    if rule == "model":
        return region, prob
    sums = RegionSums()
    sums.add(norm, region)
    if sums.flip(rule):
        return ~region, (1.0 - prob).astype(np.float32)
    return region, prob
