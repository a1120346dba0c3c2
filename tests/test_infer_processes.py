"""seginfer --engine processes: the same masks, summary.json, report.csv and run-level behaviour as
the local engine, with worker processes that may die, and the engine seginfer picks by default."""

from __future__ import annotations

import json
import logging
import shutil

import crash_writer
import numpy as np
import pytest
import tifffile
from test_infer_cli import _engine_args, _engine_folder, _make_folder, _mask_files, _run, _same_run_files

from unsupseg.infer import RunOptions, SegmenterConfig, run_folder
from unsupseg.infer.engines.local import LocalEngine
from unsupseg.infer.engines.processes import ProcessEngine
from unsupseg.infer.errors import EngineError
from unsupseg.infer.writers import WRITERS

N_IMAGES = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory, infer_disk_image):
    """12 images with masks (two sizes, one sub-folder) and one unreadable file."""
    return _engine_folder(tmp_path_factory.mktemp("procs"), infer_disk_image, N_IMAGES)


@pytest.fixture(scope="module")
def local_run(folder, infer_model_path):
    root, _ = folder
    out = root / "local"
    r = _run([*_engine_args(root, out), "--engine", "local"], infer_model_path)
    assert r.exit_code == 1, r.output
    return out


def _options(model, **kw) -> RunOptions:
    return RunOptions(segmenter=SegmenterConfig(model=model, device="cpu", threads=1), **kw)


# -- the same files as the local engine ----------------------------------------------------------
def test_processes_equal_local(folder, local_run, infer_model_path, tmp_path):
    root, bad = folder
    out = tmp_path / "procs"
    r = _run([*_engine_args(root, out), "--engine", "processes", "--workers", "2"], infer_model_path)
    assert r.exit_code == 1, r.output
    assert str(bad) in r.stderr  # the bad file failed alone, named, the rest were written
    assert len(_mask_files(out)) == N_IMAGES
    _same_run_files(out, local_run)
    manifest = json.loads((out / "seginfer.json").read_text())
    engine = manifest["engine"]  # what differs from a local run's manifest, on purpose
    assert (engine["name"], engine["workers"], engine["threads_per_worker"]) == ("processes", 2, 1)
    cpu = engine["cpu_s"]
    assert engine["worker_deaths"] == 0 and 0 < cpu["workers_start"] < cpu["workers"]
    assert manifest["args"]["engine"] == "processes" and manifest["args"]["workers"] == 2
    assert not [p for p in out.rglob(".*")]  # no temporary file, spool or lock left


def test_processes_labels_rois_prob_equal_local(folder, infer_model_path, tmp_path):
    """Every writer works in the workers: label images, ROIs, probabilities, objects.csv rows."""
    root, _ = folder
    flags = ["--labels", "--split", "--rois", "--save-prob"]
    local, procs = tmp_path / "local", tmp_path / "procs"
    assert _run([*_engine_args(root, local, *flags), "--engine", "local"], infer_model_path).exit_code == 1
    r = _run(
        [*_engine_args(root, procs, *flags), "--engine", "processes", "--workers", "2"], infer_model_path
    )
    assert r.exit_code == 1, r.output
    assert len(_mask_files(procs)) == 3 * N_IMAGES  # masks, label images, probabilities
    _same_run_files(procs, local, ("summary.json", "report.csv", "objects.csv"))
    rois = sorted(p.relative_to(procs) for p in procs.rglob("*_rois.zip"))
    assert rois == sorted(p.relative_to(local) for p in local.rglob("*_rois.zip")) and rois


