"""Real images for the tests of the real network: ``../shared/realdata`` beside the clone, read in
place (never copied into the repository), or stardist's bundled 2-D nuclei when that folder is
absent. stardist's wheel is installed by ``make install`` (data files only, ``--no-deps``).

The tests that use these images never skip: with the shared folder present they use it, without it
they use stardist's image, and without either they fail naming the fix. ``UNSUPSEG_REALDATA=DIR``
points them at another folder (a missing one tries the fallback).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_REAL = Path(os.environ.get("UNSUPSEG_REALDATA") or ROOT.parent / "shared" / "realdata")
SETS = ("nuclei", "horse", "em")


def stardist_data() -> Path:
    """stardist's ``data/images`` folder (img2d.tif, mask2d.tif, ...); fails naming the fix."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise AssertionError(
            "stardist's wheel is missing: `make install` installs it (pip install --no-deps stardist==0.9.2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    assert (folder / "img2d.tif").is_file(), f"{folder}: no img2d.tif in stardist's wheel"
    return folder


def have_shared() -> bool:
    return all((SHARED_REAL / s / "images").is_dir() and (SHARED_REAL / s / "masks").is_dir() for s in SETS)


def real_sets() -> dict[str, list[tuple[Path, Path]]]:
    """{set: [(image, mask), ...]} sorted by name: the shared sets, or {"stardist": [img2d]}."""
    if have_shared():
        out = {}
        for s in SETS:
            images = sorted((SHARED_REAL / s / "images").glob("*.png"))
            assert images, f"{SHARED_REAL / s / 'images'}: no PNG images"
            out[s] = [(p, SHARED_REAL / s / "masks" / p.name) for p in images]
        return out
    data = stardist_data()
    return {"stardist": [(data / "img2d.tif", data / "mask2d.tif")]}


def read_gray(path: Path) -> np.ndarray:
    """The first page of an image as seginfer reads it (gray, its own dtype)."""
    from unsupseg.core.imageio import read_pages

    return read_pages(path)[0]


def read_truth(path: Path) -> np.ndarray:
    """A ground-truth mask or label image as a boolean mask (nonzero = foreground)."""
    from unsupseg.core.imageio import read_mask

    return read_mask(path)[0]


def link_folder(folder: Path, files: list[Path]) -> Path:
    """A folder of symbolic links to ``files`` (the images stay where they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return folder


def link_pairs(images: Path, masks: Path, pairs: list[tuple[Path, Path]]) -> None:
    """Links to the images in ``images`` and to their masks in ``masks`` under the image's stem
    (stardist's mask2d.tif becomes img2d.tif), so that seginfer and segtrain match them."""
    link_folder(images, [image for image, _ in pairs])
    masks.mkdir(parents=True, exist_ok=True)
    for image, mask in pairs:
        (masks / (image.stem + mask.suffix)).symlink_to(mask.resolve())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def real_crops(pages, n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """``n`` raw (h, w) crops of real pages, reflect-extended where a page is smaller."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        page = pages[rng.integers(len(pages))]
        while page.shape[0] < h or page.shape[1] < w:
            ph, pw = max(0, h - page.shape[0]), max(0, w - page.shape[1])
            page = np.pad(page, ((0, min(ph, page.shape[0] - 1)), (0, min(pw, page.shape[1] - 1))), "reflect")
        y, x = rng.integers(page.shape[0] - h + 1), rng.integers(page.shape[1] - w + 1)
        out.append(page[y : y + h, x : x + w])
    return out
