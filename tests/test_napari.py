"""The napari plugin (``unsupseg[napari]``, napari_plugin/), in a real viewer on an X server.

- the widget on a real image gives the labels ``seginfer --labels`` writes for the same model and
  options (and objects.csv's measurements as the layer's features); on a stack of pages too, with
  one progress step per page; on an image large enough for seginfer's tiles (slow);
- Cancel stops it between pages and adds nothing; a model file that does not exist, and CUDA where
  it cannot run, are error notifications with seginfer's words (no traceback);
- the reader opens a real seginfer output folder (images, label images with objects.csv as their
  features; masks when there are no labels); the writer writes seginfer's uint16 TIFF, read back
  equal; the sample data; ``npe2 validate unsupseg``;
- "Adapt to these images" on real layers, then the widget segments with the adapted model as
  ``seginfer --model adapted.onnx`` does, and saves it (heavy: make test-heavy, CI).

napari's canvas needs OpenGL, which ``QT_QPA_PLATFORM=offscreen`` does not give: the pytest-xvfb
plugin (in the napari extra) starts Xvfb for the session when it is installed
(``apt-get install xvfb xauth libgl1-mesa-dri``; .ci/run installs it). Without an X display these
tests skip, naming that command, unless ``UNSUPSEG_REQUIRE_DISPLAY=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason='the napari plugin\'s tests need pip install "unsupseg[napari]"')
pytest.importorskip("pytestqt", reason='the napari plugin\'s tests need pip install "unsupseg[napari]"')
NO_DISPLAY = (
    "no X display for napari's OpenGL canvas: apt-get install xvfb xauth libgl1-mesa-dri "
    "(pytest-xvfb then starts one)"
)
if not os.environ.get("DISPLAY"):
    if os.environ.get("UNSUPSEG_REQUIRE_DISPLAY") == "1":
        pytest.fail(NO_DISPLAY, pytrace=False)
    pytest.skip(NO_DISPLAY, allow_module_level=True)

import npe2  # noqa: E402
import tifffile  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from realimages import real_sets  # noqa: E402

from unsupseg.core.imageio import read_labels, read_pages  # noqa: E402
from unsupseg.infer.cli.seginfer import main as seginfer  # noqa: E402

BIN = Path(sys.executable).parent


def nuclei() -> list[Path]:
    """Real fluorescence nuclei: the shared set, else stardist's image (realimages.py)."""
    sets = real_sets()
    return [image for image, _ in sets.get("nuclei") or sets["stardist"]]


def run_seginfer(*args) -> None:
    r = CliRunner().invoke(seginfer, [*map(str, args), "--device", "cpu", "--engine", "local", "-q"])
    assert r.exit_code == 0, r.output


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer):
    from unsupseg.napari.widget import SegmentWidget

    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


