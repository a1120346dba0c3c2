"""Section "report": the HTML report of a large run: its size, the time to build it against the
run's own time, and the peak memory of ``segreport --html`` (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from bench.common import SEGINFER, BenchError, Section, Shared, fmt, log, peak_rss_run, write_pngs
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "HTML report of a large run: size and build time"
MAX_MB = 5.0  # the page and its previews together (issue 13)
MAX_SHARE = 0.05  # of the run's own time


def run(shared: Shared) -> Section:
    from unsupseg.core.data import generate
    from unsupseg.infer.html.page import build_report

    st = shared.settings
    n, n_bad = (300, 3) if st.quick else (20000, 20)
    sec = Section("report", TITLE, TEXT("intro", n=f"{n:,}", bad=n_bad, threads=st.threads))
    base = st.work / "report"
    imgs, masks = generate(n, 64, 64, sigma=(0.2, 0.8), seed=9100, quantize=8)
    write_pngs(base / "in", imgs)
    write_pngs(base / "gt", (masks.astype(np.uint8) * 255))
    del imgs, masks
    for k in range(n_bad):  # failures the page must list
        (base / "in" / f"broken_{k:03d}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = base / "out"
    args = ["--input", str(base / "in"), "--output", str(out), "--masks", str(base / "gt")]
    args += ["--model", str(shared.onnx_path), "--device", "cpu", "--threads", str(st.threads), "-q"]
    run = _seginfer(args, out)
    log(f"report: seginfer {n:,} images in {run['run_s']:.1f} s")
    t0 = time.perf_counter()
    page = build_report(out / "summary.json", [out / "seginfer.json"], out / "report.html")
    build_s = time.perf_counter() - t0
    rss, rss_wall = _segreport_rss(out)
    _report(sec, n, run["run_s"], build_s, page, rss, rss_wall)
    return sec


def _report(sec: Section, n: int, run_s: float, build_s: float, page, rss: float, rss_wall: float) -> None:
    """Table, results.json data, notes and the two targets from the measurements."""
    total_mb = (page.html_bytes + page.assets_bytes) / 1e6
    share = build_s / run_s
    sec.table(
        f"report.html of a seginfer run over {n:,} images (64x64, with ground truth)",
        ["measure", "value"],
        [
            ["seginfer run (its own time, s)", fmt(run_s)],
            ["report build (s)", fmt(build_s)],
            ["build / run", f"{100 * share:.1f}%"],
            ["inputs shown", fmt(page.n_shown)],
            ["report.html (KB)", fmt(page.html_bytes / 1e3)],
            ["report_files/ (KB)", fmt(page.assets_bytes / 1e3)],
            ["page + previews (MB)", fmt(total_mb)],
            ["segreport --html peak RSS (MB)", fmt(rss)],
            ["segreport --html wall (s, with start-up)", fmt(rss_wall)],
        ],
    )
    sec.data = {
        "n_images": n,
        "run_s": run_s,
        "build_s": build_s,
        "build_share": share,
        "n_shown": page.n_shown,
        "html_bytes": page.html_bytes,
        "assets_bytes": page.assets_bytes,
        "segreport_html_maxrss_mb": rss,
        "segreport_html_wall_s": rss_wall,
    }
    sec.notes.append(TEXT("cost", per_preview=f"{page.assets_bytes / max(page.n_shown, 1) / 1e3:.1f}"))
    sec.target(
        f"report.html of {n:,} images under {MAX_MB:g} MB with its previews (issue 13)",
        f"{total_mb:.2f} MB",
        total_mb < MAX_MB,
    )
    sec.target(
        f"report.html built in under {100 * MAX_SHARE:g}% of the run's time (issue 13)",
        f"{100 * share:.1f}% ({build_s:.2f} s of {run_s:.1f} s)",
        share < MAX_SHARE,
    )


def _seginfer(args: list[str], out) -> dict:
    """Run seginfer (exit 1 is expected: the broken files fail); the run's own time from its manifest."""
    proc = subprocess.run(SEGINFER + args, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise BenchError(f"seginfer failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    manifest = json.loads((out / "seginfer.json").read_text())
    return {"run_s": manifest["seconds"], "n_written": manifest["n_written"]}


def _segreport_rss(out) -> tuple[float, float]:
    """(peak RSS MB, wall s) of ``segreport --html`` rebuilding the page in a fresh process."""
    code = "import sys; from unsupseg.infer.cli.segreport import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, str(out), "--html", "--overwrite", "-q"]
    rss, wall, _ = peak_rss_run(cmd, ok=(0, 1))  # segreport exits 1 when the run has failures
    return rss, wall
