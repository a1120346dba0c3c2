"""Torch-free inference: run an unsupseg ONNX model with onnxruntime over images and folders.

``Segmenter`` (api.py) segments arrays; ``run_folder`` (run.py) segments a folder the
way the ``seginfer`` command (cli.py) does. docs/architecture.md maps the modules.
"""

from unsupseg.infer.api import Segmenter, SegmenterConfig
from unsupseg.infer.engine import Engine, LocalEngine
from unsupseg.infer.run import RunOptions, RunResult, run_folder
from unsupseg.infer.runfiles import RunFiles

__all__ = [
    "Engine",
    "LocalEngine",
    "RunFiles",
    "RunOptions",
    "RunResult",
    "Segmenter",
    "SegmenterConfig",
    "run_folder",
]
