"""Clean-up of a page's mask after the foreground rule: fill holes, drop specks.

``fill_holes``: background regions enclosed by foreground become foreground
(``scipy.ndimage.binary_fill_holes``). ``min_size``: foreground objects (4-connected)
with fewer pixels are removed (``skimage.morphology.remove_small_objects``). Holes
are filled first, so an object's size counts its filled area. The probability map
is left as the network gave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cleanup:
    min_size: int = 0  # drop foreground objects with fewer pixels (0 = keep all)
    fill_holes: bool = False  # fill background enclosed by foreground

    def __post_init__(self) -> None:
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")

    @property
    def active(self) -> bool:
        return self.fill_holes or self.min_size > 1

    def apply(self, mask: np.ndarray) -> None:
        """Clean one (H, W) bool mask in place."""
        if self.fill_holes:
            from scipy import ndimage

            ndimage.binary_fill_holes(mask, output=mask)
        if self.min_size > 1:
            mask[...] = remove_small_objects(mask, self.min_size)


def remove_small_objects(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without its 4-connected objects of fewer than ``min_size`` pixels."""
    from skimage import __version__ as skimage_version
    from skimage import morphology

    major, minor = (int(x) for x in skimage_version.split(".")[:2])
    if (major, minor) >= (0, 26):  # max_size: objects of this many pixels or fewer go
        return morphology.remove_small_objects(mask, max_size=min_size - 1, connectivity=1)
    return morphology.remove_small_objects(mask, min_size=min_size, connectivity=1)
