"""Torch-free building blocks shared by training, export and inference.

Image reading and writing, the built-in generated data, per-image normalisation,
IoU/Dice and the model-card schema that travels inside checkpoints and ONNX files.
Nothing here imports torch or onnxruntime.
"""

from unsupseg.core.errors import ImageReadError, ModelFileError, UnsupsegError
from unsupseg.core.metrics import dice, iou, iou_any_polarity
from unsupseg.core.modelcard import ModelCard
from unsupseg.core.normalize import Normalization

__all__ = [
    "ImageReadError",
    "ModelCard",
    "ModelFileError",
    "Normalization",
    "UnsupsegError",
    "dice",
    "iou",
    "iou_any_polarity",
]
