"""Torch-free inference: run an unsupseg ONNX model with onnxruntime over images and folders.

``Segmenter`` (api.py) is the Python entry point; ``seginfer`` (cli.py) the command.
Modules: session.py (onnxruntime session and device choice), tiling.py (padding and
overlapping tiles), pipeline.py (inputs, batching, threaded read/write),
report.py (IoU report, summary.json).
"""

from unsupseg.infer.api import Segmenter

__all__ = ["Segmenter"]
