"""Fault injection: seginfer under kill -9, a full or read-only disk, a vanishing output folder,
broken models, hostile input files and concurrent runs (docs/reliability.md lists the cases).

Faults inside a run are injected in a subprocess (tests/fault_run.py): ``kill -9`` needs a
process of its own, and so does a run whose output turns read-only (its leftovers belong to
a process that has ended when the next run starts). The real fault is used where the machine
allows it: a small tmpfs as root (the CI runs as root), else an injected ENOSPC / chmod.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from conftest import remount
from test_infer_cli import _make_folder, _mask_files, _run

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals, mounts and /proc are Linux's")
FAULT_RUN = Path(__file__).with_name("fault_run.py")
ROOT = os.geteuid() == 0
N_IMAGES = 60
# the faults inside a run are injected into both local engines: one process with threads, and worker
# processes (where the fault happens in a worker, and the main process must stop them all)
ENGINES = ["local", "processes"]


# -- helpers ------------------------------------------------------------------------------
def _fault_cmd(hook: str, k: int, args, model, engine: str = "local") -> list[str]:
    flags = ["--model", str(model), "--device", "cpu", "--threads", "1", "-q", "--engine", engine]
    flags += ["--workers", "2"] if engine == "processes" else []
    return [sys.executable, str(FAULT_RUN), hook, str(k), *map(str, args), *flags]


def _fault_run(
    hook: str, k: int, args, model, engine: str = "local", env=None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        _fault_cmd(hook, k, args, model, engine), capture_output=True, text=True, env=env, timeout=120
    )


def _hidden(out: Path) -> list[str]:
    """Hidden files under ``out``: temporary files, report spools, lock files."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob(".*")) if out.exists() else []


def _masks_on_disk(out: Path) -> int:
    try:
        return sum(1 for e in os.scandir(out) if e.name.endswith(".png") and not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def _resume_line(stderr: str) -> list[str]:
    """The command the stop message gives, as arguments for seginfer (without the program name)."""
    lines = stderr.splitlines()
    i = next(i for i, line in enumerate(lines) if "then resume with:" in line)
    words = shlex.split(lines[i + 1])
    assert words[0] == "seginfer" and words[-1] == "--skip-existing", words
    return words[1:]


def _resume(stderr: str) -> object:
    from click.testing import CliRunner

    from unsupseg.infer.cli.seginfer import main

    r = CliRunner().invoke(main, _resume_line(stderr))
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def _check_stopped(p: subprocess.CompletedProcess, out: Path, reference: dict, reason: str) -> int:
    """The contract of a stop: exit 3, one message (what, how many, how to resume), no partial file."""
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and reason in p.stderr, p.stderr
    assert p.stderr.count("seginfer: stopped:") == 1 and "seginfer: failed:" not in p.stderr, p.stderr
    masks = _mask_files(out) if out.exists() else {}
    if out.exists():
        assert f"{len(masks)} of {N_IMAGES} masks written, none partial" in p.stderr, p.stderr
    assert all(data == reference[name] for name, data in masks.items())  # complete, the run's bytes
    assert not [h for h in _hidden(out) if h.endswith(".part") and "summary" not in h]  # no partial mask
    return len(masks)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, infer_model_path):
    """N_IMAGES noisy images and the masks of an uninterrupted run (name -> bytes)."""
    from conftest import _disk_image

    root = tmp_path_factory.mktemp("faults")
    _make_folder(
        root / "in", lambda h, w, seed: _disk_image(h, w, seed, noise=0.3), n=N_IMAGES, shape=(64, 64)
    )
    r = _run(["--input", root / "in", "--output", root / "reference"], infer_model_path)
    assert r.exit_code == 0, r.output
    return root / "in", _mask_files(root / "reference")


