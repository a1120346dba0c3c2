"""seginfer's and segreport's files for a fixed folder, byte for byte, against recorded digests.

A deterministic folder (generated images: 8- and 16-bit PNG and TIFF, a multi-page TIFF, an image
that runs in tiles, two inputs with one stem, a sub-folder, an unreadable file; binary and
instance ground truth, one of the wrong size) is segmented by the command line with every
per-image output and report (``--masks --labels --split --rois --save-prob --overlays --html``),
in four runs:

- ``local`` and ``processes``: one run with each engine;
- ``resumed``: a run with worker processes, two masks removed, then ``--skip-existing`` with the
  local engine (inputs kept, their label images read back);
- ``shards``: ``--shard 1/2`` and ``2/2`` into one folder, then ``segreport --html``.

The sha256 of every file each run leaves in its output folder is compared with
``tests/output_bytes.json``. Paths are relative (the runs start in the scratch folder), so the
files name inputs the same way on every machine. What varies from run to run is normalised
before hashing, and only that:

- the manifests ``seginfer*.json``: the values of ``command``, ``cwd``, ``started``,
  ``finished``, ``seconds``, ``images_per_second``, ``versions``, ``python``, ``platform``,
  ``model.path``, ``args.model`` and the engine's ``start_s``, ``ready_s`` and ``cpu_s`` become
  ``"<varies>"`` (keys and their order stay; the file must be laid out as ``json.dumps(...,
  indent=2)`` lays it out);
- ``report.html``: the same values where the page shows them (the run table's model path,
  started, finished, time and images/s, the date under the title, the ``model`` argument, the
  command line, the versions line);
- ``*_rois.zip``: each member's name and bytes, in order (a zip also stores the time it was
  written);
- ``*_prob.tif``: the probabilities rounded to 5 decimals, with their shape and type (another CPU
  may round the network's sums differently in the last bit).

The model is the tests' torch-free ONNX model (``conftest.py``) on the CPU with one thread.
After a deliberate change of an output, record the digests again with
``UNSUPSEG_RECORD_BYTES=1 pytest tests/test_output_bytes.py`` and commit the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from scipy import ndimage

from unsupseg.infer.cli.seginfer import main as seginfer
from unsupseg.infer.cli.segreport import main as segreport

pytestmark = pytest.mark.slow

DIGESTS = Path(__file__).with_name("output_bytes.json")
RECORD = os.environ.get("UNSUPSEG_RECORD_BYTES") == "1"
VARIES = "<varies>"
OUTPUTS = ["--labels", "--split", "--rois", "--save-prob", "--overlays", "--html"]
# the manifest's values that change from run to run (top-level keys, then nested ones)
MANIFEST_VARIES = ("command", "cwd", "started", "finished", "seconds", "images_per_second")
MANIFEST_VARIES += ("versions", "python", "platform")
ENGINE_VARIES = ("start_s", "ready_s", "cpu_s")


def _u8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _make_folder(root: Path, disk) -> None:
    """The inputs (``in/``) and their ground truth (``gt/``), the same bytes on every call."""
    src, gt = root / "in", root / "gt"
    (src / "a").mkdir(parents=True)
    gt.mkdir()
    for i in range(6):
        image, truth = disk(48, 56, seed=i)
        iio.imwrite(src / f"img{i}.png", _u8(image))
        if i < 3:  # binary ground truth
            iio.imwrite(gt / f"img{i}.png", truth.astype(np.uint8) * 255)
        elif i < 5:  # instance ground truth: instance metrics
            tifffile.imwrite(gt / f"img{i}.tif", ndimage.label(truth)[0].astype(np.uint16))
    image, truth = disk(40, 64, seed=6)
    tifffile.imwrite(src / "a" / "img6.tif", (np.clip(image, 0, 1) * 65535).astype(np.uint16))
    iio.imwrite(gt / "img6.png", np.zeros((8, 8), np.uint8))  # the wrong size: the row names it
    pages = np.stack([_u8(disk(48, 48, seed=10 + p)[0]) for p in range(3)])
    tifffile.imwrite(src / "a" / "stack.tif", pages, photometric="minisblack")
    iio.imwrite(src / "a" / "large.png", _u8(disk(176, 200, seed=7, n_disks=5)[0]))  # runs in tiles
    iio.imwrite(src / "same.png", _u8(disk(48, 56, seed=8)[0]))  # one stem, two inputs
    tifffile.imwrite(src / "same.tif", _u8(disk(48, 56, seed=9)[0]))
    (src / "a" / "broken.png").write_bytes(b"not an image")


def _seginfer(model: Path, *args: str) -> None:
    common = ["--input", "in", "--output", "out", "--masks", "gt", "--recursive", *OUTPUTS]
    common += ["--tile-size", "96", "--tile-overlap", "16", "--model", str(model)]
    common += ["--device", "cpu", "--threads", "1", "-q"]
    result = CliRunner().invoke(seginfer, [*common, *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 1, result.output  # the unreadable input fails alone


def _run(name: str, root: Path, model: Path) -> None:
    if name in ("local", "processes"):
        engine = ["--engine", "local"] if name == "local" else ["--engine", "processes", "--workers", "2"]
        _seginfer(model, *engine)
    elif name == "resumed":
        _seginfer(model, "--engine", "processes", "--workers", "2")
        for mask in ("img1.png", "a/stack.tif"):
            (root / "out" / mask).unlink()
        _seginfer(model, "--engine", "local", "--skip-existing")
    else:  # shards, then their merge and page
        for shard in ("1/2", "2/2"):
            _seginfer(model, "--engine", "local", "--shard", shard)
        result = CliRunner().invoke(segreport, ["out", "--html", "-q"])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 1, result.output


def _manifest(raw: bytes) -> bytes:
    text = raw.decode("utf-8")
    data = json.loads(text)
    assert json.dumps(data, indent=2) + "\n" == text, "the manifest's layout changed"
    for key in MANIFEST_VARIES:
        if key in data:
            data[key] = VARIES
    data["model"]["path"] = VARIES
    data["args"]["model"] = VARIES
    for key in ENGINE_VARIES:
        if key in data["engine"]:
            data["engine"][key] = VARIES
    return (json.dumps(data, indent=2) + "\n").encode()


# report.html: a run table row, a shard's time, images/s and start, the date under the title, the
# command line, the versions line
_HTML_VARIES = [
    (re.compile(r"(<tr><th>(?:model|started|finished|time \(s\)|images/s)</th><td[^>]*>)[^<]*"), r"\1"),
    (
        re.compile(r"(<tr><td>\d+/\d+</td>(?:<td[^>]*>[^<]*</td>){3})(?:<td[^>]*>[^<]*</td>){3}</tr>"),
        r"\1</tr>",
    ),
    (re.compile(r'(<p class="sub">[^<]*?) — [^<]*</p>'), r"\1 — </p>"),
    (re.compile(r'(<p class="wrap"><code>)[^<]*'), r"\1"),
    (re.compile(r'(</table><p class="wrap"><code></code></p><p class="note">)[^<]*'), r"\1"),
]


def _page(raw: bytes) -> bytes:
    text = raw.decode("utf-8")
    for pattern, keep in _HTML_VARIES:
        text = pattern.sub(keep, text)
    return text.encode()


def _zip(raw: bytes, path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return b"".join(i.filename.encode() + b"\0" + zf.read(i) for i in zf.infolist())


def _prob(path: Path) -> bytes:
    """A probability map's values to 5 decimals, with its shape and type: onnxruntime may sum the
    convolution in another order on another CPU (AVX2 or AVX-512), which moves the last bit of a
    float32 and so the file's bytes, not what the map says."""
    prob = tifffile.imread(path)
    return f"{prob.shape} {prob.dtype}".encode() + np.round(prob.astype(np.float64), 5).tobytes()


