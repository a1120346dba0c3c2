"""Write a sample folder of generated images with ground-truth masks (for `make demo`).

    python -m unsupseg.train.sample OUT_DIR [--n 60] [--seed 5000]

OUT_DIR/images holds 8-bit PNG and 16-bit TIFF images of several sizes (not only
multiples of 8) and noise levels, bright objects on a dark background; OUT_DIR/masks the matching masks.
The seeds are disjoint from the built-in training data's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from unsupseg.core.data import generate
from unsupseg.core.imageio import write_mask

# (height, width, noise range, polarity, bit depth). Objects are bright, as seginfer's
# default foreground rule expects (dark objects need --foreground dark), so the report's
# "iou" (mask as written) and "iou_any_polarity" agree.
SAMPLE_SETS = [
    (64, 96, (0.2, 0.5), "bright", 8),
    (128, 128, (0.3, 0.8), "bright", 8),
    (200, 136, (0.2, 0.6), "bright", 16),
    (97, 141, (0.2, 0.5), "bright", 16),
]


def write_sample(out: Path, n: int = 60, seed: int = 5000) -> int:
    import tifffile
    from PIL import Image

    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    per = max(1, n // len(SAMPLE_SETS))
    count = 0
    for k, (h, w, sigma, pol, bits) in enumerate(SAMPLE_SETS):
        x, m = generate(per, h, w, sigma, pol, seed=seed + k, max_objects=3, quantize=bits)
        for i in range(per):
            name = f"set{k}_{i:03d}"
            if bits == 8:
                Image.fromarray(x[i]).save(images / f"{name}.png")
            else:
                tifffile.imwrite(images / f"{name}.tif", x[i])
            write_mask(masks / f"{name}.png", m[i])
            count += 1
    return count


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--n", type=click.IntRange(min=4), default=60, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=5000, show_default=True, help="Generator seed.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def main(out: Path, n: int, seed: int, overwrite: bool) -> None:
    """Write OUT/images and OUT/masks with generated sample data."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise click.UsageError(f"{out}: exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    count = write_sample(out, n, seed)
    click.echo(f"wrote {count} images to {out / 'images'} and their masks to {out / 'masks'}", err=True)


if __name__ == "__main__":
    main()
