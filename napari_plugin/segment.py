"""The plugin's work, without Qt: what the widget runs in napari's worker thread.

    Image layer data --layer_pages--> pages (P, H, W), as seginfer reads a file (colour to gray)
         --segment_pages--> Segmenter.predict_stream, one page at a time (a progress step and a
                            chance to cancel after each; large pages tile as in seginfer)
         --Segmenter.finish--> structure step, clean-up, instance labels: seginfer --labels's
    labels --features--> objects.csv's measurements, one row per label (napari shows them on hover)

    open Image layers --adapt_layers--> a sample as seginfer --adapt takes it (infer/sample.py)
         --adapt_job.py, a child process: export/adapt.py adapt_pages (torch)--> adapted.onnx

Every step is seginfer's own code, so the labels equal ``seginfer --labels``'s for the same image,
model and options. One difference is the structure step "auto": seginfer decides it on a sample of
the whole folder, the plugin on the image it segments (as seginfer does for a folder of that image).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unsupseg.core.errors import DataError, ImageReadError
from unsupseg.core.imageio import to_gray
from unsupseg.core.objects import measure_objects

# seginfer's inference stack (onnxruntime, scikit-image, scipy.stats: about 3 s to import here) is
# imported by the first segmentation, in napari's worker thread, so that the widget opens at once
if TYPE_CHECKING:
    from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig
    from unsupseg.infer.sample import Sample

FOREGROUND_CHOICES = ("model's", "auto", "border", "minority", "bright", "dark", "model")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Options:
    """The widget's choices: seginfer's options of the same names."""

    model: str | None = None  # --model (.onnx); None: the packaged model
    device: str = "cpu"  # --device cpu | cuda (no fall-back: cuda that cannot run is an error)
    threshold: float | None = None  # --threshold; None: the model card's
    foreground: str | None = None  # --foreground; None: the model card's rule
    split: bool = False  # --split
    min_size: int = 0  # --min-size
    labels_3d: bool = False  # --labels-3d

    def config(self) -> SegmenterConfig:
        """seginfer's SegmenterConfig for these choices (its other fields at seginfer's defaults)."""
        from unsupseg.infer.model.segmenter import SegmenterConfig

        return SegmenterConfig(
            model=self.model,
            device=self.device,
            threshold=self.threshold,
            foreground=self.foreground,
            split=self.split,
            min_size=self.min_size,
            labels_3d=self.labels_3d,
        )


def layer_pages(data, rgb: bool = False, name: str = "image") -> np.ndarray:
    """An Image layer's data as pages (P, H, W): a 2-D image is one page, a 3-D one a stack of pages;
    colour (``rgb``) becomes gray with seginfer's weights. A multiscale layer gives its full level."""
    if isinstance(data, list | tuple):  # multiscale: the first level is the full resolution
        data = data[0]
    arr = np.asarray(data)  # dask or zarr data is read here
    if rgb:
        arr = to_gray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ImageReadError(
            f"{name}: {arr.ndim}-D data {arr.shape}; the plugin segments a 2-D image or a stack of "
            "pages (P, H, W): select one channel or time point (napari: Layers > Split Stack)"
        )
    return arr


