"""report.html in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The page of a seginfer run with odd file names opens with no console error and no request
that leaves the disk; its thumbnails and summary figures match summary.json; clicking a
thumbnail opens the large view with the image, the mask and the overlay. Screenshots go to
pytest's tmp folder and to ``$TEST_ARTIFACTS`` when it is set (the folder is printed).

Chromium: ``$UNSUPSEG_CHROMIUM`` or ``chromium`` on the PATH (``.ci/run`` installs it with
apt-get). Without it the tests are skipped with that reason, except where
``UNSUPSEG_REQUIRE_BROWSER=1`` (``.ci/run`` sets it): there a missing browser fails.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_infer_cli import _run
from test_report_html import _odd_folder

CHROMIUM = os.environ.get("UNSUPSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# a fresh profile (Playwright makes one per launch) and nothing that talks to the network
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("UNSUPSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("UNSUPSEG_REQUIRE_BROWSER=1 but no Chromium: apt-get install chromium")
        pytest.skip("no Chromium on this machine (apt-get install chromium, or set UNSUPSEG_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('playwright is missing: pip install -e ".[dev]"')
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def artifacts(tmp_path, capsys):
    """Where screenshots go: tmp_path/artifacts, copied to $TEST_ARTIFACTS when set (printed)."""
    folder = tmp_path / "artifacts"
    folder.mkdir()
    yield folder
    extra = os.environ.get("TEST_ARTIFACTS")
    if extra:
        shutil.copytree(folder, Path(extra) / "report_browser", dirs_exist_ok=True)
    with capsys.disabled():
        print(f"\nscreenshots: {folder}" + (f" and {Path(extra) / 'report_browser'}" if extra else ""))


class Watch:
    """Console errors, page errors and every request of one page; requests off the disk are aborted."""

    def __init__(self, page):
        self.errors, self.requests, self.blocked = [], [], []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        page.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def check(self):
        assert self.errors == [], self.errors
        assert self.blocked == [], f"network requests: {self.blocked}"
        assert self.requests and all(u.startswith(("file:", "data:")) for u in self.requests)


def test_run_report_in_chromium(tmp_path, browser, artifacts, infer_model_path, infer_disk_image):
    images, truth = _odd_folder(tmp_path, infer_disk_image)
    out = tmp_path / "out"
    assert (
        _run(["--input", images, "--output", out, "--masks", truth, "--html"], infer_model_path).exit_code
        == 1
    )
    summary = json.loads((out / "summary.json").read_text())

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    page.goto((out / "report.html").as_uri())
    page.wait_for_load_state("load")
    tiles = page.locator("a.tile")
    assert tiles.count() == summary["n_written"] + summary["n_failed"]
    for key in ("n_images", "n_written", "n_skipped", "n_failed"):
        assert page.locator(f'[data-key="{key}"]').inner_text() == f"{summary[key]:,}"
    for key in ("iou", "iou_any_polarity", "dice"):
        shown = float(page.locator(f'[data-key="mean {key}"]').inner_text())
        assert shown == pytest.approx(summary["mean"][key], abs=5e-5)
    assert "x<y>&z" in page.locator(".grid").inner_text()  # odd names shown as they are
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)

    tile = tiles.nth(1)  # the worst written input (the failure, first, has no picture)
    tile.scroll_into_view_if_needed()
    thumb = tile.locator("img").first
    thumb.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    view = page.locator(tile.get_attribute("href"))
    assert not view.is_visible()
    tile.click()
    view.wait_for(state="visible")
    assert [c.inner_text() for c in view.locator("figcaption").all()] == ["image", "mask", "overlay"]
    for img in view.locator("img").all():
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        box = img.bounding_box()
        assert box["width"] >= 200 and box["height"] >= 200  # large: the thumbnail is 128 px
    page.screenshot(path=str(artifacts / "large_view.png"))
    view.locator("a.close").click()
    view.wait_for(state="hidden")
    watch.check()
    page.close()


def test_training_report_in_chromium(tmp_path, browser, artifacts):
    from unsupseg.train.report_html import train_report_html

    rng = np.random.default_rng(0)
    series = [
        f"{s}_{k}_{m}"
        for s in ("train", "test")
        for k in ("loss", "fidelity", "tv", "iou")
        for m in ("mean", "std")
    ]
    history = [{"epoch": e, **{k: float(rng.random()) for k in series}} for e in range(1, 6)]
    summary = {
        "final": {"epoch": 5, "train_iou": 90.0, "test_iou": 89.0},
        "has_masks": True,
        "config": {"out": "run"},
    }
    imgs, masks = rng.random((3, 32, 32)).astype(np.float32), rng.random((3, 32, 32)) > 0.5
    path = tmp_path / "report.html"
    path.write_text(
        train_report_html(history, summary, {"training images": (imgs, masks, imgs)}), encoding="utf-8"
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert page.locator("svg.chart").count() == 8
    assert page.locator('[data-key="test_iou"]').inner_text() == "89.0000"
    assert page.locator("table.pics img").count() == 3 * 5
    page.screenshot(path=str(artifacts / "training_report.png"), full_page=True)
    watch.check()
    page.close()
