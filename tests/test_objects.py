"""Instance labels, per-object measurements and instance metrics (core, no model)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from unsupseg.core.imageio import read_labels, write_labels
from unsupseg.core.instance import THRESHOLDS, instance_metrics, is_instance_labels, match, overlaps
from unsupseg.core.labels import SPLIT_METHODS, Labeling, count_objects, label_dtype, label_mask
from unsupseg.core.objects import OBJECT_FIELDS, measure_objects


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _random_labels(seed: int, shape=(80, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random(shape) > 0.45)
    return label_mask(mask, split=bool(seed % 2), min_distance=2)


# -- labels ------------------------------------------------------------------------------
def test_components_are_4_connected_and_numbered_per_page():
    page = np.zeros((6, 6), bool)
    page[0:2, 0:2] = True
    page[2:4, 2:4] = True  # touches the first square at a corner only: another object
    page[5, 5] = True
    labels = label_mask(np.stack([page, np.zeros_like(page), page.T]))
    assert labels.dtype == np.int32
    assert [int(p.max()) for p in labels] == [3, 0, 3]  # every page starts at 1
    assert labels[0, 0, 0] != labels[0, 2, 2]
    np.testing.assert_array_equal(labels > 0, np.stack([page, np.zeros_like(page), page.T]))


def test_labels_3d_link_pages():
    stack = np.zeros((3, 8, 8), bool)
    stack[:, 2:5, 2:5] = True  # one column through all pages
    stack[1, 6:8, 6:8] = True
    assert [int(p.max()) for p in label_mask(stack)] == [1, 2, 1]
    vol = label_mask(stack, three_d=True)
    assert vol.max() == 2 and len(np.unique(vol[:, 3, 3])) == 1
    assert count_objects(vol, three_d=True) == 2 and count_objects(label_mask(stack)) == 4


def test_split_separates_two_touching_disks():
    a, b = _disk((60, 90), 30, 28, 15), _disk((60, 90), 30, 55, 15)
    mask = a | b
    assert label_mask(mask).max() == 1
    labels = label_mask(mask, split=True, min_distance=5)
    assert labels.max() == 2
    for disk in (a, b):
        best = max(
            np.count_nonzero((labels == k) & disk) / np.count_nonzero((labels == k) | disk) for k in (1, 2)
        )
        assert best > 0.9


@pytest.mark.parametrize("method", SPLIT_METHODS)
@pytest.mark.parametrize("seed", range(4))
def test_split_keeps_every_foreground_pixel(seed, method):
    """Splitting only relabels: the foreground is the mask's, pixel for pixel, and no object
    spans two components."""
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((70, 70)) > 0.4)
    mask[0, 0] = mask[-1, -1] = True  # single-pixel objects (no distance peak of their own)
    labels = label_mask(mask, split=True, min_distance=3, method=method)
    np.testing.assert_array_equal(labels > 0, mask)
    components = label_mask(mask)
    assert labels.max() >= components.max()
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))  # consecutive
    pairs = np.unique(labels[mask].astype(np.int64) * (components.max() + 1) + components[mask])
    assert len(pairs) == labels.max()  # each object lies in one component


@pytest.mark.parametrize("method", SPLIT_METHODS)
def test_split_keeps_the_foreground_of_a_volume(method):
    rng = np.random.default_rng(5)
    vol = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((12, 40, 40)), 2) > 0.5)
    labels = label_mask(vol, split=True, three_d=True, method=method)
    np.testing.assert_array_equal(labels > 0, vol)
    assert labels.max() >= label_mask(vol, three_d=True).max()


def _touching_discs(seed: int, shape=(256, 256)) -> np.ndarray:
    """Instance labels of clusters of 2-3 touching discs of unequal radii (5-14 px), overlaps of
    10-35 % of the smaller radius: nuclei that a mask joins."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    k = 0
    for cy in range(30, shape[0] - 30, 64):
        for cx in range(30, shape[1] - 30, 64):
            y, x, r = cy, cx, rng.uniform(5, 14)
            for _ in range(rng.integers(2, 4)):
                k += 1
                labels[((yy - y) ** 2 + (xx - x) ** 2 <= r**2) & (labels == 0)] = k
                angle, r2 = rng.uniform(0, 2 * np.pi), rng.uniform(5, 14)
                step = r + r2 - rng.uniform(0.1, 0.35) * min(r, r2)  # the next disc overlaps this one
                y, x, r = y + step * np.sin(angle), x + step * np.cos(angle), r2
    return labels