def segment_pages(
    segmenter: Segmenter, pages: np.ndarray, name: str = "image"
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Segment pages (P, H, W) page by page, yielding (pages done, pages); returns the instance labels
    (P, H, W) int32, as ``Segmenter.predict(pages, labels=True)`` gives them.

    Pages of one image go through ``predict_stream`` as separate items, which is what ``predict``
    does with them in one item (each page is normalised on its own), so a caller that stops between
    two yields (napari's worker, when cancelled) has waited for one page at most."""
    n = len(pages)
    mask = np.empty(pages.shape, dtype=bool)
    prob = np.empty(pages.shape, dtype=np.float32)
    items = ((i, segmenter.prepare(pages[i : i + 1], name)) for i in range(n))  # one page in memory
    done = 0
    yield done, n + 1  # the last step: the structure step and the labels
    for i, result in segmenter.predict_stream(items, max_pending=1):
        if isinstance(result, BaseException):
            raise result
        mask[i], prob[i] = result[0][0], result[1][0]
        done += 1
        yield done, n + 1
    _, _, labels = segmenter.finish(pages, mask, prob, labels=True)
    return labels


def features(labels: np.ndarray, pages: np.ndarray | None = None) -> dict[str, list] | None:
    """objects.csv's measurements of ``labels`` (``core/objects.py``) as a Labels layer's features
    (column ``index``: the label), or None when a label has more than one row (a stack's pages are
    labelled one by one, or an object spans pages): napari keeps one row per label."""
    rows = measure_objects(labels, pages)
    return table_of(rows)


def table_of(rows: Sequence[dict]) -> dict[str, list] | None:
    """Rows of objects.csv (one image's) as features: one row per label, ``index`` the label."""
    ids = [int(r["label"]) for r in rows]
    if len(set(ids)) != len(ids):
        return None
    columns = [k for k in (rows[0] if rows else {}) if k not in ("image", "label")]
    table = {"index": ids}
    for k in columns:
        table[k] = [r[k] for r in rows]
    return table


@dataclass
class _Layer:
    """An open Image layer as infer/sample.py's ``sample_pages`` takes an input (``src``: its name)."""

    src: str
    data: object
    rgb: bool


def sample_layers(layers: Sequence[tuple[str, object, bool]]) -> Sample:
    """What seginfer --adapt adapts on, taken from (name, data, rgb) of open Image layers instead of
    a folder's files: up to 32 layers, 2 pages each, large pages cut to their central window;
    constant or unusable layers are named in ``skipped``."""
    from unsupseg.infer.sample import ADAPT_INPUTS, ADAPT_PAGES_PER_INPUT, sample_pages

    items = [_Layer(name, data, rgb) for name, data, rgb in layers]
    return sample_pages(
        items,
        lambda item: layer_pages(item.data, item.rgb, item.src),
        ADAPT_INPUTS,
        pages_per_input=ADAPT_PAGES_PER_INPUT,
    )


RECORD = "unsupseg-adaptation-record "  # adapt_job.py's last line: the record, as JSON
FAILED = "unsupseg-adaptation-error "  # or why it stopped, in seginfer's words


def adapt_layers(
    layers: Sequence[tuple[str, object, bool]],
    out: str | os.PathLike,
    device: str = "cpu",
    running: Callable[[subprocess.Popen], None] = lambda proc: None,
) -> Generator[str, None, dict]:
    """Adapt the packaged model to the open Image layers, as ``seginfer --adapt`` adapts it to a
    folder, and write it to ``out`` (.onnx). Yields the adaptation's log lines (the criterion of each
    snapshot among them); returns its record (export/adapt.py's ``Adaptation.record``).

    The sample is taken here; the adaptation (torch) runs in a child process (``adapt_job.py``):
    torchvision loads triton, whose LLVM clashes with the one Mesa's OpenGL driver has loaded for
    napari's canvas and crashes the viewer. ``running`` receives the process (Cancel terminates it);
    closing the generator terminates it too. DataError when no layer is usable, or with the child's
    message when it fails (torch missing: the install command)."""
    sample = sample_layers(layers)
    for skipped in sample.skipped:
        yield f"adapting without {skipped['input']}: {skipped['why']}"
    if not sample.pages:
        raise DataError("no usable image to adapt to: open an image that is not constant")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    job = out.with_suffix(".sample.npz")
    np.savez(job, *sample.pages, sources=json.dumps(sample.sources), skipped=json.dumps(sample.skipped))
    cmd = [sys.executable, "-m", "unsupseg.napari.adapt_job", str(job), str(out), device]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    running(proc)
    record, error, tail = None, None, []
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(RECORD):
                record = json.loads(line[len(RECORD) :])
            elif line.startswith(FAILED):
                error = line[len(FAILED) :]
            else:
                tail = [*tail[-9:], line]
                yield line
        code = proc.wait()
    finally:
        if proc.poll() is None:  # cancelled: the generator was closed
            proc.terminate()
            proc.wait()
        proc.stdout.close()
        job.unlink(missing_ok=True)
    if error is not None:
        raise DataError(error)
    if code != 0 or record is None:
        raise DataError(f"the adaptation stopped (exit code {code}); its last lines: " + " | ".join(tail))
    return record
