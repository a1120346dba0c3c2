"""The packaged default model: present, self-describing, and accurate on generated images."""

import numpy as np
import pytest

from unsupseg.core import iou_any_polarity
from unsupseg.core.data import generate
from unsupseg.infer.model.segmenter import Segmenter, default_model_path


def test_shipped_model_exists_and_is_small():
    path = default_model_path()
    assert path.is_file()
    assert path.stat().st_size < 2_000_000  # small enough to ship in the wheel


def test_shipped_model_has_the_metadata():
    seg = Segmenter(device="cpu", threads=1)
    card = seg.card
    assert card.arch in ("unet", "seed") and card.width >= 1
    assert card.normalization.method == "percentile"
    assert card.size_multiple == 8 and 0 < card.threshold < 1
    assert len(card.checkpoint_sha256) == 64
    assert card.test_iou is not None and card.test_iou >= 97.0
    assert card.package_version


@pytest.mark.parametrize(
    "size,sigma,polarity,bits",
    [
        ((32, 32), (0.05, 0.5), "both", None),
        ((96, 136), (0.2, 0.5), "bright", 8),
        ((120, 64), (0.2, 0.5), "dark", 16),
    ],
)
def test_shipped_model_segments_generated_images(size, sigma, polarity, bits):
    x, m = generate(24, *size, sigma=sigma, polarity=polarity, seed=777, quantize=bits)
    seg = Segmenter(device="cpu", threads=1)
    scores = []
    for xi, mi in zip(x, m, strict=True):
        mask, prob = seg.predict(xi)
        assert mask.shape == xi.shape and prob.shape == xi.shape
        scores.append(iou_any_polarity(mask, mi))
    print(f"{size} {sigma} {polarity}: mean IoU {100 * np.mean(scores):.2f}")
    assert np.mean(scores) >= 0.95


def test_packaged_checkpoint_is_the_packaged_onnx():
    """segtrain --data DIR starts from train/models/default.pt: the weights seginfer ships."""
    from unsupseg.train.adapt import PACKAGED
    from unsupseg.train.checkpoint import load_checkpoint, sha256_file

    card = Segmenter(device="cpu", threads=1).card
    assert card.checkpoint_sha256 == sha256_file(PACKAGED)
    assert card.polarity == "auto" == load_checkpoint(PACKAGED)["card"]["polarity"]


@pytest.mark.parametrize("polarity", ["bright", "dark"])
def test_shipped_model_writes_the_objects_of_either_polarity(polarity):
    """As written (the card's foreground rule), not only polarity-free."""
    from unsupseg.core.metrics import iou

    x, m = generate(16, 96, 136, sigma=(0.2, 0.5), polarity=polarity, seed=778, max_objects=3)
    seg = Segmenter(device="cpu", threads=1)
    scores = [iou(seg.predict(xi)[0], mi) for xi, mi in zip(x, m, strict=True)]
    assert np.mean(scores) >= 0.9, np.mean(scores)
