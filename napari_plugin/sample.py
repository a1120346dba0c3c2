"""Sample data: stardist's bundled fluorescence nuclei (``stardist/data/images/img2d.tif``: 512x512,
uint16, 125 nuclei; BSD-3, from the 2018 Data Science Bowl). ``make install`` installs the stardist
wheel with ``--no-deps``; only its data file is read (stardist itself, and its TensorFlow, are never
imported)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from unsupseg.core.errors import DataError

STARDIST_SPEC = "stardist==0.9.2"


def nuclei_path() -> Path:
    """The image file inside the installed stardist package; DataError naming the install otherwise."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the sample nuclei come with stardist's wheel: pip install --no-deps {STARDIST_SPEC}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / "img2d.tif"
    if not path.is_file():
        raise DataError(f"{path}: not in this stardist install; pip install --no-deps {STARDIST_SPEC}")
    return path


def nuclei() -> list[tuple]:
    """napari's sample-data hook: the nuclei image as an Image layer."""
    import tifffile

    return [(tifffile.imread(nuclei_path()), {"name": "nuclei (stardist)"}, "image")]
