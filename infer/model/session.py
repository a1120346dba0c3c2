"""The one wrapper around an onnxruntime session: model loading and provider choice.

``--device`` picks the execution provider:

- ``cpu``: CPUExecutionProvider.
- ``cuda`` / ``cuda:N``: CUDAExecutionProvider on GPU N, or a DeviceError naming the
  cause (no CUDA build of onnxruntime, a missing CUDA/cuDNN library, no driver, no
  such GPU). Never a silent CPU run: onnxruntime itself falls back to the CPU with
  only a log line, so the provider actually bound is checked after the session is made.
- ``auto``: CUDA when it really works, otherwise the CPU; the reason is logged.

CUDA libraries are found with ``onnxruntime.preload_dlls()`` (the nvidia-* wheels
or a compatible torch install). cuDNN uses its heuristic algorithm search: the
exhaustive one re-benchmarks every new input shape, which is slow for folders of
differently sized images. CPU threads: ``threads`` intra-op threads (default:
all usable cores) with spinning disabled, so idle workers do not burn CPU that
the reader and writer threads, or other jobs, need.

I/O binding (on by default with CUDA): the input and output of each batch shape live in
buffers allocated once on the device (``_Bound``) and are bound to the session, so a batch
costs one host-to-device copy in and one copy out, with no allocation per call.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg.core.errors import DeviceError, ModelFileError
from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class DeviceRequest:
    kind: str  # "auto", "cpu" or "cuda"
    index: int = 0  # GPU index for cuda

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind


def parse_device(device: str | DeviceRequest) -> DeviceRequest:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> DeviceRequest (one already parsed is returned as is);
    ValueError otherwise."""
    if isinstance(device, DeviceRequest):
        return device
    d = device.strip().lower()
    if d in ("auto", "cpu", "cuda"):
        return DeviceRequest(d)
    if d.startswith("cuda:") and d[5:].isdigit():
        return DeviceRequest("cuda", int(d[5:]))
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:1)")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _preload_cuda_libraries() -> None:
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)  # added in onnxruntime 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # best effort: the diagnosis below names what is still missing
        log.debug("onnxruntime.preload_dlls() failed: %s", e)


def cuda_problem(index: int = 0) -> str | None:
    """Why CUDA cannot run here, or None when nothing is known to be wrong.

    Checks, in order: a CUDA build of onnxruntime, the NVIDIA driver, the CUDA provider
    library and its CUDA/cuDNN dependencies, and that GPU ``index`` exists.
    """
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return (
            f"this onnxruntime {ort.__version__} build has no CUDA support "
            "(install onnxruntime-gpu instead of onnxruntime)"
        )
    _preload_cuda_libraries()
    if not sys.platform.startswith("linux"):
        return None  # library names differ; rely on the session check
    import ctypes

    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver found (libcuda.so.1 is missing): this machine has no usable GPU"
    capi = Path(ort.__file__).parent / "capi"
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as e:
        return (
            f"the CUDA provider of onnxruntime cannot load: {e} "
            "(install the CUDA and cuDNN versions this onnxruntime-gpu needs, e.g. the nvidia-*-cu* wheels)"
        )
    if libcuda.cuInit(0) != 0:
        return "the NVIDIA driver found no usable GPU (cuInit failed)"
    count = ctypes.c_int(0)
    if libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "the NVIDIA driver reports no GPU"
    if index >= count.value:
        return (
            f"there is no GPU cuda:{index}; this machine has {count.value} (cuda:0 .. cuda:{count.value - 1})"
        )
    return None


