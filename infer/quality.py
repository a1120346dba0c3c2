"""A label-free quality score for every written mask: how likely it is to be right, in [0, 1].

Users without ground truth need to know which masks to look at first, and whether the model
suits a folder at all. The score reads only the image (its pages as read) and the mask as
written, so it is the same for a mask written now and for one kept by ``--skip-existing``, and
anyone can recompute it from the files. It is the mean of two terms, each in [0, 1]:

- **edges**: where the mask's outline lies on the image's gradient magnitude, as the share of
  the image's pixels with a weaker gradient than the outline's median (1: the outline follows
  the strongest edges; about 0.5: it cuts through the image as a random line would);
- **agreement**: the IoU of the mask with Li's minimum cross-entropy threshold of the lightly
  blurred page, the better of its two sides (1: a classical method that knows nothing of the
  model draws the same mask; low: the two disagree, and one of them is wrong). Li is the
  strongest classical threshold on the real sets (../shared/realdata/BASELINES.md).

Pages are scored on every k-th pixel, at most ``WORK_SIDE`` on their longer side, so the cost
stays a few milliseconds however large the page; a stack's score is the mean of its pages'.

How it was chosen (bench/sections/quality.py measures it): on the tune parts of the real sets
(bench/realsets.py TUNE: nuclei 4, EM 4, horses 12 images) and three annotated fluorescence
sets outside them (Cell Tracking Challenge GOWT1 and HeLa frames, NIH3T3 nuclei; sources in
docs/model-selection.md), whole images and their quarter crops, the packaged model's masks.
Candidate terms (region contrast, edges, coherence, outline-to-area ratio, boundary contrast,
ambiguity of the grey levels near the mask's own threshold, agreement with Li, Otsu and a
consensus of five thresholds, smoothness) were each correlated with the true IoU, and small
equal-weight means of them compared by their lowest Spearman correlation over the sets on the
crops, among those whose median keeps a folder the model segments well above pure noise (the
warning, below). edges + agreement: lowest 0.19 over the crops (HeLa; 0.41 to 0.76 on the
others); the earlier contrast + edges + coherence: -0.67 (HeLa; 0.36 to 0.55). Weights are
equal because a few dozen tune images cannot support fitted ones.

The cost is kept near 1 ms a page (the issue allows 5% of a run whose 512x512 images take about
30 ms on 2 cores): Li's threshold is computed on a 4096-bin histogram (``li_threshold``; on the
real sets' pages it puts at most 0.4% of the pixels, median 0, on the other side of
scikit-image's ``threshold_li``, which iterates over every pixel and took 1.7 ms of the first
version's 2.2 ms), and the gradient, outline and percentiles are written with slices and
``np.partition`` (0.6 ms less than np.gradient, ndi.binary_erosion and np.percentile).
See docs/quality.md for what it can and cannot tell.

``WARN_MEDIAN``: a folder whose median score is below it gets a warning that the model may not
fit it. The tune folders' medians were 0.52 (EM) to 0.82 (GOWT1) (nuclei 0.77, horses 0.62,
HeLa 0.64, NIH3T3 0.70), generated shapes the model segments well 0.97; folders of pure noise,
where there is nothing to find, 0.27 to 0.32 (uniform and Gaussian noise, 64 and 512 pixels).
The threshold is halfway between the highest noise median and the lowest real one. (The
earlier score's threshold, 0.45, warned on HeLa and on the Drosophila EM check set, folders
segmented at IoU 0.79 and 0.59, where this score's medians are 0.64 and 0.45.) It does not
flag a model that confidently segments the wrong thing: a region of clean edges that a
threshold also finds, but which is not the object the user wanted.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from unsupseg.core.metrics import iou_any_polarity

WORK_SIDE = 128  # pages are scored at most this many pixels on their longer side (the cost, below)
BLUR_SIGMA = 1.0  # pixels at the working scale: the Gaussian before Li's threshold and the gradients
CLIP = (1.0, 99.0)  # grey levels outside these percentiles are clipped first (a few saturated pixels)
WARN_MEDIAN = 0.42  # a folder's median score below this: the model may not fit it (see above)
TERMS = ("edges", "agreement")
LI_BINS = 4096  # the histogram Li's threshold is found on (module doc)


def quality(image: np.ndarray, mask: np.ndarray) -> float:
    """The score of a mask (P, H, W) bool of ``image`` (P, H, W), its pages as read: the mean of
    its pages' scores, rounded to 4 decimals (the report's rows keep it as written)."""
    image, mask = np.asarray(image), np.asarray(mask)
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    if image.ndim == 2:
        image, mask = image[None], mask[None]
    return round(float(np.mean([page_quality(i, m) for i, m in zip(image, mask, strict=True)])), 4)


def page_quality(image: np.ndarray, mask: np.ndarray) -> float:
    """The score of one page: the mean of ``page_terms``."""
    return float(np.mean(list(page_terms(image, mask).values())))


def page_terms(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The terms of one 2-D page (module doc), each in [0, 1]."""
    img, fg = _working(np.asarray(image), np.asarray(mask, dtype=bool))
    n_fg = int(np.count_nonzero(fg))
    if n_fg == 0 or n_fg == fg.size:  # one region only: nothing was separated
        return dict.fromkeys(TERMS, 0.0)
    flat = img.ravel()  # the CLIP percentiles, nearest rank: np.partition alone costs half np.percentile
    ranks = [round((flat.size - 1) * q / 100) for q in CLIP]
    lo, hi = np.partition(flat, ranks)[ranks]
    blurred = ndi.gaussian_filter(np.clip(img, lo, hi), BLUR_SIGMA)
    return {"edges": _edges(blurred, fg), "agreement": _agreement(blurred, fg)}


