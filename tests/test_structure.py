"""Structure steps (core/structure): objects, membranes, the registry; generated images, no model.

The steps were checked once against the research prototypes on the real images (same masks:
IoU 1.0 on nuclei, GOWT1, HeLa, NIH3T3, ISBI EM and VNC; see the branch's report); these
tests pin what the methods are for on drawn scenes. Floors are the measured values less a
margin, the measured value beside each.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_li
from skimage.morphology import skeletonize

from unsupseg.core import structure
from unsupseg.core.structure import STEPS, STRUCTURES, apply, membranes, objects, photo, polarity

SIZE = 256  # side of the generated scenes (px)
RADIUS = 9  # disc radius (px)


# -- generated scenes --------------------------------------------------------------------
def _disc(cy: float, cx: float, r: float = RADIUS, shape=(SIZE, SIZE)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _render(masks: list[np.ndarray], amplitudes, seed: int, shape=(SIZE, SIZE), noise: float = 0.05):
    """Fluorescence-like page (float32): bright objects of the given amplitudes, blurred by a
    point-spread function (sigma 1.5 px), on a background rising from 0.2 to 0.5 top to
    bottom, with Gaussian noise."""
    clean = np.zeros(shape, np.float32)
    for m, a in zip(masks, amplitudes, strict=True):
        clean[m] = a
    background = np.linspace(0.2, 0.5, shape[0], dtype=np.float32)[:, None]
    rng = np.random.default_rng(seed)
    page = ndi.gaussian_filter(clean, 1.5) + background + rng.normal(0, noise, shape).astype(np.float32)
    return page.astype(np.float32)


def _grid_discs(seed: int, n: int = 5, margin: int = 24) -> list[np.ndarray]:
    """n x n discs on a jittered grid, apart from each other and from the border."""
    rng = np.random.default_rng(seed)
    step = (SIZE - 2 * margin) / (n - 1)
    return [
        _disc(margin + i * step + rng.uniform(-4, 4), margin + j * step + rng.uniform(-4, 4))
        for i in range(n)
        for j in range(n)
    ]


def varying_scene(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """25 discs whose brightness rises 3x from left to right, on an uneven background."""
    discs = _grid_discs(seed)
    amplitudes = [1.0 + 2.0 * np.argwhere(d)[:, 1].mean() / SIZE for d in discs]  # 1x .. 3x
    return _render(discs, amplitudes, seed), discs


def cluster_scene(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A dense cluster: 7 touching discs (hexagonal, centres one diameter apart), dim (1x) and
    bright (3x) side by side, plus 6 isolated discs."""
    cy, cx, d = SIZE / 2, SIZE / 2, 2 * RADIUS
    centres = [(cy, cx)] + [(cy + d * np.sin(a), cx + d * np.cos(a)) for a in np.arange(6) * np.pi / 3]
    cluster = [_disc(y, x) for y, x in centres]
    isolated = [_disc(30, 40 + 35 * k) for k in range(6)]
    amplitudes = [3.0] + [1.0, 3.0] * 3 + [2.0] * 6
    return _render(cluster + isolated, amplitudes, seed), cluster


def fibre_scene(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """16 discs and a long bright fibre (5 px wide, ~240 px long) across the page between them."""
    discs = _grid_discs(seed, n=4, margin=30)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    fibre = (np.abs((yy - 0.5 * SIZE) - 0.1 * (xx - SIZE / 2)) <= 2.5) & (np.abs(xx - SIZE / 2) < 120)
    fibre &= ~ndi.binary_dilation(np.any(discs, axis=0), iterations=6)  # apart from the discs
    return _render([*discs, fibre], [2.0] * len(discs) + [2.0], seed), discs, fibre


def membrane_scene(width: float, seed: int = 0, shape=(SIZE, SIZE)) -> tuple[np.ndarray, np.ndarray]:
    """EM-like page (uint8): Voronoi cell boundaries of ``width`` px drawn dark on a textured
    field (smooth blobs and noise), and the membrane mask."""
    rng = np.random.default_rng(seed)
    n = 6
    step = shape[0] / n
    seeds = np.array(
        [
            ((i + 0.5) * step + rng.uniform(-12, 12), (j + 0.5) * step + rng.uniform(-12, 12))
            for i in range(n)
            for j in range(n)
        ]
    )
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2  # (H, W, seeds)
    nearest = d2.argmin(axis=-1)
    p1 = seeds[nearest]
    d1 = np.take_along_axis(d2, nearest[..., None], -1)
    gap = np.linalg.norm(seeds[None, None] - p1[..., None, :], axis=-1)  # |p_j - p_nearest|
    with np.errstate(divide="ignore", invalid="ignore"):
        to_bisector = np.where(gap > 0, (d2 - d1) / (2 * gap), np.inf)
    dist = to_bisector.min(axis=-1)  # distance to the cell's boundary (the nearest bisector)
    truth = dist <= width / 2
    dark = np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)  # anti-aliased band
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape), 4)
    page = 170 + 25 * texture / texture.std() - 90 * ndi.gaussian_filter(dark, 1.0) + rng.normal(0, 12, shape)
    return np.clip(page, 0, 255).astype(np.uint8), truth