class OnnxSession:
    """An onnxruntime session for an unsupseg ONNX file, on the requested device.

    Attributes: ``card`` (ModelCard from the metadata), ``provider`` (the provider
    actually running the graph), ``device`` (human-readable, e.g. "cuda:0" or "cpu"),
    ``fallback_reason`` (why ``auto`` runs on the CPU, None otherwise).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str | DeviceRequest = "auto",
        threads: int | None = None,
        io_binding: bool | None = None,
    ):
        import onnxruntime as ort

        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such model file; pass --model MODEL.onnx")
        request = parse_device(device)
        self.threads = threads or usable_cores()
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # errors only (warnings with -vv): provider fallbacks are reported by us, with the cause
        options.log_severity_level = 2 if log.isEnabledFor(logging.DEBUG) else 3

        self.session = None
        self.fallback_reason: str | None = None  # why auto did not use CUDA
        if request.kind in ("cuda", "auto"):
            problem = cuda_problem(request.index)
            if problem is None:
                session = self._create(options, [self._cuda_provider(request.index), CPU])
                if session.get_providers()[0] == CUDA:
                    self.session, self.device = session, f"cuda:{request.index}"
                else:
                    problem = "onnxruntime could not start its CUDA provider (run with -vv for its log)"
            if self.session is None:
                if request.kind == "cuda":
                    raise DeviceError(
                        f"--device {request} cannot run: {problem}. Use --device cpu (or auto) for the CPU."
                    )
                self.fallback_reason = problem
                log.info("CUDA not used: %s", problem)
        if self.session is None:
            self.session, self.device = self._create(options, [CPU]), "cpu"
        self.provider = self.session.get_providers()[0]
        log.info("onnxruntime %s: %s on %s", ort.__version__, self.provider, self.device)

        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = ModelCard.from_metadata(meta, source=str(self.path))
        self._check_io()
        cuda = self.device.startswith("cuda")
        bind = cuda if io_binding is None else io_binding  # None: where it saves copies, on the GPU
        self._bound = (
            _Bound(self.session, "cuda" if cuda else "cpu", request.index if cuda else 0) if bind else None
        )

    @staticmethod
    def _cuda_provider(index: int) -> tuple[str, dict]:
        return (CUDA, {"device_id": index, "cudnn_conv_algo_search": "HEURISTIC"})

    def _create(self, options, providers):
        import onnxruntime as ort

        try:
            return ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            if isinstance(e, ort.capi.onnxruntime_pybind11_state.EPFail):
                raise DeviceError(f"{self.path}: execution provider failed: {e}") from e
            raise ModelFileError(
                f"{self.path}: onnxruntime cannot load this model ({type(e).__name__}: {e}); "
                "re-export it with `segexport MODEL.pt MODEL.onnx`"
            ) from e

    def _check_io(self) -> None:
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        channels = inputs[0].shape[1] if len(inputs) == 1 and len(inputs[0].shape) == 4 else None
        bad_channels = isinstance(channels, int) and channels != 1  # a symbolic dimension is checked at run
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(inputs[0].shape) != 4 or bad_channels:
            got = [(i.name, i.shape) for i in inputs]
            raise ModelFileError(
                f"{self.path}: expected one input {INPUT_NAME!r} of shape (N, 1, H, W), got {got}; "
                "export the model with `segexport`"
            )
        if OUTPUT_NAME not in outputs:
            raise ModelFileError(f"{self.path}: no output {OUTPUT_NAME!r} (outputs: {outputs})")

    @property
    def io_binding(self) -> bool:
        return self._bound is not None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) float32, H and W multiples of card.size_multiple -> (N, 1, H, W) probabilities."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._bound is not None:
            return self._bound.run(x)
        (prob,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return prob


class _Bound:
    """I/O binding: device buffers for the input and output of the last few batch shapes.

    ``run`` copies the batch into the input buffer (``update_inplace``), runs the bound
    session and copies the output buffer back; buffers are allocated once per shape
    (folders have few shapes: full batches and a last, shorter one). One call at a time.
    """

    SHAPES = 8  # batch shapes whose buffers are kept

    def __init__(self, session, device: str, index: int):
        self.session, self.device, self.index = session, device, index
        self.buffers: OrderedDict[tuple, tuple] = OrderedDict()  # shape -> (binding, input, output)
        self.lock = threading.Lock()

    def _for(self, shape: tuple) -> tuple:
        import onnxruntime as ort

        found = self.buffers.get(shape)
        if found is not None:
            self.buffers.move_to_end(shape)
            return found
        x = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device, self.index)
        y = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device, self.index)
        io = self.session.io_binding()
        io.bind_ortvalue_input(INPUT_NAME, x)
        io.bind_ortvalue_output(OUTPUT_NAME, y)
        self.buffers[shape] = found = (io, x, y)
        if len(self.buffers) > self.SHAPES:
            self.buffers.popitem(last=False)
        return found

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            io, xv, yv = self._for(x.shape)
            xv.update_inplace(x)
            self.session.run_with_iobinding(io)
            return np.array(yv.numpy(), copy=True)  # on the CPU numpy() is a view of the buffer