@pytest.mark.parametrize("method", ["scaled", "hmaxima"])
@pytest.mark.parametrize("seed", range(3))
def test_hmaxima_split_beats_components_on_touching_discs(seed, method):
    """Drawn touching discs: the default split (and hmaxima) finds the discs that connected
    components join."""
    truth = _touching_discs(seed)
    mask = truth > 0
    f1 = {
        "components": instance_metrics(truth, label_mask(mask))["f1"],
        method: instance_metrics(truth, label_mask(mask, split=True, method=method))["f1"],
    }
    assert f1[method] >= f1["components"] + 0.2, f1


def _wavy_nuclei(seed: int, shape=(320, 320), wobble=1.5) -> np.ndarray:
    """Instance labels of large elongated nuclei (semi-axes 36-44 x 22-26 px) whose outline wavers
    by ``wobble`` px, alone or two touching end to end: the nuclei of the Cell Tracking Challenge's
    GOWT1 frames, where hmaxima's fixed depth cut nuclei along their ridge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    labels = np.zeros(shape, np.int32)
    k = 0
    for cy in range(80, shape[0], 160):
        for cx in range(80, shape[1], 160):
            y, x = cy, cx
            for _ in range(rng.integers(1, 3)):
                k += 1
                a, b, phi = rng.uniform(36, 44), rng.uniform(22, 26), rng.uniform(0, np.pi)
                u = (xx - x) * np.cos(phi) + (yy - y) * np.sin(phi)
                v = -(xx - x) * np.sin(phi) + (yy - y) * np.cos(phi)
                walk = ndimage.gaussian_filter1d(rng.standard_normal(64), 1.5, mode="wrap")
                walk *= wobble / walk.std()
                radial = np.interp(np.arctan2(v, u), np.linspace(-np.pi, np.pi, 65), np.r_[walk, walk[0]])
                labels[(np.hypot(u / a, v / b) <= 1 + radial / b) & (labels == 0)] = k
                step = a + 0.8 * b  # the next nucleus, along the major axis, overlaps this one's end
                y, x = y - step * np.sin(phi), x - step * np.cos(phi)
    return labels


def test_scaled_split_keeps_large_wavy_nuclei_whole():
    """hmaxima's depth of 0.25 px cuts large nuclei at the dips of a wavering outline; the
    scaled split (depth 6 % of the typical radius) keeps them whole and still cuts the touching
    pairs; the foreground is the mask's."""
    f1 = {"components": [], "scaled": [], "hmaxima": []}
    for seed in range(6):
        truth = _wavy_nuclei(seed)
        mask = truth > 0
        for method in f1:
            split = {} if method == "components" else {"split": True, "method": method}
            labels = label_mask(mask, **split)
            np.testing.assert_array_equal(labels > 0, mask)
            f1[method].append(instance_metrics(truth, labels)["f1"])
    mean = {k: float(np.mean(v)) for k, v in f1.items()}
    assert min(f1["scaled"]) == 1.0, f1
    assert mean["scaled"] >= mean["hmaxima"] + 0.05 and mean["scaled"] >= mean["components"] + 0.15, mean


def test_scaled_split_does_not_depend_on_magnification():
    """The same touching discs drawn 1x and 3x as large give the same objects with the scaled
    split (sigma and h follow the typical radius)."""
    truth = _touching_discs(0, shape=(128, 128))
    big = np.kron(truth, np.ones((3, 3), truth.dtype))
    small_labels = label_mask(truth > 0, split=True)
    big_labels = label_mask(big > 0, split=True)
    assert big_labels.max() == small_labels.max()
    assert instance_metrics(np.kron(small_labels, np.ones((3, 3), np.int32)), big_labels)["f1"] >= 0.95


