"""A network of thin membranes between cells (electron microscopy of tissue): boundaries kept by contrast.

Membranes are thin dark lines between cells; the textured cell interiors hold dark organelles
that a global threshold picks up as well (Li: 40 % foreground where the truth has 24 %). This
step finds the cells' *boundaries* instead of the dark pixels:

1. normalise (percentiles 0.5 / 99.9, ``core.normalize``: every step below depends on the
   page's contrast only); ``b`` = Gaussian blur (``SIGMA``, a quarter of the membrane width);
2. over-segmentation: marker-controlled watershed (Beucher & Meyer 1993) of the page at half
   resolution (2x2 means), one basin per bright spot (a regional maximum of a blurred copy),
   labels brought back by pixel replication: ~900 regions per 512x512 page, nearly every
   membrane on a region boundary (line recall ~0.94) but most boundaries false;
3. greedy mean-boundary agglomeration (the region-adjacency-graph merging of EM
   connectomics, e.g. Nunez-Iglesias et al. 2013; here driven by the image alone): a
   boundary's contrast = mean of its two regions' means of ``b`` - mean of ``b`` on the
   boundary (each 4-neighbour pixel pair across it contributes its darker pixel); the weakest
   boundary is merged first, the statistics updated, until every boundary is darker than its
   sides by ``CONTRAST`` x std(``b``) (gain and offset of the page do not matter);
4. width: the half-width at half-depth of the mean darkness profile across the kept
   boundaries, measured on the page; the mask = pixels within that distance + 0.5 px of a kept
   boundary that are also dark by Li's threshold of ``b`` (Li & Tam 1998; inside the band it
   trims the side of an off-centre line that is not dark);
5. dark blobs at junctions (extracellular space, which the ground truth counts as membrane):
   pixels at least as dark as the median kept-boundary pixel connected to the band through
   such pixels.

Membranes are dark by default (stained membranes in TEM); ``context["polarity"] == "bright"``
inverts the page first. ``folder_context`` decides the side once per folder as the
``objects`` step does (``polarity.page_polarity``: the network's vote, else the skewness
sign; on the 24 EM pages checked both say ``"dark"``); ``segment`` itself does not guess.

Evidence (issue 21 study, docs/model-selection.md; foreground IoU %, this step vs Li's threshold of a
blurred page): ISBI 2012 tune part 60.3 vs 51.3; Drosophila VNC ssTEM (Gerhard et al. 2013),
20 slices 58.9 vs 51.8, all 80 quadrants 59.3 vs 50.9. The packaged network's probability is
not used for the boundaries: as the boundary map of the same agglomeration it scored lower
(tune 56.5, VNC 50.4).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_li
from skimage.segmentation import watershed

from unsupseg.core.normalize import Normalization
from unsupseg.core.structure.polarity import check, majority, page_polarity

NORMALIZATION = Normalization(low=0.5, high=99.9, clip=False)  # a [0, 1] scale, tails kept
SIGMA = 1.5  # blur (px) for boundary statistics and Li: noise suppression below the ~6 px membranes
WS_SIGMA = 0.75  # half-resolution blur flooded by the watershed (= SIGMA at full resolution)
MARKER_SIGMA = 1.0  # half-resolution blur whose regional maxima seed the basins (2 px at full resolution)
MARKER_WINDOW = 5  # half-resolution window of a regional maximum. Marker blur 1.5-6 px, window 3-18 px: +-0.5
# kept boundaries are 0.9 std(b) darker than their sides: true membranes ~1.5 std, false ones ~0.5,
# each page's Otsu split 0.82-1.02; 0.8 / 1.0: tune -0.1 / -0.5, VNC -0.4 / -0.2
CONTRAST = 0.9
PROFILE_SIGMA = 1.0  # blur (px) of the page whose profile across the boundaries gives the width
PROFILE_REACH = 12  # the profile is measured out to 12 px from the boundaries ...
FAR = 10  # ... and its level away from them on pixels farther than 10 px
HALF_WIDTH = 3.0  # half-width (px) when the profile gives none. Measured: 2.8 (ISBI), 3.2-3.5 (VNC)
MAX_HALF_WIDTH = 8.0  # the measured half-width is clipped to [1, 8] px


def folder_context(pages: Sequence[np.ndarray], probs: Sequence[np.ndarray | None] | None = None) -> dict:
    """``{"polarity": the side of the membranes on most pages}`` (``{}`` for no pages).

    ``probs``: the network's foreground probability of each page, or None.
    """
    if not len(pages):
        return {}
    probs = [None] * len(pages) if probs is None else probs
    sides = [page_polarity(_page(page), prob) for page, prob in zip(pages, probs, strict=True)]
    return {"polarity": majority(sides)}


def segment(page: np.ndarray, prob: np.ndarray | None = None, context: dict | None = None) -> np.ndarray:
    """The membranes' mask (bool, the page's shape) of one 2-D page as read (any dtype, finite).

    ``prob`` is not used (module docstring). ``context``: from ``folder_context``;
    ``"polarity"`` is ``"dark"`` (the default) or ``"bright"``. A page with no boundary
    darker than its sides (flat, all zero) gives an empty mask; pure noise is not recognised
    as such (a quarter of it comes out, as from the research prototype).
    """
    x = _page(page)
    if check((context or {}).get("polarity", "dark")) == "bright":
        x = 1.0 - x
    b = ndi.gaussian_filter(x, SIGMA)
    spread = float(b.std())
    if spread == 0:
        return np.zeros(x.shape, bool)
    lines = _kept_boundaries(_over_segmentation(x), b, CONTRAST * spread)
    if not lines.any():
        return lines
    dist = ndi.distance_transform_edt(~lines)
    half_width = _half_width(ndi.gaussian_filter(x, PROFILE_SIGMA), dist)
    mask = (dist <= half_width + 0.5) & (b < threshold_li(b[::2, ::2]))  # Li on a 1/4 subsample: 4x faster
    # dark blobs attached to the band: dark pixels connected to it through dark pixels
    dark = b <= np.median(b[lines])
    blobs, _ = ndi.label(dark | mask)
    touching = np.zeros(blobs.max() + 1, bool)
    touching[blobs[mask]] = True
    touching[0] = False
    return mask | (touching[blobs] & dark)


def _page(page: np.ndarray) -> np.ndarray:
    page = np.asarray(page)
    if page.ndim != 2:
        raise ValueError(f"segment takes one 2-D gray page, got shape {page.shape}")
    return NORMALIZATION(page)


def _over_segmentation(x: np.ndarray) -> np.ndarray:
    """Watershed basins of the page at half resolution, one per bright spot, at full resolution."""
    height, width = x.shape
    padded = np.pad(x, ((0, height % 2), (0, width % 2)), mode="edge")
    half = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean(axis=(1, 3))
    smooth = ndi.gaussian_filter(half, MARKER_SIGMA)
    markers, _ = ndi.label(smooth == ndi.maximum_filter(smooth, MARKER_WINDOW))
    basins = watershed(-ndi.gaussian_filter(half, WS_SIGMA), markers)
    return basins.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]


def _kept_boundaries(labels: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    """The boundary pixels (bool image) between the regions left after merging every boundary
    whose contrast is below ``threshold``."""
    pixel, first, second = _boundary_pixels(labels, b)
    if not len(pixel):
        return np.zeros(labels.shape, bool)
    n = int(labels.max()) + 1
    pairs, boundary = np.unique(first * n + second, return_inverse=True)
    first, second = pairs // n, pairs % n
    bv = b.ravel()
    root = _merge_weak_boundaries(
        region_sum=np.bincount(labels.ravel(), bv, minlength=n),
        region_size=np.bincount(labels.ravel(), minlength=n),
        first=first,
        second=second,
        boundary_sum=np.bincount(boundary, bv[pixel]),
        boundary_size=np.bincount(boundary),
        threshold=threshold,
    )
    kept = root[first] != root[second]
    lines = np.zeros(labels.size, bool)
    lines[pixel[kept[boundary]]] = True
    return lines.reshape(labels.shape)


def _boundary_pixels(labels: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every 4-neighbour pixel pair with different labels: the flat index of its darker
    pixel in ``b``, and the two labels (lower, higher), int64."""
    index = np.arange(labels.size).reshape(labels.shape)
    pixel, first, second = [], [], []
    for lead, trail in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),  # left | right
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),  # above | below
    ):
        la, lb = labels[lead], labels[trail]
        across = la != lb
        ia, ib = index[lead][across], index[trail][across]
        pixel.append(np.where(b.flat[ia] <= b.flat[ib], ia, ib))
        first.append(np.minimum(la[across], lb[across]))
        second.append(np.maximum(la[across], lb[across]))
    return (
        np.concatenate(pixel),
        np.concatenate(first).astype(np.int64),
        np.concatenate(second).astype(np.int64),
    )