def photo_scene(seed: int = 0, shape=(180, 240)) -> tuple[np.ndarray, np.ndarray]:
    """A framed object in a textured field, as a horse on grass: its upper half brighter and its
    lower half darker than the field, so no threshold of intensity finds all of it."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    body = ((yy - 95) / 45.0) ** 2 + ((xx - 125) / 70.0) ** 2 <= 1.0
    rng = np.random.default_rng(seed)
    field = 0.5 + ndi.gaussian_filter(rng.normal(0, 0.25, shape), 2.0)
    page = np.where(body & (yy < 95), 0.85, np.where(body, 0.15, field))
    page = ndi.gaussian_filter(page, 1.0) + rng.normal(0, 0.03, shape)
    return page.astype(np.float32), body


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _object_iou(mask: np.ndarray, disc: np.ndarray) -> float:
    """IoU of the mask and one disc, in the disc's neighbourhood (grown by 5 px)."""
    near = ndi.binary_dilation(disc, iterations=5)
    return _iou(mask & near, disc)


def _thickness(mask: np.ndarray) -> float:
    """Mean width of a line network: its area over its centreline length (skeleton pixels)."""
    return np.count_nonzero(mask) / max(np.count_nonzero(skeletonize(mask)), 1)


def _quantised(page: np.ndarray, bits: int) -> np.ndarray:
    """The page's range mapped onto the full 8- or 16-bit range, rounded."""
    top = 2**bits - 1
    scaled = np.round((page - page.min()) / (page.max() - page.min()) * top)
    return scaled.astype(np.uint8 if bits == 8 else np.uint16)


# -- objects -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_objects_of_brightness_varying_3x_are_all_found(seed):
    page, discs = varying_scene(seed)
    mask = objects.segment(page)
    assert ndi.label(mask)[1] == len(discs)
    assert _iou(mask, np.any(discs, axis=0)) >= 0.78  # measured 0.825-0.827 (seeds 0-3)
    # the dimmest disc (1x) as well as the brightest (3x): each at its own level
    assert min(_object_iou(mask, d) for d in discs) >= 0.75  # measured 0.803-0.821


def test_a_dense_cluster_of_touching_discs_keeps_every_disc():
    page, cluster = cluster_scene()
    mask = objects.segment(page)
    # dim (1x) discs between bright (3x) ones keep their own territory and level
    assert (
        min(np.count_nonzero(mask & d) / np.count_nonzero(d) for d in cluster) >= 0.8
    )  # measured 0.858-0.874
    whole = np.any(cluster, axis=0)
    near = ndi.binary_dilation(whole, iterations=5)
    assert _iou(mask & near, whole) >= 0.8  # measured 0.853-0.856


def test_a_long_bright_fibre_is_removed_and_the_discs_kept():
    page, discs, fibre = fibre_scene()
    assert np.count_nonzero((page > page[fibre].mean() * 0.6) & fibre) > 0.9 * np.count_nonzero(fibre)
    mask = objects.segment(page)
    assert np.count_nonzero(mask & fibre) <= 0.01 * np.count_nonzero(fibre)  # measured 0
    assert min(_object_iou(mask, d) for d in discs) >= 0.78  # measured 0.817-0.822


