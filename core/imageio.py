"""Reading images and masks, writing masks atomically.

Every reader returns a stack of 2-D pages, shape (pages, H, W): single images
have one page, multi-page TIFFs (and TIFF stacks such as ZYX or TYX) have several.
``read_image`` gives float32; ``read_pages`` keeps gray 8/16-bit integer data as
it is stored (a quarter or half of the float32 size, and exact histogram
percentiles in ``Normalization``) and gives float32 for everything else. Colour is
converted to gray with the ITU-R BT.709 luma weights (0.2125 R + 0.7154 G +
0.0721 B, as ``skimage.color.rgb2gray``); an alpha channel is dropped. TIFF goes
through tifffile (8/16/32-bit integer and float, any number of pages); PNG, JPEG
and BMP through Pillow.

``max_pixels`` (``read_pages``, ``read_mask``) refuses a page whose header claims
more pixels, before any of them is allocated (``ImageTooLargeError``): the guard
against decompression bombs, for TIFF as for Pillow's formats. ``seginfer`` passes
Pillow's own limit by default (``PILLOW_MAX_PIXELS``) and ``--max-megapixels`` raises
it; None leaves TIFF unchecked and Pillow's formats to Pillow's own limit.

Writers put the file under a temporary name in the same folder and rename it,
so a crash or Ctrl-C never leaves a half-written mask behind.
"""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import numpy as np

from unsupseg.core.atomic import atomic_path, write_bytes_atomic
from unsupseg.core.errors import ImageReadError, ImageTooLargeError
from unsupseg.core.normalize import histogram_dtype

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
MIN_SIDE = 4  # smaller images carry no shape to segment
# Pillow's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS (int(1024 * 1024 * 1024 // 4 // 3)):
# seginfer's default --max-megapixels (a test checks it against the installed Pillow)
PILLOW_MAX_PIXELS = 89_478_485
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def is_image_name(name: str) -> bool:
    """``is_image_path`` for a bare file name (no Path object: folders of many files)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _native(arr: np.ndarray) -> np.ndarray:
    """Gray data as stored when it is 8/16-bit integer, else float32."""
    return arr if histogram_dtype(arr.dtype) else arr.astype(np.float32, copy=False)


def _to_gray(arr: np.ndarray, channels_last: bool) -> np.ndarray:
    """(..., C) with C in 1..4 -> (...) gray. Alpha (C=2 or 4) is ignored.

    Gray input stays 8/16-bit integer when it is (see ``_native``); colour is float32.
    """
    if not channels_last:
        return _native(arr)
    c = arr.shape[-1]
    if c in (1, 2):
        return _native(arr[..., 0])
    return arr[..., :3].astype(np.float32) @ _LUMA


def to_gray(arr: np.ndarray) -> np.ndarray:
    """Colour data (..., C), C in 1..4, as gray: the weights ``read_pages`` converts a colour file with
    (for arrays that come from elsewhere, e.g. a napari layer)."""
    return _to_gray(np.asarray(arr), channels_last=True)


def check_size(path, height: int, width: int, max_pixels: int | None) -> None:
    """Raise ImageTooLargeError when one (height, width) page passes ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and height * width > max_pixels:
        raise ImageTooLargeError(path, height * width, max_pixels, (height, width))


def _check_series(path, series, max_pixels: int | None) -> None:
    """The page size a TIFF series' header claims, checked before its data is read."""
    dims = dict(zip(series.axes, series.shape, strict=True))
    shape = tuple(series.shape) or (1,)
    height = dims.get("Y", shape[-2] if len(shape) > 1 else 1)
    check_size(path, int(height), int(dims.get("X", shape[-1])), max_pixels)


