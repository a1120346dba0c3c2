"""segreport: shards run into one folder and merged give the single run's masks and report."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner
from test_infer_cli import _bad_file, _make_folder, _mask_files, _run

from unsupseg.infer.cli.segreport import main as segreport

N_SHARDS = 3


def _merge(folder: Path, *extra):
    result = CliRunner().invoke(segreport, [str(folder), "-q", *extra])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def case_folder(tmp_path, infer_disk_image):
    """8 images with masks, one with a wrong-size mask (fails its input), one unreadable file."""
    truth = tmp_path / "truth"
    _make_folder(tmp_path / "in", infer_disk_image, n=8, masks=truth)
    iio.imwrite(truth / "img5.png", np.zeros((20, 20), np.uint8))  # wrong size: img5 fails
    _bad_file(tmp_path / "in" / "zz_bad", "truncated")
    return tmp_path / "in", truth


def test_merged_shards_equal_single_run(tmp_path, infer_model_path, case_folder):
    images, truth = case_folder
    out = tmp_path / "out"
    args = ["--input", images, "--output", out, "--masks", truth]
    assert _run(args, infer_model_path).exit_code == 1
    single = {name: (out / name).read_bytes() for name in ("summary.json", "report.csv")}
    masks = _mask_files(out)
    shutil.rmtree(out)

    for i in range(1, N_SHARDS + 1):
        r = _run([*args, "--shard", f"{i}/{N_SHARDS}"], infer_model_path)
        assert r.exit_code in (0, 1), r.output
    assert not (out / "summary.json").exists()
    r = _merge(out)
    assert r.exit_code == 1 and "2 input(s) failed" in r.stderr
    assert _mask_files(out) == masks  # the shards' union is the full run, byte for byte
    for name, data in single.items():
        assert (out / name).read_bytes() == data, name


def test_refuses_to_overwrite_summary(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=3)
    out = tmp_path / "out"
    for i in (1, 2):
        _run(["--input", tmp_path / "in", "--output", out, "--shard", f"{i}/2"], infer_model_path)
    assert _merge(out).exit_code == 0
    r = _merge(out)
    assert r.exit_code == 2 and "pass --overwrite" in r.output
    assert _merge(out, "--overwrite").exit_code == 0
    assert (out / "report.csv").exists()  # without --masks too (its quality column), as in a single run


def test_missing_shard_is_named(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=3)
    out = tmp_path / "out"
    _run(["--input", tmp_path / "in", "--output", out, "--shard", "2/3"], infer_model_path)
    r = _merge(out)
    assert r.exit_code == 2 and "shard(s) 1/3, 3/3" in r.output


def test_mixed_shard_counts_and_empty_folder(tmp_path, infer_model_path, infer_disk_image):
    out = tmp_path / "out"
    out.mkdir()
    r = _merge(out)
    assert r.exit_code == 2 and "no summary-shard-I-of-N.json" in r.output
    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    for shard in ("1/1", "1/2", "2/2"):
        _run(["--input", tmp_path / "in", "--output", out, "--shard", shard, "--overwrite"], infer_model_path)
    r = _merge(out)
    assert r.exit_code == 2 and "different N" in r.output


def test_a_stopped_shard_is_not_merged(tmp_path, infer_model_path, infer_disk_image, monkeypatch):
    """A shard that stopped on its output (its summary says "stopped") must be resumed first:
    merged, its missing masks would count as never asked for."""
    import errno
    import os

    import unsupseg.infer.writers.mask as mask_writer

    _make_folder(tmp_path / "in", infer_disk_image, n=6)
    out = tmp_path / "out"
    args = ["--input", tmp_path / "in", "--output", out]
    assert _run([*args, "--shard", "1/2"], infer_model_path).exit_code == 0
    real = mask_writer.write_mask

    def full(path, mask):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mask_writer, "write_mask", full)
    assert _run([*args, "--shard", "2/2"], infer_model_path).exit_code == 3
    monkeypatch.setattr(mask_writer, "write_mask", real)
    r = _merge(out)
    assert (
        r.exit_code == 2 and "shard 2/2 stopped before its end" in r.output and "--skip-existing" in r.output
    )
    assert _run([*args, "--shard", "2/2", "--skip-existing"], infer_model_path).exit_code == 0
    assert _merge(out).exit_code == 0


def test_segreport_is_refused_while_an_unsharded_run_holds_the_folder(
    tmp_path, infer_model_path, infer_disk_image
):
    """summary.json is also an unsharded seginfer's run file: while such a run holds the folder's
    lock, segreport is refused rather than writing beside it."""
    from unsupseg.infer.runfiles import RunFiles
    from unsupseg.infer.runlock import RunLock

    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    out = tmp_path / "out"
    for i in (1, 2):
        _run(["--input", tmp_path / "in", "--output", out, "--shard", f"{i}/2"], infer_model_path)
    with RunLock(RunFiles(out)):  # as a running `seginfer --output out` holds it
        r = _merge(out)
    assert r.exit_code == 2 and "another run" in r.output
    assert _merge(out).exit_code == 0


def test_help():
    r = CliRunner().invoke(segreport, ["--help"])
    assert r.exit_code == 0 and "Example:" in r.output
