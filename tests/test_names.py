"""File names: any name the OS allows is processed, and summary.json / report.csv carry it losslessly."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from unsupseg.infer.cli.seginfer import main
from unsupseg.infer.cli.segreport import main as segreport

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="file names as bytes are POSIX")

# the awkward names, as bytes: not UTF-8, spaces, a newline, a carriage return, a leading dash,
# CSV's own characters, unicode, and the longest name ext4/tmpfs allow (255 bytes)
NAMES = [
    b"latin1_\xe9.png",
    b"with space.png",
    b"new\nline.png",
    b"carriage\rreturn.png",
    b"-leading-dash.png",
    b'comma, "quoted".png',
    "unicodé_日本.png".encode(),
    b"x" * 251 + b".png",
]


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def awkward(tmp_path, infer_disk_image):
    """An input folder and a ground-truth folder with one image per awkward name (bytes paths)."""
    root = os.fsencode(tmp_path)
    images, truth = os.path.join(root, b"in"), os.path.join(root, b"gt")
    os.mkdir(images)
    os.mkdir(truth)
    for i, name in enumerate(NAMES):
        image, mask = infer_disk_image(40, 48, seed=i)
        with open(os.path.join(images, name), "wb") as f:
            f.write(_png((np.clip(image, 0, 1) * 255).astype(np.uint8)))
        with open(os.path.join(truth, name), "wb") as f:
            f.write(_png(mask.astype(np.uint8) * 255))
    return Path(os.fsdecode(images)), Path(os.fsdecode(truth))


def _seginfer(args, model):
    r = CliRunner().invoke(main, [*map(str, args), "--model", str(model), "--device", "cpu", "-q"])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def _csv_inputs(path: Path) -> list[bytes]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return [os.fsencode(row["input"]) for row in csv.DictReader(f)]


def test_every_name_is_processed_and_reported_losslessly(tmp_path, infer_model_path, awkward):
    images, truth = awkward
    out = tmp_path / "out"
    r = _seginfer(["--input", images, "--output", out, "--masks", truth], infer_model_path)
    assert r.exit_code == 0, r.output
    written = sorted(n for n in os.listdir(os.fsencode(out)) if n.endswith(b".png"))
    assert written == sorted(NAMES)  # every mask under its input's own name (no temporary left)
    want = sorted(os.path.join(os.fsencode(images), n) for n in NAMES)
    summary = json.loads((out / "summary.json").read_text(encoding="ascii"))  # non-ASCII as \u escapes
    assert summary["n_written"] == len(NAMES) and summary["n_failed"] == 0
    assert sorted(os.fsencode(c["input"]) for c in summary["metric_per_case"]) == want
    assert all(c["iou"] > 0.9 for c in summary["metric_per_case"])  # the right truth for each name
    assert sorted(_csv_inputs(out / "report.csv")) == want
    manifest = json.loads((out / "seginfer.json").read_text(encoding="ascii"))
    assert manifest["n_written"] == len(NAMES)


def test_names_survive_shards_and_segreport(tmp_path, infer_model_path, awkward):
    images, truth = awkward
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert (
        _seginfer(["--input", images, "--output", single, "--masks", truth], infer_model_path).exit_code == 0
    )
    for i in (1, 2):
        args = ["--input", images, "--output", sharded, "--masks", truth, "--shard", f"{i}/2"]
        assert _seginfer(args, infer_model_path).exit_code == 0
    r = CliRunner().invoke(segreport, [str(sharded), "-q"])
    assert r.exit_code == 0, r.output
    for name in ("summary.json", "report.csv"):
        got = (sharded / name).read_bytes().replace(os.fsencode(sharded), b"OUT")
        assert got == (single / name).read_bytes().replace(os.fsencode(single), b"OUT"), name


def test_a_list_file_may_name_files_that_are_not_utf8(tmp_path, infer_model_path, awkward):
    images, _ = awkward
    listing = os.path.join(os.fsencode(tmp_path), b"list.txt")
    with open(listing, "wb") as f:
        f.write(b"# one name that is not UTF-8\n" + os.path.join(os.fsencode(images), NAMES[0]) + b"\n")
    out = tmp_path / "out"
    r = _seginfer(["--input", os.fsdecode(listing), "--output", out], infer_model_path)
    assert r.exit_code == 0, r.output
    assert os.listdir(os.fsencode(out)).count(NAMES[0]) == 1
