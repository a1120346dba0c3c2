"""seginfer --labels / --rois / --split and instance ground truth, end to end (test ONNX model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from test_infer_cli import _run, _summary, _u8

from unsupseg.core.labels import label_mask
from unsupseg.core.objects import OBJECT_FIELDS
from unsupseg.infer import RunOptions, Segmenter, SegmenterConfig, run_folder
from unsupseg.infer.cli.segreport import main as segreport

# centres and radii of the disks of a test image; the last two touch (one component)
DISKS = [(14, 16, 8), (16, 60, 9), (50, 20, 7), (52, 56, 10), (52, 76, 10)]


def _nuclei(shape=(72, 96), disks=DISKS, seed=0, noise=0.03):
    """(image uint8, instance labels uint16): bright disks on a dark background."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for k, (cy, cx, r) in enumerate(disks, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2) & (labels == 0)] = k
    image = np.where(labels > 0, 0.8, 0.2) + np.random.default_rng(seed).normal(0, noise, shape)
    return _u8(image), labels


def _folder(tmp_path: Path, n: int = 3, truth: bool = True) -> tuple[Path, Path]:
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(n):
        image, labels = _nuclei(seed=i)
        iio.imwrite(tmp_path / "in" / f"img{i}.png", image)
        if truth:
            tifffile.imwrite(tmp_path / "gt" / f"img{i}.tif", labels)
    return tmp_path / "in", tmp_path / "gt"