def _tiff_pages(path: Path, max_pixels: int | None = None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(f"{path}: TIFF has no image data")
        for series in tif.series:
            _check_series(path, series, max_pixels)
        stacks = []
        for series in tif.series:
            arr = series.asarray()
            axes = series.axes
            if "S" in axes and not axes.endswith("S"):  # planar RGB (SYX): samples to the end
                arr = np.moveaxis(arr, axes.index("S"), -1)
                axes = axes.replace("S", "") + "S"
            channels_last = axes.endswith("S") or (
                arr.ndim >= 3 and axes.endswith("C") and arr.shape[-1] <= 4
            )
            gray = _to_gray(arr, channels_last)
            if gray.ndim < 2:
                raise ImageReadError(f"{path}: unsupported TIFF dimensions {arr.shape} (axes {axes})")
            stacks.append(gray.reshape(-1, *gray.shape[-2:]))
    shapes = {s.shape[1:] for s in stacks}
    if len(shapes) > 1:
        raise ImageReadError(
            f"{path}: TIFF pages have different sizes {sorted(shapes)}; split it into one file per size"
        )
    if len(stacks) == 1:
        return stacks[0]
    if len({s.dtype for s in stacks}) > 1:  # mixed series: float32 each, as read_image always did
        stacks = [s.astype(np.float32, copy=False) for s in stacks]
    return np.concatenate(stacks, axis=0)


def _open_pil(path: Path, max_pixels: int | None):
    """``PIL.Image.open`` (the header only) with the page size checked against ``max_pixels``.

    Pillow refuses images above twice its own limit (``PIL.Image.MAX_IMAGE_PIXELS``, a
    process-wide setting) before we see their size; a ``max_pixels`` above that limit
    raises it to ``max_pixels`` so that ours is the one in force.
    """
    from PIL import Image

    if max_pixels is not None and Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        if max_pixels is None:
            raise
        claimed = re.search(r"\((\d+) pixels\)", str(e))  # "Image size (N pixels) exceeds limit ..."
        raise ImageTooLargeError(path, int(claimed[1]) if claimed else 0, max_pixels) from None
    try:
        check_size(path, im.height, im.width, max_pixels)
    except BaseException:
        im.close()
        raise
    return im


def _pil_array(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """PNG / JPEG / BMP through Pillow directly: (H, W), (H, W, C) or frames (F, H, W[, C]).

    Pillow is what imageio would call for these formats; calling it directly halves the
    decode time of small files, which dominates seginfer on folders of small images.
    Palette images are expanded to RGB(A); 16-bit gray stays 16-bit.
    """
    from PIL import ImageSequence

    with _open_pil(path, max_pixels) as im:
        frames = []
        for frame in ImageSequence.Iterator(im):
            if frame.mode == "P":
                frame = frame.convert("RGBA" if "transparency" in frame.info else "RGB")
            elif frame.mode == "1":
                frame = frame.convert("L")
            frames.append(np.asarray(frame))
    return frames[0] if len(frames) == 1 else np.stack(frames)


def _plain_pages(path: Path, max_pixels: int | None = None) -> np.ndarray:
    arr = _pil_array(path, max_pixels)
    if arr.ndim == 2:
        return _native(arr)[None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return _to_gray(arr, True)[None]
    if arr.ndim == 3:  # e.g. an animated image: frames as pages
        return _native(arr)
    if arr.ndim == 4 and arr.shape[-1] in (1, 2, 3, 4):
        return _to_gray(arr, True)
    raise ImageReadError(f"{path}: unsupported image dimensions {arr.shape}")


def _reason(e: Exception) -> str:
    """A decoder's exception as one line (imageio appends multi-line plugin advice)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as float32 pages (P, H, W); raise ImageReadError if unusable."""
    return read_pages(path).astype(np.float32, copy=False)


def read_pages(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file as pages (P, H, W): gray 8/16-bit integer data as stored
    (uint8, uint16, int16...), anything else (colour, float, 32-bit) as float32.

    The same checks and errors as ``read_image``, whose values it has exactly. A page
    above ``max_pixels`` is refused from the file's header (``ImageTooLargeError``).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise ImageReadError(f"{path}: no such file")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            pages = _tiff_pages(path, max_pixels)
        else:
            pages = _plain_pages(path, max_pixels)
    except ImageReadError:
        raise
    except Exception as e:  # the decoders raise many types; name the file and the cause
        raise ImageReadError(f"{path}: cannot decode image ({_reason(e)})") from e
    check_pages(pages, path)
    return pages


def page_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of one page of an image, from its header alone (nothing decoded);
    ImageReadError when the header cannot be read. Cheap: engines look at a few inputs'
    sizes before choosing how to run them."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                return int(page.imagelength), int(page.imagewidth)
        with _open_pil(path, None) as im:
            return int(im.height), int(im.width)
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(f"{path}: cannot read the image header ({_reason(e)})") from e


def check_pages(pages: np.ndarray, source: str | os.PathLike = "image") -> None:
    """Raise ImageReadError for stacks inference cannot use."""
    if pages.ndim != 3 or pages.shape[0] == 0:
        raise ImageReadError(f"{source}: unsupported image dimensions {pages.shape}")
    h, w = pages.shape[1:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageReadError(f"{source}: image is {h}x{w}, smaller than the minimum {MIN_SIDE}x{MIN_SIDE}")
    if pages.dtype.kind == "f" and not _all_finite(pages):
        raise ImageReadError(f"{source}: image contains NaN or Inf values; replace them before segmenting")


def _all_finite(a: np.ndarray) -> bool:
    """np.isfinite(a).all() without a full-size bool temporary for large images."""
    flat = a.reshape(-1)
    step = 1 << 22
    return all(np.isfinite(flat[i : i + step]).all() for i in range(0, flat.size, step))


def read_mask(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read a ground-truth mask as bool pages (P, H, W): any nonzero value is foreground."""
    return read_mask_values(path, max_pixels) != 0


def read_mask_values(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read a ground-truth mask or label image as pages (P, H, W) with its values as stored.

    Integer label images (one value per object) keep their labels; ``read_mask`` is this
    image ``!= 0``. A colour mask becomes its any-channel-nonzero map (bool).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if tif.series:
                    _check_series(path, tif.series[0], max_pixels)
                arr = tif.asarray()
        else:
            arr = _pil_array(path, max_pixels)
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(f"{path}: cannot decode mask ({_reason(e)})") from e
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4) and arr.shape[0] > 4:  # colour mask; alpha ignored
        arr = arr[..., 0] if arr.shape[-1] == 2 else arr[..., :3].any(axis=-1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ImageReadError(f"{path}: unsupported mask dimensions {arr.shape}")
    return arr


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a bool/0-1 mask (H, W) or (P, H, W) as 0/255 uint8, atomically.

    PNG for one page; TIFF (zlib-compressed, one page per input page) for ``.tif``.
    The PNG is encoded in memory (a mask compresses to little) and written with one
    open/write/close, then renamed: the fewest file-system calls per mask.
    """
    path = os.fspath(path)
    m = np.asarray(mask)
    m = (m if m.dtype == np.bool_ else m != 0).view(np.uint8) * np.uint8(255)  # one 0/255 copy
    if os.path.splitext(path)[1].lower() in TIFF_SUFFIXES:
        import tifffile

        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, m, compression="zlib", photometric="minisblack")
    else:
        if m.ndim == 3:
            if m.shape[0] != 1:
                raise ValueError(f"{path}: {m.shape[0]} pages need a .tif output")
            m = m[0]
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(m).save(buf, format="PNG", compress_level=1)
        write_bytes_atomic(path, buf.getbuffer())


def write_float_tiff(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a float32 map (probabilities) as TIFF, atomically."""
    import tifffile

    a = np.asarray(array, dtype=np.float32)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, a, compression="zlib", photometric="minisblack")


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write an instance label image (H, W) or (P, H, W) as uint16 TIFF (uint32 above 65,535), atomically.

    0 is background. zlib-compressed, one page per input page; Fiji, napari and
    tifffile read it as is.
    """
    import tifffile

    from unsupseg.core.labels import label_dtype

    a = np.asarray(labels)
    a = a.astype(label_dtype(int(a.max()) if a.size else 0), copy=False)
    with atomic_path(path) as tmp:  # zlib level 1: half the time of the default level, 2x the size
        tifffile.imwrite(tmp, a, compression="zlib", compressionargs={"level": 1}, photometric="minisblack")


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a label image written by ``write_labels`` as pages (P, H, W)."""
    arr = read_mask_values(path)
    if arr.dtype.kind not in "iu":
        raise ImageReadError(f"{path}: not an integer label image ({arr.dtype}); write labels with --labels")
    return arr
