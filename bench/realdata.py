"""Real images with ground truth that ship inside a registry package.

stardist 0.9.2 carries one hand-annotated fluorescence image of nuclei from the 2018
Data Science Bowl (BBBC038, Caicedo et al. 2019) in its wheel:
``stardist/data/images/img2d.tif`` (512x512, 125 nuclei, brighter than background)
and ``mask2d.tif`` (instance labels; > 0 is foreground). The Makefile installs the
wheel with ``--no-deps`` (3 MB, no TensorFlow) and nothing is fetched at run time.
The package itself is never imported: its files are found with importlib.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

STARDIST_SPEC = "stardist==0.9.2"


class RealDataMissing(RuntimeError):
    pass


def stardist_image() -> tuple[np.ndarray, np.ndarray]:
    """(image uint16 (512, 512), mask bool (512, 512))."""
    import tifffile

    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise RealDataMissing(f"install the data with: pip install --no-deps {STARDIST_SPEC}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif") > 0


def write_tiles(out: Path, tile: int = 128) -> int:
    """Cut the image into tile x tile pieces: out/images/*.tif and out/masks/*.png."""
    import tifffile

    from unsupseg.core.imageio import write_mask

    img, gt = stardist_image()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    n = 0
    for y in range(0, img.shape[0] - tile + 1, tile):
        for x in range(0, img.shape[1] - tile + 1, tile):
            name = f"dsb_y{y:03d}_x{x:03d}"
            tifffile.imwrite(out / "images" / f"{name}.tif", img[y : y + tile, x : x + tile])
            write_mask(out / "masks" / f"{name}.png", gt[y : y + tile, x : x + tile])
            n += 1
    return n