def test_processes_skip_existing_resumes_like_local(folder, local_run, infer_model_path, tmp_path):
    root, _ = folder
    runs = {}
    for engine in ("local", "processes"):
        out = runs[engine] = tmp_path / engine
        shutil.copytree(local_run, out)
        for p in list(out.rglob("img[0-2].png")):  # an interrupted run: some masks are missing
            p.unlink()
        (out / "summary.json").unlink()
        r = _run(
            [*_engine_args(root, out, "--skip-existing"), "--engine", engine, "--workers", "2"][
                : -2 if engine == "local" else None
            ],
            infer_model_path,
        )
        assert r.exit_code == 1, r.output
    _same_run_files(runs["processes"], runs["local"])
    assert _mask_files(runs["processes"]) == _mask_files(local_run)
    s = json.loads((runs["processes"] / "summary.json").read_text())
    assert (s["n_images"], s["n_written"], s["n_skipped"], s["n_failed"]) == (N_IMAGES + 1, 6, 6, 1)


@pytest.mark.parametrize("serve", [False, True], ids=["session-per-worker", "served-model"])
def test_tiled_and_multipage_images_equal_local(tmp_path, infer_model_path, infer_disk_image, serve):
    """Tiled pages and multi-page TIFFs, with a session in each worker and with the model served by
    the main process (the GPU path, run here on the CPU): the local engine's bytes."""
    _make_folder(tmp_path / "in", infer_disk_image, n=5, shape=(150, 170))
    pages = np.stack([infer_disk_image(64, 48, seed=s)[0] for s in (7, 8, 9)])
    stack = (np.clip(pages, 0, 1) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in" / "stack.tif", stack, photometric="minisblack")
    kw = {"outputs": ("prob",), "fmt": "tif"}
    opts = RunOptions(
        segmenter=SegmenterConfig(
            model=infer_model_path, device="cpu", threads=1, tile_size=64, tile_overlap=16, batch_size=3
        ),
        **kw,
    )
    ref = run_folder(tmp_path / "in", tmp_path / "local", opts, engine=LocalEngine())
    engine = ProcessEngine(2, serve=serve)
    got = run_folder(tmp_path / "in", tmp_path / "procs", opts, engine=engine)
    assert got.summary == {**ref.summary} and got.n_failed == 0
    assert _mask_files(tmp_path / "procs") == _mask_files(tmp_path / "local")
    described = json.loads((tmp_path / "procs" / "seginfer.json").read_text())["engine"]
    assert described["model"] == ("served by the main process" if serve else "one session per worker")


# -- workers that die -----------------------------------------------------------------------------
@pytest.fixture
def crash(monkeypatch):
    """settings -> RunOptions outputs that add tests/crash_writer.py's writer with those settings."""
    monkeypatch.setitem(WRITERS, "crash", crash_writer.CrashWriter)

    def use(**settings) -> tuple[str, ...]:
        monkeypatch.setattr(crash_writer, "SETTINGS", settings)
        return ("crash",)

    return use


@pytest.fixture
def many(tmp_path, infer_disk_image, infer_model_path):
    """40 images and the local engine's run of them."""
    _make_folder(tmp_path / "in", infer_disk_image, n=40, shape=(32, 40))
    run_folder(tmp_path / "in", tmp_path / "local", _options(infer_model_path), engine=LocalEngine())
    return tmp_path / "in", tmp_path / "local"


def test_a_killed_worker_is_replaced_and_its_inputs_retried(tmp_path, many, infer_model_path, crash, caplog):
    images, local = many
    outputs = crash(marker=str(tmp_path / "killed"), after=3)  # one worker kills itself on its 3rd write
    engine = ProcessEngine(2)
    caplog.set_level(logging.WARNING, logger="unsupseg.infer.engines")
    result = run_folder(
        images, tmp_path / "procs", _options(infer_model_path, outputs=outputs), engine=engine
    )
    assert (tmp_path / "killed").exists()
    assert result.n_failed == 0 and result.summary["n_written"] == 40
    _same_run_files(tmp_path / "procs", local, ("summary.json",))
    stats = json.loads((tmp_path / "procs" / "seginfer.json").read_text())["engine"]
    assert stats["worker_deaths"] == 1 and stats["retried"] >= 1
    assert "killed by SIGKILL" in caplog.text and "are retried" in caplog.text


def test_an_input_that_kills_its_worker_twice_fails_alone(tmp_path, many, infer_model_path, crash):
    images, local = many
    outputs = crash(poison="img17.")
    result = run_folder(
        images, tmp_path / "procs", _options(infer_model_path, outputs=outputs), engine=ProcessEngine(2)
    )
    assert result.n_failed == 1 and result.summary["n_written"] == 39
    (failed,) = result.summary["failed"]
    assert failed["input"].endswith("img17.png") and "died twice (killed by SIGKILL" in failed["error"]
    want = {k: v for k, v in _mask_files(local).items() if k != "img17.png"}
    assert _mask_files(tmp_path / "procs") == want
    stats = json.loads((tmp_path / "procs" / "seginfer.json").read_text())["engine"]
    assert stats["worker_deaths"] == 2  # once with its chunk, once alone


def test_workers_that_keep_dying_stop_the_run(tmp_path, many, infer_model_path, crash):
    images, _ = many
    outputs = crash(poison="img")  # every input kills its worker
    with pytest.raises(EngineError, match="worker processes died 2 times"):
        run_folder(
            images,
            tmp_path / "procs",
            _options(infer_model_path, outputs=outputs),
            engine=ProcessEngine(2, max_restarts=1),
        )
    summary = json.loads((tmp_path / "procs" / "summary.json").read_text())
    assert "worker processes died" in summary["stopped"]


class _Unreadable(crash_writer.CrashWriter):
    """A writer that cannot be unpickled in a worker process (as a class a worker cannot import)."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise ImportError("no module named 'plugin_of_the_test'")


def test_a_worker_that_cannot_read_its_work_stops_the_run(tmp_path, many, infer_model_path, monkeypatch):
    images, _ = many
    monkeypatch.setitem(WRITERS, "unreadable", _Unreadable)
    with pytest.raises(EngineError, match="worker process 0 failed: .*plugin_of_the_test"):
        run_folder(
            images,
            tmp_path / "procs",
            _options(infer_model_path, outputs=("unreadable",)),
            engine=ProcessEngine(1),
        )


def test_an_output_fault_in_the_workers_stops_the_run(folder, local_run, infer_model_path, failing_output):
    """A fault of the output inside the workers (a full tmpfs as root; a read-only sub-folder
    otherwise) stops the run as it stops a local one: exit 3, no partial mask, resumable."""
    root, _ = folder
    out = failing_output.out
    r = _run([*_engine_args(root, out), "--workers", "2"], infer_model_path)
    assert r.exit_code == 3, r.output
    assert "seginfer: stopped:" in r.stderr and "--skip-existing" in r.stderr
    assert failing_output.error in r.stderr
    written = _mask_files(out)
    assert written, "no mask was written before the fault: the comparison below would check nothing"
    assert all(data == _mask_files(local_run)[name] for name, data in written.items())
    failing_output.clear()
    r = _run([*_engine_args(root, out, "--skip-existing"), "--workers", "2"], infer_model_path)
    assert r.exit_code == 1, r.output  # the unreadable input still fails, alone
    _same_run_files(out, local_run, ())
    assert not [p for p in out.rglob(".*")]  # no temporary file, spool or lock left


# -- the engine seginfer picks ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "cores, threads, n, side, want",
    [
        (2, None, 100, 40, "processes"),  # many small images, two cores: processes
        (16, 4, 100, 40, "processes"),  # 4 workers of 4 threads
        (1, None, 100, 40, "local"),  # one core: nothing to share
        (2, 2, 100, 40, "local"),  # --threads fills the cores: one worker would be one process
        (2, None, 10, 40, "local"),  # few images: the start-up of workers does not pay
        (2, None, 100, 1500, "local"),  # images in tiles: one session with all cores
    ],
)
def test_auto_rule(tmp_path, infer_disk_image, monkeypatch, cores, threads, n, side, want):
    from unsupseg.infer.engines import registry
    from unsupseg.infer.inputs import gather_inputs, plan_items

    _make_folder(tmp_path / "in", infer_disk_image, n=1, shape=(side, side))
    for i in range(1, n):
        shutil.copy(tmp_path / "in" / "img0.png", tmp_path / "in" / f"img{i}.png")
    items = plan_items(gather_inputs(tmp_path / "in"), tmp_path / "out")
    monkeypatch.setattr(registry, "usable_cores", lambda: cores)
    engine = registry.choose_engine(None, items, SegmenterConfig(threads=threads))
    assert engine.name == want


def test_auto_picks_processes_for_many_small_images(
    tmp_path, infer_disk_image, infer_model_path, monkeypatch
):
    from unsupseg.infer.engines import registry

    monkeypatch.setattr(registry, "usable_cores", lambda: 2)
    monkeypatch.setattr(registry, "MIN_INPUTS", 4)
    _make_folder(tmp_path / "in", infer_disk_image, n=6)
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "out"], infer_model_path, quiet=False)
    assert r.exit_code == 0, r.output
    assert "2 worker processes (1 thread each), 6 images" in r.stderr
    assert json.loads((tmp_path / "out" / "seginfer.json").read_text())["engine"]["name"] == "processes"


def test_workers_need_the_processes_engine(tmp_path, infer_disk_image, infer_model_path):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    args = ["--input", tmp_path / "in", "--output", tmp_path / "o", "--engine", "local", "--workers", "2"]
    r = _run(args, infer_model_path)
    assert r.exit_code == 2 and "--workers needs --engine processes" in r.output


def test_a_broken_model_stops_before_anything_is_written(tmp_path, infer_disk_image):
    """The workers start before the main process loads the model; its error is the one reported,
    the workers are ended, nothing is written."""
    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    engine = ProcessEngine(2)
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "out", "--workers", "2"], bad)
    assert r.exit_code == 2 and str(bad) in r.output and "segexport" in r.output, r.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(Exception, match="cannot load this model"):
        engine.open(SegmenterConfig(model=bad, device="cpu"))
    assert engine.pool is None  # ended


def test_the_registry_drives_the_engine_option():
    """--engine's choices and help come from the registry: every engine, its summary, the auto rule."""
    from unsupseg.infer.cli.seginfer import main
    from unsupseg.infer.engines.registry import ENGINES, RULE

    (option,) = [p for p in main.params if p.name == "engine"]
    assert list(option.type.choices) == ["auto", *ENGINES]
    for name, cls in ENGINES.items():
        assert f"{name}: {cls.summary}" in option.help
    assert option.help.endswith(RULE)


@pytest.mark.parametrize(
    "name, options, error",
    [
        ("local", {"workers": 2}, "--workers needs --engine processes (or auto), not --engine local"),
        ("ray", {"workers": 2}, "--workers needs --engine processes (or auto), not --engine ray"),
        ("auto", {"ray_address": "auto"}, "--ray-address and --ray-actors need --engine ray"),
        ("processes", {"ray_actors": 2}, "--ray-address and --ray-actors need --engine ray"),
    ],
)
def test_engine_options_that_do_not_fit_are_refused(name, options, error):
    from unsupseg.infer.engines.registry import EngineChoice
    from unsupseg.infer.errors import EngineChoiceError

    with pytest.raises(EngineChoiceError) as e:
        EngineChoice(name, options)
    assert str(e.value) == error


def test_workers_with_auto_mean_worker_processes():
    from unsupseg.infer.engines.registry import EngineChoice, choose_engine

    engine = choose_engine(EngineChoice("auto", {"workers": 3}), [], SegmenterConfig())
    assert isinstance(engine, ProcessEngine) and engine.workers == 3
    assert choose_engine(EngineChoice("auto"), [], SegmenterConfig()).name == "local"  # few inputs
    given = LocalEngine()
    assert choose_engine(given, [], SegmenterConfig()) is given
