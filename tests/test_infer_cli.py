"""End-to-end `seginfer` runs with click's CliRunner on generated folders."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from unsupseg.core.imageio import read_mask
from unsupseg.core.metrics import iou
from unsupseg.infer.cli.seginfer import main
from unsupseg.infer.model.session import cuda_problem


# -- helpers --------------------------------------------------------------------------
def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _u16(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 65535).astype(np.uint16)


def _rgb(img: np.ndarray, alpha: bool = False) -> np.ndarray:
    g = _u8(img)
    chans = [g, g, g] + ([np.full_like(g, 255)] if alpha else [])
    return np.stack(chans, axis=-1)


WRITERS = {
    "png8": ("png", lambda p, im: iio.imwrite(p, _u8(im))),
    "png16": ("png", lambda p, im: iio.imwrite(p, _u16(im))),
    "jpeg": ("jpg", lambda p, im: iio.imwrite(p, _u8(im), quality=95)),
    "bmp": ("bmp", lambda p, im: iio.imwrite(p, _u8(im))),
    "tif8": ("tif", lambda p, im: tifffile.imwrite(p, _u8(im))),
    "tif16": ("tiff", lambda p, im: tifffile.imwrite(p, _u16(im))),
    "tif32f": ("tif", lambda p, im: tifffile.imwrite(p, im.astype(np.float32))),
    "rgb": ("png", lambda p, im: iio.imwrite(p, _rgb(im))),
    "rgba": ("png", lambda p, im: iio.imwrite(p, _rgb(im, alpha=True))),
    "rgb_tif": ("tif", lambda p, im: tifffile.imwrite(p, _rgb(im), photometric="rgb")),
    "rgb_planar_tif": (
        "tif",
        lambda p, im: tifffile.imwrite(
            p, np.moveaxis(_rgb(im), -1, 0), photometric="rgb", planarconfig="separate"
        ),
    ),
}


def _make_folder(
    folder: Path, disk, n: int = 4, shape=(48, 56), fmt: str = "png8", masks: Path | None = None
):
    """n images named img{i}; optionally their true masks as PNGs under ``masks``."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix, write = WRITERS[fmt]
    truths = {}
    for i in range(n):
        image, truth = disk(*shape, seed=i)
        write(folder / f"img{i}.{suffix}", image)
        truths[f"img{i}"] = truth
        if masks is not None:
            masks.mkdir(parents=True, exist_ok=True)
            iio.imwrite(masks / f"img{i}.png", truth.astype(np.uint8) * 255)
    return truths


def _run(args, model, quiet=True):
    flags = ["--model", str(model), "--device", "cpu"] + (["-q"] if quiet else [])
    result = CliRunner().invoke(main, [*map(str, args), *flags])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _summary(out: Path, name: str = "summary.json") -> dict:
    return json.loads((out / name).read_text())


def _mask_files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix in (".png", ".tif")
    }


# -- formats and sizes -----------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_input_format(tmp_path, infer_model_path, infer_disk_image, fmt):
    truths = _make_folder(tmp_path / "in", infer_disk_image, n=2, fmt=fmt)
    out = tmp_path / "out"
    r = _run(["--input", tmp_path / "in", "--output", out], infer_model_path)
    assert r.exit_code == 0, r.output
    for stem, truth in truths.items():
        mask = iio.imread(out / f"{stem}.png")
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert iou(mask > 0, truth) > 0.9, fmt


@pytest.mark.parametrize("shape", [(37, 53), (5, 7), (8, 8), (101, 3 * 8 + 1)])
def test_odd_sizes_come_back_at_input_size(tmp_path, infer_model_path, infer_disk_image, shape):
    _make_folder(tmp_path / "in", infer_disk_image, n=1, shape=shape)
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "out"], infer_model_path)
    assert r.exit_code == 0, r.output
    assert iio.imread(tmp_path / "out" / "img0.png").shape == shape


