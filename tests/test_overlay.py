"""Overlays: outlines drawn from masks (core/overlay.py) and seginfer --overlays end to end."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import tifffile
from test_infer_cli import _make_folder, _run

from unsupseg.core.imageio import read_mask
from unsupseg.core.overlay import (
    MASK_COLOUR,
    TRUTH_COLOUR,
    display_u8,
    label_colours,
    outer_outline,
    outline,
    preview,
    render_overlay,
)


def _square(h=12, w=14, top=3, left=4, side=5) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[top : top + side, left : left + side] = True
    return m


def _is(rgb: np.ndarray, colour) -> np.ndarray:
    return (rgb == np.array(colour, np.uint8)).all(axis=2)


def test_outlines_of_a_square():
    m = _square()
    inner, outer = outline(m), outer_outline(m)
    assert inner.sum() == 4 * 5 - 4  # the ring of a 5x5 square
    assert (inner <= m).all() and not (outer & m).any()
    assert outer.sum() == 4 * 5  # the 4-neighbours just outside (no corners)
    assert not inner[4:7, 5:8].any()  # the inside stays clear


def test_render_overlay_colours_mask_and_truth_apart():
    m, truth = _square(), _square(left=5)
    gray = np.full(m.shape, 77, np.uint8)
    rgb = render_overlay(gray, m, truth)
    assert rgb.shape == (*m.shape, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(_is(rgb, MASK_COLOUR), outline(m))
    np.testing.assert_array_equal(_is(rgb, TRUTH_COLOUR), outer_outline(truth) & ~outline(m))
    untouched = ~(outline(m) | outer_outline(truth))
    assert (rgb[untouched] == 77).all()


def test_touching_labels_get_their_own_colours():
    labels = np.zeros((10, 12), np.int32)
    labels[2:8, 1:6] = 1
    labels[2:8, 6:11] = 2  # touches object 1
    rgb = render_overlay(np.zeros(labels.shape, np.uint8), labels > 0, labels=labels)
    c1, c2 = label_colours(np.array([1, 2]))
    assert tuple(c1) != tuple(c2)
    assert _is(rgb, c1)[2:8, 5].all() and _is(rgb, c2)[2:8, 6].all()  # both sides of the seam
    assert not _is(rgb, MASK_COLOUR)[labels == 2].any()


def test_display_maps_percentiles_to_black_and_white():
    rng = np.random.default_rng(0)
    page = rng.normal(1000, 50, (40, 40)).astype(np.uint16)
    u8 = display_u8(page)
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255
    assert 0.005 < (u8 == 0).mean() < 0.03  # about 1% below the 1st percentile


def test_preview_is_small_and_keeps_thin_outlines():
    m = np.zeros((600, 400), bool)
    m[100:500, 100:300] = True
    gray, mask, lines = preview(np.where(m, 200, 50).astype(np.uint8), m, max_side=120)
    assert gray.size == mask.size == lines.size == (80, 120)
    alpha = np.asarray(lines)[..., 3]
    assert 0 < (alpha > 0).sum() < 0.2 * alpha.size  # an outline, not a fill


def test_seginfer_overlays(tmp_path, infer_model_path, infer_disk_image):
    truths = _make_folder(tmp_path / "in", infer_disk_image, n=3, masks=tmp_path / "gt")
    out = tmp_path / "out"
    args = ["--input", tmp_path / "in", "--output", out, "--overlays"]
    assert _run([*args, "--masks", tmp_path / "gt"], infer_model_path).exit_code == 0
    for i in range(3):
        ov = iio.imread(out / f"img{i}_overlay.png")
        mask = read_mask(out / f"img{i}.png")[0]
        assert ov.shape == (*mask.shape, 3)
        np.testing.assert_array_equal(_is(ov, MASK_COLOUR), outline(mask))
        assert (_is(ov, TRUTH_COLOUR) == (outer_outline(truths[f"img{i}"]) & ~outline(mask))).all()
    # an overlay is an output like the others: refused without --overwrite, resumed by --skip-existing
    r = _run(args, infer_model_path)
    assert r.exit_code == 2 and "img0_overlay.png already exists" in r.output
    (out / "img1_overlay.png").unlink()
    assert _run([*args, "--skip-existing"], infer_model_path).exit_code == 0
    assert not _is(iio.imread(out / "img1_overlay.png"), TRUTH_COLOUR).any()  # no --masks this time


def test_wrong_size_truth_leaves_the_overlay_without_it(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1, masks=tmp_path / "gt")
    iio.imwrite(tmp_path / "gt" / "img0.png", np.zeros((20, 20), np.uint8))
    out = tmp_path / "out"
    r = _run(
        ["--input", tmp_path / "in", "--output", out, "--overlays", "--masks", tmp_path / "gt"],
        infer_model_path,
    )
    assert r.exit_code == 1  # the ground truth's error is the input's, named in summary.json
    ov = iio.imread(out / "img0_overlay.png")
    assert _is(ov, MASK_COLOUR).any() and not _is(ov, TRUTH_COLOUR).any()


def test_multi_page_input_gives_a_multi_page_overlay(tmp_path, infer_model_path, infer_disk_image):
    pages = 3
    (tmp_path / "in").mkdir()
    stack = np.stack([infer_disk_image(48, 56, seed=s)[0] for s in range(pages)])
    tifffile.imwrite(
        tmp_path / "in" / "stack.tif", (np.clip(stack, 0, 1) * 255).astype(np.uint8), photometric="minisblack"
    )
    out = tmp_path / "out"
    assert _run(["--input", tmp_path / "in", "--output", out, "--overlays"], infer_model_path).exit_code == 0
    ov = tifffile.imread(out / "stack_overlay.tif")
    mask = read_mask(out / "stack.tif")
    assert ov.shape == (pages, 48, 56, 3)
    for p in range(pages):
        np.testing.assert_array_equal(_is(ov[p], MASK_COLOUR), outline(mask[p]))


def test_overlays_with_labels_outline_each_object_in_its_colour(tmp_path, infer_model_path, infer_disk_image):
    """--labels --overlays: the overlay outlines the label image's objects, each in its own colour."""
    from unsupseg.core.imageio import read_labels

    _make_folder(tmp_path / "in", infer_disk_image, n=2, shape=(64, 80))
    out = tmp_path / "out"
    r = _run(["--input", tmp_path / "in", "--output", out, "--overlays", "--labels"], infer_model_path)
    assert r.exit_code == 0, r.output
    for i in range(2):
        labels = read_labels(out / f"img{i}_labels.tif")[0]
        ov = iio.imread(out / f"img{i}_overlay.png")
        want = render_overlay(np.zeros(labels.shape, np.uint8), labels > 0, labels=labels)
        edge = want.any(axis=2)
        np.testing.assert_array_equal(ov[edge], want[edge])
        ids = np.unique(labels[labels > 0])
        colours = {tuple(c) for c in label_colours(ids)}
        assert len(ids) >= 2 and len(colours) == len(ids)  # the disks do not share a colour
