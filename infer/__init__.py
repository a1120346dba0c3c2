"""Torch-free inference: run an unsupseg ONNX model with onnxruntime over images and folders.

``Segmenter`` (model/segmenter.py) segments arrays; ``run_folder`` (run.py) segments a folder
the way the ``seginfer`` command (cli/seginfer.py) does. docs/architecture.md maps the modules.
"""

from unsupseg.infer.engines.base import Engine
from unsupseg.infer.engines.local import LocalEngine
from unsupseg.infer.engines.registry import EngineChoice
from unsupseg.infer.model.segmenter import Segmenter, SegmenterConfig
from unsupseg.infer.run import RunOptions, RunResult, run_folder
from unsupseg.infer.runfiles import RunFiles

__all__ = [
    "Engine",
    "EngineChoice",
    "LocalEngine",
    "RunFiles",
    "RunOptions",
    "RunResult",
    "Segmenter",
    "SegmenterConfig",
    "run_folder",
]