def _objects(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_labels_rois_and_objects_csv(tmp_path, infer_model_path):
    import roifile
    from skimage.draw import polygon2mask

    src, _ = _folder(tmp_path, n=2, truth=False)
    out = tmp_path / "out"
    r = _run(["--input", src, "--output", out, "--labels", "--rois"], infer_model_path)
    assert r.exit_code == 0, r.output
    mask = iio.imread(out / "img0.png") > 0
    labels = tifffile.imread(out / "img0_labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == mask.shape
    np.testing.assert_array_equal(labels > 0, mask)  # every mask pixel is in an object
    np.testing.assert_array_equal(labels, label_mask(mask))
    assert labels.max() == len(DISKS) - 1  # the touching pair is one component without --split

    rows = _objects(out / "objects.csv")
    assert list(rows[0]) == ["image", *OBJECT_FIELDS]
    assert [r["image"] for r in rows] == sorted(r["image"] for r in rows)  # sorted by input
    for name in ("img0", "img1"):
        lab = tifffile.imread(out / f"{name}_labels.tif")
        mine = [r for r in rows if Path(r["image"]).stem == name]
        counts = np.bincount(lab.ravel())
        assert {int(r["label"]): int(r["area"]) for r in mine} == {
            k: int(counts[k]) for k in range(1, lab.max() + 1)
        }
    summary = _summary(out)
    assert [c["n_objects"] for c in summary["metric_per_case"]] == [4, 4] and summary["n_objects"] == 8

    rois = roifile.roiread(out / "img0_rois.zip")
    assert [roi.name for roi in rois] == [f"{k:04d}" for k in range(1, labels.max() + 1)]
    for k, roi in enumerate(rois, start=1):
        xy = roi.coordinates()  # ImageJ: pixel (x, y) has its centre at (x + 0.5, y + 0.5)
        filled = polygon2mask(labels.shape, np.c_[xy[:, 1], xy[:, 0]] - 0.5)
        obj = labels == k
        assert np.count_nonzero(filled & obj) / np.count_nonzero(filled | obj) > 0.9


def test_split_and_instance_metrics(tmp_path, infer_model_path):
    src, gt = _folder(tmp_path, n=2)
    scores = {}
    for flags in ([], ["--split"]):
        out = tmp_path / ("split" if flags else "plain")
        r = _run(["--input", src, "--output", out, "--masks", gt, "--labels", *flags], infer_model_path)
        assert r.exit_code == 0, r.output
        summary = _summary(out)
        case = summary["metric_per_case"][0]
        assert case["n_true_objects"] == len(DISKS)
        assert case["n_pred_objects"] == case["n_objects"] == len(DISKS) - (not flags)
        assert summary["mean"]["iou"] > 0.9  # the pixel metrics stay
        scores[bool(flags)] = summary["mean"]["f1"]
        header = (out / "report.csv").read_text().splitlines()[0].split(",")
        assert header[-9:] == [
            "n_true_objects",
            "n_pred_objects",
            "precision",
            "recall",
            "f1",
            "ap50",
            "ap50_95",
            "mean_matched_iou",
            "panoptic_quality",
        ]
    print(f"F1 at IoU 0.5: components {scores[False]:.3f}, --split {scores[True]:.3f}")
    # the touching pair is one object without --split: at most 4 of 5 matched, one missed
    assert scores[False] <= 2 * 4 / (2 * 4 + 1)
    assert scores[True] == 1.0


def test_binary_ground_truth_adds_no_instance_fields(tmp_path, infer_model_path):
    src, gt = _folder(tmp_path, n=1)
    iio.imwrite(gt / "img0.png", (tifffile.imread(gt / "img0.tif") > 0).astype(np.uint8) * 255)
    (gt / "img0.tif").unlink()
    out = tmp_path / "out"
    assert _run(["--input", src, "--output", out, "--masks", gt, "--labels"], infer_model_path).exit_code == 0
    summary = _summary(out)
    assert set(summary["mean"]) == {"iou", "iou_any_polarity", "dice"}
    assert "f1" not in summary["metric_per_case"][0] and summary["metric_per_case"][0]["n_objects"] == 4


def test_label_ground_truth_of_another_size_is_named_and_skipped(tmp_path, infer_model_path):
    src, gt = _folder(tmp_path, n=2)
    tifffile.imwrite(gt / "img1.tif", np.arange(40 * 30, dtype=np.uint16).reshape(40, 30))
    out = tmp_path / "out"
    r = _run(["--input", src, "--output", out, "--masks", gt, "--labels", "--split"], infer_model_path)
    assert r.exit_code == 1  # some input failed, the rest were written
    summary = _summary(out)
    assert [f["input"] for f in summary["failed"]] == [str(src / "img1.png")]
    assert str(gt / "img1.tif") in summary["failed"][0]["error"] and "size" in summary["failed"][0]["error"]
    by_input = {Path(c["input"]).name: c for c in summary["metric_per_case"]}
    assert by_input["img1.png"]["mask"] is None and "f1" not in by_input["img1.png"]
    assert by_input["img0.png"]["f1"] == 1.0 and summary["mean"]["f1"] == 1.0
    assert (out / "img1_labels.tif").is_file()  # its outputs were still written


def _seam_image():
    """Bars crossing the seams of 64-pixel tiles, and blobs on them: (image uint8, n objects)."""
    image = np.full((200, 230), 0.2)
    image[10:20, 5:220] = 0.8  # crosses every vertical seam
    image[30:190, 60:72] = 0.8  # crosses every horizontal seam
    yy, xx = np.mgrid[:200, :230]
    for cy, cx in ((120, 150), (120, 172), (60, 120)):  # a touching pair on a seam, one alone
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 11**2] = 0.8
    return _u8(image), 5


def test_tiled_image_has_the_labels_of_the_untiled_one(tmp_path, infer_model_path):
    image, n = _seam_image()
    (tmp_path / "in").mkdir()
    iio.imwrite(tmp_path / "in" / "big.png", image)
    runs = {}
    for name, tiles in (("whole", []), ("tiled", ["--tile-size", "64", "--tile-overlap", "16"])):
        out = tmp_path / name
        r = _run(
            ["--input", tmp_path / "in", "--output", out, "--labels", "--split", *tiles], infer_model_path
        )
        assert r.exit_code == 0, r.output
        runs[name] = (iio.imread(out / "big.png"), tifffile.imread(out / "big_labels.tif"), out)
    (mask_w, lab_w, out_w), (mask_t, lab_t, out_t) = runs["whole"], runs["tiled"]
    np.testing.assert_array_equal(mask_t, mask_w)
    np.testing.assert_array_equal(lab_t, lab_w)
    assert lab_w.max() == n and len(np.unique(lab_w[15, 5:220])) == 1  # the long bar is one object
    assert (out_t / "objects.csv").read_text() == (out_w / "objects.csv").read_text()


def test_skip_existing_gives_the_same_objects_csv(tmp_path, infer_model_path):
    src, gt = _folder(tmp_path, n=3)
    out = tmp_path / "out"
    args = ["--input", src, "--output", out, "--masks", gt, "--labels", "--rois", "--split"]
    assert _run(args, infer_model_path).exit_code == 0
    first = {n: (out / n).read_text() for n in ("objects.csv", "summary.json", "report.csv")}
    for f in out.glob("img1*"):
        f.unlink()  # as if the run had stopped before img1
    assert _run([*args, "--skip-existing"], infer_model_path).exit_code == 0
    summary = _summary(out)
    assert (summary["n_written"], summary["n_skipped"]) == (1, 2)
    assert (out / "objects.csv").read_text() == first["objects.csv"]
    assert summary["mean"] == json.loads(first["summary.json"])["mean"]
    assert summary["n_objects"] == json.loads(first["summary.json"])["n_objects"]


def test_shards_merge_into_the_objects_csv_of_one_run(tmp_path, infer_model_path):
    src, gt = _folder(tmp_path, n=5)
    args = ["--input", src, "--masks", gt, "--labels", "--split"]
    assert _run([*args, "--output", tmp_path / "one"], infer_model_path).exit_code == 0
    for i in (1, 2):
        r = _run([*args, "--output", tmp_path / "sh", "--shard", f"{i}/2"], infer_model_path)
        assert r.exit_code == 0, r.output
    assert (tmp_path / "sh" / "objects-shard-1-of-2.csv").is_file()
    r = CliRunner().invoke(segreport, [str(tmp_path / "sh"), "-q"])
    assert r.exit_code == 0, r.output
    for name in ("objects.csv", "summary.json", "report.csv"):
        one = (tmp_path / "one" / name).read_text().replace(str(tmp_path / "one"), "OUT")
        merged = (tmp_path / "sh" / name).read_text().replace(str(tmp_path / "sh"), "OUT")
        assert merged == one, name


def test_multipage_labels_page_by_page_or_3d(tmp_path, infer_model_path):
    (tmp_path / "in").mkdir()
    image, _ = _nuclei()
    tifffile.imwrite(tmp_path / "in" / "stack.tif", np.stack([image, image, image]), photometric="minisblack")
    for flag in ([], ["--labels-3d"]):
        out = tmp_path / ("3d" if flag else "2d")
        assert (
            _run(["--input", tmp_path / "in", "--output", out, "--labels", *flag], infer_model_path).exit_code
            == 0
        )
        labels = tifffile.imread(out / "stack_labels.tif")
        rows = _objects(out / "objects.csv")
        assert labels.shape == (3, 72, 96) and len(rows) == 3 * 4  # one row per object and page
        assert sum(int(r["area"]) for r in rows) == np.count_nonzero(labels)
        if flag:
            assert labels.max() == 4 and _summary(out)["n_objects"] == 4  # objects span the pages
        else:
            assert [p.max() for p in labels] == [4, 4, 4] and _summary(out)["n_objects"] == 12


def test_predict_returns_labels(infer_model_path):
    image, truth = _nuclei()
    seg = Segmenter(infer_model_path, device="cpu", threads=1, split=True)
    mask, prob, labels = seg.predict(image, labels=True)
    assert labels.shape == image.shape and labels.max() == len(DISKS)
    np.testing.assert_array_equal(labels, label_mask(mask, split=True))
    assert len(seg.predict(image)) == 2


def test_run_folder_options(tmp_path, infer_model_path):
    src, gt = _folder(tmp_path, n=1)
    options = RunOptions(
        segmenter=SegmenterConfig(model=infer_model_path, device="cpu", threads=1, split=True),
        outputs=("labels",),
        masks=gt,
    )
    result = run_folder(src, tmp_path / "out", options)
    assert result.summary["n_objects"] == len(DISKS) and result.summary["mean"]["f1"] == 1.0
    assert result.files.objects.is_file()


def test_split_method_is_recorded_and_the_old_one_kept_by_name(tmp_path, infer_model_path):
    """--split uses scaled; --split-method hmaxima and watershed, or --min-distance alone (as command
    lines for the watershed), the earlier methods; seginfer.json says which (with the method's
    parameters); the masks stay the same."""
    src, _ = _folder(tmp_path, n=1, truth=False)
    runs = {
        "plain": ([], None),
        "default": (["--split"], {"split": "scaled", "sigma_per_radius": 0.15, "h_per_radius": 0.06}),
        "hmaxima": (["--split", "--split-method", "hmaxima"], {"split": "hmaxima", "sigma": 1.0, "h": 0.25}),
        "by_name": (["--split", "--split-method", "watershed"], {"split": "watershed", "min_distance": 7}),
        "min_distance": (["--split", "--min-distance", "5"], {"split": "watershed", "min_distance": 5}),
    }
    masks = {}
    for name, (flags, want) in runs.items():
        out = tmp_path / name
        r = _run(["--input", src, "--output", out, "--labels", *flags], infer_model_path)
        assert r.exit_code == 0, r.output
        manifest = json.loads((out / "seginfer.json").read_text())
        masks[name] = iio.imread(out / "img0.png") > 0
        labels = tifffile.imread(out / "img0_labels.tif")
        np.testing.assert_array_equal(labels > 0, masks[name])  # splitting only relabels the foreground
        if want is None:
            assert manifest["labeling"]["split"] is None
            np.testing.assert_array_equal(labels, label_mask(masks[name]))
            continue
        assert {k: manifest["labeling"][k] for k in want} == want
        expected = label_mask(
            masks[name], split=True, method=want["split"], min_distance=want.get("min_distance", 7)
        )
        np.testing.assert_array_equal(labels, expected, err_msg=name)
        assert labels.max() == len(DISKS)  # the touching pair is cut
    for name in runs:
        np.testing.assert_array_equal(masks[name], masks["plain"])  # the foreground does not change


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--split", "--split-method", "hmaxima", "--min-distance", "3"], "--min-distance"),
        (["--split-method", "watershed"], "--split-method"),
    ],
)
def test_split_method_usage_errors(tmp_path, infer_model_path, flags, named):
    src, _ = _folder(tmp_path, n=1, truth=False)
    r = _run(["--input", src, "--output", tmp_path / "out", "--labels", *flags], infer_model_path)
    assert r.exit_code == 2 and named in r.output


@pytest.mark.parametrize(
    "flag", [["--split"], ["--labels-3d"], ["--min-distance", "3"], ["--split-method", "watershed"]]
)
def test_label_options_need_an_output_that_uses_them(tmp_path, infer_model_path, flag):
    src, _ = _folder(tmp_path, n=1, truth=False)
    r = _run(["--input", src, "--output", tmp_path / "out", *flag], infer_model_path)
    assert r.exit_code == 2 and "--labels" in r.output