@pytest.fixture
def errors():
    """The error notifications napari shows while the test runs (their messages)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen = []

    def keep(event):
        if event.severity == NotificationSeverity.ERROR:
            seen.append(event)

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)


def segment(qtbot, widget, monkeypatch, timeout=60_000):
    """Press Segment and wait until the widget is idle again; returns the progress steps it showed."""
    from unsupseg.napari.widget import SegmentWidget

    steps, show = [], SegmentWidget._progress
    monkeypatch.setattr(SegmentWidget, "_progress", lambda self, step: (steps.append(step), show(self, step)))
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)  # the state: no signal to miss
    return steps


def test_the_widget_gives_seginfers_labels_on_a_real_image(
    qtbot, viewer, widget, tmp_path, errors, monkeypatch
):
    path = nuclei()[0]
    run_seginfer("--input", path, "--output", tmp_path / "out", "--labels", "--split",
                 "--min-size", 20, "--threshold", 0.45)  # fmt: skip
    viewer.add_image(read_pages(path)[0], name="nuclei")
    widget.split.value, widget.min_size.value, widget.threshold.value = True, 20, 0.45
    segment(qtbot, widget, monkeypatch)
    assert not errors
    layer = viewer.layers["nuclei labels"]
    expected = read_labels(tmp_path / "out" / f"{path.stem}_labels.tif")[0]
    assert layer.data.shape == expected.shape and expected.max() > 3
    np.testing.assert_array_equal(layer.data, expected)
    with open(tmp_path / "out" / "objects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(layer.features["index"]) == [int(r["label"]) for r in rows]
    for column in ("area", "centroid_y", "solidity", "mean_intensity"):
        np.testing.assert_allclose(layer.features[column], [float(r[column]) for r in rows], rtol=1e-5)


def test_a_stack_is_segmented_page_by_page_as_seginfer_does(qtbot, viewer, widget, tmp_path, monkeypatch):
    pages = np.stack([read_pages(p)[0][:200, :200] for p in nuclei()[:3]])
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "stack.tif", pages, photometric="minisblack")
    run_seginfer("--input", tmp_path / "in" / "stack.tif", "--output", tmp_path / "out", "--labels")
    viewer.add_image(pages, name="stack")
    steps = segment(qtbot, widget, monkeypatch)
    assert steps == [(k, 4) for k in range(4)]  # one step per page (the last: structure and labels)
    expected = read_labels(tmp_path / "out" / "stack_labels.tif")
    np.testing.assert_array_equal(viewer.layers["stack labels"].data, expected)


@pytest.mark.slow
def test_a_large_image_runs_in_seginfers_tiles(qtbot, viewer, widget, tmp_path, monkeypatch):
    from unsupseg.infer.model.segmenter import Segmenter

    page = read_pages(nuclei()[0])[0]
    large = np.tile(page, (5, 2))[:1040, :320]  # taller than the 1024-pixel tile: seginfer cuts it in tiles
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "large.tif", large, photometric="minisblack")
    run_seginfer("--input", tmp_path / "in", "--output", tmp_path / "out", "--labels", "--split")
    viewer.add_image(large, name="large")
    widget.split.value = True
    segment(qtbot, widget, monkeypatch)
    assert not Segmenter(device="cpu").grid(*large.shape).is_single
    expected = read_labels(tmp_path / "out" / "large_labels.tif")[0]
    np.testing.assert_array_equal(viewer.layers["large labels"].data, expected)


def test_cancel_stops_between_pages_and_adds_nothing(qtbot, viewer, widget, monkeypatch):
    from unsupseg.napari.widget import SegmentWidget

    page = read_pages(nuclei()[0])[0]
    viewer.add_image(np.stack([page] * 40), name="long stack")
    steps, show = [], SegmentWidget._progress
    monkeypatch.setattr(SegmentWidget, "_progress", lambda self, step: (steps.append(step), show(self, step)))
    worker = widget.run()
    aborted = []
    worker.aborted.connect(lambda: aborted.append(True))
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert aborted and "long stack labels" not in viewer.layers
    assert len(steps) < 41 and "cancelled" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_a_bad_model_file_is_an_error_notification_with_seginfers_words(
    qtbot, viewer, widget, tmp_path, errors, monkeypatch
):
    bad = tmp_path / "model.onnx"
    bad.write_text("not a model")
    viewer.add_image(read_pages(nuclei()[0])[0], name="nuclei")
    widget.model.value = str(bad)
    segment(qtbot, widget, monkeypatch)
    r = CliRunner().invoke(seginfer, ["--input", str(nuclei()[0]), "--output", str(tmp_path / "o"),
                                      "--model", str(bad), "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 2
    assert len(errors) == 1 and errors[0].message.startswith(f"{bad}: onnxruntime cannot load this model")
    assert " ".join(errors[0].message.split()) in " ".join(r.output.split())  # the command line's words
    assert type(errors[0]).__name__ == "Notification"  # no ErrorNotification: no traceback to show
    assert "nuclei labels" not in viewer.layers


def test_cuda_that_cannot_run_is_an_error_not_a_cpu_run(qtbot, viewer, widget, errors, monkeypatch):
    from unsupseg.infer.model.session import cuda_problem

    viewer.add_image(read_pages(nuclei()[0])[0], name="nuclei")
    widget.device.value = "cuda"
    segment(qtbot, widget, monkeypatch)
    problem = cuda_problem(0)
    if problem is None:  # a machine with a working GPU: it runs there
        assert not errors and "nuclei labels" in viewer.layers
    else:
        assert [e.message for e in errors] == [
            f"--device cuda:0 cannot run: {problem}. Use --device cpu (or auto) for the CPU."
        ]
        assert "nuclei labels" not in viewer.layers


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A real seginfer output folder: the nuclei images with their labels and objects.csv."""
    out = tmp_path_factory.mktemp("napari_run") / "out"
    images = nuclei()[:3]
    listing = out.parent / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    run_seginfer("--input", listing, "--output", out, "--labels", "--split")
    return out


