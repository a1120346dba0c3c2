"""Instance labels from a binary mask: connected components, optionally split by a watershed.

    mask (P, H, W) bool --connected components (4-connected; 6 in 3D)--> labels
         --split: one of SPLIT_METHODS (below) cuts touching objects--> labels
         --min_size: objects of fewer pixels dropped--> labels (0 = background)

Pages are labelled one by one (labels start at 1 on every page) unless ``three_d``,
where the stack is one volume and an object may span pages. 4-connectivity is the
rule of the mask clean-up (``--min-size``), so an object there is an object here.

All split methods are watersheds of the Euclidean distance to the background, which
peaks once per round object, so two touching nuclei give two peaks and the watershed of
the negated distance cuts them along the neck. They differ in what counts as a peak:

- ``scaled`` (the default): ``hmaxima`` with its smoothing and depth in proportion to the
  page's typical object radius R (the median over components of the largest distance to
  the background): sigma ``SCALED_SIGMA`` x R, h ``SCALED_H`` x R. A neck must be 6 % of
  the radius narrower than the smaller object, whatever the magnification, so the ragged
  outline of a large nucleus is no neck, while small nuclei are cut as by ``hmaxima``.
- ``hmaxima``: the distance is smoothed (Gaussian, ``SMOOTH_SIGMA``) and a
  peak is an h-maximum (Soille 2003, ch. 6; scikit-image's ``h_maxima``): a maximum that
  stands at least ``H_DEPTH`` pixels of distance above the saddle to any higher one. Two
  nuclei are cut when the neck between them is at least that much narrower than the
  smaller one; how far apart their centres lie does not matter.
- ``watershed`` (the method of earlier releases, kept by name): a peak is the largest
  distance (to within one pixel) within ``min_distance`` pixels, so peaks closer than
  that merge, however deep the neck between them.

Every component gets at least one marker, so splitting never loses an object, and
only relabels foreground pixels: ``labels > 0`` is the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# measured on stardist's nuclei (docs/benchmarks.md, "Objects"): F1 at IoU 0.5 rises up to 7
# pixels and is flat above; below, elongated nuclei are cut in two
DEFAULT_MIN_DISTANCE = 7
PEAK_TOLERANCE = 1.0  # pixels of distance: near-equal values along a ridge are one peak

SPLIT_METHODS = ("scaled", "hmaxima", "watershed")
DEFAULT_SPLIT_METHOD = "scaled"
# method "scaled", chosen on the tune sets (realdata/nuclei's first 4 names, 125 nuclei; Cell Tracking
# Challenge N2DH-GOWT1, 6 frames, 152 nuclei of ~2,900 px; N2DL-HeLa, 4 frames, 859 nuclei) with the
# masks seginfer writes, F1 / PQ at IoU 0.5 pooled over each set's nuclei: hmaxima 91.9 / 76.8,
# 70.6 / 65.1, 86.4 / 77.6 (it cuts GOWT1's large nuclei at their ragged outlines); scaled 90.6 /
# 75.8, 84.4 / 77.8, 87.5 / 78.4 (all three sets pooled: F1 84.6 -> 87.4, PQ 75.6 -> 78.0). Sigma
# 0.08-0.2 R with h 0.04-0.06 R all give nuclei 90.2-91.5, GOWT1 81-85, HeLa 86.9-87.5; h 0.08 R and
# above lose nuclei (89.3), 0.02 R loses GOWT1 (79-82). Also tried there, not kept: adding the
# smoothed intensity (normalised per object, weight 0.1-1 x R's scale): within +-0.3 at weight 0.1-0.25,
# GOWT1 -5 to -50 above (textured nuclei); h-maxima of the intensity alone: GOWT1 under 63.
SCALED_SIGMA = 0.15  # x R: Gaussian smoothing of the distance (method "scaled")
SCALED_H = 0.06  # x R: the depth of an h-maximum (method "scaled")
MIN_SIGMA = 0.5  # pixels: the least smoothing of method "scaled" (pages of specks)
# chosen on the tune part of realdata/nuclei (first 4 names; seginfer's masks; pooled F1 at IoU
# 0.5, docs/objects.md): sigma 0.5 / 1 / 1.5 / 2 / 3 with h 0.5: 91.9 / 90.6 / 90.6 / 90.6 / 88.8;
# h 0.25 / 0.5 / 1 / 1.5 at sigma 1: 91.9 / 90.6 / 88.4 / 87.1 (old watershed: 88.7)
SMOOTH_SIGMA = 1.0  # pixels: Gaussian smoothing of the distance (an uneven outline's bumps are no peaks)
H_DEPTH = 0.25  # pixels of smoothed distance a peak must stand above the saddle to a higher one


@dataclass(frozen=True)
class Labeling:
    """How a mask becomes instance labels (``seginfer --split --split-method --min-distance
    --labels-3d``)."""

    split: bool = False  # separate touching objects (with ``method``)
    min_distance: int = DEFAULT_MIN_DISTANCE  # pixels between two objects' centres (method "watershed")
    three_d: bool = False  # label a stack as one volume (objects span pages)
    min_size: int = 0  # drop objects with fewer pixels (after splitting); 0 keeps all
    method: str = DEFAULT_SPLIT_METHOD  # one of SPLIT_METHODS, used when ``split``

    def __post_init__(self) -> None:
        if self.method not in SPLIT_METHODS:
            raise ValueError(f"split method must be one of {', '.join(SPLIT_METHODS)}, got {self.method!r}")
        if self.min_distance < 1:
            raise ValueError(f"min_distance must be >= 1 pixel, got {self.min_distance}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")

    def label(self, mask: np.ndarray) -> np.ndarray:
        """(P, H, W) or (H, W) bool mask -> int32 labels of the same shape, 0 = background."""
        return label_mask(mask, self.split, self.min_distance, self.three_d, self.min_size, self.method)

    def describe(self) -> dict:
        """The record of the run manifest: ``{"split": method or None, ...its parameters}``."""
        if not self.split:
            return {"split": None, "three_d": self.three_d, "min_size": self.min_size}
        params = {
            "scaled": {"sigma_per_radius": SCALED_SIGMA, "h_per_radius": SCALED_H},
            "hmaxima": {"sigma": SMOOTH_SIGMA, "h": H_DEPTH},
            "watershed": {"min_distance": self.min_distance},
        }[self.method]
        return {"split": self.method, **params, "three_d": self.three_d, "min_size": self.min_size}


def label_mask(
    mask: np.ndarray,
    split: bool = False,
    min_distance: int = DEFAULT_MIN_DISTANCE,
    three_d: bool = False,
    min_size: int = 0,
    method: str = DEFAULT_SPLIT_METHOD,
) -> np.ndarray:
    """Instance labels (int32, same shape, 0 = background) of a bool mask (H, W) or pages (P, H, W).

    Pages are labelled independently (1..n on each page) unless ``three_d``. Labels are
    consecutive and numbered in raster order of each object's first pixel. With ``split``,
    touching objects are cut by ``method`` (SPLIT_METHODS; ``min_distance`` is the
    "watershed" method's).
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"split method must be one of {', '.join(SPLIT_METHODS)}, got {method!r}")
    mask = np.asarray(mask)
    mask = mask if mask.dtype == np.bool_ else mask != 0
    if mask.ndim not in (2, 3):
        raise ValueError(f"label_mask takes (H, W) or (P, H, W), got shape {mask.shape}")
    out = np.empty(mask.shape, dtype=np.int32)  # written in place: one int32 image, no copies
    if mask.ndim == 2 or three_d:
        _label_block(mask, split, min_distance, min_size, out, method)
    else:
        for page, page_out in zip(mask, out, strict=True):
            _label_block(page, split, min_distance, min_size, page_out, method)
    return out


