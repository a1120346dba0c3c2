"""Report pieces: mask matching, summary.json counts and means, atomic mask writes."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import imageio.v3 as iio
import numpy as np
import pytest

from unsupseg.core.files import MaskIndex
from unsupseg.core.imageio import read_mask, write_mask
from unsupseg.infer.report import CaseResult, Report, evaluate


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


@pytest.mark.parametrize("where", ["encoding", "writing the file"])
def test_mask_write_is_atomic(tmp_path, monkeypatch, where):
    import os

    from PIL import Image

    def half_save_then_interrupt(self, fp, *args, **kwargs):
        if hasattr(fp, "write"):
            fp.write(b"\x89PNG partial")
        else:
            Path(fp).write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    real_write = os.write

    def half_write_then_interrupt(fd, data):
        real_write(fd, bytes(data)[:10])
        raise KeyboardInterrupt

    if where == "encoding":
        monkeypatch.setattr(Image.Image, "save", half_save_then_interrupt)
    else:
        monkeypatch.setattr(os, "write", half_write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_mask(tmp_path / "m.png", np.ones((8, 8), bool))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # neither a partial mask nor a temp file
    write_mask(tmp_path / "sub" / "m.png", np.eye(8, dtype=bool))  # a missing folder is made
    assert (read_mask(tmp_path / "sub" / "m.png")[0] == np.eye(8, dtype=bool)).all()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.png"]


def _cases(n: int) -> list[CaseResult]:
    rng = np.random.default_rng(0)
    names = [f"in/img{i:03d}.png" for i in range(n)] + ["in/é.png", "in/\u4e2d.png", "in/Z.png"]
    cases = []
    for k, name in enumerate(names):
        case = CaseResult(name, f"out/{k}.png", "skipped" if k % 7 == 0 else "written", n_pixels=100)
        if k % 3:  # some inputs have a ground-truth mask
            case.mask, case.iou, case.iou_any_polarity, case.dice = f"gt/{k}.png", *rng.random(3)
            case.n_mask_foreground, case.n_intersection = 40, 30
        cases.append(case)
    return [cases[i] for i in rng.permutation(len(cases))]  # completion order, not sorted


def test_spooled_report_writes_the_same_bytes(tmp_path, monkeypatch):
    from unsupseg.infer.spool import RunSpool

    monkeypatch.setattr(RunSpool, "BATCH", 7)  # rows reach the file in several inserts
    spool = tmp_path / "spool" / ".cases.part"
    spool.parent.mkdir()
    cases = _cases(1200)
    memory, spooled = Report(n_images=len(cases) + 1), Report(n_images=len(cases) + 1, spool=spool)
    for r in (memory, spooled):
        for c in cases:
            r.add(c)
        r.fail("in/bad.png", ValueError("boom"))
    assert spool.exists() and spooled.n_skipped == memory.n_skipped > 0
    for r, name in ((memory, "m"), (spooled, "s")):
        r.write(tmp_path / f"{name}.json", tmp_path / f"{name}.csv")
    assert (tmp_path / "s.json").read_bytes() == (tmp_path / "m.json").read_bytes()
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "m.csv").read_bytes()
    assert spooled.summary() == memory.summary()
    assert spooled.summary_text() == memory.summary_text()
    assert [c.input for c in spooled.cases] == [c.input for c in cases]  # read back in insertion order
    with spooled:
        pass
    assert not spool.exists()  # the spool is a temporary file


def test_empty_spooled_report(tmp_path):
    with Report(n_images=0, spool=tmp_path / ".s.part") as r:
        r.write(tmp_path / "s.json")
    Report().write(tmp_path / "m.json")
    assert (tmp_path / "s.json").read_bytes() == (tmp_path / "m.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "s.json"]


def test_table_rows_are_spooled_and_written_sorted_by_input(tmp_path, monkeypatch):
    from unsupseg.infer.spool import RunSpool

    monkeypatch.setattr(RunSpool, "BATCH", 5)
    cols = ("image", "label", "area")
    reports = Report(tables={"objects": cols}), Report(spool=tmp_path / ".s.part", tables={"objects": cols})
    for r in reports:
        for name in ("b.png", "a.png", "c.png"):  # completion order is not input order
            r.add_rows("objects", name, [{"image": name, "label": k, "area": 10 * k} for k in (1, 2, 3)])
        with pytest.raises(KeyError, match="no table"):
            r.add_rows("other", "a.png", [])
    paths = [tmp_path / "m.csv", tmp_path / "s.csv"]
    for r, path in zip(reports, paths, strict=True):
        r.write_table("objects", path)
        r.close()
    lines = paths[1].read_text().splitlines()
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert lines[0] == "image,label,area" and lines[1:4] == ["a.png,1,10", "a.png,2,20", "a.png,3,30"]
    assert [line.split(",")[0] for line in lines[1:]] == ["a.png"] * 3 + ["b.png"] * 3 + ["c.png"] * 3
    assert not (tmp_path / ".s.part").exists()
