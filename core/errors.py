"""Typed exceptions. Messages say what went wrong *and* how to fix it."""


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
