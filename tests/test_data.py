"""Built-in generator and the .npz format (folders: tests/test_folder.py)."""

import numpy as np
import pytest

from unsupseg.core.data import (
    NPZ_KEYS,
    DataError,
    builtin_splits,
    generate,
    load_npz,
    save_npz,
)


def test_generator_is_deterministic_by_seed():
    a, ma = generate(5, seed=3)
    b, mb = generate(5, seed=3)
    c, _ = generate(5, seed=4)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


def test_generator_shapes_and_both_polarities():
    x, m = generate(40, 24, 40, sigma=(0.0, 0.0), seed=1)
    assert x.shape == m.shape == (40, 24, 40) and x.dtype == np.float32 and m.dtype == bool
    assert all(0 < mi.mean() < 1 for mi in m)  # never empty or full
    bright = [np.array_equal(xi > 0.5, mi) for xi, mi in zip(x, m, strict=False)]
    dark = [np.array_equal(xi < 0.5, mi) for xi, mi in zip(x, m, strict=False)]
    assert all(b or d for b, d in zip(bright, dark, strict=False))
    assert 5 < sum(bright) < 35  # both polarities present


@pytest.mark.parametrize("bits,dtype", [(8, np.uint8), (16, np.uint16)])
def test_generator_quantises(bits, dtype):
    x, _ = generate(3, 16, 16, seed=0, quantize=bits)
    assert x.dtype == dtype and x.max() == 2**bits - 1 and x.min() == 0


def test_noise_level_follows_sigma():
    x, m = generate(20, 64, 64, sigma=(0.3, 0.3), polarity="bright", seed=0)
    resid = x - m
    assert resid.std() == pytest.approx(0.3, rel=0.05)


def test_builtin_splits_npz_roundtrip(tmp_path):
    splits = builtin_splits(0)
    assert splits["image_train"].shape == (1000, 32, 32)
    assert splits["image_test"].shape == (1000, 32, 32)
    assert not np.array_equal(splits["image_train"][:10], splits["image_test"][:10])
    save_npz(tmp_path / "d.npz", splits)
    back = load_npz(tmp_path / "d.npz")
    for k in NPZ_KEYS:
        assert np.array_equal(back[k], splits[k])


def test_npz_missing_keys_names_file_and_keys(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, image_train=np.zeros((2, 8, 8)), mask_train=np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match=r"bad\.npz: missing key\(s\) image_test, mask_test"):
        load_npz(p)


def test_npz_not_an_npz(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("hello")
    with pytest.raises(DataError, match="cannot read as .npz"):
        load_npz(p)


def test_npz_size_not_multiple_of_8(tmp_path):
    p = tmp_path / "odd.npz"
    z = np.zeros((2, 10, 16))
    np.savez(p, image_train=z, mask_train=z, image_test=z, mask_test=z)
    with pytest.raises(DataError, match="multiples of 8"):
        load_npz(p)