# -- kill -9 ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "engine, seed", [("local", s) for s in range(5)] + [("processes", s) for s in range(3)]
)
def test_kill_9_at_a_random_moment_then_resume(tmp_path, infer_model_path, folder, engine, seed):
    """Killed after a random number of masks (and a random few ms): every mask on disk is the
    uninterrupted run's; --skip-existing finishes byte for byte and removes what the kill left."""
    images, reference = folder
    rng = random.Random(seed)
    k, delay = rng.randint(1, N_IMAGES - 10), rng.uniform(0, 0.02)
    out = tmp_path / "out"
    args = ["--input", images, "--output", out, "--batch-size", "2"]
    proc = subprocess.Popen(_fault_cmd("none", 0, args, infer_model_path, engine), stderr=subprocess.PIPE)
    while _masks_on_disk(out) < k and proc.poll() is None:
        time.sleep(0.001)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill (k={k})"
    killed = _mask_files(out)
    assert all(data == reference[name] for name, data in killed.items())
    print(f"seed {seed}: killed after {len(killed)} masks, left {_hidden(out)}")  # spool, lock record...

    r = _run(["--input", images, "--output", out, "--skip-existing"], infer_model_path)
    assert r.exit_code == 0, r.output
    assert _mask_files(out) == reference
    assert _hidden(out) == []  # spool, temporary files and the lock record of the killed run removed
    s = json.loads((out / "summary.json").read_text())
    assert (s["n_written"] + s["n_skipped"], s["n_failed"]) == (N_IMAGES, 0)


def _ctrl_c_default() -> None:
    """In the child before it starts: SIGINT's default action. A shell without job control starts
    its background commands with SIGINT ignored (``make test &`` in a script), the ignored
    disposition is inherited through pytest, and Python then leaves Ctrl-C ignored: the run would
    finish and exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_keeps_the_summary_of_what_was_done(tmp_path, infer_model_path, folder, engine):
    images, reference = folder
    out = tmp_path / "out"
    args = ["--input", images, "--output", out, "--batch-size", "2"]
    cmd = _fault_cmd("none", 0, args, infer_model_path, engine)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_default)
    while _masks_on_disk(out) < 10 and proc.poll() is None:
        time.sleep(0.001)
    assert proc.poll() is None, "the run ended before Ctrl-C could be sent"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate()
    assert proc.returncode == 1 and "Aborted" in stderr, stderr
    masks = _mask_files(out)
    assert 10 <= len(masks) < N_IMAGES and all(data == reference[n] for n, data in masks.items())
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] == "interrupted (Ctrl-C)"
    assert s["n_written"] == len(masks)  # the writes that finished after Ctrl-C are listed too
    assert _hidden(out) == [".seginfer.lock"]  # no spool or temporary file; the record of the stopped run


def test_leftovers_are_removed_only_when_their_writer_is_gone(
    tmp_path, infer_model_path, infer_disk_image, caplog
):
    from unsupseg.core.atomic import owner_tag, pid_alive

    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = ended.pid
    assert not pid_alive(dead)
    far = "farhost-4026531836"  # a killed run on another host held this folder's lock: its record says so
    (out / ".seginfer.lock").write_text(json.dumps({"owner": f"{far}-77", "host": "farhost", "pid": 77}))
    gone = [
        f".img0.png.{owner_tag(dead)}.0.part",  # a mask being written by a process that died here
        f".summary.json.{owner_tag(dead)}.3.part",  # its report spool
        f"sub/.a.png.{owner_tag(dead)}.1.part",  # in a sub-folder
        f".img1.png.{far}-77.2.part",  # the killed lock holder's, on another host
        f".img1.png.{dead}.4.part",  # an older version's name (a bare pid): this host's
    ]
    kept = [
        f".img0.png.{owner_tag()}.0.part",  # this process: alive
        f".img0.png.{far}-{dead}.0.part",  # another host's process: its pid means nothing here
        ".notes.part",  # not a temporary name of ours
        ".user-file",
    ]
    for name in gone + kept:
        (out / name).write_bytes(b"x")
    caplog.set_level(logging.WARNING, logger="unsupseg.infer.runlock")
    r = _run(["--input", tmp_path / "in", "--output", out], infer_model_path)
    assert r.exit_code == 0, r.output
    assert "removed 5 temporary file(s) left by a run that was killed or stopped (pid 77)" in caplog.text
    assert _hidden(out) == sorted(kept)  # and the lock file is gone after a clean end


# -- a full, read-only or vanishing output ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_full_file_system_stops_the_run(tmp_path, infer_model_path, folder, tmpfs, engine):
    """Disk full: one message and exit 3 (not one failure per image and an SQLite traceback);
    after freeing space the printed command resumes to the uninterrupted run's bytes."""
    images, reference = folder
    if ROOT:  # a real ENOSPC: a 64 KiB tmpfs holds a dozen masks
        fs = tmpfs("64k")
        out = fs / "out"
        p = _fault_run("none", 0, ["--input", images, "--output", out], infer_model_path, engine)
    else:  # injected: the mask writer raises ENOSPC after 5 masks
        out = tmp_path / "out"
        p = _fault_run("enospc", 5, ["--input", images, "--output", out], infer_model_path, engine)
    n = _check_stopped(p, out, reference, "No space left on device (the output's file system is full)")
    assert 0 < n < N_IMAGES
    if (out / "summary.json").exists():  # written when the freed spool made room for it
        s = json.loads((out / "summary.json").read_text())
        assert s["n_written"] == n and "No space left" in s["stopped"]
    if ROOT:
        remount(fs, "size=8m")
    r = _resume(p.stderr)
    assert r.exit_code == 0, r.output
    assert _mask_files(out) == reference and _hidden(out) == []
    assert "stopped" not in json.loads((out / "summary.json").read_text())


