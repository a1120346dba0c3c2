"""report.html: which inputs it shows, what it says, file names, seginfer --html and segreport --html.

The page is read back with the standard library's HTML parser; tests/test_report_browser.py
opens it in Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner
from test_infer_cli import _bad_file, _make_folder, _run

from unsupseg.infer import RunOptions, SegmenterConfig, run_folder
from unsupseg.infer.cli.segreport import main as segreport
from unsupseg.infer.html import select
from unsupseg.infer.html.page import build_report
from unsupseg.infer.html.select import Selector, name_hash, read_summary
from unsupseg.infer.report import CaseResult, Report

# names that must be shown and escaped, never break the page
ODD_NAMES = ["a b", "x<y>&z", "q\"uo't", "ünï", "<img src=x onerror=alert(1)>"]


class Page(HTMLParser):
    """What a test needs of a report page: tiles, views, figures, image sources, scripts, links."""

    def __init__(self, text: str):
        super().__init__()
        self.tiles, self.views, self.figures, self.srcs, self.scripts, self.hrefs = [], set(), {}, [], 0, []
        self._key = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "tile" in (a.get("class") or "").split():
            self.tiles.append(a)
        if tag == "div" and "view" in (a.get("class") or "").split():
            self.views.add(a["id"])
        if a.get("data-key"):
            self._key = a["data-key"]
        if tag in ("img", "script", "link", "iframe") and a.get("src"):
            self.srcs.append(a["src"])
        if tag == "link":
            self.hrefs.append(a.get("href"))
        self.scripts += tag == "script"

    def handle_data(self, data):
        if self._key is not None:
            self.figures[self._key] = data
            self._key = None


def _row(i: int, iou: float | None, fg: int = 10) -> dict:
    return dict(
        input=f"in/{i:03d}.png",
        output=f"out/{i:03d}.png",
        status="written",
        mask=None,
        iou=iou,
        iou_any_polarity=iou,
        dice=iou,
        n_pixels=100,
        n_foreground=fg,
        n_mask_foreground=None,
        n_intersection=None,
    )


# ----------------------------------------------------------------------------- selection
def test_selector_keeps_the_worst_a_hash_sample_and_the_failures():
    rng = np.random.default_rng(0)
    ious = rng.random(500)
    sel = Selector("iou", worst=7, random=5, failed=2)
    for i, v in enumerate(ious):
        sel.add(_row(i, float(v)))
    for name in ("in/f2", "in/f1", "in/f3"):
        sel.fail({"input": name, "error": "broken"})
    s = sel.result()
    worst = sorted(range(500), key=lambda i: ious[i])[:7]
    assert {e.input for e in s.entries if "worst" in e.tags} == {f"in/{i:03d}.png" for i in worst}
    by_hash = sorted((f"in/{i:03d}.png" for i in range(500)), key=name_hash)[:5]
    assert {e.input for e in s.entries if "random" in e.tags} == set(by_hash)
    assert [e.input for e in s.entries[:2]] == ["in/f1", "in/f2"]  # failures first, 2 of 3 shown
    assert (s.n_failed, s.n_failed_shown, s.n_worst, s.n_random, s.n_rows) == (3, 2, 7, 5, 500)
    scores = [e.score for e in s.entries[2:]]
    assert scores == sorted(scores)  # worst first
    assert sum(s.histogram) == 500 and s.histogram == np.histogram(ious, 20, (0, 1))[0].tolist()


def test_selection_of_shards_merged_is_the_selection_of_the_run():
    """The worst and the hash sample of all rows are found among each shard's own picks."""
    rows = [_row(i, float(v)) for i, v in enumerate(np.random.default_rng(1).random(300))]
    whole = Selector("iou", worst=10, random=10)
    for r in rows:
        whole.add(r)
    picks = []
    for k in range(3):
        shard = Selector("iou", worst=10, random=10)
        for r in rows[k::3]:
            shard.add(r)
        picks += [e.row for e in shard.result().entries]
    merged = Selector("iou", worst=10, random=10)
    for r in picks:
        merged.add(r)
    assert {e.input for e in merged.result().entries} == {e.input for e in whole.result().entries}


def test_without_ground_truth_the_most_extreme_masks_are_worst():
    sel = Selector("fraction", worst=2, random=0)
    for i, fg in enumerate([50, 2, 97, 40, 30]):
        sel.add(_row(i, None, fg))
    s = sel.result()
    assert [e.input for e in s.entries] == ["in/001.png", "in/002.png"]  # 2% and 97% foreground


