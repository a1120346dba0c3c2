"""core: normalisation, metrics, model card, image I/O details."""

import numpy as np
import pytest

from unsupseg.core import ModelCard, Normalization, dice, iou, iou_any_polarity
from unsupseg.core.errors import ModelFileError


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (37, 53), (128, 128)])
@pytest.mark.parametrize("q", [(1.0, 99.0), (0.0, 100.0), (5.0, 95.0)])
def test_bounds_equal_numpy_percentile(shape, q):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 100).astype(np.float32)
    norm = Normalization(low=q[0], high=q[1])
    np.testing.assert_allclose(norm.bounds(x), np.percentile(x, q), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int8"])
@pytest.mark.parametrize("shape", [(3, 5), (40, 30), (600, 500)])  # partition of the integers; histogram
@pytest.mark.parametrize("q", [(1.0, 99.0), (0.0, 100.0), (2.5, 97.5)])
def test_integer_bounds_and_values_equal_the_float_path(dtype, shape, q):
    """Integer images skip the float32 copy (histogram or integer partition): same bounds, same bits."""
    rng = np.random.default_rng(shape[0])
    info = np.iinfo(dtype)
    x = np.clip(
        rng.normal(0.4, 0.15, shape) * (int(info.max) - int(info.min)) + int(info.min), info.min, info.max
    )
    x = x.astype(dtype)
    norm = Normalization(low=q[0], high=q[1])
    as_float = x.astype(np.float32)  # the general path: np.partition of a float32 copy
    assert norm.bounds(x) == norm.bounds(as_float)
    np.testing.assert_allclose(norm.bounds(x), np.percentile(x, q), rtol=1e-6)
    out = norm(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.uint32), norm(as_float).view(np.uint32))
    tile = np.s_[1:3, 2:5]  # apply() is elementwise: a tile of the image is that tile of the result
    np.testing.assert_array_equal(norm.apply(x[tile], norm.bounds(x)), out[tile])


def test_histogram_bounds_of_a_large_image_in_slices(monkeypatch):
    import unsupseg.core.normalize as normalize

    monkeypatch.setattr(normalize, "_HIST_CHUNK", 1000)  # many slices
    x = np.random.default_rng(1).integers(0, 256, (300, 301)).astype(np.uint8)
    x[0, :50] = 255
    assert Normalization(low=0.5, high=99.9).bounds(x) == Normalization(low=0.5, high=99.9).bounds(
        x.astype(np.float32)
    )


def test_normalisation_maps_percentiles_to_unit_range_and_clips():
    x = np.arange(1000, dtype=np.uint16).reshape(20, 50)
    out = Normalization()(x)
    lo, hi = np.percentile(x, (1, 99))
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert out.ravel()[500] == pytest.approx((500 - lo) / (hi - lo))


def test_flat_image_normalises_to_zeros():
    assert not Normalization()(np.full((8, 8), 7.0)).any()


def test_normalisation_rejects_bad_percentiles():
    with pytest.raises(ValueError, match="low < high"):
        Normalization(low=50, high=10)


def test_iou_and_dice_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert iou(a, b) == pytest.approx(4 / 12)
    assert dice(a, b) == pytest.approx(8 / 16)
    assert iou_any_polarity(a, b) == pytest.approx(4 / 12)  # complement: |~a & b| = 4, union 12
    assert iou_any_polarity(~b, b) == pytest.approx(1.0)  # polarity does not matter
    assert iou(~b, b) == pytest.approx(0.0, abs=1e-8)


def test_empty_masks_follow_the_notebook_eps_convention():
    empty = np.zeros((3, 3), bool)
    assert iou(empty, empty) == pytest.approx(1.0)
    assert dice(empty, empty) == pytest.approx(1.0)
    assert iou_any_polarity(empty, empty) == pytest.approx(1.0)
    full = np.ones((3, 3), bool)
    assert iou(full, empty) == pytest.approx(0.0, abs=1e-8)


def test_iou_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        iou(np.zeros((2, 2)), np.zeros((2, 3)))


def test_model_card_round_trips_through_metadata():
    card = ModelCard(arch="unet", width=16, normalization=Normalization(low=2, high=95), test_iou=97.5)
    back = ModelCard.from_metadata(card.to_metadata())
    assert back == card
    assert ModelCard.from_dict(card.to_dict()) == card


def test_metadata_without_card_names_the_fix():
    with pytest.raises(ModelFileError, match="export one with `segexport"):
        ModelCard.from_metadata({"producer": "x"}, source="foo.onnx")
