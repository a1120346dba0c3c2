"""Which of the network's two regions is the foreground: one rule, per page.

The network splits a page into region 1 (prob >= threshold) and region 0; without
labels it cannot know which one is the object. The rules (``--foreground``):

- ``auto`` (default of new models): objects touch the image frame less *and* cover
  less of the image than their background. With ``b1`` the share of border pixels
  (first and last rows and columns) in region 1 and ``a1`` its share of all pixels,
  region 1 is the foreground when (b1 + a1) / 2 < 1/2. When the two shares disagree
  (a large central object; thin structures that reach the frame everywhere) the
  stronger one wins. It works for bright and dark objects alike;
- ``border``: the region with the smaller share of the border (b1 alone);
- ``minority``: the region with fewer pixels (a1 alone);
- ``bright`` / ``dark``: the region whose mean normalised intensity is higher / lower;
- ``model``: region 1 as is.

The decision needs only sums over the page, so whole pages and pages run tile by
tile (added band by band) use the same ``RegionSums``. A page that is all one
region, and an exact tie, keep the network's labelling. When the rule picks
region 0, the mask is inverted and the probability becomes ``1 - p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unsupseg.core.modelcard import POLARITY_RULES  # noqa: F401  (the rule names, re-exported)

_TIE = 1e-9  # |share - 1/2| below this is a tie
INTENSITY_RULES = ("bright", "dark")  # the rules that compare mean intensities


@dataclass
class RegionSums:
    """Running sums over a page (or the rows of it seen so far)."""

    sum_in: float = 0.0  # sum of normalised intensities inside region 1
    total: float = 0.0  # sum of normalised intensities over all pixels
    n_in: int = 0  # pixels in region 1
    n: int = 0  # pixels
    border_in: int = 0  # border pixels in region 1
    border: int = 0  # border pixels
    intensity: bool = True  # keep the intensity sums (only ``bright`` and ``dark`` need them)

    @classmethod
    def for_rule(cls, rule: str) -> RegionSums:
        """Sums for deciding by ``rule``: the shares-only rules skip the intensity sums (on a
        128x128 image they are half of the rule's cost)."""
        return cls(intensity=rule in INTENSITY_RULES)

    def add(self, norm: np.ndarray, region: np.ndarray, y0: int = 0, height: int | None = None) -> None:
        """Add rows [y0, y0 + len(region)) of a page of ``height`` rows (default: the whole page):
        normalised intensities and the region-1 mask, both (rows, W)."""
        if self.intensity:
            self._add_intensity(norm, region)
        self.n_in += int(np.count_nonzero(region))
        self.n += region.size
        self._add_border(region, y0, region.shape[0] if height is None else height)

    def _add_intensity(self, norm: np.ndarray, region: np.ndarray) -> None:
        flat = norm.ravel()
        # region sums with one dot product instead of two boolean gathers (3-10x faster on
        # small images, where this runs once per image on the inference thread)
        self.sum_in += float(np.dot(flat, region.ravel().astype(flat.dtype)))
        self.total += float(flat.sum(dtype=np.float64))

    def _add_border(self, region: np.ndarray, y0: int, height: int) -> None:
        rows, w = region.shape
        top, bottom = int(y0 == 0), int(y0 + rows == height)  # the page's first / last row is here
        middle = region[top : rows - bottom]
        self.border_in += int(np.count_nonzero(middle[:, 0]))
        self.border += len(middle)
        if w > 1:
            self.border_in += int(np.count_nonzero(middle[:, -1]))
            self.border += len(middle)
        for row in ([region[0]] if top else []) + ([region[-1]] if bottom else []):
            self.border_in += int(np.count_nonzero(row))
            self.border += w

    def flip(self, rule: str) -> bool:
        """True when the rule picks region 0 as the foreground."""
        if rule == "model" or self.n_in == 0 or self.n_in == self.n:
            return False
        if rule in INTENSITY_RULES:
            if not self.intensity:
                raise ValueError(f"rule {rule!r} needs the intensity sums: RegionSums.for_rule({rule!r})")
            mean_in = self.sum_in / self.n_in
            mean_out = (self.total - self.sum_in) / (self.n - self.n_in)
            return mean_in < mean_out if rule == "bright" else mean_in > mean_out
        a1, b1 = self.n_in / self.n, self.border_in / max(self.border, 1)
        share = {"border": b1, "minority": a1, "auto": 0.5 * (a1 + b1)}[rule]
        return share - 0.5 > _TIE


def apply_polarity(
    norm: np.ndarray, prob: np.ndarray, threshold: float, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """One page: normalised image (H, W), network prob (H, W) -> (mask bool, foreground prob)."""
    region = prob >= threshold
    if rule == "model":
        return region, prob
    sums = RegionSums.for_rule(rule)
    sums.add(norm, region)
    if sums.flip(rule):
        return ~region, (1.0 - prob).astype(np.float32)
    return region, prob
