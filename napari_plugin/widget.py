"""The dock widget: segment the selected Image layer into a Labels layer; adapt the model to the open
images; save the adapted model.

The work runs in napari's worker threads (``create_worker``), so the viewer stays responsive: the
segmentation yields after every page (the progress bar moves, Cancel stops it there), the adaptation
yields its log lines (the criterion of each snapshot among them) from its child process. Errors the
command line would report (a model file, a device, an image) appear as napari error notifications
with seginfer's words, never as a traceback; only a bug in the code gives one.

The widget's work is ``segment.py``'s, which is seginfer's: the labels equal ``seginfer --labels``'s
for the same image, model and options (docs/napari.md).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from unsupseg.core.errors import UnsupsegError
from unsupseg.napari.segment import (
    DEVICES,
    FOREGROUND_CHOICES,
    Options,
    adapt_layers,
    features,
    layer_pages,
)
from unsupseg.napari.segment import segment_pages as _segment_pages

# What the command line reports as a message (usage, input, model, device, output): shown as a
# notification with those words. Anything else is a bug and keeps napari's traceback.
REPORTED = (UnsupsegError, ValueError, OSError, MemoryError)
STEP = re.compile(r"^step (\d+)/(\d+): criterion")  # train/adapt.py's line for each snapshot


class _Failed:
    """A worker's result when the work stopped on a reported error (its message)."""

    def __init__(self, error: BaseException):
        self.message = str(error) or type(error).__name__