def _working(img: np.ndarray, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The page at most WORK_SIDE on its longer side, float32: every k-th pixel of the image and of
    the mask. Sampled, not averaged: block means of a 512x512 page cost more than the whole score
    (tested on the tune parts: the correlations were the same). Non-finite values become 0."""
    k = max(1, math.ceil(max(img.shape) / WORK_SIDE))
    small = img[::k, ::k].astype(np.float32)  # a copy: the page as read is the writers' too
    if not np.isfinite(small).all():
        np.nan_to_num(small, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return small, fg[::k, ::k]


def _edges(blurred: np.ndarray, fg: np.ndarray) -> float:
    """The share of pixels whose gradient magnitude is below the median one on the mask's outline
    (its inner boundary: foreground pixels with a background 4-neighbour, or on the page's edge).

    Twice np.gradient's differences (central inside, one-sided at the edges), squared, and the
    outline by shifted slices: the same order as np.hypot of np.gradient and ndi.binary_erosion,
    at a quarter of their cost (the score's cost, module doc)."""
    gx, gy = np.empty_like(blurred), np.empty_like(blurred)
    gx[:, 1:-1] = blurred[:, 2:] - blurred[:, :-2]
    gx[:, 0], gx[:, -1] = 2 * (blurred[:, 1] - blurred[:, 0]), 2 * (blurred[:, -1] - blurred[:, -2])
    gy[1:-1] = blurred[2:] - blurred[:-2]
    gy[0], gy[-1] = 2 * (blurred[1] - blurred[0]), 2 * (blurred[-1] - blurred[-2])
    grad2 = gx * gx
    grad2 += gy * gy
    inner = np.zeros_like(fg)
    inner[1:-1, 1:-1] = fg[1:-1, 1:-1] & fg[:-2, 1:-1] & fg[2:, 1:-1] & fg[1:-1, :-2] & fg[1:-1, 2:]
    outline = fg & ~inner
    if not outline.any():
        return 0.0
    return float(np.count_nonzero(grad2 < np.median(grad2[outline])) / grad2.size)


def _agreement(blurred: np.ndarray, fg: np.ndarray) -> float:
    """The IoU of the mask with Li's threshold of the page, the better of the threshold's two
    sides (the mask's foreground may be the dark side): the report's polarity-free IoU."""
    return iou_any_polarity(blurred > li_threshold(blurred), fg)


def li_threshold(values: np.ndarray, bins: int = LI_BINS) -> float:
    """Li's minimum cross-entropy threshold, by scikit-image's iteration (``threshold_li``: start
    at the mean, then t = (m_b - m_f) / (ln m_b - ln m_f) of the two sides' means, until the split
    stops moving) run on a histogram of ``bins`` bins, with values shifted by their minimum as
    there (the formula is not shift-invariant). Written here because ``threshold_li`` takes no
    histogram and its passes over every pixel cost most of the score (module doc)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    step = (hi - lo) / bins
    index = ((values - lo) * (1.0 / step)).astype(np.intp)  # np.bincount: a third of np.histogram's cost
    np.minimum(index, bins - 1, out=index)
    counts = np.bincount(index.ravel(), minlength=bins)
    centres = (np.arange(bins) + 0.5) * step  # bin centres - lo, as scikit-image shifts: > 0 for the logs
    n_below, s_below = np.cumsum(counts), np.cumsum(counts * centres)
    n, total = n_below[-1], s_below[-1]
    t, split = total / n, -1
    for _ in range(1000):  # a handful of steps; each moves the split, or t is the fixed point
        i = min(max(int(t / step - 0.5), 0), bins - 2)  # the last bin whose centre is <= t
        if i == split or n_below[i] == 0 or n_below[i] == n:
            break
        split = i
        m_b, m_f = s_below[i] / n_below[i], (total - s_below[i]) / (n - n_below[i])
        t = (m_b - m_f) / (math.log(m_b) - math.log(m_f))
    return float(t + lo)


def summarise(values: np.ndarray) -> dict | None:
    """summary.json's ``quality``: mean, median and lowest decile (the 10th percentile) of the
    scores, how many there are, the threshold of the warning and the warning itself (None when
    the median is at or above it). None when no input has a score."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return None
    median = float(np.median(values))
    return {
        "n": int(len(values)),
        "mean": round(float(values.mean()), 4),
        "median": round(median, 4),
        "lowest_decile": round(float(np.percentile(values, 10)), 4),
        "warn_below": WARN_MEDIAN,
        "warning": warning(median, len(values)),
    }


def warning(median: float, n: int) -> str | None:
    """The warning of a folder whose median score is low, or None."""
    if median >= WARN_MEDIAN:
        return None
    return (
        f"the median quality score of the {n} mask(s) is {median:.2f}, below {WARN_MEDIAN}: the model "
        "may not suit these images (see report.csv's quality column for which ones); try "
        "`seginfer --adapt` to fit it to the folder without labels, and docs/quality.md"
    )
