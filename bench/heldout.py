"""Held-out evaluation sets and the classical baselines they are scored against.

None of these images is seen in training: the generator runs with seeds that training
never uses, at sizes, noise levels, polarities and bit depths the 32x32 built-in
training data does not have. Two draws of the same specifications:

* ``VALIDATION_SEED`` (1000+): used while choosing the default model (architecture,
  width, noise strength); its figures are not reported as results.
* ``TEST_SEED`` (2000+): reported in docs/benchmarks.md and docs/results.md; never looked
  at while choosing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unsupseg.core.data import generate


@dataclass(frozen=True)
class HeldoutSpec:
    name: str
    n: int
    height: int
    width: int
    sigma: tuple[float, float]
    polarity: str = "both"
    quantize: int | None = None
    max_objects: int = 3

    def make(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return generate(
            self.n,
            self.height,
            self.width,
            self.sigma,
            self.polarity,
            seed=seed,
            max_objects=self.max_objects,
            quantize=self.quantize,
        )


HELDOUT = [
    HeldoutSpec("64x96 noise 0.2-0.5", 40, 64, 96, (0.2, 0.5)),
    HeldoutSpec("128x128 noise 0.5-1.0", 40, 128, 128, (0.5, 1.0)),
    HeldoutSpec("200x136 dark objects noise 0.2-1.0", 30, 200, 136, (0.2, 1.0), polarity="dark"),
    HeldoutSpec("256x384 noise 0.2-1.0", 20, 256, 384, (0.2, 1.0)),
    HeldoutSpec("512x320 noise 0.2-1.0", 10, 512, 320, (0.2, 1.0)),
    HeldoutSpec("160x120 8-bit noise 0.2-0.8", 30, 160, 120, (0.2, 0.8), quantize=8),
    HeldoutSpec("96x248 16-bit noise 0.3-1.0", 30, 96, 248, (0.3, 1.0), quantize=16),
]


VALIDATION_SEED = 1000
TEST_SEED = 2000


def heldout_sets(base_seed: int = TEST_SEED):
    """[(spec, images, masks)] for every held-out set; deterministic."""
    return [(s, *s.make(base_seed + i)) for i, s in enumerate(HELDOUT)]


# ----------------------------------------------------------------------------- baselines
def otsu(image: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    return image > threshold_otsu(image)


def blur_otsu(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    from skimage.filters import gaussian, threshold_otsu

    b = gaussian(image.astype(np.float32), sigma=sigma, preserve_range=True)
    return b > threshold_otsu(b)


def morph_chan_vese(image: np.ndarray, num_iter: int = 50) -> np.ndarray:
    from skimage.segmentation import morphological_chan_vese

    from unsupseg.core.normalize import Normalization

    return morphological_chan_vese(Normalization()(image), num_iter=num_iter, smoothing=2).astype(bool)


def chan_vese(image: np.ndarray, max_num_iter: int = 100) -> np.ndarray:
    from skimage.segmentation import chan_vese as cv

    from unsupseg.core.normalize import Normalization

    return cv(Normalization()(image), mu=0.25, max_num_iter=max_num_iter).astype(bool)


BASELINES = {
    "otsu": otsu,
    "blur_otsu": blur_otsu,
    "chan_vese": chan_vese,
    "morph_chan_vese": morph_chan_vese,
}