def _digests(out: Path) -> dict[str, str]:
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        raw = path.read_bytes()
        if re.fullmatch(r"seginfer(-shard-\d+-of-\d+)?\.json", rel):
            raw = _manifest(raw)
        elif rel.endswith(".html"):
            raw = _page(raw)
        elif rel.endswith(".zip"):
            raw = _zip(raw, path)
        elif rel.endswith("_prob.tif"):
            raw = _prob(path)
        found[rel] = hashlib.sha256(raw).hexdigest()
    return found


RUNS = ("local", "processes", "resumed", "shards")


@pytest.fixture(scope="module")
def digests(tmp_path_factory, infer_model_path, infer_disk_image) -> dict[str, dict[str, str]]:
    found = {}
    cwd = os.getcwd()
    for name in RUNS:
        root = tmp_path_factory.mktemp(f"bytes_{name}")
        _make_folder(root, infer_disk_image)
        os.chdir(root)
        try:
            _run(name, root, infer_model_path)
        finally:
            os.chdir(cwd)
        found[name] = _digests(root / "out")
        shutil.rmtree(root)
    if RECORD:
        DIGESTS.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    return found


@pytest.mark.parametrize("run", RUNS)
def test_outputs_are_the_recorded_bytes(digests, run):
    want = json.loads(DIGESTS.read_text())[run]
    got = digests[run]
    assert sorted(got) == sorted(want), "the files written changed"
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"these files' bytes changed: {changed}"


def test_engines_write_the_same_files(digests):
    """Apart from the manifest and the page that shows its arguments, both engines write the same bytes."""
    local, processes = (dict(digests[name]) for name in ("local", "processes"))
    for name in ("seginfer.json", "report.html"):
        assert local.pop(name) != processes.pop(name)
    assert local == processes
