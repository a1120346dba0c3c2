"""The package's cover: the normalised test image and, beside it, the mask seginfer writes over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unsupseg.core.modelcard import ModelCard
from unsupseg.core.polarity import apply_polarity

COVER_PANEL = 256  # pixels per cover panel side
MASK_COLOUR = (255, 64, 160)  # blended half and half over the image


def write_cover(norm: np.ndarray, prob: np.ndarray, card: ModelCard, path: Path) -> None:
    """Two square panels side by side (2:1, as bioimage.io asks): the normalised image, and the
    mask (the card's threshold and polarity rule) in colour over it; a non-square image is fitted
    into each panel on black."""
    from PIL import Image

    mask, _ = apply_polarity(norm, prob, card.threshold, card.polarity)
    gray = np.round(np.clip(norm, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    overlay = rgb.copy()
    overlay[mask] = 0.5 * rgb[mask] + 0.5 * np.array(MASK_COLOUR, dtype=np.float32)
    h, w = gray.shape
    size = (max(1, round(COVER_PANEL * w / max(h, w))), max(1, round(COVER_PANEL * h / max(h, w))))
    cover = Image.new("RGB", (2 * COVER_PANEL, COVER_PANEL))
    for i, panel in enumerate((rgb, overlay)):
        im = Image.fromarray(panel.astype(np.uint8)).resize(size, Image.NEAREST)
        cover.paste(im, (i * COVER_PANEL + (COVER_PANEL - size[0]) // 2, (COVER_PANEL - size[1]) // 2))
    cover.save(path, format="PNG")