def test_the_reader_opens_a_seginfer_folder_with_its_objects(viewer, run_folder):
    layers = viewer.open(run_folder, plugin="unsupseg")
    names = [layer.name for layer in layers]
    summary = json.loads((run_folder / "summary.json").read_text())
    inputs = [Path(r["input"]) for r in summary["metric_per_case"]]
    assert names == [n for p in inputs for n in (p.stem, f"{p.stem} labels")]
    with open(run_folder / "objects.csv", newline="") as f:
        objects = list(csv.DictReader(f))
    for path in inputs:
        image, labels = viewer.layers[path.stem], viewer.layers[f"{path.stem} labels"]
        np.testing.assert_array_equal(image.data, read_pages(path)[0])
        np.testing.assert_array_equal(labels.data, read_labels(run_folder / f"{path.stem}_labels.tif")[0])
        rows = [r for r in objects if r["image"] == str(path)]
        assert len(rows) == int(labels.data.max()) > 0
        assert list(labels.features["index"]) == [int(r["label"]) for r in rows]
        np.testing.assert_allclose(labels.features["area"], [int(r["area"]) for r in rows])


def test_the_reader_shows_masks_without_labels_and_leaves_other_folders(viewer, tmp_path):
    from unsupseg.napari.io import get_reader

    path = nuclei()[0]
    run_seginfer("--input", path, "--output", tmp_path / "out")
    (layer_data,) = [d for d in get_reader(str(tmp_path / "out"))(str(tmp_path / "out")) if d[2] == "labels"]
    data, meta, _ = layer_data
    assert meta["name"] == f"{path.stem} mask" and set(np.unique(data)) <= {0, 1} and data.any()
    assert get_reader(str(tmp_path)) is None  # no summary.json: not a seginfer folder
    assert get_reader(str(path)) is None
    readers = npe2.PluginManager.instance().iter_compatible_readers
    assert "unsupseg" in {r.plugin_name for r in readers([str(tmp_path / "out")])}
    assert "unsupseg" not in {r.plugin_name for r in readers([str(path)])}  # napari never asks for files


@pytest.mark.parametrize("shape", [(64, 80), (3, 64, 80)])
def test_the_writer_writes_seginfers_label_tiff(viewer, tmp_path, shape):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 300, size=shape).astype(np.int32)
    layer = viewer.add_labels(labels, name="labels")
    path = tmp_path / "labels.tif"
    layer.save(str(path), plugin="unsupseg")
    back = tifffile.imread(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_array_equal(read_labels(path), labels.reshape((-1, *shape[-2:])))


def test_the_sample_is_stardists_nuclei(viewer):
    (layer,) = viewer.open_sample("unsupseg", "nuclei")
    assert layer.data.shape == (512, 512) and layer.data.dtype == np.uint16


def test_npe2_validates_the_manifest():
    r = subprocess.run(
        [str(BIN / "npe2"), "validate", "unsupseg"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.heavy  # torch's import in the child process and the adaptation: 15 to 50 s here
def test_adapt_to_the_open_images_then_segment_and_save(qtbot, viewer, widget, tmp_path, errors, monkeypatch):
    pytest.importorskip("torch", reason='adapting needs pip install "unsupseg[train]"')
    images = nuclei()[:2]
    for path in images:
        viewer.add_image(read_pages(path)[0], name=path.stem)
    assert widget.adapt() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert not errors
    assert widget.adapted is not None and widget.adapted.is_file()
    assert widget.model.value == str(widget.adapted) and "adapted" in widget.status.value
    assert "structure" in widget.log.value  # the adaptation's own lines
    saved = widget.save_model(tmp_path / "mine.onnx")
    assert saved.read_bytes() == widget.adapted.read_bytes()
    widget.image.value = viewer.layers[images[0].stem]
    segment(qtbot, widget, monkeypatch)
    run_seginfer("--input", images[0], "--output", tmp_path / "out", "--labels", "--model", saved)
    np.testing.assert_array_equal(
        viewer.layers[f"{images[0].stem} labels"].data,
        read_labels(tmp_path / "out" / f"{images[0].stem}_labels.tif")[0],
    )
