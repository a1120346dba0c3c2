"""Report pieces: mask matching, summary.json counts and means, atomic mask writes."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import imageio.v3 as iio
import numpy as np
import pytest

from unsupseg.core.imageio import write_mask
from unsupseg.infer.report import CaseResult, MaskIndex, Report, evaluate


@pytest.fixture
def mask_dir(tmp_path):
    root = tmp_path / "gt"
    for rel in ("a/one.png", "a/two.tif", "b/two.png", "three.bmp", "c/four.png", ".hidden.png", "notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            (root / rel).write_text("x")
        else:
            iio.imwrite(root / rel, np.zeros((8, 8), np.uint8))
    return root


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("a/one.jpg", "a/one.png"),  # same relative path, other suffix
        ("a/two.png", "a/two.tif"),  # relative path wins over the ambiguous stem
        ("x/two.png", None),  # stem "two" is ambiguous elsewhere: no match
        ("deep/er/three.tif", "three.bmp"),  # unique stem anywhere
        ("four.png", "c/four.png"),
        ("hidden.png", None),
        ("notes.png", None),  # only image files are masks
    ],
)
def test_mask_matching(mask_dir, rel, expected):
    hit = MaskIndex(mask_dir).find(PurePosixPath(rel))
    assert (hit.relative_to(mask_dir).as_posix() if hit else None) == expected


def test_evaluate_counts(tmp_path):
    gt = np.zeros((1, 10, 10), bool)
    gt[0, :5] = True  # 50 px
    pred = np.zeros((1, 10, 10), bool)
    pred[0, :, :5] = True  # 50 px, 25 overlap
    iio.imwrite(tmp_path / "m.png", gt[0].astype(np.uint8) * 3)
    case = CaseResult("in.png", "out.png", "written", n_pixels=100, n_foreground=50)
    evaluate(case, pred, tmp_path / "m.png")
    assert (case.n_mask_foreground, case.n_intersection) == (50, 25)
    assert case.iou == pytest.approx(25 / 75) and case.dice == pytest.approx(0.5)
    assert case.iou_any_polarity == pytest.approx(25 / 75)  # the complement overlaps just as much


def test_summary_counts_and_null_means(tmp_path):
    report = Report(n_images=4)
    report.add(CaseResult("b.png", "o/b.png", "written"))
    report.add(CaseResult("a.png", "o/a.png", "skipped"))
    msg = report.fail(Path("c.png"), ValueError("boom"))
    assert msg == "ValueError: boom"
    s = report.summary()
    assert (s["n_images"], s["n_written"], s["n_skipped"], s["n_failed"]) == (4, 1, 1, 1)
    assert s["failed"] == [{"input": "c.png", "error": "ValueError: boom"}]
    assert s["mean"] == {"iou": None, "iou_any_polarity": None, "dice": None}
    assert [c["input"] for c in s["metric_per_case"]] == ["a.png", "b.png"]  # sorted
    report.write(tmp_path / "summary.json", tmp_path / "report.csv")
    assert (tmp_path / "report.csv").read_text().count("\n") == 3


def test_mask_write_is_atomic(tmp_path, monkeypatch):
    from PIL import Image

    def half_write_then_interrupt(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", half_write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_mask(tmp_path / "m.png", np.ones((8, 8), bool))
    assert list(tmp_path.iterdir()) == []  # neither a partial mask nor a temp file
