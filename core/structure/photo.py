"""One object in a photograph (a horse on grass, an animal, a vehicle): salient object + GrabCut.

Intensity alone cannot separate a horse from a field: both hold bright and dark parts. What
separates them in a photograph is that the object is framed: the background touches the
borders of the picture and the object does not. This step uses that prior twice.

1. **Saliency from the border** (on a copy whose long side is ``SALIENCY_SIDE`` px): the
   minimum barrier distance of every pixel to the image border (Strand et al. 2013; Zhang et
   al. 2015, "Minimum barrier salient object detection at 80 FPS"), and the geodesic distance
   to the border over the gradient magnitude (Wei et al. 2012, "Geodesic saliency using
   background priors"; ``skimage.graph.MCP_Geometric``). Each map is scaled to [0, 1] by its
   ``SALIENCY_HIGH`` percentile and the two are averaged, then blurred.
2. **A first blob:** Otsu's threshold of the saliency (Otsu 1979); pieces under
   ``KEEP_PIECES`` of the largest piece are dropped and holes filled.
3. **GrabCut** (Rother et al. 2004; ``cv2.grabCut``, Gaussian mixtures of colour and a graph
   cut, on a copy scaled by ``GRABCUT_SCALE``): the blob is "probable foreground", the rest
   "probable background", a band of ``BORDER`` of the short side along the picture's border is
   sure background. ``GRABCUT_ITERATIONS`` rounds.
4. **Guard:** a cut that keeps under ``GUARD`` of the blob, or puts more than ``1 - GUARD`` of
   itself outside the blob's grown bounding box, dropped or swapped the object (on gray
   photographs GrabCut's colour models often explain the whole picture as background). GrabCut
   then runs again with the ``CORE`` most salient share of the blob as sure object; when that
   cut fails the guard too, the blob is kept.
5. Pieces under ``KEEP_PIECES`` of the largest are dropped, holes are filled.

The step ignores the network's probability: the packaged network splits by intensity, which is
what fails on photographs. The mask it writes is the object, so the foreground rule does not
change it. The minimum barrier distance has no library implementation with a Python binding;
it is written here as the raster-scan approximation of Zhang et al. (2015) with whole rows and
columns updated at once (numpy), which is exact after enough passes and close after
``MBD_PASSES``.

Evidence (issue 21, docs/model-selection.md; IoU % as written, horse tune part, 12 images;
blur + Li threshold 36.3 on the same images): this step 61.4; without the guard 41.0 (GrabCut
drops the horse on 5 of 12); without the second run (the blob kept) 58.6; ``CORE`` 0.15: 59.4,
0.35: 60.9; ``MBD_PASSES`` 1: +0.7 on the first variant, kept at 3 (closer to the exact distance);
``BORDER`` 0.02 / 0.08: -0.2 / -0.4; ``GRABCUT_SCALE`` 1.0: +0.4 at 1.4x the time;
``GRABCUT_ITERATIONS`` 10: the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from unsupseg.core.normalize import stretch

SALIENCY_SIDE = 240  # long side (px) of the copy saliency is measured on (Zhang et al. use 300)
SALIENCY_HIGH = 99.0  # percentile that scales each saliency map to 1
SALIENCY_BLUR = 2.0  # Gaussian sigma (px, on the small copy) of the combined saliency
MBD_PASSES = 3  # raster-scan passes (each: down, up, right, left) of the minimum barrier distance
GRABCUT_SCALE = 0.75  # GrabCut runs on a copy of this scale (speed; the mask is scaled back)
GRABCUT_ITERATIONS = 5
BORDER = 0.04  # share of the short side along the border that is sure background
GUARD = 0.4  # GrabCut's mask must keep 40 % of the blob and stay near it, else the blob is kept
CORE = 0.25  # when GrabCut drops the object, it runs again with this share of the blob as sure object
KEEP_PIECES = 0.2  # pieces under 20 % of the largest piece are dropped


def folder_context(pages: Sequence[np.ndarray], probs: Sequence[np.ndarray | None] | None = None) -> dict:
    """Nothing is measured over the folder: each photograph frames its own object (``{}``)."""
    return {}


def segment(page: np.ndarray, prob: np.ndarray | None = None, context: dict | None = None) -> np.ndarray:
    """The object's mask (bool, the page's shape) in one 2-D page as read (any dtype, finite).

    ``prob`` and ``context`` are not used (module docstring). A flat page gives an empty mask.
    """
    page = np.asarray(page)
    if page.ndim != 2:
        raise ValueError(f"segment takes one 2-D gray page, got shape {page.shape}")
    x = stretch(page.astype(np.float32))
    if float(x.max()) == float(x.min()) or min(x.shape) < 8:
        return np.zeros(x.shape, dtype=bool)
    saliency = _saliency(x)
    blob = _clean(saliency > _otsu(saliency))
    if not blob.any():
        return blob
    for core in (0.0, CORE):  # a soft start first; when GrabCut drops the object, a sure core
        cut = _grabcut(x, blob, saliency, core)
        if _plausible(cut, blob):
            return _clean(cut)
    return blob


def _otsu(x: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(x))


def _resize(x: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    from skimage.transform import resize

    return resize(
        x, shape, order=order, anti_aliasing=order > 0 and shape[0] < x.shape[0], preserve_range=True
    )


def _saliency(x: np.ndarray) -> np.ndarray:
    """The combined border-distance saliency of ``x`` (values in [0, 1]), at ``x``'s shape."""
    h, w = x.shape
    scale = min(1.0, SALIENCY_SIDE / max(h, w))
    small = _resize(x, (max(8, round(h * scale)), max(8, round(w * scale)))).astype(np.float32)
    maps = [_minimum_barrier(small), _geodesic(small)]
    scaled = [m / max(float(np.percentile(m, SALIENCY_HIGH)), 1e-6) for m in maps]
    combined = ndi.gaussian_filter(np.clip(sum(scaled) / len(scaled), 0.0, 1.0), SALIENCY_BLUR)
    return _resize(combined, (h, w)).astype(np.float32)


