"""A label-free quality score for every written mask: how likely it is to be right, in [0, 1].

Users without ground truth need to know which masks to look at first, and whether the model
suits a folder at all. The score reads only the image (its pages as read) and the mask as
written, so it is the same for a mask written now and for one kept by ``--skip-existing``, and
anyone can recompute it from the files. It is the mean of three terms, each in [0, 1]:

- **contrast**: Otsu's criterion of the mask on the lightly blurred image, the between-class
  variance of the two regions over the image's variance (1: the mask splits the grey levels
  perfectly; 0: its regions have the same mean, or the mask is empty or full);
- **edges**: where the mask's outline lies on the image's gradient magnitude, as the share of
  the image's pixels with a weaker gradient than the outline's median (1: the outline follows
  the strongest edges; about 0.5: it cuts through the image as a random line would);
- **coherence**: the share of the foreground in its largest 8-connected object (1: one object;
  low: the foreground is scattered in many pieces of similar size).

Pages are scored on every k-th pixel, at most ``WORK_SIDE`` on their longer side, so the cost
stays a few milliseconds however large the page; a stack's score is the mean of its pages'.

How it was chosen (bench/sections/quality.py measures it): on the tune parts of the real sets
(bench/realsets.py TUNE: nuclei 4, EM 4, horses 12 images, and five crops of each, the packaged
model's masks), candidate terms (region contrast with and without blur, the probability map's
margin, agreement with blur + Li and blur + Otsu masks, boundary contrast, solidity, object
counts, border contact, agreement of the network's own split with the mask) were each
correlated with the true IoU, and small equal-weight means of them compared by their lowest
Spearman correlation over the sets. This one was among the best and needs no probability map;
the weights are equal because a dozen tune images cannot support fitted ones. Its Spearman
correlations there: 0.43 (nuclei), 0.45 (EM), 0.59 (horses) over the crops, below the 0.6
aimed at (0.42, 0.58 and 0.61 in the version below, sampled at 128 pixels). The blur and the
clipping were set there too. The working size and the sampling are the cost's: scored at 256
pixels (block means, Sobel gradients) the score took 15 ms of a 512x512 page, and in a run, beside
onnxruntime's threads on two cores, 36 ms and 25% of the run's time; at 128 pixels, sampled, with
central differences, about 4 ms, with correlations within 0.05 of those.
See docs/quality.md for what it can and cannot tell.

``WARN_MEDIAN``: a folder whose median score is below it gets a warning that the model may not
fit it. On the tune parts the medians were 0.62 (nuclei), 0.61 (EM) and 0.81 (horses), 0.99 on
generated shapes the model segments well (0.63 with noise of sigma 2.5 to 3, still segmented at
IoU 0.90), and 0.30 on images of pure noise, where there is nothing to find; the threshold is
halfway between the noise and the lowest of the real sets' medians. (It was 0.5 at first, until
two of the nuclei tune images, a folder the model segments at IoU 0.83, had a median of 0.50:
single nuclei images score from 0.30 to 0.70.)
It does not flag the horses (IoU 0.38), whose masks are coherent, contrasted and wrong (a region
of the right grey level that is not the horse): the score sees the image, not what the user
wanted segmented.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

WORK_SIDE = 128  # pages are scored at most this many pixels on their longer side (the cost, below)
BLUR_SIGMA = 1.0  # pixels at the working scale: the Gaussian before contrast and gradients
CLIP = (1.0, 99.0)  # grey levels outside these percentiles are clipped first (a few saturated pixels)
WARN_MEDIAN = 0.45  # a folder's median score below this: the model may not fit it (see above)
TERMS = ("contrast", "edges", "coherence")


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
    """The three terms of one 2-D page (module doc), each in [0, 1]."""
    img, fg = _working(np.asarray(image), np.asarray(mask, dtype=bool))
    n_fg = int(np.count_nonzero(fg))
    if n_fg == 0 or n_fg == fg.size:  # one region only: nothing was separated
        return dict.fromkeys(TERMS, 0.0)
    lo, hi = np.percentile(img, CLIP)
    blurred = ndi.gaussian_filter(np.clip(img, lo, hi), BLUR_SIGMA)
    return {
        "contrast": _contrast(blurred, fg, n_fg),
        "edges": _edges(blurred, fg),
        "coherence": _coherence(fg, n_fg),
    }


def _working(img: np.ndarray, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The page at most WORK_SIDE on its longer side, float32: every k-th pixel of the image and of
    the mask. Sampled, not averaged: block means of a 512x512 page cost more than the whole score
    (tested on the tune parts: the correlations were the same). Non-finite values become 0."""
    k = max(1, math.ceil(max(img.shape) / WORK_SIDE))
    small = img[::k, ::k].astype(np.float32)  # a copy: the page as read is the writers' too
    if not np.isfinite(small).all():
        np.nan_to_num(small, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return small, fg[::k, ::k]


def _contrast(blurred: np.ndarray, fg: np.ndarray, n_fg: int) -> float:
    """Otsu's criterion: w0 w1 (m0 - m1)^2 / var (in [0, 1] for any split)."""
    var = float(blurred.var(dtype=np.float64))
    if var <= 0.0:
        return 0.0
    total = float(blurred.sum(dtype=np.float64))
    s1 = float(blurred[fg].sum(dtype=np.float64))
    n = blurred.size
    w1 = n_fg / n
    m1, m0 = s1 / n_fg, (total - s1) / (n - n_fg)
    return float(min(max(w1 * (1.0 - w1) * (m1 - m0) ** 2 / var, 0.0), 1.0))


def _edges(blurred: np.ndarray, fg: np.ndarray) -> float:
    """The share of pixels whose gradient magnitude is below the median one on the mask's outline
    (its inner boundary: foreground pixels with a background 4-neighbour)."""
    gy, gx = np.gradient(blurred)  # central differences: the blur smooths already, a Sobel costs 3x
    grad = np.hypot(gx, gy)
    outline = fg & ~ndi.binary_erosion(fg, border_value=0)
    if not outline.any():
        return 0.0
    return float(np.count_nonzero(grad < np.median(grad[outline])) / grad.size)


def _coherence(fg: np.ndarray, n_fg: int) -> float:
    """The share of the foreground in its largest 8-connected object."""
    labels, n = ndi.label(fg, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return 1.0
    return float(np.bincount(labels.ravel())[1:].max() / n_fg)


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