def test_read_summary_streams_the_rows_report_writes(tmp_path, monkeypatch):
    report = Report(n_images=40)
    for i in range(40):
        name = f"in/{i:02d} {ODD_NAMES[i % len(ODD_NAMES)]}" + ("\udcff" if i == 3 else "")
        report.add(CaseResult(name, name + ".png", "written", iou=i / 40, n_pixels=10, n_foreground=i % 10))
    report.fail("in/zz", "cannot decode")
    path = tmp_path / "summary.json"
    report.write(path)
    monkeypatch.setattr(select, "_CHUNK", 97)  # rows cut across chunk boundaries
    head, rows = read_summary(path)
    whole = json.loads(path.read_text())
    assert list(rows) == whole.pop("metric_per_case")
    assert head == whole


def test_read_summary_names_a_cut_file(tmp_path):
    report = Report(n_images=3)
    for i in range(3):
        report.add(CaseResult(f"in/{i}", "o", "written"))
    path = tmp_path / "summary.json"
    report.write(path)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ValueError, match="summary.json ends inside"):
        list(read_summary(path)[1])


# ----------------------------------------------------------------------------- seginfer --html
def _odd_folder(tmp_path: Path, disk, n: int = 10) -> tuple[Path, Path]:
    """n images with odd names and their masks, one inverted ground truth, one unreadable file."""
    images, truth = tmp_path / "in", tmp_path / "gt"
    images.mkdir()
    truth.mkdir()
    for i in range(n):
        name = f"{ODD_NAMES[i % len(ODD_NAMES)]} {i}"
        image, mask = disk(48, 56, seed=i)
        iio.imwrite(images / f"{name}.png", (np.clip(image, 0, 1) * 255).astype(np.uint8))
        iio.imwrite(truth / f"{name}.png", (mask if i else ~mask).astype(np.uint8) * 255)
    _bad_file(images / "zz broken <&>", "truncated")
    return images, truth


def _page(folder: Path, name: str = "report.html") -> tuple[str, Page]:
    text = (folder / name).read_text(encoding="utf-8")
    return text, Page(text)


def test_seginfer_html_page_matches_summary(tmp_path, infer_model_path, infer_disk_image):
    images, truth = _odd_folder(tmp_path, infer_disk_image)
    out = tmp_path / "out"
    r = _run(["--input", images, "--output", out, "--masks", truth, "--html"], infer_model_path)
    assert r.exit_code == 1  # the broken file
    summary = json.loads((out / "summary.json").read_text())
    text, page = _page(out)
    assert len(page.tiles) == summary["n_written"] + summary["n_failed"] == 11  # all shown: a small run
    assert {t["href"][1:] for t in page.tiles} == page.views  # every thumbnail opens its large view
    for key in ("n_images", "n_written", "n_skipped", "n_failed"):
        assert page.figures[key] == f"{summary[key]:,}"
    for key in ("iou", "iou_any_polarity", "dice"):
        assert page.figures[f"mean {key}"] == f"{summary['mean'][key]:.4f}"
    # worst first: the failure, then the inverted ground truth (IoU near 0)
    assert "zz broken" in page.tiles[0]["title"] and page.tiles[1]["title"].endswith(" 0.png")
    # self-contained: no script, nothing fetched but the previews beside the page
    assert page.scripts == 0 and "http:" not in text and "https:" not in text
    assert all(s.startswith("report_files/") or s.startswith("data:") for s in page.srcs)
    assert all((out / s).is_file() for s in page.srcs if s.startswith("report_files/"))
    # odd names are shown escaped
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "x&lt;y&gt;&amp;z" in text and "q&quot;uo&#x27;t" in text and "ünï" in text
    assert len(list((out / "report_files").iterdir())) == 3 * 10  # image, mask, outlines per written input


def test_non_utf8_names_are_shown(tmp_path, infer_model_path, infer_disk_image):
    images = tmp_path / "in"
    _make_folder(images, infer_disk_image, n=2)
    os.rename(images / "img1.png", os.fsdecode(bytes(images) + b"/img\xff1.png"))
    out = tmp_path / "out"
    assert _run(["--input", images, "--output", out, "--html"], infer_model_path).exit_code == 0
    text, page = _page(out)
    assert len(page.tiles) == 2 and "img\\xff1.png" in text
    assert page.figures["mean iou"] == "–"  # no ground truth