def test_multipage_tiff_gives_multipage_mask(tmp_path, infer_model_path, infer_disk_image):
    pages = [infer_disk_image(40, 48, seed=s) for s in range(3)]
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "stack.tif", np.stack([p[0] for p in pages]), photometric="minisblack")
    (tmp_path / "gt").mkdir()
    tifffile.imwrite(
        tmp_path / "gt" / "stack.tif",
        np.stack([p[1] for p in pages]).astype(np.uint8),
        photometric="minisblack",
    )
    out = tmp_path / "out"
    r = _run(
        ["--input", tmp_path / "in", "--output", out, "--masks", tmp_path / "gt", "--save-prob"],
        infer_model_path,
    )
    assert r.exit_code == 0, r.output
    mask = tifffile.imread(out / "stack.tif")  # TIFF although --format is png
    assert mask.shape == (3, 40, 48)
    for page, (_, truth) in zip(mask, pages, strict=True):
        assert iou(page > 0, truth) > 0.9
    assert tifffile.imread(out / "stack_prob.tif").shape == (3, 40, 48)
    assert _summary(out)["metric_per_case"][0]["iou"] > 0.9


def test_large_image_is_tiled_like_untiled(tmp_path, infer_model_path, infer_disk_image):
    image, truth = infer_disk_image(520, 610, seed=5)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "big.tif", image)
    args = ["--input", tmp_path / "in", "--save-prob"]
    assert _run([*args, "--output", tmp_path / "whole"], infer_model_path).exit_code == 0
    r = _run(
        [*args, "--output", tmp_path / "tiled", "--tile-size", "128", "--tile-overlap", "16"],
        infer_model_path,
    )
    assert r.exit_code == 0, r.output
    p1 = tifffile.imread(tmp_path / "whole" / "big_prob.tif")
    p2 = tifffile.imread(tmp_path / "tiled" / "big_prob.tif")
    inner = np.s_[8:-8, 8:-8]
    diff = np.abs(p1[inner] - p2[inner]).max()
    print(f"max |tiled - untiled| = {diff:.4f}")
    assert diff < 0.05
    m2 = iio.imread(tmp_path / "tiled" / "big.png") > 0
    assert iou(m2, truth) > 0.95


def test_format_tif_and_save_prob(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    out = tmp_path / "out"
    r = _run(
        ["--input", tmp_path / "in", "--output", out, "--format", "tif", "--save-prob"], infer_model_path
    )
    assert r.exit_code == 0, r.output
    assert sorted(_mask_files(out)) == ["img0.tif", "img0_prob.tif"]
    prob = tifffile.imread(out / "img0_prob.tif")
    assert prob.dtype == np.float32
    np.testing.assert_array_equal(prob > 0.5, tifffile.imread(out / "img0.tif") > 0)


def test_foreground_dark_is_the_complement(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    for rule in ("bright", "dark", "model"):
        r = _run(
            ["--input", tmp_path / "in", "--output", tmp_path / rule, "--foreground", rule], infer_model_path
        )
        assert r.exit_code == 0, r.output
    bright, dark, model = (iio.imread(tmp_path / r / "img0.png") > 0 for r in ("bright", "dark", "model"))
    np.testing.assert_array_equal(bright, ~dark)
    np.testing.assert_array_equal(bright, model)  # the test model marks bright regions already


# -- inputs -------------------------------------------------------------------------------
def test_recursive_keeps_relative_paths(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    _make_folder(tmp_path / "in" / "a" / "b", infer_disk_image, n=1, fmt="tif8")
    out = tmp_path / "out"
    r = _run(["--input", tmp_path / "in", "--output", out], infer_model_path)
    assert r.exit_code == 0 and sorted(_mask_files(out)) == ["img0.png"]
    r = _run(["--input", tmp_path / "in", "--output", out, "--recursive", "--overwrite"], infer_model_path)
    assert r.exit_code == 0, r.output
    assert sorted(_mask_files(out)) == ["a/b/img0.png", "img0.png"]


def test_single_file_and_list_inputs(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in" / "x", infer_disk_image, n=3)
    r = _run(["--input", tmp_path / "in" / "x" / "img1.png", "--output", tmp_path / "one"], infer_model_path)
    assert r.exit_code == 0 and sorted(_mask_files(tmp_path / "one")) == ["img1.png"]
    listing = tmp_path / "in" / "list.txt"
    listing.write_text(f"# two of three\nx/img0.png\n\n{tmp_path / 'in' / 'x' / 'img2.png'}\n")
    r = _run(["--input", listing, "--output", tmp_path / "listed"], infer_model_path)
    assert r.exit_code == 0, r.output
    assert sorted(_mask_files(tmp_path / "listed")) == ["img0.png", "img2.png"]


def test_same_stem_different_suffix_both_kept(tmp_path, infer_model_path, infer_disk_image):
    (tmp_path / "in").mkdir()
    image, _ = infer_disk_image(32, 32)
    iio.imwrite(tmp_path / "in" / "a.png", _u8(image))
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "out"], infer_model_path)
    assert r.exit_code == 0, r.output
    assert sorted(_mask_files(tmp_path / "out")) == ["a_png.png", "a_tif.png"]


def test_empty_folder_is_a_usage_error(tmp_path, infer_model_path):
    (tmp_path / "in").mkdir()
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "out"], infer_model_path)
    assert r.exit_code == 2 and "no images" in r.output and "--recursive" in r.output


