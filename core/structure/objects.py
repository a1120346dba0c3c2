"""Compact objects on a background (fluorescence nuclei, cells, particles): per-object levels.

One global threshold cannot fit objects whose brightness varies several-fold across a page,
nor the edge of an object that sits on an uneven background. This step gives every object
its own level, between its local background and its peak (the "fraction of peak height"
rule of full width at half maximum, here at ``LEVEL`` of the way up):

1. normalise (percentiles 0.5 / 99.9, ``core.normalize``); turn the page so that objects are
   bright (``polarity.page_polarity``: the network's vote, else the skewness sign);
2. ``b`` = Gaussian blur; background map = median of the pixels outside a first Li mask in
   ``CELL`` x ``CELL`` blocks, blocks without background filled by normalised convolution
   (Knutsson & Westin 1993), bilinear upsampling; ``c = b - background``;
3. detection: hysteresis thresholding of ``c`` (Canny 1986; ``apply_hysteresis_threshold``),
   high = Li's threshold of ``c`` (Li & Tam 1998), low = max(``DETECT_LOW`` x high,
   ``NOISE_SIGMAS`` x the noise's standard deviation, from the median absolute deviation);
4. territories: marker-controlled watershed (Beucher & Meyer 1993; ``skimage.segmentation``)
   of a smoother copy from its local maxima inside the detection, limited to the detection
   grown by ``REACH`` px, so a dense cluster is cut between its objects and each keeps its level;
5. per territory: local background = median of ``c`` on the territory's undetected ring (0
   when the ring is too small: ``c`` is background-subtracted already), peak = the
   ``PEAK_QUANTILE`` of ``c`` on its detected part; keep ``c > bg + LEVEL (peak - bg)``;
6. drop objects whose peak is below ``ACCEPT`` x the median peak of the objects that reach
   Li's threshold (dim cytoplasm tails, halos, specks);
7. fill holes; drop components under ``MIN_AREA`` x the typical area (the pixel-weighted
   median component area) and fibres: components over ``FIBRE_AREA`` x the typical area
   whose major axis is longer than ``FIBRE_LENGTH`` typical diameters.

Evidence (issue 21 study, docs/model-selection.md; foreground IoU %, this step vs Li's
threshold of a blurred page): realdata nuclei tune part 83.3 vs 72.7, Cell Tracking Challenge
GOWT1 83.4 vs 73.1 and HeLa 78.9 vs 76.4, NIH3T3 (Coelho et al. 2009) 70.6 vs 55.2; with the
folder context 83.7 / 83.4 / 78.9 / 70.9. An inverted page gives the same mask. The constants
were chosen on those four sets by one-at-a-time sweeps; each comment gives the evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import apply_hysteresis_threshold, threshold_li
from skimage.measure import regionprops
from skimage.segmentation import watershed

from unsupseg.core.normalize import Normalization
from unsupseg.core.structure.polarity import check, majority, page_polarity

NORMALIZATION = Normalization(low=0.5, high=99.9, clip=False)  # robust [0, 1] scale, tails kept
BLUR = 0.5  # Gaussian sigma (px) of b. 1.0: nuclei 80.8, 1.5: 77.8 (contours move outward)
CELL = 64  # background block (px). 16: mean of the 4 sets 74.6 (blocks inside nuclei), 32: 78.4, 64: 79.1
CELL_BACKGROUND = 0.2  # a block's median counts when over 20 % of it is background (else filled)
DETECT_LOW = 0.3  # hysteresis low / high. 0.2-0.4 flat; 0.5: GOWT1, NIH3T3 -2; 1 (Li): NIH3T3 60 vs 70
NOISE_SIGMAS = 3.0  # the low threshold is never below 3 noise sigmas. 2: same; 5: NIH3T3 -2
NOISE_GUARD = 7  # noise is measured outside the first Li mask grown by a 7x7 square (edges excluded)
SEED_BLUR = 2.0  # sigma (px) of the copy whose maxima seed territories. 1.5: NIH3T3 -2 (over-split); 3: same
SEED_DISTANCE = 4  # minimum distance (px) between seeds: 2 x SEED_BLUR
REACH = 8  # territory reach beyond the detection (px). 4: NIH3T3 -1.4; 12: nuclei -0.5, NIH3T3 +0.7
MIN_RING = 5  # pixels of undetected ring needed for a local background (else 0)
PEAK_QUANTILE = 0.95  # an object's peak. 0.90: -0.7; 0.99: -0.2
LEVEL = 0.25  # from local background to peak. 0.2: nuclei 80.7; 0.3: nuclei 83.9, other sets -0.5..-1.4
ACCEPT = 0.2  # keep objects with peak >= 0.2 x median strong peak. 0: nuclei 77.6 (dim tail); 0.3: HeLa -1.6
MIN_AREA = 0.05  # drop components under 5 % of the typical area (specks). 0.15: NIH3T3 -2.5
FIBRE_AREA = 4.0  # a fibre is over 4 x the typical area ...
FIBRE_LENGTH = 5.0  # ... and longer than 5 typical diameters: the fibre in nuclei 0999 (69 -> 83); 4-6 same


def folder_context(pages: Sequence[np.ndarray], probs: Sequence[np.ndarray | None] | None = None) -> dict:
    """What a sample of a folder's pages says about all of them (JSON-serialisable).

    ``{"polarity": the side of most pages, "typical_area": the median of the pages'
    typical object areas (px), or None when no page shows an object}``; ``{}`` for no pages.
    ``probs``: the network's foreground probability of each page, or None. Measured gain over
    per-page estimates: nuclei tune 83.3 -> 83.7, NIH3T3 70.6 -> 70.9, GOWT1 and HeLa equal.
    """
    if not len(pages):
        return {}
    probs = [None] * len(pages) if probs is None else probs
    sides, areas = [], []
    for page, prob in zip(pages, probs, strict=True):
        u, side = _normalised(page, prob, None)
        sides.append(side)
        labels, _ = ndi.label(_segment(u, None))
        area = _typical_area(np.bincount(labels.ravel())[1:])
        if area:
            areas.append(area)
    return {"polarity": majority(sides), "typical_area": float(np.median(areas)) if areas else None}


def segment(page: np.ndarray, prob: np.ndarray | None = None, context: dict | None = None) -> np.ndarray:
    """The objects' mask (bool, the page's shape) of one 2-D page as read (any dtype, finite).

    ``prob``: the network's foreground probability (same shape), used only to tell bright
    objects from dark ones; its outlines were not found to help. ``context``: from
    ``folder_context``; its ``polarity`` and ``typical_area`` replace the page's own. A page
    with nothing to find (flat, all zero) gives an empty mask; pure noise is not recognised as
    such (a quarter of it comes out, as from the research prototype).
    """
    context = context or {}
    u, _ = _normalised(page, prob, context.get("polarity"))
    return _segment(u, context.get("typical_area"))


def _normalised(page: np.ndarray, prob: np.ndarray | None, polarity: str | None) -> tuple[np.ndarray, str]:
    """(page on a [0, 1] scale with bright objects (float32), the objects' side)."""
    page = np.asarray(page)
    if page.ndim != 2:
        raise ValueError(f"segment takes one 2-D gray page, got shape {page.shape}")
    u = NORMALIZATION(page)
    side = check(polarity) if polarity else page_polarity(u, prob)
    if side == "dark":
        u = 1.0 - u
    return u, side


def _segment(u: np.ndarray, typical_area: float | None) -> np.ndarray:
    """Steps 2-7 of the module docstring on a normalised page with bright objects."""
    b = ndi.gaussian_filter(u, BLUR)
    if np.ptp(b) <= 0:
        return np.zeros(u.shape, bool)
    first = b > threshold_li(b[::2, ::2])  # Li on a 1/4 subsample: the same level, 4x faster
    c = b - _background(b, first)
    high = threshold_li(c[::2, ::2])
    far = ~ndi.maximum_filter(first, size=NOISE_GUARD)
    low = max(DETECT_LOW * high, NOISE_SIGMAS * _noise_sigma(c[::2, ::2], far[::2, ::2]))
    detected = apply_hysteresis_threshold(c, low, max(high, low))
    territory, n = _territories(ndi.gaussian_filter(u, SEED_BLUR), detected)
    if n == 0:
        return np.zeros(u.shape, bool)
    mask = _object_levels(c, detected, territory, n)
    mask = ndi.binary_fill_holes(_accepted(mask, c, high))
    return _shape_filter(mask, typical_area)


def _background(b: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Smooth background map of ``b`` (its shape): block medians of the pixels outside
    ``foreground``, blocks with too little background filled from their neighbours."""
    height, width = b.shape
    rows, cols = -(-height // CELL), -(-width // CELL)
    pad = ((0, rows * CELL - height), (0, cols * CELL - width))

    def blocks(a: np.ndarray) -> np.ndarray:  # (H, W) -> (rows, cols, CELL * CELL)
        a = np.pad(a, pad, mode="edge")
        return a.reshape(rows, CELL, cols, CELL).swapaxes(1, 2).reshape(rows, cols, CELL * CELL)

    outside = blocks(~foreground)
    ok = outside.mean(axis=-1) > CELL_BACKGROUND
    if not ok.any():
        return np.full_like(b, np.median(b))
    median = np.zeros((rows, cols), np.float32)
    values = np.where(outside[ok], blocks(b)[ok], np.nan)
    median[ok] = np.nanquantile(values, 0.5, axis=-1, method="higher")
    # normalised convolution: a Gaussian-weighted (sigma 1 block) mean of the blocks that have a
    # median; a block with no such block within ~4 blocks (weight <= 1e-3) takes their median
    weight = ndi.gaussian_filter(ok.astype(np.float32), 1.0)
    smooth = ndi.gaussian_filter(median * ok, 1.0)
    filled = np.where(weight > 1e-3, smooth / np.maximum(weight, 1e-6), np.median(median[ok]))
    return _upsample(filled, b.shape).astype(np.float32)


def _upsample(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling with corner pixels on corner pixels: ``ndi.zoom(a, ..., order=1)``
    as one product of two small weight matrices (4x faster at 512x512, the same values)."""
    wy, wx = (_linear_weights(n, size) for n, size in zip(a.shape, shape, strict=True))
    return wy @ a @ wx.T


def _linear_weights(n: int, size: int) -> np.ndarray:
    """(size, n) weights of linear interpolation from n samples onto size points spanning them."""
    points = np.linspace(0.0, n - 1, size)
    return np.stack([np.interp(points, np.arange(n), unit) for unit in np.eye(n)], axis=1)


def _noise_sigma(c: np.ndarray, background: np.ndarray) -> float:
    """The noise's standard deviation: 1.4826 x the median absolute deviation of ``c`` on the
    background (on all of ``c`` when under 100 background pixels)."""
    v = c[background] if np.count_nonzero(background) >= 100 else c.ravel()
    return 1.4826 * float(np.median(np.abs(v - np.median(v))))


def _territories(smooth: np.ndarray, detected: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels of the watershed territories, their number): seeds at the maxima of ``smooth``
    inside the detection, flooded within the detection grown by REACH px."""
    reach = ndi.maximum_filter(detected, size=2 * REACH + 1)
    peaks = peak_local_max(smooth, min_distance=SEED_DISTANCE, labels=detected, exclude_border=False)
    markers = np.zeros(smooth.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-smooth, markers, mask=reach), len(peaks)


def _object_levels(c: np.ndarray, detected: np.ndarray, territory: np.ndarray, n: int) -> np.ndarray:
    """Pixels of each territory above its level between local background and peak."""
    ring = (territory > 0) & ~detected
    background = _label_quantile(c[ring], territory[ring], n, 0.5)
    enough = np.bincount(territory[ring], minlength=n + 1) >= MIN_RING
    background = np.where(enough & np.isfinite(background), background, 0.0)
    peak = _label_quantile(c[detected], territory[detected], n, PEAK_QUANTILE)
    peak = np.where(np.isfinite(peak), peak, np.inf)  # a territory without detected pixels keeps none
    level = background + LEVEL * (peak - background)
    return (c > level[territory]) & (territory > 0)


def _label_quantile(values: np.ndarray, labels: np.ndarray, n: int, q: float) -> np.ndarray:
    """The q-quantile of ``values`` per label 0..n, the lower order statistic (``np.quantile``'s
    method "lower"); NaN where a label has no values."""

    def lower(v: np.ndarray) -> float:
        k = int(q * (len(v) - 1))
        return np.partition(v, k)[k]

    # one sort by label, then a partition per label (faster than one np.lexsort by label and
    # value: 9 vs 19 ms at 120 000 values and 300 labels, 43 vs 99 ms at 500 000 and 3000)
    return ndi.labeled_comprehension(values, labels, np.arange(n + 1), lower, np.float32, np.nan)


def _accepted(mask: np.ndarray, c: np.ndarray, strong: float) -> np.ndarray:
    """``mask`` without the objects whose peak of ``c`` is under ACCEPT x the median peak of
    the objects that reach ``strong`` (of all objects when none does)."""
    components, k = ndi.label(mask)
    if k == 0:
        return mask
    peak = np.full(k + 1, -np.inf, np.float32)
    np.maximum.at(peak, components[mask], c[mask])  # per-object maxima (ndi.maximum sorts: 9x slower)
    peak = peak[1:]
    reference = np.median(peak[peak > strong]) if (peak > strong).any() else np.median(peak)
    return np.concatenate([[False], peak >= ACCEPT * reference])[components]


def _typical_area(areas: np.ndarray) -> float:
    """The pixel-weighted median of component areas: the area of the component that holds the
    median foreground pixel (0 when there is none)."""
    areas = np.sort(areas[areas > 0])
    if not len(areas):
        return 0.0
    cumulative = np.cumsum(areas)
    return float(areas[np.searchsorted(cumulative, cumulative[-1] / 2)])


def _shape_filter(mask: np.ndarray, typical_area: float | None) -> np.ndarray:
    """``mask`` without specks (under MIN_AREA x typical) and fibres (over FIBRE_AREA x
    typical and longer than FIBRE_LENGTH typical diameters)."""
    components, k = ndi.label(mask)
    if k == 0:
        return mask
    area = np.bincount(components.ravel(), minlength=k + 1)
    typical = typical_area or _typical_area(area[1:])
    keep = area >= MIN_AREA * typical
    keep[0] = False
    diameter = 2.0 * np.sqrt(typical / np.pi)
    large = np.flatnonzero(keep & (area > FIBRE_AREA * typical))
    boxes = ndi.find_objects(components) if len(large) else []
    for i in large:  # regionprops of the large ones alone (of all: 98 ms at 7400 objects)
        (region,) = regionprops((components[boxes[i - 1]] == i).astype(np.uint8))
        keep[i] = region.axis_major_length <= FIBRE_LENGTH * diameter
    return keep[components]