def _make_readonly(where: Path, out: Path) -> None:
    if ROOT:
        remount(where, "ro")
    else:
        out.chmod(0o555)


def _make_writable(where: Path, out: Path) -> None:
    if ROOT:
        remount(where, "rw")
    else:
        out.chmod(0o755)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["start", "mid-run"])
@pytest.mark.parametrize("engine", ENGINES)
def test_read_only_output_stops_the_run(tmp_path, infer_model_path, folder, tmpfs, when, engine):
    images, reference = folder
    where = tmpfs("8m") if ROOT else tmp_path
    out = where / "out"
    out.mkdir()
    args = ["--input", images, "--output", out]
    if when == "start":  # real: a read-only tmpfs as root, chmod 0555 otherwise
        _make_readonly(where, out)
        p = _fault_run("none", 0, args, infer_model_path, engine)
    else:  # chmod 0555 after 5 masks when not root; as root an injected EROFS (see fault_run.py)
        p = _fault_run("readonly", 5, args, infer_model_path, engine)
    reason = "Read-only file system" if ROOT else "Permission denied"
    n = _check_stopped(p, out, reference, reason)
    assert (n == 0) if when == "start" else (n >= 5)
    if when == "start" or not ROOT:
        _make_writable(where, out)
    r = _resume(p.stderr)
    assert r.exit_code == 0, r.output
    assert _mask_files(out) == reference and _hidden(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_output_folder_removed_mid_run(tmp_path, infer_model_path, folder, engine):
    images, reference = folder
    out = tmp_path / "out"
    p = _fault_run("rmtree", 5, ["--input", images, "--output", out], infer_model_path, engine)
    _check_stopped(p, out, reference, "the output folder was removed during the run")
    assert not out.exists()  # never re-created by a writer, nor for the summary
    r = _resume(p.stderr)
    assert r.exit_code == 0, r.output
    assert _mask_files(out) == reference


# -- broken models ----------------------------------------------------------------------------
def _model(path: Path, dims: list, op: str) -> None:
    """A small ONNX model with card metadata and input dims ``dims``: "Identity" or "ReduceMean" (axis 1)."""
    import onnx
    from onnx import TensorProto, helper

    from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard

    attrs = {"axes": [1], "keepdims": 1} if op == "ReduceMean" else {}
    node = helper.make_node(op, [INPUT_NAME], [OUTPUT_NAME], **attrs)
    out_dims = ["N", 1, "H", "W"] if op == "ReduceMean" else dims
    graph = helper.make_graph(
        [node],
        "broken",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_dims)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    helper.set_model_props(model, ModelCard(arch="broken", width=1).to_metadata())
    onnx.save(model, str(path))


BROKEN_MODELS = {
    "random bytes": lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "truncated": lambda p, good: p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2]),
    "empty": lambda p, good: p.write_bytes(b""),
    "input rank 3": lambda p, good: _model(p, ["N", "H", "W"], "Identity"),
    "three input channels": lambda p, good: _model(p, ["N", 3, "H", "W"], "ReduceMean"),
}


@pytest.mark.parametrize("kind", list(BROKEN_MODELS))
def test_broken_model_is_named_before_anything_is_written(tmp_path, infer_model_path, infer_disk_image, kind):
    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    bad = tmp_path / "bad.onnx"
    BROKEN_MODELS[kind](bad, infer_model_path)
    out = tmp_path / "out"
    r = _run(["--input", tmp_path / "in", "--output", out], bad)
    assert r.exit_code == 2, r.output
    assert str(bad) in r.output and "--model" in r.output and "segexport" in r.output
    assert not out.exists()


