"""The package's test image and the tensors made from it.

test_input/test_output (.npy) are what the zoo's reproduction test compares; the output is
computed by seginfer's own normalisation and onnxruntime session, so that test also checks the
spec's pre-processing against seginfer's. sample_input/sample_output (.tif) are the same pair
for people to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unsupseg.core.modelcard import ModelCard
from unsupseg.export.export import ExportError

TEST_SIZE = 128  # side of the generated test image
MAX_TEST_SIZE = 512  # a given test image is centre-cropped to at most this side


def default_test_image(seed: int = 4) -> np.ndarray:
    """A generated TEST_SIZE^2 image (the built-in data's shapes and noise) at camera-like intensities.

    The offset and gain make the normalisation visible in the test: raw values are far
    from [0, 1] and only the pre-processing brings them there.
    """
    from unsupseg.core.data import generate

    images, _ = generate(1, TEST_SIZE, TEST_SIZE, sigma=(0.3, 0.3), polarity="bright", seed=seed)
    return (images[0] * 400.0 + 1000.0).astype(np.float32)


def load_test_image(path: str | os.PathLike, multiple: int) -> np.ndarray:
    """A gray image from ``path``, centre-cropped to a multiple of ``multiple`` (at most MAX_TEST_SIZE).

    Read as seginfer reads it (colour converted to gray); a multi-page file gives its first page.
    """
    from unsupseg.core.imageio import read_image

    image = read_image(path)[0]  # (pages, H, W) float32 -> the first page
    h, w = (min(MAX_TEST_SIZE, s) // multiple * multiple for s in image.shape)
    if h == 0 or w == 0:
        raise ExportError(
            f"{path}: {image.shape[0]}x{image.shape[1]} is smaller than the model's size multiple "
            f"{multiple}; pass a larger test image"
        )
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[y0 : y0 + h, x0 : x0 + w], dtype=np.float32)


def write_test_tensors(
    files: dict[str, Path], image: np.ndarray, card: ModelCard
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``files["onnx"]`` on ``image`` as seginfer does and write the test and sample pairs.

    Returns (normalised image (H, W), probability (H, W)).
    """
    from unsupseg.infer.model.session import OnnxSession

    norm = card.normalization(image)
    prob = OnnxSession(files["onnx"], device="cpu").run(norm[None, None])  # (1, 1, H, W)
    np.save(files["test_input"], image[None, None])
    np.save(files["test_output"], prob)
    _write_tiff(files["sample_input"], image)
    _write_tiff(files["sample_output"], prob[0, 0])
    return norm, prob[0, 0]


def _write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, np.asarray(array, dtype=np.float32), photometric="minisblack")
