"""The label-free quality score (infer/quality.py): its terms, report.csv's and summary.json's
quality with and without --masks, kept masks, merged shards, report.html, and the warning of a
folder where the model fails."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner
from test_infer_cli import _make_folder, _run

from unsupseg.core.data import generate
from unsupseg.infer.cli.seginfer import main as seginfer
from unsupseg.infer.cli.segreport import main as segreport
from unsupseg.infer.quality import LI_BINS, WARN_MEDIAN, li_threshold, page_terms, quality, summarise


def _square(size: int = 96, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark background with Gaussian noise, and its true mask."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), dtype=bool)
    truth[size // 4 : 3 * size // 4, size // 3 : 5 * size // 6] = True
    return (truth + rng.normal(0, noise, truth.shape)).astype(np.float32), truth


# ----------------------------------------------------------------------------- the score
def test_the_true_mask_scores_higher_than_wrong_ones():
    image, truth = _square()
    right = quality(image, truth)
    shifted = quality(image, np.roll(truth, 20, axis=1))
    scattered = quality(image, np.random.default_rng(1).random(truth.shape) < truth.mean())
    assert 0.9 < right <= 1.0
    assert right > shifted + 0.2 and right > scattered + 0.4
    assert all(0.0 <= v <= 1.0 for v in page_terms(image, truth).values())


def test_li_threshold_on_the_histogram_splits_as_scikit_images_does():
    from skimage.filters import threshold_li

    rng = np.random.default_rng(0)
    sparse = np.where(rng.random(20000) < 0.05, rng.normal(200, 10, 20000), rng.normal(40, 8, 20000))
    cases = {
        "two equal modes": np.concatenate([rng.normal(50, 10, 8000), rng.normal(150, 12, 8000)]),
        "sparse bright objects": sparse,  # where Li and Otsu differ most
        "skewed": rng.gamma(2.0, 300.0, 16000) + 1000.0,  # 16-bit-like values far from 0
        "blurred page": _square(128, noise=0.3)[0].ravel(),
    }
    for name, values in cases.items():
        ours, theirs = li_threshold(values), threshold_li(values)
        assert abs(ours - theirs) < 4 * np.ptp(values) / LI_BINS, name  # a few of its 4096 bins
        assert np.count_nonzero((values > ours) != (values > theirs)) < 0.005 * values.size, name
    assert li_threshold(np.full(100, 7.0)) == 7.0  # one grey level: nothing to split


def test_agreement_with_li_counts_either_side_and_a_disagreeing_mask_scores_lower():
    image, truth = _square(noise=0.2)
    assert page_terms(image, truth)["agreement"] > 0.9
    assert page_terms(image, ~truth)["agreement"] > 0.9  # the dark side as foreground agrees too
    half = np.zeros_like(truth)
    half[:, : truth.shape[1] // 2] = True  # a region of the right size that a threshold never draws
    assert page_terms(image, half)["agreement"] < 0.5


def test_one_region_scores_zero_and_a_stack_is_the_mean_of_its_pages():
    image, truth = _square()
    assert quality(image, np.zeros_like(truth)) == quality(image, np.ones_like(truth)) == 0.0
    stack, masks = np.stack([image, image]), np.stack([truth, np.zeros_like(truth)])
    assert quality(stack, masks) == pytest.approx(quality(image, truth) / 2, abs=1e-4)
    with pytest.raises(ValueError, match="differ in shape"):
        quality(image, truth[:-1])


def test_large_pages_and_integer_data_score_as_the_page_does():
    image, truth = _square(96)
    big, big_truth = np.kron(image, np.ones((12, 12), np.float32)), np.kron(truth, np.ones((12, 12), bool))
    assert big.shape == (1152, 1152)  # scored on every 9th pixel (at most WORK_SIDE, 128, a side)
    assert quality(big, big_truth) == pytest.approx(quality(image, truth), abs=0.1)
    as16 = np.round((image - image.min()) / np.ptp(image) * 65535).astype(np.uint16)
    assert quality(as16, truth) == pytest.approx(quality(image, truth), abs=0.02)
    holes = image.copy()
    holes[0, :5] = np.nan  # non-finite values do not make the score undefined
    assert 0.0 <= quality(holes, truth) <= 1.0


def test_summary_has_mean_median_lowest_decile_and_warns_on_a_low_median():
    values = np.linspace(0.0, 0.8, 9)
    s = summarise(values)
    assert s["n"] == 9 and s["mean"] == pytest.approx(0.4) and s["median"] == pytest.approx(0.4)
    assert s["lowest_decile"] == pytest.approx(np.percentile(values, 10), abs=1e-4)
    assert WARN_MEDIAN > 0.4 and s["warn_below"] == WARN_MEDIAN
    assert "--adapt" in s["warning"] and "is 0.40" in s["warning"]
    assert summarise(values - 0.4 + WARN_MEDIAN)["warning"] is None  # the median at the threshold
    assert summarise([]) is None


# ----------------------------------------------------------------------------- the run's files
def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quality_column_with_and_without_masks(tmp_path, infer_model_path, infer_disk_image):
    images, truth = tmp_path / "in", tmp_path / "gt"
    _make_folder(images, infer_disk_image, n=3, masks=truth)
    for out, extra in ((tmp_path / "plain", []), (tmp_path / "gt_out", ["--masks", truth])):
        assert _run(["--input", images, "--output", out, *extra], infer_model_path).exit_code == 0
        rows = _rows(out / "report.csv")
        assert len(rows) == 3 and all(0.0 <= float(r["quality"]) <= 1.0 for r in rows)
        summary = json.loads((out / "summary.json").read_text())
        scores = [c["quality"] for c in summary["metric_per_case"]]
        assert scores == [float(r["quality"]) for r in rows]
        q = summary["quality"]
        assert q["n"] == 3 and q["mean"] == pytest.approx(np.mean(scores), abs=1e-4)
        assert q["median"] == pytest.approx(np.median(scores), abs=1e-4)
        assert q["lowest_decile"] == pytest.approx(np.percentile(scores, 10), abs=1e-4)
        assert json.loads((out / "seginfer.json").read_text())["quality"] == q
    with_gt = _rows(tmp_path / "gt_out" / "report.csv")
    assert all(r["iou"] for r in with_gt)  # the metrics beside it; the same scores without them
    assert [r["quality"] for r in with_gt] == [r["quality"] for r in _rows(tmp_path / "plain" / "report.csv")]


def test_kept_masks_and_merged_shards_keep_the_score(tmp_path, infer_model_path, infer_disk_image):
    images = tmp_path / "in"
    _make_folder(images, infer_disk_image, n=4)
    whole = tmp_path / "whole"
    assert _run(["--input", images, "--output", whole], infer_model_path).exit_code == 0
    expected = [r["quality"] for r in _rows(whole / "report.csv")]
    (whole / "img1.png").unlink()  # resumed: three masks kept and scored from the files, one written
    assert _run(["--input", images, "--output", whole, "--skip-existing"], infer_model_path).exit_code == 0
    rows = _rows(whole / "report.csv")
    assert [r["status"] for r in rows].count("skipped") == 3 and [r["quality"] for r in rows] == expected
    shards = tmp_path / "shards"
    for i in (1, 2):
        _run(["--input", images, "--output", shards, "--shard", f"{i}/2"], infer_model_path)
    assert CliRunner().invoke(segreport, [str(shards), "-q"]).exit_code == 0
    assert [r["quality"] for r in _rows(shards / "report.csv")] == expected
    merged = json.loads((shards / "summary.json").read_text())["quality"]
    assert merged == json.loads((whole / "summary.json").read_text())["quality"]


def test_report_html_ranks_by_the_score_without_truth_and_plots_it_with(
    tmp_path, infer_model_path, infer_disk_image
):
    images, truth = tmp_path / "in", tmp_path / "gt"
    _make_folder(images, infer_disk_image, n=4, masks=truth)
    plain = tmp_path / "plain"
    assert _run(["--input", images, "--output", plain, "--html"], infer_model_path).exit_code == 0
    text = (plain / "report.html").read_text()
    order = sorted(_rows(plain / "report.csv"), key=lambda r: (float(r["quality"]), r["input"]))
    titles = [line.split('title="', 1)[1].split('"', 1)[0] for line in text.split('class="tile"')[1:]]
    assert titles == [r["input"] for r in order]  # lowest score first
    assert "lowest label-free quality score" in text and "<circle" not in text
    gt = tmp_path / "gt_out"
    r = _run(["--input", images, "--output", gt, "--masks", truth, "--html"], infer_model_path)
    assert r.exit_code == 0
    text = (gt / "report.html").read_text()
    assert "Quality score and IoU" in text and text.count("<circle") == 4  # one dot per image


# ----------------------------------------------------------------------------- the warning
def _folder(path: Path, images: np.ndarray) -> Path:
    path.mkdir(parents=True)
    for i, image in enumerate(images):
        iio.imwrite(path / f"i{i}.png", image)
    return path


def _packaged(folder: Path, out: Path):
    """seginfer with the packaged model, as a user runs it (warnings on stderr)."""
    return CliRunner().invoke(seginfer, ["--input", str(folder), "--output", str(out), "--device", "cpu"])


def test_warns_where_the_model_fails_and_not_where_it_works(tmp_path):
    shapes, _ = generate(6, 64, 64, seed=3, quantize=8)  # what the packaged model segments well
    noise = np.random.default_rng(0).integers(0, 256, (6, 64, 64), dtype=np.uint8)  # nothing to find
    works = _packaged(_folder(tmp_path / "shapes", shapes), tmp_path / "shapes_out")
    fails = _packaged(_folder(tmp_path / "noise", noise), tmp_path / "noise_out")
    assert works.exit_code == fails.exit_code == 0
    assert "warning" not in works.stderr and "--adapt" not in works.stderr
    assert "seginfer: warning: the median quality score" in fails.stderr and "--adapt" in fails.stderr
    for out, warned in ((tmp_path / "shapes_out", False), (tmp_path / "noise_out", True)):
        q = json.loads((out / "seginfer.json").read_text())["quality"]
        assert (q["median"] < WARN_MEDIAN) == warned and (q["warning"] is not None) == warned