# -- hostile input files ----------------------------------------------------------------------
def _mutants(rng: random.Random, valid: bytes, n: int, span: int) -> list[bytes]:
    """``valid`` with 1 to 4 bytes of its first ``span`` (the header) set at random."""
    out = []
    for _ in range(n):
        b = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(min(span, len(b)))] = rng.randrange(256)
        out.append(bytes(b))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_random_bytes_and_mutated_headers_fail_alone(tmp_path, infer_model_path, infer_disk_image, engine):
    """1,000 random byte strings and 300 valid PNG/TIFF files with mutated headers: no crash,
    no traceback, every input either written or named with its reason."""
    rng = random.Random(14)
    images = tmp_path / "in"
    images.mkdir()
    image = (np.clip(infer_disk_image(48, 40)[0], 0, 1) * 255).astype(np.uint8)
    png = iio.imwrite("<bytes>", image, extension=".png")
    tif_path = tmp_path / "valid.tif"
    tifffile.imwrite(tif_path, image, compression="zlib")
    files = {
        f"random_{i:04d}{rng.choice(['.png', '.tif', '.jpg', '.bmp'])}": rng.randbytes(rng.randrange(0, 3000))
        for i in range(1000)
    }
    files |= {f"png_{i:03d}.png": b for i, b in enumerate(_mutants(rng, png, 150, 64))}
    files |= {f"tif_{i:03d}.tif": b for i, b in enumerate(_mutants(rng, tif_path.read_bytes(), 150, 200))}
    files["valid.png"] = png
    for name, data in files.items():
        (images / name).write_bytes(data)
    out = tmp_path / "out"
    p = _fault_run("none", 0, ["--input", images, "--output", out], infer_model_path, engine)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    written = {c["input"] for c in s["metric_per_case"]}
    failed = {f["input"]: f["error"] for f in s["failed"]}
    assert s["n_images"] == len(files) and len(written) + len(failed) == len(files)
    assert {Path(x).name for x in written | set(failed)} == set(files)  # each input once
    assert str(images / "valid.png") in written
    assert all(src in error for src, error in failed.items())  # each failure names its file
    assert p.stderr.count("seginfer: failed:") == len(failed)
    assert _hidden(out) == []
    print(
        f"{len(written)} written, {len(failed)} failed; reasons: "
        f"{sorted({e.split(': ', 1)[1].split(' (')[0] for e in failed.values()})}"
    )


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _tiff_claiming(path: Path, width: int, height: int) -> None:
    """A 16x16 TIFF whose ImageWidth / ImageLength tags are patched to width x height."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tif.pages[0].tags[name]
            struct.pack_into(tif.byteorder + ("H" if tag.dtype == 3 else "I"), data, tag.valueoffset, value)
    path.write_bytes(data)


_READ_UNDER_LIMIT = """
import resource, sys
from unsupseg.core.errors import ImageTooLargeError
from unsupseg.core.imageio import PILLOW_MAX_PIXELS, read_pages
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (300 << 20), resource.RLIM_INFINITY))  # 300 MB more
limit = PILLOW_MAX_PIXELS if sys.argv[2] == "default" else None
try:
    read_pages(sys.argv[1], limit)
    print("read")
except ImageTooLargeError as e:
    print("refused:", e)
except BaseException as e:
    print("other:", type(e).__name__, e)