# -- the folder the engine tests compare with the local engine --------------------------------------
def _engine_folder(root: Path, image, n: int) -> tuple[Path, Path]:
    """``n`` images with masks (two sizes, half in sub-folder b) under ROOT/in and ROOT/truth, and
    one unreadable file: (root, the bad file)."""
    _make_folder(root / "in", image, n=n // 2, masks=root / "truth")
    _make_folder(root / "in" / "b", image, n=n // 2, shape=(40, 72), masks=root / "truth" / "b")
    return root, _bad_file(root / "in" / "zz_bad", "truncated")


def _engine_args(root: Path, out: Path, *extra) -> list:
    """seginfer's arguments for the engine folder of ``root``, with ground truth, recursive."""
    return ["--input", root / "in", "--output", out, "--masks", root / "truth", "-r", *extra]


def _same_run_files(out: Path, ref: Path, names=("summary.json", "report.csv")) -> None:
    """The masks are the same bytes, and the named run files the same text up to the output path."""
    assert _mask_files(out) == _mask_files(ref)
    for name in names:
        got = (out / name).read_text().replace(str(out), "OUT")
        assert got == (ref / name).read_text().replace(str(ref), "OUT"), name


# -- reliability ------------------------------------------------------------------------------
def _bad_file(path: Path, kind: str) -> Path:
    if kind == "empty":
        path = path.with_suffix(".png")
        path.write_bytes(b"")
    elif kind == "truncated":
        path = path.with_suffix(".png")
        iio.imwrite(path, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:120])
    elif kind == "not_an_image":
        path = path.with_suffix(".jpg")
        path.write_text("hello, I am text")
    elif kind in ("nan", "inf"):
        path = path.with_suffix(".tif")
        a = np.ones((16, 16), np.float32)
        a[3, 4] = np.nan if kind == "nan" else np.inf
        tifffile.imwrite(path, a)
    elif kind == "one_pixel":
        path = path.with_suffix(".png")
        iio.imwrite(path, np.zeros((1, 1), np.uint8))
    elif kind == "mixed_page_sizes":
        path = path.with_suffix(".tif")
        with tifffile.TiffWriter(path) as tw:
            tw.write(np.zeros((16, 16), np.uint8))
            tw.write(np.zeros((8, 8), np.uint8))
    return path


BAD_KINDS = {
    "empty": "empty",
    "truncated": "cannot decode",
    "not_an_image": "cannot decode",
    "nan": "NaN or Inf",
    "inf": "NaN or Inf",
    "one_pixel": "smaller than the minimum",
    "mixed_page_sizes": "different sizes",
}


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_file_fails_alone(tmp_path, infer_model_path, infer_disk_image, kind):
    _make_folder(tmp_path / "in", infer_disk_image, n=3)
    bad = _bad_file(tmp_path / "in" / "zz_bad", kind)
    out = tmp_path / "out"
    r = _run(["--input", tmp_path / "in", "--output", out], infer_model_path)
    assert r.exit_code == 1, r.output
    assert sorted(_mask_files(out)) == ["img0.png", "img1.png", "img2.png"]
    s = _summary(out)
    assert (s["n_images"], s["n_written"], s["n_failed"]) == (4, 3, 1)
    assert s["failed"][0]["input"] == str(bad)
    assert BAD_KINDS[kind] in s["failed"][0]["error"]
    assert str(bad) in r.stderr and BAD_KINDS[kind] in r.stderr


def test_refuses_to_overwrite(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    out = tmp_path / "out"
    assert _run(["--input", tmp_path / "in", "--output", out], infer_model_path).exit_code == 0
    before = _mask_files(out)
    (out / "img1.png").write_bytes(b"user's precious file")
    r = _run(["--input", tmp_path / "in", "--output", out], infer_model_path)
    assert r.exit_code == 2
    assert "img0.png already exists (and 1 more); pass --overwrite" in r.output
    assert (out / "img1.png").read_bytes() == b"user's precious file"
    r = _run(["--input", tmp_path / "in", "--output", out, "--overwrite"], infer_model_path)
    assert r.exit_code == 0 and _mask_files(out) == before


def test_overwrite_and_skip_existing_exclude_each_other(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    r = _run(
        ["--input", tmp_path / "in", "--output", tmp_path / "o", "--overwrite", "--skip-existing"],
        infer_model_path,
    )
    assert r.exit_code == 2 and "exclude each other" in r.output


@pytest.mark.parametrize("where", [".", "masks", "sub/deeper"])
def test_refuses_output_inside_input(tmp_path, infer_model_path, infer_disk_image, where):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    r = _run(["--input", tmp_path / "in", "--output", tmp_path / "in" / where], infer_model_path)
    assert r.exit_code == 2 and "is the input folder" in r.output
    assert not (tmp_path / "in" / "img0.png.png").exists()


def test_resume_after_interruption(tmp_path, infer_model_path, infer_disk_image, monkeypatch):
    import unsupseg.infer.writers.mask as mask_writer

    _make_folder(tmp_path / "in", infer_disk_image, n=6, masks=tmp_path / "gt")
    assert _run(["--input", tmp_path / "in", "--output", tmp_path / "full"], infer_model_path).exit_code == 0

    real_write = mask_writer.write_mask
    calls = []

    def write_then_die(path, mask):
        calls.append(path)
        if len(calls) > 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        real_write(path, mask)

    monkeypatch.setattr(mask_writer, "write_mask", write_then_die)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main, ["--input", tmp_path / "in", "--output", out, "--model", infer_model_path, "-q"]
    )
    assert r.exit_code != 0
    written = _mask_files(out)
    assert 1 <= len(written) < 6 and all(iio.imread(out / n).shape == (48, 56) for n in written)
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    assert _summary(out)["stopped"] == "interrupted (Ctrl-C)"  # the summary of what was done is kept
    monkeypatch.setattr(mask_writer, "write_mask", real_write)

    r = _run(["--input", tmp_path / "in", "--output", out], infer_model_path)
    assert r.exit_code == 2 and "--skip-existing" in r.output  # would overwrite: refused
    r = _run(
        ["--input", tmp_path / "in", "--output", out, "--skip-existing", "--masks", tmp_path / "gt"],
        infer_model_path,
    )
    assert r.exit_code == 0, r.output
    s = _summary(out)
    assert (s["n_written"], s["n_skipped"], s["n_failed"]) == (6 - len(written), len(written), 0)
    assert all(c["iou"] > 0.9 for c in s["metric_per_case"])  # kept masks are evaluated too
    assert _mask_files(out) == _mask_files(tmp_path / "full")


def test_shards_union_equals_full_run(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=7)
    _make_folder(tmp_path / "in" / "sub", infer_disk_image, n=2, shape=(33, 41))
    args = ["--input", tmp_path / "in", "--recursive"]
    assert _run([*args, "--output", tmp_path / "full"], infer_model_path).exit_code == 0
    seen = []
    for i in (1, 2, 3):
        r = _run([*args, "--output", tmp_path / "sharded", "--shard", f"{i}/3"], infer_model_path)
        assert r.exit_code == 0, r.output
        s = _summary(tmp_path / "sharded", f"summary-shard-{i}-of-3.json")
        seen += [c["input"] for c in s["metric_per_case"]]
    assert len(seen) == len(set(seen)) == 9
    assert _mask_files(tmp_path / "sharded") == _mask_files(tmp_path / "full")


@pytest.mark.parametrize("shard", ["0/3", "4/3", "1-3", "a/b"])
def test_bad_shard_is_a_usage_error(tmp_path, infer_model_path, shard):
    r = _run(["--input", tmp_path, "--output", tmp_path / "o", "--shard", shard], infer_model_path)
    assert r.exit_code == 2 and "--shard" in r.output


# -- report ---------------------------------------------------------------------------------------
def test_summary_without_masks(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    out = tmp_path / "out"
    assert _run(["--input", tmp_path / "in", "--output", out], infer_model_path).exit_code == 0
    s = _summary(out)
    assert set(s) >= {"n_images", "n_written", "n_failed", "failed", "mean", "metric_per_case"}
    assert s["mean"] == {"iou": None, "iou_any_polarity": None, "dice": None}
    assert (s["n_images"], s["n_written"], s["n_failed"], s["failed"]) == (2, 2, 0, [])
    assert [c["mask"] for c in s["metric_per_case"]] == [None, None]
    rows = list(csv.DictReader((out / "report.csv").open()))  # written without --masks too: its quality
    assert [r["iou"] for r in rows] == ["", ""] and all(0.0 <= float(r["quality"]) <= 1.0 for r in rows)
    manifest = json.loads((out / "seginfer.json").read_text())
    assert manifest["provider"] == "CPUExecutionProvider" and manifest["model"]["card"]["arch"] == "test-mean"
    assert any(k.startswith("onnxruntime") for k in manifest["versions"])


def _square_case(folder: Path) -> None:
    """A clean 64x64 image, bright square rows/cols 16..47. The 3x3-mean model marks the square
    minus its 4 corner pixels (corner mean 4/9 < 0.5): 1020 foreground pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    img = np.zeros((64, 64), np.uint8)
    img[16:48, 16:48] = 200
    iio.imwrite(folder / "square.png", img)
    iio.imwrite(folder / "nomask.png", img)
    iio.imwrite(folder / "outside.png", img)


def test_report_values_with_known_overlap(tmp_path, infer_model_path):
    _square_case(tmp_path / "in")
    gt = tmp_path / "gt"
    (gt / "elsewhere").mkdir(parents=True)
    half = np.zeros((64, 64), np.uint8)
    half[16:48, 16:32] = 1  # left half of the square, 512 px; 2 of the dropped corners are inside
    iio.imwrite(gt / "square.png", half * 7)  # any nonzero value is foreground
    outside = np.ones((64, 64), np.uint8)
    outside[16:48, 16:48] = 0  # the complement of the square, matched by stem in another folder and format
    tifffile.imwrite(gt / "elsewhere" / "outside.tif", outside)
    out = tmp_path / "out"
    r = _run(["--input", tmp_path / "in", "--output", out, "--masks", gt], infer_model_path, quiet=False)
    assert r.exit_code == 0, r.output
    written = read_mask(out / "square.png")[0]
    assert written.sum() == 1020 and not written[16, 16] and written[16, 17]

    cases = {Path(c["input"]).name: c for c in _summary(out)["metric_per_case"]}
    sq = cases["square.png"]
    assert (sq["n_pixels"], sq["n_foreground"], sq["n_mask_foreground"], sq["n_intersection"]) == (
        4096,
        1020,
        512,
        510,
    )
    assert sq["iou"] == pytest.approx(510 / 1022)
    assert sq["iou_any_polarity"] == pytest.approx(510 / 1022)
    assert sq["dice"] == pytest.approx(2 * 510 / (1020 + 512))
    out_case = cases["outside.png"]  # prediction is the complement: IoU ~0, polarity-free IoU ~1
    assert out_case["mask"].endswith("outside.tif")
    assert out_case["iou"] == pytest.approx(0.0, abs=1e-9)
    assert out_case["iou_any_polarity"] == pytest.approx(3072 / 3076)
    assert cases["nomask.png"]["mask"] is None and cases["nomask.png"]["iou"] is None  # listed, not failed

    s = _summary(out)
    assert s["n_failed"] == 0
    assert s["mean"]["iou"] == pytest.approx((510 / 1022 + 0.0) / 2)
    assert s["mean"]["iou_any_polarity"] == pytest.approx((510 / 1022 + 3072 / 3076) / 2)
    rows = (out / "report.csv").read_text().splitlines()
    assert rows[0].startswith("input,output,status,mask,iou,iou_any_polarity,dice") and len(rows) == 4
    assert "iou_any_polarity" in r.stdout and "1 input(s) had no matching mask" in r.stdout


def test_mask_of_wrong_size_fails_that_input(tmp_path, infer_model_path):
    _square_case(tmp_path / "in")
    (tmp_path / "gt").mkdir()
    iio.imwrite(tmp_path / "gt" / "square.png", np.zeros((10, 10), np.uint8))
    out = tmp_path / "out"
    r = _run(["--input", tmp_path / "in", "--output", out, "--masks", tmp_path / "gt"], infer_model_path)
    assert r.exit_code == 1
    s = _summary(out)
    assert (
        s["n_written"] == 3 and s["n_failed"] == 1 and "does not match the image" in s["failed"][0]["error"]
    )


# -- device, help, imports --------------------------------------------------------------------------
@pytest.mark.skipif(cuda_problem() is None, reason="a working CUDA GPU is present")
def test_device_cuda_without_gpu_is_a_clear_error(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    args = ["--input", tmp_path / "in", "--output", tmp_path / "out", "--model", infer_model_path]
    r = CliRunner().invoke(main, [*map(str, args), "--device", "cuda"])
    assert r.exit_code == 2
    assert "--device cuda:0 cannot run:" in r.output and "--device cpu" in r.output
    assert not (tmp_path / "out" / "img0.png").exists()  # no silent CPU run


def test_help_and_version():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for text in (
        "Example: seginfer --input",
        "--device",
        "--shard",
        "--skip-existing",
        "0.2125 R",
        "Exit codes",
        "3 stopped because of the output",
        "--skip-existing.",
        "--max-megapixels",
    ):
        assert text in r.output
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "seginfer, version" in r.output


def test_missing_required_options_exit_2():
    assert CliRunner().invoke(main, []).exit_code == 2


def test_seginfer_never_imports_torch(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=2, masks=tmp_path / "gt")
    code = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from unsupseg.infer.cli.seginfer import main
        args = ["--input", {str(tmp_path / "in")!r}, "--output", {str(tmp_path / "out")!r},
                "--masks", {str(tmp_path / "gt")!r}, "--model", {str(infer_model_path)!r}]
        r = CliRunner().invoke(main, args + ["--save-prob", "-q"])
        assert r.exit_code == 0, r.output
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
        assert not heavy, heavy
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_plan_keeps_one_string_per_input(tmp_path, infer_model_path, infer_disk_image):
    from unsupseg.infer.inputs import Item, gather_inputs, plan_items
    from unsupseg.infer.writers import MaskWriter

    _make_folder(tmp_path / "in" / "s", infer_disk_image, n=3)
    _make_folder(tmp_path / "in", infer_disk_image, n=2, fmt="tif8")
    iio.imwrite(tmp_path / "in" / "img0.png", _u8(infer_disk_image(48, 56)[0]))  # img0.tif + img0.png
    inputs = gather_inputs(tmp_path / "in", recursive=True)
    assert inputs.srcs is None and all(isinstance(r, str) for r in inputs.rels)
    assert inputs.rels == ["img0.png", "img0.tif", "img1.tif", "s/img0.png", "s/img1.png", "s/img2.png"]
    out = tmp_path / "out"
    assert [i.rel for i in plan_items(inputs, out, shard=(1, 2))] == [
        "img0.png",
        "img1.tif",
        "s/img1.png",
    ]
    plan = plan_items(inputs, out)
    assert plan[0] == Item(str(tmp_path / "in" / "img0.png"), "img0.png", str(out / "img0_png"))
    assert MaskWriter("png").path(plan[4], 1) == str(out / "s" / "img1.png")
    r = _run(["--input", tmp_path / "in", "--output", out, "-r"], infer_model_path)
    assert r.exit_code == 0, r.output
    assert sorted(_mask_files(out)) == [
        "img0_png.png",
        "img0_tif.png",
        "img1.png",
        "s/img0.png",
        "s/img1.png",
        "s/img2.png",
    ]
    assert not [p for p in out.rglob(".*")]  # no temporary file (the spooled report rows) is left
    assert [c["input"] for c in _summary(out)["metric_per_case"]] == sorted(
        str(p) for p in inputs_paths(tmp_path / "in")
    )


def inputs_paths(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".png", ".tif")]


def test_cleanup_flags(tmp_path, infer_model_path):
    from test_infer_api import _ring_and_speck

    image, ring, hole = _ring_and_speck()
    (tmp_path / "in").mkdir()
    iio.imwrite(tmp_path / "in" / "ring.png", _u8(image))
    assert _run(["--input", tmp_path / "in", "--output", tmp_path / "a"], infer_model_path).exit_code == 0
    args = ["--input", tmp_path / "in", "--output", tmp_path / "b", "--min-size", "20", "--fill-holes"]
    assert _run(args, infer_model_path).exit_code == 0
    plain, cleaned = read_mask(tmp_path / "a" / "ring.png")[0], read_mask(tmp_path / "b" / "ring.png")[0]
    assert not plain[hole].any() and cleaned[hole].all()
    assert plain[78:82, 98:102].any() and not cleaned[78:82, 98:102].any()
