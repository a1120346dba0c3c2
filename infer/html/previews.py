"""The pictures of the HTML report: small previews of the inputs it shows, made from the run's files.

For each shown input (``select.py``'s ``Entry``), from what the run left on disk:

    KEY.jpg         the input's first page in gray (1st/99th percentiles), at most 256 px a side
    KEY_mask.png    the mask (1-bit), same size
    KEY_lines.png   the outlines (transparent PNG): mask orange, ground truth sky blue, and
                    with a NAME_labels.tif beside the mask each object in its own colour

The overlay of the large view is the outlines laid over the gray image. Only the shown
inputs are read (a few hundred, whatever the size of the run), in a few threads, one
image each at a time: memory is a few images, disk about 10 KB per shown input for
small images (about 25 KB for a 256 px preview of a large, noisy one).

Paths are the ones summary.json records; relative ones are resolved against the folder
the run was started from (``cwd`` in the manifest). An input that is gone or cannot be
read gets no preview, and the page says why.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg.core.imageio import TIFF_SUFFIXES, read_mask, read_pages
from unsupseg.core.overlay import preview
from unsupseg.infer.html.select import Entry

MAX_SIDE = 256  # pixels, the longer side of a preview
JPEG_QUALITY = 80


@dataclass
class Preview:
    image: str | None = None  # file names in the previews folder (None: not made)
    mask: str | None = None
    lines: str | None = None
    pages: int = 0  # pages of the input (the preview shows the first)
    size: tuple[int, int] | None = None  # (H, W) of the input
    problem: str | None = None  # why there is no picture, or no mask in it


def make_previews(
    entries: list[Entry], folder: Path, cwd: str | None = None, threads: int = 0, max_side: int = MAX_SIDE
) -> dict[str, Preview]:
    """Write the previews of ``entries`` into ``folder``; {entry key: Preview}. ``threads``: 0 = one
    per core, at most 4 (decoding and encoding release the GIL only part of the time)."""
    folder.mkdir(parents=True, exist_ok=True)
    threads = threads or min(4, os.cpu_count() or 1)

    def one(entry: Entry) -> Preview:
        try:
            return _make(entry, folder, cwd, max_side)
        except Exception as e:  # a preview is never worth failing the report for
            return Preview(problem=f"no preview ({type(e).__name__}: {e})")

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="report-preview") as pool:
        return dict(zip((e.key for e in entries), pool.map(one, entries), strict=True))


def _resolve(path: str | None, cwd: str | None) -> str | None:
    if path is None or os.path.isabs(path) or cwd is None:
        return path
    return os.path.join(cwd, path)


def _make(entry: Entry, folder: Path, cwd: str | None, max_side: int) -> Preview:
    src = _resolve(entry.input, cwd)
    if not os.path.exists(src):
        return Preview(problem="input not found (moved or deleted since the run)")
    try:
        pages = read_pages(src)
    except Exception:  # the reason is the input's failure, told beside the preview
        return Preview(problem="input cannot be read")
    out = Preview(pages=pages.shape[0], size=tuple(pages.shape[1:]))
    page = pages[0]
    del pages
    mask, truth, labels = _marks(entry, cwd, page.shape, out)
    gray, mask_im, lines = preview(page, mask, truth, labels, max_side)
    key = entry.key
    out.image = f"{key}.jpg"
    gray.save(folder / out.image, format="JPEG", quality=JPEG_QUALITY)
    if mask_im is not None:
        out.mask, out.lines = f"{key}_mask.png", f"{key}_lines.png"
        mask_im.save(folder / out.mask, format="PNG", compress_level=1)  # tiny either way; 1 is fastest
        lines.save(folder / out.lines, format="PNG", compress_level=1)
    return out


def _marks(entry: Entry, cwd: str | None, shape: tuple[int, int], out: Preview):
    """(mask, truth, labels) of the first page, each None when missing or of another size."""
    row = entry.row or {}

    def first_page(path: str | None, reader):
        path = _resolve(path, cwd)
        if path is None or not os.path.exists(path):
            return None
        try:
            a = reader(path)
        except Exception:
            return None
        return a[0] if a.ndim == 3 and a.shape[1:] == shape else None

    mask = first_page(row.get("output"), read_mask)
    if row.get("output") and mask is None:
        out.problem = "mask not found or not readable"
    truth = first_page(row.get("mask"), read_mask)
    labels = None
    if row.get("output"):
        base = os.path.splitext(row["output"])[0]
        labels = first_page(base + "_labels.tif", _read_labels)
    return mask, truth, labels


def _read_labels(path: str) -> np.ndarray:
    """A label image written by ``--labels`` (uint16/uint32 TIFF) as (P, H, W)."""
    import tifffile

    a = np.asarray(tifffile.imread(path))
    if os.path.splitext(path)[1].lower() not in TIFF_SUFFIXES or a.dtype.kind not in "ui":
        raise ValueError(f"{path}: not a label image")
    return a[None] if a.ndim == 2 else a