def test_a_large_run_shows_the_worst_a_sample_and_the_failures(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=24, masks=tmp_path / "gt")
    for k in range(3):
        _bad_file(tmp_path / "in" / f"bad{k}", "truncated")
    out = tmp_path / "out"
    options = RunOptions(
        segmenter=SegmenterConfig(model=infer_model_path, device="cpu", threads=1), masks=tmp_path / "gt"
    )
    run_folder(tmp_path / "in", out, options)
    result = build_report(
        out / "summary.json", [out / "seginfer.json"], out / "report.html", worst=4, random=5, failed=2
    )
    text, page = _page(out)
    summary = json.loads((out / "summary.json").read_text())
    worst = sorted(summary["metric_per_case"], key=lambda c: (c["iou"], c["input"]))[:4]
    sample = sorted((c["input"] for c in summary["metric_per_case"]), key=name_hash)[:5]
    shown = {t["title"] for t in page.tiles}
    assert {c["input"] for c in worst} <= shown and set(sample) <= shown
    assert len(shown) == result.n_shown == len({c["input"] for c in worst} | set(sample)) + 2
    assert (
        "the worst <b>4</b> of 24" in text
        and "a random <b>5</b> of 24" in text
        and "<b>2</b> of 3 failed" in text
    )
    assert "Failures (3)" in text  # the table lists them all


def test_previews_of_moved_inputs_are_named_missing(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=3)
    out = tmp_path / "out"
    assert _run(["--input", tmp_path / "in", "--output", out], infer_model_path).exit_code == 0
    shutil.rmtree(tmp_path / "in")
    r = CliRunner().invoke(segreport, [str(out), "--html", "-q"])
    assert r.exit_code == 0, r.output
    text, page = _page(out)
    assert len(page.tiles) == 3 and text.count("input not found") >= 3


# ----------------------------------------------------------------------------- segreport --html
def test_segreport_html_of_shards_shows_what_the_single_run_shows(
    tmp_path, infer_model_path, infer_disk_image
):
    images, truth = _odd_folder(tmp_path, infer_disk_image, n=9)
    args = ["--input", images, "--masks", truth]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    _run([*args, "--output", single, "--html"], infer_model_path)
    for i in (1, 2, 3):
        _run([*args, "--output", sharded, "--shard", f"{i}/3"], infer_model_path)
    r = CliRunner().invoke(segreport, [str(sharded), "--html", "-q"])
    assert r.exit_code == 1  # one input failed
    _, one = _page(single)
    text, merged = _page(sharded)
    assert [t["title"] for t in merged.tiles] == [t["title"] for t in one.tiles]
    assert merged.figures == one.figures
    assert "3 shards merged" in text
    again = CliRunner().invoke(segreport, [str(sharded), "--html", "-q"])
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output


def test_segreport_html_needs_a_run(tmp_path):
    r = CliRunner().invoke(segreport, [str(tmp_path), "--html"])
    assert r.exit_code == 2 and "no summary.json" in r.output and "run seginfer" in r.output


def test_rebuilding_replaces_the_previews_whole(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    out = tmp_path / "out"
    _run(["--input", tmp_path / "in", "--output", out, "--html"], infer_model_path)
    (out / "report_files" / "stale.jpg").write_bytes(b"old")
    r = CliRunner().invoke(segreport, [str(out), "--html", "--overwrite", "-q"])
    assert r.exit_code == 0, r.output
    assert not (out / "report_files" / "stale.jpg").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


# ----------------------------------------------------------------------------- segtrain's page
def test_training_report_page():
    from unsupseg.train.report_html import train_report_html

    history = [
        {
            "epoch": e,
            **{
                f"{s}_{k}_{m}": 1.0 / e
                for s in ("train", "test")
                for k in ("loss", "fidelity", "tv", "iou")
                for m in ("mean", "std")
            },
        }
        for e in (1, 2, 3)
    ]
    summary = {
        "final": {"epoch": 3, "train_iou": 91.5, "test_iou": 90.25},
        "has_masks": True,
        "config": {"out": "runs/x<y>", "arch": "unet", "width": 8, "epochs": 3},
        "wall_time_s": 2.0,
    }
    rng = np.random.default_rng(0)
    imgs, masks = rng.random((2, 16, 16)).astype(np.float32), rng.random((2, 16, 16)) > 0.5
    text = train_report_html(
        history, summary, {"training images": (imgs, masks, imgs), "test images": (imgs, masks, imgs)}
    )
    page = Page(text)
    assert text.count("<svg") == 8 and page.scripts == 0
    assert page.figures["train_iou"] == "91.5000" and page.figures["test_iou"] == "90.2500"
    assert len(page.srcs) == 2 * 2 * 5 and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert "runs/x&lt;y&gt;" in text
