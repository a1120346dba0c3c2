"""Typed exceptions. Messages say what went wrong *and* how to fix it."""

import math


class UnsupsegError(Exception):
    """Base class for every error the package raises on purpose."""


class ImageReadError(UnsupsegError):
    """An input image could not be read or is not usable (empty, NaN, too small...)."""


class ModelFileError(UnsupsegError):
    """A checkpoint or ONNX file is missing, corrupt or of an unknown kind."""


class OutputExistsError(UnsupsegError):
    """An output exists and the caller did not ask to overwrite it."""


class DeviceError(UnsupsegError):
    """The requested compute device (e.g. CUDA) cannot run here; the message names the cause."""


class OutputError(UnsupsegError):
    """The run's output cannot be written (file system full, read-only, removed, permission
    denied): a problem of the output, not of one input, so the run stops."""


class DataError(UnsupsegError):
    """Training data missing or malformed; the message names the file and the fix."""


class ImageTooLargeError(ImageReadError):
    """An image's header claims more pixels per page than the reader's limit (a guard against
    decompression bombs); raised before its pixels are allocated."""

    def __init__(self, path, pixels: int, limit: int, size: tuple[int, int] | None = None):
        self.path, self.pixels, self.limit, self.size = path, pixels, limit, size
        dims = f"{size[1]}x{size[0]} pixels, " if size else ""
        need = f"{math.ceil(pixels / 1e5) / 10:g}"  # rounded up to 0.1: the suggested limit admits it
        super().__init__(
            f"{path}: image is {dims}{_megapixels(pixels)} megapixels, above the limit of "
            f"{_megapixels(limit)} megapixels that guards against decompression bombs; if it is a real "
            f"image, raise the limit with --max-megapixels {need} (seginfer runs it in tiles)"
        )


def _megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:.4g}"