"""


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_a_bomb_header_is_refused_before_allocation(tmp_path, fmt):
    """A 20,000 x 20,000 header (400 megapixels, 400 MB as uint8) under an address-space limit of
    300 MB more than the process has: refused from the header, no allocation attempted."""
    bomb = tmp_path / f"bomb.{fmt}"
    if fmt == "png":
        bomb.write_bytes(_png_claiming(20000, 20000))
    else:
        _tiff_claiming(bomb, 20000, 20000)

    def read(limit: str) -> str:
        p = subprocess.run(
            [sys.executable, "-c", _READ_UNDER_LIMIT, str(bomb), limit],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    got = read("default")
    assert got.startswith("refused:") and "400 megapixels, above the limit of 89.48" in got, got
    if fmt == "tif":  # (Pillow refuses this PNG itself, at twice its limit, before its size is known)
        assert "20000x20000 pixels" in got
    assert "--max-megapixels 400" in got and str(bomb) in got
    if fmt == "tif":  # without the check, tifffile goes for the allocation (and fails under the limit)
        assert read("none").startswith("other:")


def test_max_megapixels_admits_a_real_large_image_tiled(tmp_path, infer_model_path, infer_disk_image):
    (tmp_path / "in").mkdir()
    image, truth = infer_disk_image(300, 260, seed=3)  # 0.078 megapixels
    iio.imwrite(tmp_path / "in" / "big.png", (np.clip(image, 0, 1) * 255).astype(np.uint8))
    tiles = ["--tile-size", "64", "--tile-overlap", "8"]
    r = _run(
        ["--input", tmp_path / "in", "--output", tmp_path / "a", "--max-megapixels", "0.05"], infer_model_path
    )
    assert r.exit_code == 1
    error = json.loads((tmp_path / "a" / "summary.json").read_text())["failed"][0]["error"]
    assert "260x300 pixels, 0.078 megapixels, above the limit of 0.05" in error
    assert "--max-megapixels 0.1" in error
    r = _run(
        [
            "--input",
            tmp_path / "in",
            "--output",
            tmp_path / "a",
            "--max-megapixels",
            "0.1",
            *tiles,
            "--overwrite",
        ],
        infer_model_path,
    )
    assert r.exit_code == 0, r.output
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "b", *tiles], infer_model_path)
    assert r.exit_code == 0, r.output
    assert _mask_files(tmp_path / "a") == _mask_files(tmp_path / "b")  # tiled exactly as before


def test_default_limit_is_pillows():
    from unsupseg.core.imageio import PILLOW_MAX_PIXELS

    code = "from PIL import Image; print(Image.MAX_IMAGE_PIXELS)"  # a fresh process: tests may raise it
    assert int(subprocess.check_output([sys.executable, "-c", code])) == PILLOW_MAX_PIXELS


# -- concurrent runs --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "first, second, refused",
    [(None, None, True), ("1/2", "1/2", True), ("1/2", "2/2", False)],
    ids=["two unsharded", "same shard", "different shards"],
)
def test_concurrent_runs_of_the_same_run_files_are_refused(
    tmp_path, infer_model_path, folder, first, second, refused
):
    images, reference = folder
    out = tmp_path / "out"

    def args(shard):
        return ["--input", images, "--output", out, "--skip-existing", *(["--shard", shard] if shard else [])]

    slow = subprocess.Popen(_fault_cmd("sleep", 0, args(first), infer_model_path), stderr=subprocess.PIPE)
    while _masks_on_disk(out) < 1 and slow.poll() is None:  # it holds its lock once it writes
        time.sleep(0.005)
    assert slow.poll() is None
    r = _run(args(second), infer_model_path)
    if refused:
        assert r.exit_code == 2 and f"another run (pid {slow.pid} on" in r.output, r.output
        assert "--shard I/N, may run at the same time" in r.output
    else:
        assert r.exit_code == 0, r.output
    slow.send_signal(signal.SIGKILL)  # the OS releases its lock
    slow.communicate()
    r = _run(args(first), infer_model_path)
    assert r.exit_code == 0, r.output
    if first is None:
        assert _mask_files(out) == reference
    assert not [h for h in _hidden(out) if h.endswith(".part")]


def test_a_vanished_output_file_is_the_outputs_fault(tmp_path):
    """A write whose temporary file vanished from the output folder stops the run (the output's
    fault, not the input's): "removed" when the folder goes within a moment (rmtree empties a folder
    before it removes it: the race CI met), else "vanished"; a missing file elsewhere is the input's."""
    import errno
    import os
    import threading

    from unsupseg.infer.faults import output_fault

    out = tmp_path / "out"
    out.mkdir()
    gone = FileNotFoundError(
        errno.ENOENT, "No such file or directory", str(out / ".a.png.part"), str(out / "a.png")
    )
    assert "vanished" in output_fault(gone, out)
    elsewhere = FileNotFoundError(
        errno.ENOENT, "No such file or directory", str(tmp_path / "truth" / "a.png")
    )
    assert output_fault(elsewhere, out) is None
    threading.Timer(0.2, os.rmdir, [out]).start()  # the folder goes while the fault is looked at
    assert "the output folder was removed during the run" in output_fault(gone, out)
