"""seginfer --engine ray on a local Ray (2 CPUs): same masks, summary.json and exit codes as local."""

from __future__ import annotations

import shutil
import sys

import pytest
import ray
from test_infer_cli import _engine_args, _engine_folder, _make_folder, _mask_files, _run, _same_run_files

N_IMAGES = 12


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, infer_disk_image):
    """12 images with masks (two sizes) and one unreadable file."""
    return _engine_folder(tmp_path_factory.mktemp("ray"), infer_disk_image, N_IMAGES)


@pytest.fixture(scope="module")
def local_run(folder, infer_model_path):
    root, _ = folder
    out = root / "local"
    r = _run(_engine_args(root, out), infer_model_path)
    assert r.exit_code == 1, r.output
    return out


def _ray_run(root, out, model, *extra):
    return _run(_engine_args(root, out, "--engine", "ray", "--ray-actors", "2", *extra), model)


def test_ray_equals_local(local_ray, folder, local_run, infer_model_path, tmp_path):
    root, bad = folder
    out = tmp_path / "ray"
    r = _ray_run(root, out, infer_model_path)
    assert r.exit_code == 1, r.output
    assert str(bad) in r.stderr
    assert len(_mask_files(out)) == N_IMAGES  # the bad file failed alone, the rest were written
    _same_run_files(out, local_run)


def test_ray_shards_merge_to_local_report(local_ray, folder, local_run, infer_model_path, tmp_path):
    from click.testing import CliRunner

    from unsupseg.infer.cli.segreport import main as segreport

    root, _ = folder
    out = tmp_path / "ray"
    for i in (1, 2):
        assert _ray_run(root, out, infer_model_path, "--shard", f"{i}/2").exit_code in (0, 1)
    r = CliRunner().invoke(segreport, [str(out), "-q"])
    assert r.exit_code == 1, r.output
    _same_run_files(out, local_run)


def test_ray_skip_existing_resumes(local_ray, folder, local_run, infer_model_path, tmp_path):
    root, _ = folder
    out = tmp_path / "ray"
    shutil.copytree(local_run, out)
    for p in list(out.rglob("img[0-2].png")):  # an interrupted run: some masks are missing
        p.unlink()
    (out / "summary.json").unlink()
    r = _ray_run(root, out, infer_model_path, "--skip-existing")
    assert r.exit_code == 1, r.output
    assert _mask_files(out) == _mask_files(local_run)
    import json

    s = json.loads((out / "summary.json").read_text())
    assert (s["n_images"], s["n_written"], s["n_skipped"], s["n_failed"]) == (N_IMAGES + 1, 6, 6, 1)


def test_engine_ray_without_ray_is_a_usage_error(tmp_path, infer_model_path, infer_disk_image, monkeypatch):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "o", "--engine", "ray"], infer_model_path)
    assert r.exit_code == 2
    assert 'pip install "unsupseg[ray]"' in r.output
    assert not (tmp_path / "o").exists()


def test_ray_options_need_engine_ray(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "o", "--ray-actors", "2"], infer_model_path)
    assert r.exit_code == 2 and "need --engine ray" in r.output


def test_device_cuda_on_a_cluster_without_gpu(local_ray, tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    args = ["--input", tmp_path / "in", "--output", tmp_path / "o", "--engine", "ray"]
    from click.testing import CliRunner

    from unsupseg.infer.cli.seginfer import main

    r = CliRunner().invoke(
        main, [*map(str, args), "--model", str(infer_model_path), "--device", "cuda", "-q"]
    )
    assert r.exit_code == 1 and "the Ray cluster has no GPU" in r.output


def test_ray_labels_equal_local(local_ray, folder, infer_model_path, tmp_path):
    """Labels, ROIs and objects.csv are made in the writer layer, so Ray actors give the local files."""
    root, _ = folder
    flags = ["--labels", "--split", "--rois"]
    local = tmp_path / "local"
    args = ["--input", root / "in", "--output", local, "--masks", root / "truth", "-r", *flags]
    assert _run(args, infer_model_path).exit_code == 1
    out = tmp_path / "ray"
    assert _ray_run(root, out, infer_model_path, *flags).exit_code == 1
    assert _mask_files(out) == _mask_files(local)  # masks and label images
    assert sorted(p.name for p in out.rglob("*_rois.zip")) == sorted(
        p.name for p in local.rglob("*_rois.zip")
    )
    for name in ("summary.json", "objects.csv"):
        got = (out / name).read_text().replace(str(out), "OUT")
        want = (local / name).read_text().replace(str(local), "OUT")
        assert got == want, name


def test_ray_stops_on_an_output_fault_like_local(
    local_ray, folder, local_run, infer_model_path, failing_output
):
    """A fault of the output inside the actors (a full tmpfs as root; a read-only sub-folder
    otherwise) stops the Ray run as it stops a local one: exit 3, no partial mask, resumable."""
    root, _ = folder
    out = failing_output.out
    r = _ray_run(root, out, infer_model_path)
    assert r.exit_code == 3, r.output
    assert "seginfer: stopped:" in r.stderr and "--skip-existing" in r.stderr
    assert failing_output.error in r.stderr
    written = _mask_files(out)
    assert written and all(data == _mask_files(local_run)[name] for name, data in written.items())
    failing_output.clear()
    r = _ray_run(root, out, infer_model_path, "--skip-existing")
    assert r.exit_code == 1, r.output  # the unreadable input still fails, alone
    assert _mask_files(out) == _mask_files(local_run)
    assert not [p for p in out.rglob(".*")]  # no temporary file, spool or lock left