def _minimum_barrier(x: np.ndarray) -> np.ndarray:
    """Approximate minimum barrier distance of every pixel to the border of ``x``: over paths to
    the border, the least (max - min) of the values met. Raster scans (Zhang et al. 2015) with
    one row or column updated at once."""
    dist = np.full(x.shape, np.inf, dtype=np.float32)
    high = x.copy()
    low = x.copy()
    for border in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        dist[border] = 0.0
    for _ in range(MBD_PASSES):
        for axis, order in ((0, 1), (0, -1), (1, 1), (1, -1)):
            _sweep(x, dist, high, low, axis, order)
    return dist


def _sweep(x: np.ndarray, dist: np.ndarray, high: np.ndarray, low: np.ndarray, axis: int, order: int) -> None:
    """One directional pass: every line takes its neighbour line's path when that lowers its barrier."""
    n = x.shape[axis]
    lines = range(1, n) if order > 0 else range(n - 2, -1, -1)
    view = (lambda a, i: a[i]) if axis == 0 else (lambda a, i: a[:, i])
    for i in lines:
        j = i - order
        xi = view(x, i)
        new_high = np.maximum(view(high, j), xi)
        new_low = np.minimum(view(low, j), xi)
        new = new_high - new_low
        better = new < view(dist, i)
        if better.any():
            view(dist, i)[better] = new[better]
            view(high, i)[better] = new_high[better]
            view(low, i)[better] = new_low[better]


def _geodesic(x: np.ndarray) -> np.ndarray:
    """Geodesic distance of every pixel to the border of ``x`` over its gradient magnitude."""
    from skimage.filters import sobel
    from skimage.graph import MCP_Geometric

    cost = sobel(ndi.gaussian_filter(x, 1.0)).astype(np.float64) + 1e-3
    h, w = x.shape
    starts = [(0, c) for c in range(w)] + [(h - 1, c) for c in range(w)]
    starts += [(r, 0) for r in range(1, h - 1)] + [(r, w - 1) for r in range(1, h - 1)]
    dist, _ = MCP_Geometric(cost).find_costs(starts)
    return dist.astype(np.float32)


def _grabcut(x: np.ndarray, blob: np.ndarray, saliency: np.ndarray, core: float) -> np.ndarray:
    """GrabCut's object, started from ``blob`` with the border as sure background and the
    ``core`` most salient share of the blob as sure foreground."""
    import cv2

    h, w = x.shape
    sh, sw = max(8, round(h * GRABCUT_SCALE)), max(8, round(w * GRABCUT_SCALE))
    small = np.round(_resize(x, (sh, sw)) * 255.0).astype(np.uint8)
    image = np.ascontiguousarray(np.repeat(small[:, :, None], 3, axis=2))
    start = _resize(blob.astype(np.float32), (sh, sw)) > 0.5
    labels = np.where(start, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    if core > 0 and start.any():
        s_small = _resize(saliency, (sh, sw))
        labels[start & (s_small >= np.quantile(s_small[start], 1.0 - core))] = cv2.GC_FGD
    band = max(1, round(BORDER * min(sh, sw)))
    labels[:band], labels[-band:], labels[:, :band], labels[:, -band:] = (cv2.GC_BGD,) * 4
    if not (labels == cv2.GC_PR_FGD).any():
        return blob
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means start: the same mask every run
    cv2.grabCut(image, labels, None, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    cut = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return _resize(cut.astype(np.float32), (h, w)) > 0.5


def _plausible(cut: np.ndarray, blob: np.ndarray) -> bool:
    """GrabCut kept at least ``GUARD`` of the blob, and at most 1 / ``GUARD`` of its area lies
    outside the blob's bounding box grown by half its size."""
    kept = np.count_nonzero(cut & blob) / max(np.count_nonzero(blob), 1)
    if kept < GUARD:
        return False
    rows, cols = np.nonzero(blob)
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    dr, dc = (r1 - r0) // 2, (c1 - c0) // 2
    box = np.zeros_like(blob)
    box[max(0, r0 - dr) : r1 + dr + 1, max(0, c0 - dc) : c1 + dc + 1] = True
    outside = np.count_nonzero(cut & ~box) / max(np.count_nonzero(cut), 1)
    return outside <= 1.0 - GUARD


def _clean(mask: np.ndarray) -> np.ndarray:
    """``mask`` without pieces under ``KEEP_PIECES`` of its largest piece, holes filled."""
    labels, n = ndi.label(mask)
    if n == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= KEEP_PIECES * sizes.max()) + 1
    return ndi.binary_fill_holes(np.isin(labels, keep))
