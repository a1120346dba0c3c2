"""Python API: ``Segmenter(model=..., device=...).predict(image) -> (mask, prob)``.

Everything between a raw image and its mask, and the ``seginfer`` command uses
exactly this class:

    pages (P, H, W) --normalise (model card)--> pad to x8 or tile --> batch --> onnxruntime
          --> crop / blend --> threshold --> polarity --> mask (P, H, W) bool, prob (P, H, W)

The pieces live in their own modules: the onnxruntime session (session.py), the
batching scheduler (scheduler.py), large pages tile by tile (tiles.py)
and the foreground rule (polarity.py). The returned probability is that of the
foreground.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import numpy as np

from unsupseg.core.errors import ImageReadError, ModelFileError
from unsupseg.core.imageio import check_pages
from unsupseg.core.labels import DEFAULT_MIN_DISTANCE, DEFAULT_SPLIT_METHOD, Labeling
from unsupseg.core.modelcard import POLARITY_RULES, STRUCTURE_RULES, ModelCard
from unsupseg.core.normalize import histogram_dtype
from unsupseg.core.padding import round_up
from unsupseg.core.structure.rule import Structure
from unsupseg.infer.model.postprocess import Cleanup
from unsupseg.infer.model.scheduler import BatchScheduler
from unsupseg.infer.model.session import DeviceRequest, parse_device
from unsupseg.infer.model.tiles import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, TiledPages, TileGrid

log = logging.getLogger(__name__)
# The smallest tile the packaged kind of network (a U-Net with image-wide context features) is run
# on: real images measured against the whole image (tests/test_real_machinery.py) agree at IoU
# 0.958 or more polarity-free from 256-px tiles on, and down to 0.004 at 128 px (issue 25).
MIN_CONTEXT_TILE = 256
_WIDENED: set[int] = set()  # tile sizes widened (and said so) in this process

DEFAULT_BATCH_SIZE = 8
# Pixels per onnxruntime call: batches of large images or tiles are cut to this many
# pixels (at least one image). A 1024x1024 batch already keeps the CPU busy, while the
# network's activations (~250 MB per megapixel at width 16) grow with the batch.
MAX_BATCH_PIXELS = DEFAULT_TILE_SIZE * DEFAULT_TILE_SIZE


def default_model_path() -> Path:
    """The model shipped inside the package (infer/model/default.onnx)."""
    path = Path(str(resources.files("unsupseg.infer.model") / "default.onnx"))
    if not path.is_file():
        raise ModelFileError(
            f"no packaged default model at {path}; pass --model MODEL.onnx "
            "(or build the default one with `make model`)"
        )
    return path


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything a ``Segmenter`` is built from: picklable, so engines build one per worker."""

    model: str | None = None  # .onnx path; None = the packaged default model
    device: DeviceRequest = DeviceRequest("auto")  # parsed once (a str is parsed on creation)
    threads: int | None = None  # CPU threads for onnxruntime; None = all usable cores
    tile_size: int = DEFAULT_TILE_SIZE  # images with a padded side above this run in tiles
    tile_overlap: int = DEFAULT_OVERLAP  # overlap of neighbouring tiles, pixels
    batch_size: int = DEFAULT_BATCH_SIZE  # images (or tiles) of one padded shape per call
    threshold: float | None = None  # probability threshold; None = the model card's
    foreground: str | None = None  # "bright" | "dark" | "model"; None = the model card's rule
    max_batch_pixels: int = MAX_BATCH_PIXELS  # fewer images per call above this many pixels
    min_size: int = 0  # drop foreground objects with fewer pixels (0 = keep all)
    fill_holes: bool = False  # fill background enclosed by foreground
    split: bool = False  # instance labels: separate touching objects (with split_method)
    min_distance: int = DEFAULT_MIN_DISTANCE  # split_method "watershed": pixels between objects' centres
    labels_3d: bool = False  # label a multi-page image as one volume instead of page by page
    structure: str | None = None  # the structure step (core/structure/); None = the model card's
    structure_context: dict | None = None  # its folder-level context; None = the model card's
    split_method: str = DEFAULT_SPLIT_METHOD  # how --split cuts objects (core.labels.SPLIT_METHODS)

    def __post_init__(self) -> None:
        if isinstance(self.device, str):
            object.__setattr__(self, "device", parse_device(self.device))
        if self.model is not None:
            object.__setattr__(self, "model", os.fspath(self.model))

    @property
    def labeling(self) -> Labeling:
        """How instance labels are made (``--split``, ``--split-method``, ``--min-distance``,
        ``--labels-3d``, ``--min-size``)."""
        return Labeling(self.split, self.min_distance, self.labels_3d, self.min_size, self.split_method)

    def build(self, **changes) -> Segmenter:
        """The Segmenter (``changes`` override fields, e.g. ``device="cpu"``)."""
        return Segmenter(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


class Segmenter:
    """Segment images with an unsupseg ONNX model.

    Args: see ``SegmenterConfig`` (``model``, ``device`` as "auto" | "cpu" | "cuda" |
    "cuda:N", ``threads``, ``tile_size``, ``tile_overlap``, ``batch_size``,
    ``threshold``, ``foreground``, ``max_batch_pixels``, ``min_size``, ``fill_holes``,
    ``split``, ``min_distance``, ``labels_3d``, ``split_method``: how ``predict(..., labels=True)``
    labels objects).
    ``session``: run the model through this object instead of a new ``OnnxSession`` (it has
    ``run``, ``card``, ``provider``, ``device``, ``threads``, ``fallback_reason``): worker processes
    of an engine whose model runs elsewhere pass a proxy.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str | DeviceRequest = "auto",
        threads: int | None = None,
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_OVERLAP,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        foreground: str | None = None,
        max_batch_pixels: int = MAX_BATCH_PIXELS,
        min_size: int = 0,
        fill_holes: bool = False,
        split: bool = False,
        min_distance: int = DEFAULT_MIN_DISTANCE,
        labels_3d: bool = False,
        structure: str | None = None,
        structure_context: dict | None = None,
        split_method: str = DEFAULT_SPLIT_METHOD,
        session=None,
    ):
        from unsupseg.infer.model.session import OnnxSession

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tile_widened_from = None
        if max_batch_pixels < 1:
            raise ValueError(f"max_batch_pixels must be >= 1, got {max_batch_pixels}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if foreground is not None and foreground not in POLARITY_RULES:
            raise ValueError(f"foreground must be one of {POLARITY_RULES}, got {foreground!r}")
        if structure is not None and structure not in STRUCTURE_RULES:
            raise ValueError(f"structure must be one of {STRUCTURE_RULES}, got {structure!r}")
        self.model_path = Path(model) if model is not None else default_model_path()
        self.session = session or OnnxSession(self.model_path, device=device, threads=threads)
        self.card: ModelCard = self.session.card
        self.multiple = max(1, int(self.card.size_multiple))
        if self.card.arch == "unet" and tile_size < MIN_CONTEXT_TILE:
            # image-wide context features: a small tile does not see what the whole image sees
            (log.warning if tile_size not in _WIDENED else log.debug)(
                "tile size %d px is below %d px: tiles that small disagree with the whole image for this "
                "network (image-wide features; measured IoU down to 0.004 at 128 px); using %d px tiles",
                tile_size, MIN_CONTEXT_TILE, MIN_CONTEXT_TILE,
            )  # fmt: skip
            _WIDENED.add(tile_size)  # said once per process (a run builds several Segmenters)
            self.tile_widened_from, tile_size = tile_size, MIN_CONTEXT_TILE
        if tile_overlap < 0 or tile_overlap * 2 >= tile_size:
            raise ValueError(
                f"tile_overlap must be >= 0 and < tile_size / 2, got {tile_overlap} and {tile_size}"
            )
        self.tile_size = max(tile_size, self.multiple)
        self.tile_overlap = tile_overlap
        self.batch_size = batch_size
        self.max_batch_pixels = max_batch_pixels
        self.threshold = float(self.card.threshold if threshold is None else threshold)
        self.foreground = foreground or self.card.polarity
        self.cleanup = Cleanup(min_size, fill_holes)
        kind = structure or self.card.structure
        context = self.card.structure_context if structure_context is None else structure_context
        # None while "auto" is not yet resolved (run_folder resolves it for a folder, predict per image)
        self.structure: Structure | None = None if kind == "auto" else Structure(kind, dict(context or {}))
        self.labeling = Labeling(split, min_distance, labels_3d, min_size, split_method)
        self._grids: dict[tuple[int, int], TileGrid] = {}  # image shape -> its tiles

    @property
    def structure_active(self) -> bool:
        """Whether a structure step may follow the network (then the clean-up comes after it)."""
        return self.structure is None or self.structure.active

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider actually running the model."""
        return self.session.provider

    @property
    def device(self) -> str:
        return self.session.device

    def batch_for(self, height: int, width: int) -> int:
        """Images (or tiles) of this padded shape per onnxruntime call."""
        return max(1, min(self.batch_size, self.max_batch_pixels // (height * width)))

    def grid(self, h: int, w: int) -> TileGrid:
        """The tiles of an (h, w) page (one tile when it fits in one call)."""
        grid = self._grids.get((h, w))
        if grid is None:
            hp, wp = round_up(h, self.multiple), round_up(w, self.multiple)
            grid = TileGrid.for_shape(hp, wp, self.tile_size, self.tile_overlap, self.multiple)
            if len(self._grids) < 1024:  # folders have a few image sizes; do not grow without bound
                self._grids[(h, w)] = grid
        return grid

    # -- single images -------------------------------------------------------------
    def predict(self, image: np.ndarray, labels: bool = False) -> tuple[np.ndarray, ...]:
        """Raw image (H, W) or pages (P, H, W), any dtype -> (mask bool, foreground prob), same shape.

        ``labels=True``: (mask, prob, labels), ``labels`` the instance label image (int32, 0 =
        background) made as ``seginfer --labels`` makes it (``self.labeling``: ``split``,
        ``split_method``, ``min_distance``, ``labels_3d``, ``min_size``).
        ``unsupseg.core.objects.measure_objects`` measures it.
        """
        arr = np.asarray(image)
        if arr.ndim not in (2, 3):
            raise ImageReadError(
                f"predict takes an (H, W) image or (P, H, W) pages, got shape {arr.shape}; "
                "convert colour to gray first (unsupseg.core.imageio.read_image does)"
            )
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
            raise ImageReadError(
                f"predict got shape {arr.shape}, which looks like a colour image (H, W, C); pass gray "
                "(H, W) or pages (P, H, W): unsupseg.core.imageio.read_image converts colour to gray"
            )
        ((_, result),) = list(self.predict_stream([(0, self.prepare(arr[None] if arr.ndim == 2 else arr))]))
        if isinstance(result, BaseException):
            raise result
        out = self.finish(arr[None] if arr.ndim == 2 else arr, *result, labels=labels)
        return tuple(a[0] for a in out) if arr.ndim == 2 else out

    def finish(
        self, pages: np.ndarray, mask: np.ndarray, prob: np.ndarray, labels: bool = False
    ) -> tuple[np.ndarray, ...]:
        """What follows the network for one image's pages (P, H, W) as given and ``predict_stream``'s
        (mask, prob) of them: the structure step, the clean-up, and with ``labels`` the instance
        labels; returns (mask, prob) or (mask, prob, labels). ``predict`` and the napari plugin
        (which streams an image's pages one by one, for its progress) both end with it."""
        structure = self.structure
        if structure is None:  # "auto" on a single image: decided as a run of a folder of it decides
            structure = self.detect(pages, prob)
        if structure.active:
            mask = structure.apply(pages, mask, prob)
        if self.structure_active:  # the clean-up waited for the step
            for page in mask:
                self.cleanup.apply(page)
        return (mask, prob, self.labeling.label(mask)) if labels else (mask, prob)

    @staticmethod
    def detect(pages: np.ndarray, probs: np.ndarray) -> Structure:
        """The structure step "auto" picks for one image's pages and the network's probabilities, on
        the page and window a run's sample takes of it (infer/sample.py)."""
        from unsupseg.core.padding import central_window
        from unsupseg.core.structure.detect import detect_structure
        from unsupseg.infer.sample import MAX_SIDE, spread

        picks = spread(len(pages), 1)
        windows = [central_window(pages[k], MAX_SIDE) for k in picks]
        return detect_structure(windows, [central_window(probs[k], MAX_SIDE) for k in picks]).structure

    def prepare(self, pages: np.ndarray, source: str = "image") -> np.ndarray | TiledPages:
        """Check raw pages (P, H, W) from any source, then ``normalise`` them."""
        pages = np.asarray(pages)
        if not histogram_dtype(pages.dtype):
            pages = np.asarray(pages, dtype=np.float32)
        check_pages(pages, source)
        return self.normalise(pages)

    def normalise(self, pages: np.ndarray) -> np.ndarray | TiledPages:
        """Normalise checked pages (``read_pages`` output) with the model card's normalisation.

        Returns the float32 normalised pages, or, for an image that runs in tiles, a
        ``TiledPages`` holding the pages as given (8/16-bit integer data is not
        converted) and their bounds: each tile is normalised when it is cut.
        """
        norm = self.card.normalization
        bounds = [norm.bounds(p) for p in pages]
        h, w = pages.shape[1:]
        if not self.grid(h, w).is_single:
            return TiledPages(pages, bounds, norm)
        if len(pages) == 1:
            return norm.apply(pages[0], bounds[0])[None]
        out = np.empty(pages.shape, dtype=np.float32)
        for i, (page, b) in enumerate(zip(pages, bounds, strict=True)):
            norm.apply(page, b, out=out[i])
        return out

    # -- streams of images ---------------------------------------------------------
    def predict_stream(
        self,
        items: Iterable[tuple[Hashable, np.ndarray | TiledPages]],
        max_pending: int | None = None,
        with_prob: bool = True,
    ) -> Iterator[tuple[Hashable, tuple[np.ndarray, np.ndarray | None] | BaseException]]:
        """Prepared pages in, ``(key, (mask, prob))`` or ``(key, error)`` out, in completion order.

        Pages of the same padded shape, from different images, share onnxruntime calls
        (``scheduler.py``). At most ``max_pending`` images (default ``4 * batch_size``)
        wait for a batch to fill. ``with_prob=False``: ``prob`` is None, and tiled
        images never hold a full-size probability.
        """
        return BatchScheduler(self).run(items, max_pending or 4 * self.batch_size, with_prob)