@pytest.mark.parametrize("how", ["skewness", "context", "network vote"])
def test_inverted_page_gives_the_same_objects(how):
    page, discs = varying_scene()
    inverted = page.max() - page
    expected = objects.segment(page)
    if how == "skewness":
        got = objects.segment(inverted)
    elif how == "context":
        got = objects.segment(inverted, None, {"polarity": "dark"})
    else:  # the network's foreground is the objects, whatever their side
        got = objects.segment(inverted, np.any(discs, axis=0).astype(np.float32))
    np.testing.assert_array_equal(got, expected)


def test_objects_folder_context_is_json_and_measures_size_and_side():
    pages = [varying_scene(seed)[0] for seed in range(3)]
    context = objects.folder_context(pages, [None] * 3)
    assert json.loads(json.dumps(context)) == context
    assert context["polarity"] == "bright"
    assert 0.9 * np.pi * RADIUS**2 <= context["typical_area"] <= 1.5 * np.pi * RADIUS**2  # measured 308 px
    assert objects.folder_context([p.max() - p for p in pages])["polarity"] == "dark"
    assert objects.folder_context([]) == {}
    np.testing.assert_array_equal(objects.segment(pages[0], None, context), objects.segment(pages[0]))


# -- membranes ---------------------------------------------------------------------------
@pytest.mark.parametrize("width", [6, 9])
def test_membrane_network_is_recovered_at_its_thickness(width):
    page, truth = membrane_scene(width)
    mask = membranes.segment(page)
    assert _iou(mask, truth) >= 0.72  # measured 0.764-0.783 (6 px), 0.781-0.809 (9 px), seeds 0-5
    # the width is measured on the page: within 1 px of the drawn one (measured +0.36..+0.67 px at
    # 6 px, -0.26..-0.01 at 9 px; below 5 px the image's own blur widens the dark band: +1.1..+2.1)
    assert abs(_thickness(mask) - _thickness(truth)) <= 1.0


def test_membranes_are_boundaries_not_dark_pixels():
    page, truth = membrane_scene(6)
    blurred = ndi.gaussian_filter(page.astype(np.float32), 2)
    li = blurred < threshold_li(blurred)
    assert _iou(membranes.segment(page), truth) >= _iou(li, truth) + 0.1  # measured +0.14..+0.19


def test_bright_membranes_with_the_context_give_the_same_mask():
    page, _ = membrane_scene(6)
    expected = membranes.segment(page)
    np.testing.assert_array_equal(membranes.segment(255 - page, None, {"polarity": "bright"}), expected)
    np.testing.assert_array_equal(membranes.segment(page, None, {"polarity": "dark"}), expected)


def test_membranes_folder_context_decides_the_side():
    pages = [membrane_scene(6, seed)[0] for seed in range(3)]
    assert membranes.folder_context(pages) == {"polarity": "dark"}
    assert membranes.folder_context([255 - p for p in pages]) == {"polarity": "bright"}
    truths = [membrane_scene(6, seed)[1].astype(np.float32) for seed in range(3)]
    assert membranes.folder_context(pages, truths) == {"polarity": "dark"}  # the network's vote
    assert membranes.folder_context([]) == {}


# -- polarity ----------------------------------------------------------------------------
def test_the_network_vote_comes_before_the_skewness():
    page, discs = varying_scene()
    truth = np.any(discs, axis=0).astype(np.float32)
    assert polarity.page_polarity(page) == "bright"  # skewness
    assert polarity.page_polarity(page, truth) == "bright"
    assert polarity.page_polarity(page, 1 - truth) == "dark"  # the network says: the dark side
    assert polarity.network_vote(page, np.full(page.shape, 0.5)) is None  # no difference: no vote
    assert polarity.network_vote(page, truth[:10]) is None  # another shape: no vote


def test_polarity_majority_and_check():
    assert polarity.majority(["dark", "dark", "bright"]) == "dark"
    assert polarity.majority(["dark", "bright"]) == "bright"
    assert polarity.majority([]) == "bright"
    with pytest.raises(ValueError, match="'bright' or 'dark'"):
        objects.segment(np.zeros((8, 8)), None, {"polarity": "grey"})