@pytest.mark.parametrize("method", ["hmaxima", "scaled"])
def test_hmaxima_markers_are_those_of_skimage_h_maxima(method):
    """The merge by dynamics keeps one object per h-maximum of the smoothed distance, as
    ``skimage.morphology.h_maxima`` finds them (its markers, counted per component); for the
    scaled split with sigma and h from the typical radius."""
    from skimage.morphology import h_maxima

    from unsupseg.core.labels import H_DEPTH, MIN_SIGMA, SCALED_H, SCALED_SIGMA, SMOOTH_SIGMA, typical_radius

    for seed in range(3):
        mask = _touching_discs(seed) > 0
        rng = np.random.default_rng(seed)
        mask |= ndimage.binary_opening(ndimage.gaussian_filter(rng.random(mask.shape), 3) > 0.56)
        distance = ndimage.distance_transform_edt(mask).astype(np.float32)
        components = label_mask(mask)
        sigma, h = SMOOTH_SIGMA, H_DEPTH
        if method == "scaled":
            radius = typical_radius(distance, components, int(components.max()))
            sigma, h = max(SCALED_SIGMA * radius, MIN_SIGMA), SCALED_H * radius
        distance = ndimage.gaussian_filter(distance, sigma)
        distance[~mask] = 0
        regions, _ = ndimage.label(h_maxima(distance, h) & mask, structure=np.ones((3, 3)))
        has = regions > 0
        n_markers = len(np.unique(regions[has].astype(np.int64) * (components.max() + 1) + components[has]))
        assert label_mask(mask, split=True, method=method).max() == n_markers


def test_distance_is_scipys_bit_for_bit():
    """The split's distance (OpenCV's, rounded through the squared distance) is scipy's exact one,
    whatever OpenCV's threads do, so --split gives the same labels on every run."""
    from unsupseg.core.labels import _distance

    rng = np.random.default_rng(0)
    masks = [ndimage.binary_opening(rng.random((300, 200)) > 0.3), _disk((900, 900), 450, 450, 440)]
    masks.append(np.ones((20, 30), bool))  # no background: scipy's convention
    for mask in masks:
        want = ndimage.distance_transform_edt(mask).astype(np.float32)
        np.testing.assert_array_equal(_distance(mask), want)


def test_split_methods_by_name():
    a, b = _disk((60, 90), 30, 28, 15), _disk((60, 90), 30, 55, 15)
    mask = a | b
    old = label_mask(mask, split=True, min_distance=5, method="watershed")
    assert Labeling(split=True, min_distance=5, method="watershed").label(mask).tolist() == old.tolist()
    assert Labeling(split=True).label(mask).max() == 2
    assert Labeling(split=True).describe() == {
        "split": "scaled",
        "sigma_per_radius": 0.15,
        "h_per_radius": 0.06,
        "three_d": False,
        "min_size": 0,
    }
    assert Labeling(split=True, method="hmaxima").describe()["h"] == 0.25
    assert Labeling(split=True, method="watershed").describe()["min_distance"] == Labeling().min_distance
    assert Labeling().describe()["split"] is None
    with pytest.raises(ValueError, match="watershed"):
        Labeling(split=True, method="stardist")
    with pytest.raises(ValueError, match="hmaxima"):
        label_mask(mask, split=True, method="nope")


def test_min_size_drops_small_objects_after_splitting():
    mask = _disk((40, 40), 20, 20, 10)
    mask[0:2, 0:2] = True  # 4 pixels
    assert label_mask(mask).max() == 2
    labels = Labeling(min_size=5).label(mask)
    assert labels.max() == 1 and labels[0, 0] == 0


def test_labeling_refuses_bad_settings():
    with pytest.raises(ValueError, match="min_distance"):
        Labeling(min_distance=0)


@pytest.mark.parametrize(("n", "dtype"), [(1, np.uint16), (65535, np.uint16), (65536, np.uint32)])
def test_label_images_are_uint16_until_65535_objects(tmp_path, n, dtype):
    labels = np.zeros((2, 300, 300), np.int64)
    labels.reshape(-1)[:n] = np.arange(1, n + 1)
    write_labels(tmp_path / "l.tif", labels)
    back = read_labels(tmp_path / "l.tif")
    assert label_dtype(n) == dtype and back.dtype == dtype
    np.testing.assert_array_equal(back, labels)


