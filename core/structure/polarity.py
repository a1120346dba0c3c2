"""Which side of a page's intensity range holds the structure: ``"bright"`` or ``"dark"``.

Both structure steps need it (fluorescence nuclei are bright, stained nuclei in histology
and membranes in electron microscopy are dark). Two cues, the first that speaks wins:

1. the network's vote: the packaged network is itself polarity-invariant, and its
   foreground probability (after the foreground rule) says which side the objects are on.
   The page is split in two by Li's threshold (Li & Tam 1998, ``threshold_li``) and the vote
   is ``d = mean(prob | bright side) - mean(prob | dark side)``: ``"bright"`` when
   ``d >= VOTE_MARGIN``, ``"dark"`` when ``d <= -VOTE_MARGIN``, no vote in between;
2. the sign of the intensity skewness (``scipy.stats.skew``): a structure that covers a
   minority of the page is the long tail of the histogram.

Evidence (issue 21 study, docs/model-selection.md): the vote is
right on all 33 nuclei images (d >= +0.20 on 32 fluorescence images, -0.93 on skimage's
``ihc.png`` with dark nuclei) and on all 24 EM images (-0.89 to -0.92, dark membranes);
skewness is right on the 32 fluorescence images (|skew| 0.75-10.7) and the 24 EM images
(-0.11 to -0.56) but wrong on ``ihc.png``: pass the probability when there is one.

Both cues are unchanged by a positive gain and offset of the page, so a step may ask on the
page as read or on its own normalised copy.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage as ndi
from scipy import stats
from skimage.filters import threshold_li

POLARITIES = ("bright", "dark")  # the values of a context's "polarity"
VOTE_MARGIN = 0.1  # |d| below this is no vote: measured |d| >= 0.20 wherever the side was clear
VOTE_SIGMA = 1.0  # Gaussian blur (px) before the Li split, so noise does not decide sides


def check(polarity: str) -> str:
    """``polarity`` itself, or ValueError naming the accepted values."""
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be 'bright' or 'dark', got {polarity!r}")
    return polarity


def network_vote(image: np.ndarray, prob: np.ndarray | None) -> str | None:
    """``"bright"`` / ``"dark"`` from the network's foreground probability, or None (no vote:
    no probability, one of another shape, a flat page, or |d| < VOTE_MARGIN)."""
    if prob is None or np.shape(prob) != image.shape:
        return None
    blurred = ndi.gaussian_filter(image, VOTE_SIGMA)
    if np.ptp(blurred) <= 0:
        return None
    bright = blurred > threshold_li(blurred[::2, ::2])  # Li on a 1/4 subsample: the same split, 4x faster
    if bright.all() or not bright.any():
        return None
    p = np.asarray(prob, dtype=np.float32)
    d = float(p[bright].mean() - p[~bright].mean())
    if not abs(d) >= VOTE_MARGIN:  # also NaN
        return None
    return "bright" if d > 0 else "dark"


def skew_side(image: np.ndarray) -> str:
    """``"dark"`` when the intensities are skewed towards dark values (a dark tail), else
    ``"bright"`` (a flat page too)."""
    sample = image[::2, ::2].ravel()  # a 1/4 subsample: the same sign, 4x faster
    if np.ptp(sample) <= 0:
        return "bright"
    return "dark" if stats.skew(sample) < 0 else "bright"


def page_polarity(image: np.ndarray, prob: np.ndarray | None = None) -> str:
    """The side of one page's structure: the network's vote, else the skewness sign."""
    return network_vote(image, prob) or skew_side(image)


def majority(sides: Iterable[str]) -> str:
    """The side of most pages; ``"bright"`` on a tie (and for no pages)."""
    sides = list(sides)
    return "dark" if 2 * sides.count("dark") > len(sides) else "bright"
