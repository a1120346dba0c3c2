"""The plugin's reader of a ``seginfer`` output folder and its writer of a Labels layer.

Reader: a folder with seginfer's ``summary.json`` (every run writes it) opens as, for each input that
was written or kept (its ``metric_per_case`` rows), its image (as seginfer read it: gray) with its
label image (``NAME_labels.tif`` of ``--labels``) or, without one, its mask as a Labels layer over it.
The label image's rows of ``objects.csv`` become the layer's features, which napari shows for the
label under the cursor.
Paths in summary.json that are relative are taken from the run's working folder (``seginfer.json``).

Writer: a Labels layer as the uint16 TIFF ``seginfer --labels`` writes (uint32 above 65,535
labels, zlib, one page per page; ``core.imageio.write_labels``, atomically).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from unsupseg.core.errors import ImageReadError
from unsupseg.core.imageio import read_labels, read_mask_values, read_pages
from unsupseg.core.imageio import write_labels as _write_labels

SUMMARY = "summary.json"
MANIFEST = "seginfer.json"
OBJECTS = "objects.csv"
READ_STATUS = ("written", "kept")  # summary.json's cases whose outputs are on disk


def get_reader(path: str | list[str]):
    """napari's reader hook: ``read_run`` for a seginfer output folder, else None (not ours)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    folder = Path(path)
    if not (folder.is_dir() and (folder / SUMMARY).is_file() and (folder / MANIFEST).is_file()):
        return None
    return read_run


def _base_dir(folder: Path) -> Path:
    """Where summary.json's relative paths start: the run's working folder (seginfer.json's ``cwd``)."""
    try:
        cwd = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("cwd")
    except (OSError, ValueError):
        cwd = None
    return Path(cwd) if cwd else Path.cwd()


def _page_or_pages(arr: np.ndarray) -> np.ndarray:
    return arr[0] if arr.ndim == 3 and len(arr) == 1 else arr


def _objects(folder: Path) -> dict[str, list[dict]]:
    """objects.csv's rows by input (as written in its ``image`` column), numbers as numbers."""
    path = folder / OBJECTS
    if not path.is_file():
        return {}
    out: dict[str, list[dict]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["image"], []).append({k: _number(v) for k, v in row.items()})
    return out


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_run(path: str | list[str]) -> list[tuple]:
    """The layers of a seginfer output folder: each input's image and its labels (or mask) over it."""
    from unsupseg.napari.segment import table_of

    folder = Path(path[0] if isinstance(path, list) else path)
    base = _base_dir(folder)
    objects = _objects(folder)
    try:
        cases = json.loads((folder / SUMMARY).read_text(encoding="utf-8")).get("metric_per_case") or []
    except (OSError, ValueError) as e:
        raise ImageReadError(f"{folder / SUMMARY}: cannot read it ({e}); run seginfer again") from e
    rows = [r for r in cases if r.get("status") in READ_STATUS and r.get("output")]
    if not rows:
        raise ImageReadError(
            f"{folder / SUMMARY}: no input was written or kept in this run, so there is nothing to open "
            "(its failed list says why)"
        )
    layers = []
    for row in rows:
        src, out = base / row["input"], base / row["output"]
        name = Path(row["input"]).stem
        if src.is_file():  # the input may have moved since the run; its outputs still open
            layers.append((_page_or_pages(read_pages(src)), {"name": name}, "image"))
        labels_path = Path(str(out.with_suffix("")) + "_labels.tif")
        if labels_path.is_file():
            labels = read_labels(labels_path)
            meta = {"name": f"{name} labels"}
            table = table_of(objects.get(row["input"], []))
            if table is not None:
                meta["features"] = table
            layers.append((_page_or_pages(labels), meta, "labels"))
        else:
            mask = read_mask_values(out)
            layers.append((_page_or_pages((mask != 0).astype(np.uint8)), {"name": f"{name} mask"}, "labels"))
    return layers


def write_labels(path: str, data, meta: dict) -> list[str]:
    """napari's writer hook for a Labels layer: seginfer's label TIFF (uint16; uint32 above 65,535)."""
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{path}: a {arr.ndim}-D Labels layer {arr.shape}; seginfer's label TIFF holds a 2-D image or "
            "a stack of pages (P, H, W)"
        )
    if arr.size and arr.min() < 0:
        raise ValueError(
            f"{path}: the Labels layer has negative labels; seginfer's label TIFF holds 0 and up"
        )
    _write_labels(os.fspath(path), arr)
    return [os.fspath(path)]