# -- measurements ------------------------------------------------------------------------
REGIONPROPS = {  # our column -> regionprops_table column
    "area": "area",
    "centroid_y": "centroid-0",
    "centroid_x": "centroid-1",
    "bbox_y0": "bbox-0",
    "bbox_x0": "bbox-1",
    "bbox_y1": "bbox-2",
    "bbox_x1": "bbox-3",
    "equivalent_diameter": "equivalent_diameter_area",
    "eccentricity": "eccentricity",
    "mean_intensity": "intensity_mean",
    "min_intensity": "intensity_min",
    "max_intensity": "intensity_max",
}


@pytest.mark.parametrize("seed", range(3))
def test_measurements_match_regionprops(seed):
    from skimage.measure import regionprops_table

    labels = _random_labels(seed)
    image = np.random.default_rng(seed).integers(0, 4000, labels.shape).astype(np.uint16)
    rows = measure_objects(labels, image)
    assert rows and list(rows[0]) == list(OBJECT_FIELDS)
    ref = regionprops_table(
        labels,
        image,
        properties=[
            "label",
            "area",
            "centroid",
            "bbox",
            "equivalent_diameter_area",
            "eccentricity",
            "intensity_mean",
            "intensity_min",
            "intensity_max",
        ],
    )
    assert [r["label"] for r in rows] == ref["label"].tolist()
    for ours, theirs in REGIONPROPS.items():
        got = np.array([r[ours] for r in rows], dtype=float)
        diff = np.abs(got - ref[theirs]) / np.maximum(1, np.abs(ref[theirs]))
        print(f"{ours}: max relative difference {diff.max():.2e}")
        assert diff.max() < 1e-5, ours  # six significant digits


def test_solidity_is_area_over_the_hull_of_the_pixel_squares():
    from scipy.spatial import ConvexHull

    labels = _random_labels(5)
    for row in measure_objects(labels):
        ys, xs = np.nonzero(labels == row["label"])
        corners = np.concatenate([np.c_[xs + dx, ys + dy] for dx in (0, 1) for dy in (0, 1)])
        hull = ConvexHull(corners).volume
        assert row["solidity"] == pytest.approx(row["area"] / hull, rel=1e-5)
    square, ell = np.zeros((8, 8), int), np.zeros((8, 8), int)
    square[1:5, 1:5] = 1
    ell[0:4, 0] = ell[3, 0:4] = 1  # an L of 7 pixels; hull of its squares: 4x4 minus a triangle of 4.5
    assert measure_objects(square)[0]["solidity"] == 1.0
    assert measure_objects(ell)[0]["solidity"] == pytest.approx(7 / 11.5, rel=1e-5)


def test_areas_add_up_and_border_flag():
    mask = np.zeros((3, 30, 30), bool)
    mask[0, 0:5, 10:15] = True  # touches the top border
    mask[0, 10:20, 10:20] = True
    mask[2, 25:30, 25:30] = True
    labels = label_mask(mask)
    rows = measure_objects(mask, np.ones(mask.shape, np.float32))  # a mask is labelled first
    assert [(r["page"], r["label"], r["touches_border"]) for r in rows] == [(0, 1, 1), (0, 2, 0), (2, 1, 1)]
    for r in rows:
        assert r["area"] == np.count_nonzero(labels[r["page"]] == r["label"])
    assert measure_objects(np.zeros((5, 5), np.int32)) == []
    assert measure_objects(labels)[0]["mean_intensity"] is None  # no image, no intensities