def _merge_weak_boundaries(
    region_sum: np.ndarray,
    region_size: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    boundary_sum: np.ndarray,
    boundary_size: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Greedy agglomeration on the region adjacency graph; returns each region's final region.

    Regions 0..n-1 with sums of ``b`` and sizes; boundary i between regions ``first[i] <
    second[i]`` with the sum of ``b`` over its pixels and their count. The boundary of lowest
    contrast (mean of the two region means - boundary mean) merges first, its regions' and
    boundaries' sums combine, until every contrast is at least ``threshold``.

    Hand-written: skimage.graph.merge_hierarchical with these statistics as merge and weight
    functions gives the very same boundaries (checked on 8 pages), but at ~80 ms per 512x512
    page against ~25 ms here (networkx graph updates per merge) and 0.3 s to import networkx.
    A boundary is keyed by its (lower, higher) region pair; plain Python containers, because
    each merge touches a handful of entries.
    """
    total, size = region_sum.tolist(), region_size.tolist()
    mean = [t / s if s else 0.0 for t, s in zip(total, size, strict=True)]
    boundaries = {
        (a, c): [s, k]
        for a, c, s, k in zip(
            first.tolist(), second.tolist(), boundary_sum.tolist(), boundary_size.tolist(), strict=True
        )
    }
    neighbours: list[set[int]] = [set() for _ in total]
    for a, c in boundaries:
        neighbours[a].add(c)
        neighbours[c].add(a)

    def contrast(a: int, c: int) -> float:
        s, k = boundaries[a, c]
        return 0.5 * (mean[a] + mean[c]) - s / k

    heap = [(contrast(a, c), a, c) for a, c in boundaries]
    heapq.heapify(heap)
    parent = list(range(len(total)))
    while heap and heap[0][0] < threshold:
        value, a, c = heapq.heappop(heap)
        if (a, c) not in boundaries or contrast(a, c) != value:
            continue  # merged away, or stale: the boundary's current contrast is in the heap too
        # merge c into a: sums, then c's boundaries become a's (added up where a has one too)
        del boundaries[a, c]
        neighbours[a].discard(c)
        neighbours[c].discard(a)
        parent[c] = a
        total[a] += total[c]
        size[a] += size[c]
        mean[a] = total[a] / size[a]
        for m in neighbours[c]:
            s, k = boundaries.pop((c, m) if c < m else (m, c))
            neighbours[m].discard(c)
            key = (a, m) if a < m else (m, a)
            if key in boundaries:
                boundaries[key][0] += s
                boundaries[key][1] += k
            else:
                boundaries[key] = [s, k]
                neighbours[a].add(m)
                neighbours[m].add(a)
        neighbours[c] = set()
        for m in neighbours[a]:  # a's mean changed, and with it all its boundaries' contrasts
            key = (a, m) if a < m else (m, a)
            heapq.heappush(heap, (contrast(*key), *key))
    root = np.array(parent)
    while not np.array_equal(root[root], root):  # pointer jumping to each region's final region
        root = root[root]
    return root


def _half_width(x: np.ndarray, dist: np.ndarray) -> float:
    """Half-width (px) at half-depth of the mean profile of ``x`` against the distance ``dist``
    to the boundaries, interpolated linearly; HALF_WIDTH where the profile has no such point."""
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = np.asarray(ndi.mean(x, np.rint(dist).astype(np.intp), index=np.arange(PROFILE_REACH + 1)))
    far = dist > FAR
    level = np.median(x[far]) if far.any() else profile[-1]
    half = 0.5 * (profile[0] + level)
    above = np.flatnonzero(profile > half)
    if not len(above) or above[0] == 0 or not np.isfinite(profile).all():
        return HALF_WIDTH
    j = above[0]
    width = j - 1 + (half - profile[j - 1]) / (profile[j] - profile[j - 1])
    return float(np.clip(width, 1.0, MAX_HALF_WIDTH))
