"""Imported once by the fork server of ``--engine processes`` (processes.py) before it forks
any worker, so that the one-time costs each worker would otherwise pay on start are paid once and
inherited by every fork: the worker module and what it imports, and the ``dlopen`` of
onnxruntime's CUDA libraries that the device check makes (about 0.1 s per process here, most of a
worker's start-up on the CPU). Only libraries are loaded: no CUDA context is created, so forking
afterwards is safe. Used when the device is ``auto`` or ``cuda``; with ``cpu`` nothing looks for
CUDA and the fork server imports the worker module alone.
"""

from unsupseg.infer.engines import worker  # noqa: F401
from unsupseg.infer.model.session import _preload_cuda_libraries

_preload_cuda_libraries()