class SegmentWidget(Container):
    """Segment an Image layer with an unsupseg model (seginfer's options of the same names)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.model = LineEdit(label="model", value="", tooltip="an .onnx file; empty: the packaged model")
        self.browse = PushButton(text="Choose model file…")
        self.device = ComboBox(label="device", choices=DEVICES, value="cpu")
        self.threshold = FloatSpinBox(label="threshold", min=0.0, max=0.99, step=0.05, value=0.0)
        self.threshold.native.setSpecialValueText("model's")  # 0: the model card's (no --threshold)
        self.foreground = ComboBox(label="foreground", choices=FOREGROUND_CHOICES, value="model's")
        self.split = CheckBox(text="split touching objects")
        self.min_size = SpinBox(label="min size (px)", min=0, max=10**9, value=0)
        self.labels_3d = CheckBox(text="label a stack as one volume")
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        self.adapt_button = PushButton(text="Adapt to these images")
        self.save_button = PushButton(text="Save model as ONNX…", enabled=False)
        self.log = TextEdit(value="", label="adaptation")
        self.log.native.setReadOnly(True)
        self.extend(
            [
                self.image,
                self.model,
                self.browse,
                self.device,
                self.threshold,
                self.foreground,
                self.split,
                self.min_size,
                self.labels_3d,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.status,
                self.adapt_button,
                self.save_button,
                self.log,
            ]
        )
        self.worker = None  # the running worker (segmentation or adaptation), None when idle
        self.adapted: Path | None = None  # the model the last adaptation wrote
        self._sessions: dict[tuple, object] = {}  # (model, mtime, device) -> OnnxSession, loaded once
        self._process = None  # the adaptation's child process while it runs
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.browse.changed.connect(self._choose_model)
        self.adapt_button.changed.connect(self.adapt)
        self.save_button.changed.connect(self._choose_save)

    # -- choices ----------------------------------------------------------------------------------
    def options(self) -> Options:
        """The widget's choices as seginfer's options."""
        model = self.model.value.strip()
        foreground = self.foreground.value
        return Options(
            model=model or None,
            device=self.device.value,
            threshold=self.threshold.value or None,
            foreground=None if foreground == "model's" else foreground,
            split=self.split.value,
            min_size=int(self.min_size.value),
            labels_3d=self.labels_3d.value,
        )

    def _choose_model(self, _=None) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "unsupseg model", "", "ONNX model (*.onnx)")
        if path:
            self.model.value = path

    # -- segmentation -----------------------------------------------------------------------------
    def run(self, _=None):
        """Segment the selected Image layer in a worker thread; returns the worker (None if refused)."""
        layer = self.image.value
        if layer is None:
            show_error("select an Image layer to segment (open an image, or File > Open Sample > unsupseg)")
            return None
        if self.worker is not None:
            show_error("unsupseg is still working: wait for it, or press Cancel")
            return None
        worker = create_worker(self._segment, self.options(), layer.data, layer.rgb, layer.name)
        worker.yielded.connect(self._progress)
        worker.returned.connect(lambda result: self._segmented(layer, result))
        worker.aborted.connect(lambda: self._say("cancelled: no labels written"))
        return self._start(worker, f"segmenting {layer.name}…")

    def _segment(self, options: Options, data, rgb: bool, name: str):
        """Worker thread: a generator (one yield per page); its return value goes to ``_segmented``."""
        try:
            pages = layer_pages(data, rgb, name)
            config = options.config()
            segmenter = config.build(session=self._session(config))
            labels = yield from _segment_pages(segmenter, pages, name)
            table = features(labels, pages)
        except REPORTED as e:
            return _Failed(e)
        return (labels[0] if _is_2d(data, rgb) else labels), table

    def _session(self, config):
        """The onnxruntime session of the chosen model and device, loaded once and kept (a Segmenter
        built on it costs nothing more), so changing a threshold does not reload the model."""
        from unsupseg.infer.model.segmenter import default_model_path
        from unsupseg.infer.model.session import OnnxSession

        path = Path(config.model) if config.model else default_model_path()
        key = (str(path), path.stat().st_mtime_ns if path.is_file() else None, str(config.device))
        if key not in self._sessions:
            self._sessions.clear()  # one model at a time in memory
            self._sessions[key] = OnnxSession(path, device=config.device, threads=config.threads)
        return self._sessions[key]

    def _progress(self, step: tuple[int, int]) -> None:
        done, total = step
        self.progress.max = total
        self.progress.value = done

    def _segmented(self, layer, result) -> None:
        if isinstance(result, _Failed):
            show_error(result.message)
            self._say(f"failed: {result.message}")
            return
        labels, table = result
        self.progress.value = self.progress.max
        name = f"{layer.name} labels"
        if name in self.viewer.layers:  # a new run replaces the last one's labels
            out = self.viewer.layers[name]
            out.data = labels
            out.features = table or {}
        else:
            self.viewer.add_labels(
                labels, name=name, scale=layer.scale, translate=layer.translate, features=table or {}
            )
        self._say(f"{int(labels.max())} objects" if labels.ndim == 2 else f"{len(labels)} pages labelled")

    # -- adaptation -------------------------------------------------------------------------------
    def adapt(self, _=None):
        """Adapt the packaged model to the open Image layers in a worker thread (as seginfer --adapt
        does to a folder); the widget then uses the adapted model. Returns the worker."""
        layers = [
            (lyr.name, lyr.data, lyr.rgb)
            for lyr in self.viewer.layers
            if isinstance(lyr, napari.layers.Image)
        ]
        if not layers:
            show_error("open the images to adapt to as Image layers first")
            return None
        if self.worker is not None:
            show_error("unsupseg is still working: wait for it, or press Cancel")
            return None
        out = Path(tempfile.mkdtemp(prefix="unsupseg-adapted-")) / "adapted.onnx"
        self.log.value = ""
        worker = create_worker(self._adapt, layers, out, self.device.value)
        worker.yielded.connect(self._adapt_line)
        worker.returned.connect(lambda result: self._adapted(out, result))
        worker.aborted.connect(lambda: self._say("adaptation cancelled: the model is unchanged"))
        self.progress.max, self.progress.value = 0, 0  # busy until the first snapshot's line
        return self._start(worker, f"adapting to {len(layers)} image layer(s)…")

    def _adapt(self, layers, out: Path, device: str):
        """Worker thread: the adaptation (a child process); yields its log lines as they come."""
        try:
            return (yield from adapt_layers(layers, out, device, running=self._running))
        except REPORTED as e:
            return _Failed(e)
        finally:
            self._process = None

    def _running(self, process) -> None:
        self._process = process

    def _adapt_line(self, line: str) -> None:
        self.log.value = f"{self.log.value}\n{line}" if self.log.value else line
        step = STEP.match(line)
        if step:
            self.progress.max, self.progress.value = int(step.group(2)), int(step.group(1))

    def _adapted(self, out: Path, result) -> None:
        if isinstance(result, _Failed):
            show_error(result.message)
            self._say(f"adaptation failed: {result.message}")
            return
        self.adapted = out
        self.model.value = str(out)
        self.save_button.enabled = True
        record = result
        rows = [f"step {s['step']}: criterion {s['criterion']:.5f}" for s in record["snapshots"] if s["step"]]
        chosen = f"; chose step {record['chosen_step']}" if record["snapshots"] else ""
        self._say(f"adapted ({record['network']}{chosen}); segmenting now uses it")
        if rows:
            self.log.value = self.log.value + "\n" + "\n".join(rows)
        show_info(f"unsupseg: adapted model {out} ({record['network']})")

    def _choose_save(self, _=None) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "save the adapted model", "adapted.onnx", "*.onnx")
        if path:
            self.save_model(path)

    def save_model(self, path: str | os.PathLike) -> Path | None:
        """Copy the adapted model to ``path`` (atomically): seginfer --model PATH runs it."""
        from unsupseg.core.atomic import atomic_path

        if self.adapted is None:
            show_error("nothing to save yet: press 'Adapt to these images' first")
            return None
        path = Path(path)
        try:
            with atomic_path(path) as tmp:
                shutil.copyfile(self.adapted, tmp)
        except OSError as e:
            show_error(f"{path}: cannot write the model ({e.strerror or e})")
            return None
        self._say(f"saved {path} (seginfer --model {path})")
        return path

    # -- workers ----------------------------------------------------------------------------------
    def _start(self, worker, what: str):
        self.worker = worker
        worker.finished.connect(self._idle)
        self.run_button.enabled = self.adapt_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self._say(what)
        worker.start()
        return worker

    def cancel(self, _=None) -> None:
        """Stop the running work at its next step (a page; an adaptation step): nothing is added."""
        if self.worker is not None:
            self.worker.quit()
        process = self._process
        if process is not None and process.poll() is None:  # the adaptation: stop its process now
            process.terminate()

    def _idle(self) -> None:
        self.worker = None
        self.run_button.enabled = self.adapt_button.enabled = True
        self.cancel_button.enabled = False

    def _say(self, text: str) -> None:
        self.status.value = text


def _is_2d(data, rgb: bool) -> bool:
    shape = (data[0] if isinstance(data, list | tuple) else data).shape
    return len(shape) - (1 if rgb else 0) == 2