# -- instance metrics --------------------------------------------------------------------
def _stardist_matching():
    """stardist's own matching.py (the wheel make install brings), with its two heavy imports stubbed.

    numba's jit becomes the identity (the loop runs in Python) and csbdeep's _raise a raise;
    nothing else of stardist is imported.
    """
    spec = importlib.util.find_spec("stardist")
    assert spec is not None, (
        "stardist's wheel is installed by `make install` (pip install --no-deps stardist)"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / "matching.py"
    stubs = {"numba": types.ModuleType("numba"), "csbdeep": types.ModuleType("csbdeep")}
    stubs["numba"].jit = lambda *a, **k: lambda f: f
    utils = types.ModuleType("csbdeep.utils")

    def _raise(e):
        raise e

    utils._raise = _raise
    saved = {k: sys.modules.get(k) for k in ("numba", "csbdeep", "csbdeep.utils")}
    sys.modules.update({**stubs, "csbdeep.utils": utils})
    try:
        module_spec = importlib.util.spec_from_file_location("_stardist_matching", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


@pytest.mark.parametrize("seed", range(6))
def test_matching_equals_stardist(seed):
    sd = _stardist_matching()
    rng = np.random.default_rng(seed)
    true = _random_labels(seed)
    pred = label_mask(np.roll(true > 0, rng.integers(-2, 3), axis=1), split=True, min_distance=2)
    ov = overlaps(true, pred)
    for thr in THRESHOLDS:
        ref, ours = sd.matching(true, pred, thresh=thr), match(ov, thr)
        assert (ours.tp, ours.fp, ours.fn) == (ref.tp, ref.fp, ref.fn), thr
        for mine, theirs in [
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1"),
            ("ap", "accuracy"),
            ("mean_matched_iou", "mean_matched_score"),
            ("panoptic_quality", "panoptic_quality"),
        ]:
            assert getattr(ours, mine) == pytest.approx(float(getattr(ref, theirs)), abs=1e-6), (thr, mine)


def test_instance_metrics_by_hand():
    true = np.zeros((40, 40), np.uint16)
    true[0:10, 0:10], true[20:30, 0:10], true[20:30, 20:30] = 1, 2, 3
    pred = np.zeros_like(true)
    pred[0:10, 0:10] = 7  # exact match
    pred[24:34, 0:10] = 8  # IoU 6/14 < 0.5
    pred[0:5, 30:35] = 9  # nothing there
    m = instance_metrics(true, pred)
    assert (m["n_true_objects"], m["n_pred_objects"]) == (3, 3)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(1 / 3)
    assert m["ap50"] == pytest.approx(1 / 5) and m["mean_matched_iou"] == 1.0
    assert m["panoptic_quality"] == pytest.approx(1 / (1 + 1 + 1))
    assert m["ap50_95"] == pytest.approx(1 / 5)  # the exact match holds at every threshold
    empty = instance_metrics(np.zeros_like(true), np.zeros_like(true))
    assert empty["f1"] == 0.0 and empty["n_true_objects"] == 0  # StarDist: 0 when nothing matched


def test_pages_are_matched_apart():
    page = np.zeros((10, 10), np.uint16)
    page[2:6, 2:6] = 1
    true = np.stack([page, page])
    pred = np.stack([page, np.zeros_like(page)])
    per_page = instance_metrics(true, pred)
    assert (per_page["n_true_objects"], per_page["recall"]) == (2, 0.5)
    assert instance_metrics(true, pred, per_page=False)["n_true_objects"] == 1  # one 3-D object


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0, 255], False), ([0, 1], False), ([0, 1, 2], True), ([3, 5, 9], True), ([0.0, 0.5, 1.0], False)],
)
def test_instance_ground_truth_is_an_integer_image_with_more_than_two_values(values, expected):
    a = np.array(values * 4).reshape(-1, len(values))
    assert is_instance_labels(a) is expected


def test_measuring_in_bands_of_rows_gives_the_same_rows(monkeypatch):
    import unsupseg.core.objects as objects

    labels = _random_labels(7, shape=(120, 90))
    image = np.random.default_rng(7).random(labels.shape).astype(np.float32)
    whole = measure_objects(labels, image)
    monkeypatch.setattr(objects, "BAND_PIXELS", 90 * 7)  # bands of 7 rows: objects span several
    assert measure_objects(labels, image) == whole


def test_hull_fallback_gives_the_same_solidity(monkeypatch):
    import unsupseg.core.objects as objects

    labels = _random_labels(9)
    fast = [r["solidity"] for r in measure_objects(labels)]
    monkeypatch.setattr(objects, "MAX_PASSES", 1)  # every object finishes in the monotone chain
    assert [r["solidity"] for r in measure_objects(labels)] == fast