def _label_block(
    mask: np.ndarray, split: bool, min_distance: int, min_size: int, out: np.ndarray, method: str
) -> None:
    """Label one page (2-D) or one volume (3-D) into ``out`` (int32, the mask's shape)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, 1)  # 4- (6-) connectivity
    n = ndimage.label(mask, structure=structure, output=out)
    if split and n:
        if method == "scaled":
            out[...] = _split_scaled(mask, out, n)
        elif method == "hmaxima":
            out[...] = _split_hmaxima(mask, out, n)
        else:
            out[...] = _split(mask, out, n, min_distance)
    if min_size > 1 and n:
        sizes = np.bincount(out.ravel())
        small = sizes < min_size
        small[0] = False
        if small.any():
            out[small[out]] = 0
    if (split or min_size > 1) and n:
        out[...] = relabel_consecutive(out)


def _split(mask: np.ndarray, components: np.ndarray, n: int, min_distance: int) -> np.ndarray:
    """Distance-transform watershed of one page or volume: one marker per peak, >= 1 per component.

    A peak is a connected set of pixels whose distance is within ``PEAK_TOLERANCE`` of
    the largest distance within ``min_distance`` of them, so the ridge of an elongated
    object (near-equal distances along its middle) is one peak. ``peak_local_max`` would
    put a marker every ``min_distance`` pixels along such a ridge and cut a bar into
    pieces; on stardist's nuclei both rules score alike (docs/benchmarks.md, "Objects").
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(mask).astype(np.float32)
    local_max = ndimage.maximum_filter(distance, size=2 * min_distance + 1, mode="nearest")
    peaks = mask & (distance >= local_max - PEAK_TOLERANCE)
    del local_max
    # 8-connected, so a diagonal ridge is one peak; cut where it crosses into another component
    markers = _component_markers(peaks, components, n, distance)
    return watershed(-distance, markers, mask=mask, connectivity=1).astype(np.int32, copy=False)


