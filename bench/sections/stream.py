"""Section "stream": ``segtrain --data DIR`` on a few vs many files (peak RSS flat in the number
of files) and the throughput of one reader process (``--workers 1``)."""

from __future__ import annotations

import json

from bench.common import SEGTRAIN, Section, Shared, fmt, log, peak_rss_run, write_pngs
from bench.prose import Prose
from bench.timing import usable_cores

TEXT = Prose(__file__)
TITLE = "Training from a folder: streamed, flat memory"


def run(shared: Shared) -> Section:
    from unsupseg.core.data import generate

    st = shared.settings
    n_few, n_many = (200, 2000) if st.quick else (2000, 50000)
    samples = 256 if st.quick else 2048
    intro = TEXT(
        "intro",
        n_few=f"{n_few:,}",
        n_many=f"{n_many:,}",
        samples=f"{samples:,}",
        width=shared.model_config.width,
        threads=st.threads,
    )
    sec = Section("stream", TITLE, intro)
    base = st.work / "stream"
    imgs, _ = generate(n_many, 64, 64, sigma=(0.2, 0.8), seed=8000, quantize=8)
    write_pngs(base / "many", imgs)
    write_pngs(base / "few", imgs[:n_few])
    del imgs
    rows, results = [], {}
    for label, folder, workers in (
        (f"{n_few:,} files", base / "few", 0),
        (f"{n_many:,} files", base / "many", 0),
        (f"{n_many:,} files, --workers 1", base / "many", 1),
    ):
        out = base / f"run_{folder.name}_{workers}"
        cmd = SEGTRAIN + [
            "--data",
            str(folder),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--samples-per-epoch",
            str(samples),
            "--width",
            str(shared.model_config.width),
            "--threads",
            str(st.threads),
            "--workers",
            str(workers),
            "--device",
            "cpu",
            "--no-plots",
            "-q",
            "--overwrite",
        ]
        rss, wall, _ = peak_rss_run(cmd)
        m = json.loads((out / "metrics.json").read_text())
        ips = samples / m["wall_time_s"]
        results[label] = {"maxrss_mb": rss, "wall_s": wall, "run_s": m["wall_time_s"], "images_per_s": ips}
        rows.append([label, fmt(rss), fmt(wall), fmt(ips)])
        log(f"stream {label}: {rss:.0f} MB, {ips:.0f} crops/s")
    sec.table("segtrain --data DIR", ["folder", "peak RSS MB", "wall s (with start-up)", "crops/s"], rows)
    _report(sec, results, n_few, n_many)
    return sec


def _report(sec: Section, results: dict, n_few: int, n_many: int) -> None:
    """JSON data, notes and target from the three runs."""
    few, many = results[f"{n_few:,} files"], results[f"{n_many:,} files"]
    ratio = many["maxrss_mb"] / few["maxrss_mb"]
    per_file = 1024 * 1024 * (many["maxrss_mb"] - few["maxrss_mb"]) / (n_many - n_few)
    sec.data = {
        "runs": results,
        "rss_ratio_files": ratio,
        "bytes_per_extra_file": per_file,
        "files_ratio": n_many // n_few,
        "target": {"ask": "training streams a folder with flat memory (issue 6)", "met": ratio <= 1.1},
    }
    growth = (
        TEXT("growth", bytes=f"{per_file:.0f}", mb=f"{per_file * 1e6 / 2**20:.0f}")
        if per_file > 0
        else TEXT("no-growth")
    )
    sec.notes.append(
        TEXT(
            "files",
            n_many=f"{n_many:,}",
            n_few=f"{n_few:,}",
            ratio=f"{ratio:.2f}",
            files_x=n_many // n_few,
            growth=growth,
            flat="flat" if ratio <= 1.1 else "NOT flat",
            float32_mb=f"{n_many * 64 * 64 * 4 / 2**20:.0f}",
        )
    )
    w0, w1 = many["images_per_s"], results[f"{n_many:,} files, --workers 1"]["images_per_s"]
    sec.notes.append(TEXT("reader", speed=f"{w1 / w0:.2f}", cores=usable_cores()))
    sec.target(
        "segtrain --data DIR streams: memory flat in the number of files (issue 6)",
        f"x{ratio:.2f} for x{n_many // n_few} the files",
        sec.data["target"]["met"],
    )
