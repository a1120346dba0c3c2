"""The README's picture: a real image, its mask and the overlay, as seginfer makes them.

    python -m bench.readme_picture            # writes docs/nuclei.png

The image is stardist's bundled fluorescence nuclei (BSD-3; ``bench/realdata.py``). It is
segmented by the packaged model with seginfer's defaults (``Segmenter``: its normalisation,
threshold and foreground rule), and the overlay is the one ``seginfer --overlays`` draws
(``core/overlay.py``). The picture shows ``CROP`` of the 512x512 image, each panel enlarged
``SCALE`` times (nearest neighbour, so the outlines stay sharp): input | mask | overlay.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

CROP = (slice(304, 496), slice(288, 480))  # rows, columns of the 512x512 image
SCALE = 2
GAP = 6  # white pixels between the panels
OUT = Path(__file__).resolve().parent.parent / "docs" / "nuclei.png"


def picture(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the picture (H, 3 W + 2 GAP, 3) uint8, the mask of the whole image)."""
    from unsupseg.core.overlay import display_u8, render_overlay
    from unsupseg.infer.model.segmenter import Segmenter

    mask, _ = Segmenter(device="cpu", threads=1).predict(image)
    gray = display_u8(image)
    panels = [
        np.repeat(gray[..., None], 3, axis=2),
        np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2),
        render_overlay(gray, mask),
    ]
    panels = [p[CROP].repeat(SCALE, axis=0).repeat(SCALE, axis=1) for p in panels]
    gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1], gap, panels[2]]), mask


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=OUT, show_default=True)
def main(out: Path) -> None:
    """Write the README's picture (see the module's doc)."""
    from PIL import Image

    from bench.realdata import stardist_image
    from unsupseg.core.metrics import iou

    image, truth = stardist_image()
    rgb, mask = picture(image)
    Image.fromarray(rgb).save(out, format="PNG", optimize=True)
    size = out.stat().st_size / 1024
    click.echo(f"wrote {out} ({size:.0f} KB); the whole image's mask has IoU {iou(mask, truth):.3f}")


if __name__ == "__main__":
    main()