def _split_scaled(mask: np.ndarray, components: np.ndarray, n: int) -> np.ndarray:
    """``_split_hmaxima`` with sigma and h in proportion to the typical object radius R of the page
    or volume: ``SCALED_SIGMA`` x R (at least ``MIN_SIGMA``) and ``SCALED_H`` x R pixels."""
    distance = _distance(mask)
    radius = typical_radius(distance, components, n)
    sigma = max(SCALED_SIGMA * radius, MIN_SIGMA)
    return _split_hmaxima(mask, components, n, sigma, SCALED_H * radius, distance)


def typical_radius(distance: np.ndarray, components: np.ndarray, n: int) -> float:
    """The median over the ``n`` components of their largest distance to the background (at least
    1 pixel): the radius of a typical object (a clump's largest distance is that of its largest
    object, so touching objects do not inflate it)."""
    top = np.zeros(n + 1, np.float32)
    inside = components > 0
    np.maximum.at(top, components[inside], distance[inside])
    return max(float(np.median(top[1:])), 1.0) if n else 1.0


def _split_hmaxima(
    mask: np.ndarray,
    components: np.ndarray,
    n: int,
    sigma: float = SMOOTH_SIGMA,
    h: float = H_DEPTH,
    distance: np.ndarray | None = None,
) -> np.ndarray:
    """Watershed of the distance smoothed by ``sigma`` from its h-maxima (depth ``h``), one page or
    volume (``distance``: the mask's, when already computed).

    The result of ``skimage.morphology.h_maxima`` markers and a watershed, computed the
    other way round because ``h_maxima`` (a grey-level reconstruction) takes 4x the time of
    all the rest at 512x512: the watershed is flooded from every local maximum, then basins
    are merged by their dynamics (Grimaud 1992): visiting the saddles between basins from
    the highest down, two flooded regions meet, and the lower one's maximum is an h-maximum
    when its peak stands ``h`` or more above that saddle; if not, its basin joins the
    one across the saddle. Written by hand: scikit-image has no merge by dynamics.
    Maxima and saddles use the full (8-, 26-) neighbourhood, as ``h_maxima`` does (with 4
    neighbours a diagonal ridge dips between pixels and is cut), limited to one component.
    """
    import itertools

    from scipy import ndimage
    from skimage.morphology import local_maxima
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(_distance(mask) if distance is None else distance, sigma)
    smooth[~mask] = 0.0  # foreground stays > 0: no plateau crosses the background
    peaks = local_maxima(smooth, connectivity=mask.ndim) & mask
    markers = _component_markers(peaks, components, n, smooth)
    m = int(markers.max())
    basins = watershed(-smooth, markers, mask=mask, connectivity=1)
    peak = np.zeros(m + 1, np.float32)
    np.maximum.at(peak, markers[markers > 0], smooth[markers > 0])
    # the saddle of two neighbouring basins of one component: the highest min(value) over their
    # touching pixel pairs (half of the full neighbourhood: each pair once)
    keys, saddles = [], []
    for step in itertools.product((-1, 0, 1), repeat=mask.ndim):
        if step <= (0,) * mask.ndim:
            continue
        src = tuple(slice(max(0, -d), mask.shape[i] - max(0, d)) for i, d in enumerate(step))
        dst = tuple(slice(max(0, d), mask.shape[i] - max(0, -d)) for i, d in enumerate(step))
        a, b = basins[src], basins[dst]
        edge = (a != b) & (a > 0) & (b > 0) & (components[src] == components[dst])
        first, second = a[edge].astype(np.int64), b[edge].astype(np.int64)
        keys.append(np.minimum(first, second) * (m + 1) + np.maximum(first, second))
        saddles.append(np.minimum(smooth[src][edge], smooth[dst][edge]))
    key, saddle = np.concatenate(keys), np.concatenate(saddles)
    if key.size == 0:
        return basins.astype(np.int32, copy=False)
    order = np.lexsort((saddle, key))
    key, saddle = key[order], saddle[order]
    last = np.r_[key[1:] != key[:-1], True]  # the highest saddle of each pair
    key, saddle = key[last], saddle[last]
    flood = np.arange(m + 1)  # union-find of the flooded regions
    owner = np.arange(m + 1)  # union-find of the objects (basins merged into one label)
    top = peak.copy()  # each flooded region's highest peak

    def find(parent: np.ndarray, i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(-saddle, kind="stable"):
        a, b = divmod(int(key[k]), m + 1)
        fa, fb = find(flood, a), find(flood, b)
        if fa == fb:
            continue
        low, high = (fa, fb) if top[fa] <= top[fb] else (fb, fa)
        if top[low] - saddle[k] < h:  # no h-maximum: the lower region (one object) joins
            side, other = (a, b) if low == fa else (b, a)
            owner[find(owner, side)] = find(owner, other)
        flood[low] = high
    roots = np.array([find(owner, i) for i in range(m + 1)])
    return roots[basins].astype(np.int32, copy=False)


def _distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel to the nearest background pixel (float32).

    OpenCV's exact transform (Felzenszwalb & Huttenlocher 2012; ``DIST_MASK_PRECISE``) on a
    2-D page with background, in a sixth of the time of ``scipy.ndimage.distance_transform_edt``
    (most of the split's cost at 512x512). Its float32 results vary in the last bit with its
    threads, so the squared distance, an integer, is rounded and its root taken again: the
    values are scipy's, bit for bit, up to distances of 2,000 pixels. Volumes, and pages
    without background (where OpenCV gives no finite distance), take scipy's.
    """
    if mask.ndim == 2 and not mask.all():
        import cv2

        page = np.ascontiguousarray(mask).view(np.uint8)
        d = cv2.distanceTransform(page, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
        return np.sqrt(np.rint(d * d, out=d), out=d).astype(np.float32)
    from scipy import ndimage

    return ndimage.distance_transform_edt(mask).astype(np.float32)


def _component_markers(peaks: np.ndarray, components: np.ndarray, n: int, height: np.ndarray) -> np.ndarray:
    """Markers (int32, 1..k) of the connected sets of ``peaks``, cut where a set crosses from one
    component to another (they may touch at a corner), plus one at the highest pixel of each
    component that has no peak (a larger neighbour across a corner hid it)."""
    from scipy import ndimage

    regions, _ = ndimage.label(peaks, structure=np.ones((3,) * peaks.ndim))
    _, ids = np.unique(regions[peaks].astype(np.int64) * (n + 1) + components[peaks], return_inverse=True)
    markers = np.zeros(peaks.shape, dtype=np.int32)
    markers[peaks] = ids.ravel() + 1
    n_peaks = int(ids.max()) + 1 if ids.size else 0
    has_marker = np.zeros(n + 1, dtype=bool)
    has_marker[components[peaks]] = True
    lacking = np.flatnonzero(~has_marker[1:]) + 1
    if lacking.size:
        where = ndimage.maximum_position(height, components, lacking)
        markers[tuple(np.array(where).T)] = np.arange(n_peaks + 1, n_peaks + 1 + lacking.size)
    return markers


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..n in raster order of each object's first pixel (0 stays 0)."""
    flat = labels.ravel()
    present = flat[flat > 0]
    if present.size == 0:
        return labels
    _, first = np.unique(present, return_index=True)
    values = present[np.sort(first)]  # labels in order of first appearance
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    lut[values] = np.arange(1, len(values) + 1, dtype=np.int32)
    return lut[labels]


def label_dtype(n_max: int) -> np.dtype:
    """uint16 when the largest label fits, else uint32 (more than 65,535 objects)."""
    if n_max <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if n_max <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    raise ValueError(f"{n_max} objects do not fit a uint32 label image")


def count_objects(labels: np.ndarray, three_d: bool = False) -> int:
    """Objects in a label image: distinct labels of each page, summed (of the volume when ``three_d``)."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and not three_d:
        return sum(count_objects(page) for page in labels)
    if labels.size == 0:
        return 0
    present = np.zeros(int(labels.max()) + 1, dtype=bool)
    present[labels] = True  # no int64 copy of a huge page, as bincount would make
    return int(np.count_nonzero(present[1:]))