# -- the photo step ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_photo_step_finds_an_object_that_no_threshold_finds(seed):
    page, body = photo_scene(seed)
    mask = photo.segment(page)
    blurred = ndi.gaussian_filter(page, 1.0)
    li = blurred > threshold_li(blurred)
    li_iou = max(_iou(li, body), _iou(~li, body))  # either side, the better one
    print(f"photo step IoU {_iou(mask, body):.3f}, blur + Li {li_iou:.3f}")
    assert _iou(mask, body) >= 0.85 and _iou(mask, body) >= li_iou + 0.2
    np.testing.assert_array_equal(ndi.binary_fill_holes(mask), mask)  # holes filled


def test_photo_step_gives_the_same_object_on_an_inverted_page():
    page, body = photo_scene(2)
    assert _iou(photo.segment(page), body) >= 0.85
    assert _iou(photo.segment(1.0 - page), body) >= 0.85


def test_photo_guard_keeps_the_blob_when_the_cut_drops_the_object():
    blob = _disc(90, 120, 40, shape=(180, 240))
    assert photo._plausible(blob & _disc(90, 120, 30, shape=(180, 240)), blob)
    assert not photo._plausible(np.zeros_like(blob), blob)  # GrabCut dropped the object
    assert not photo._plausible(~blob, blob)  # ... or swapped it with the field


# -- every step: odd pages, dtypes, determinism --------------------------------------------
ODD = {
    "constant": np.full((64, 64), 7.0),
    "all zero": np.zeros((40, 50), np.uint8),
    "one pixel": np.ones((1, 1), np.uint16),
    "tiny": np.random.default_rng(0).integers(0, 255, (3, 5)).astype(np.uint8),
    "one row": np.random.default_rng(1).random((1, 40)),
    "one bright pixel": np.pad(np.full((1, 1), 1000, np.uint16), 20),
    "negative float": -np.random.default_rng(2).random((30, 30)).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(STEPS))
@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_pages_give_a_valid_mask(name, case):
    page = ODD[case]
    with np.errstate(all="raise"):
        mask = apply(name, page, None, None, None)
    assert mask.dtype == bool and mask.shape == page.shape
    if case in ("constant", "all zero", "one pixel"):
        assert not mask.any()
    context = structure.folder_context(name, [page], [None])
    assert isinstance(context, dict) and json.loads(json.dumps(context)) == context


def test_16_bit_and_float_pages_give_the_masks_of_8_bit_ones():
    page, _ = varying_scene()
    expected = objects.segment(page)
    assert _iou(objects.segment(_quantised(page, 16)), expected) == 1.0
    assert _iou(objects.segment(_quantised(page, 8)), expected) >= 0.995  # measured 0.9988-0.9996
    em, _ = membrane_scene(6)
    expected = membranes.segment(em)
    np.testing.assert_array_equal(membranes.segment(em.astype(np.uint16) * 257), expected)
    np.testing.assert_array_equal(membranes.segment(em / np.float32(255) * 3.7 - 1), expected)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_steps_are_deterministic_and_leave_the_page_alone(name):
    page = {"objects": varying_scene()[0], "photo": photo_scene()[0]}.get(name, membrane_scene(6)[0])
    before = page.copy()
    first = apply(name, page, None, None, None)
    np.testing.assert_array_equal(apply(name, page.copy(), None, None, None), first)
    np.testing.assert_array_equal(page, before)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_a_page_that_is_not_2d_is_refused(name):
    with pytest.raises(ValueError, match="one 2-D gray page"):
        apply(name, np.zeros((2, 8, 8)), None)


# -- the registry ------------------------------------------------------------------------
def test_registry_names_and_dispatch():
    assert STRUCTURES == ("none", *STEPS) and set(STEPS) >= {"objects", "membranes", "photo"}
    for step in STEPS.values():
        assert callable(step.segment) and callable(step.folder_context)
    page, _ = varying_scene()
    network = page > page.mean()
    assert apply("none", page, network) is network  # the network's mask, unchanged
    assert structure.folder_context("none", [page]) == {}
    np.testing.assert_array_equal(apply("objects", page, network), objects.segment(page))
    with pytest.raises(ValueError, match="unknown structure 'photos': choose one of none, objects"):
        apply("photos", page, network)
    with pytest.raises(ValueError, match="unknown structure"):
        structure.folder_context("photos", [page])
