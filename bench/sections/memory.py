"""Section "memory": peak RSS of seginfer on few vs many small files and on a reference vs a
huge image (flat in the number of files, bounded for huge images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import Section, Shared, fmt, log, run_seginfer, write_pngs
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "Memory: peak RSS of seginfer"


def run(shared: Shared) -> Section:
    st = shared.settings
    n_small, n_large = (100, 1000) if st.quick else (1000, 10000)
    big, ref = (2048, 512) if st.quick else (8192, 1024)
    sec = Section("memory", TITLE, TEXT("intro", threads=st.threads))
    base = st.work / "memory"
    _write_inputs(base, n_small, n_large, (ref, big))
    runs = {
        f"{n_small:,} files 32x32": base / "small_few",
        f"{n_large:,} files 32x32": base / "small_large",
        f"1 image {ref}x{ref}": base / f"big_{ref}",
        f"1 image {big}x{big}": base / f"big_{big}",
    }
    rows, results = [], {}
    for label, folder in runs.items():
        args = [
            "--input",
            str(folder),
            "--output",
            str(base / ("out_" + folder.name)),
            "--model",
            str(shared.onnx_path),
            "--device",
            "cpu",
            "--threads",
            str(st.threads),
            "--engine",
            "local",  # one process; worker processes are measured in the processes section
            "-q",
            "--overwrite",
        ]
        r = run_seginfer(args, measure_rss=True)
        results[label] = r
        rows.append([label, fmt(r["maxrss_mb"]), fmt(r["wall_s"]), fmt(r["n_written"] / r["run_s"])])
        log(f"memory {label}: {r['maxrss_mb']:.0f} MB")
    sec.table("seginfer peak RSS", ["input", "peak RSS MB", "wall s", "images/s (run loop)"], rows)
    _report(sec, results, n_small, n_large, big, ref)
    return sec


def _write_inputs(base: Path, n_small: int, n_large: int, sides: tuple[int, int]) -> None:
    """Folders of small 32x32 PNG files and one big noisy PNG per side length."""
    from PIL import Image

    from unsupseg.core.data import generate

    imgs, _ = generate(n_large, 32, 32, sigma=(0.2, 0.8), seed=6000, quantize=8)
    write_pngs(base / "small_large", imgs)
    write_pngs(base / "small_few", imgs[:n_small])
    rng = np.random.default_rng(7)
    for side in sides:
        m, _ = generate(1, 512, 512, sigma=(0, 0), seed=side, max_objects=3)
        mask = np.kron(m[0] > 0.5, np.ones((side // 512, side // 512), dtype=bool)) if side >= 512 else m[0]
        img = np.where(mask, 160, 90).astype(np.int16)
        img = np.clip(img + rng.normal(0, 40, img.shape).astype(np.int16), 0, 255).astype(np.uint8)
        (base / f"big_{side}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(base / f"big_{side}" / f"img_{side}.png", format="PNG", compress_level=1)
        del img, mask


def _report(sec: Section, results: dict, n_small: int, n_large: int, big: int, ref: int) -> None:
    """JSON data, notes and target from the four runs."""
    few, many = results[f"{n_small:,} files 32x32"], results[f"{n_large:,} files 32x32"]
    small_img, big_img = results[f"1 image {ref}x{ref}"], results[f"1 image {big}x{big}"]
    files_ratio = many["maxrss_mb"] / few["maxrss_mb"]
    px_ratio = (big / ref) ** 2
    big_ratio = big_img["maxrss_mb"] / small_img["maxrss_mb"]
    per_mpx = (big_img["maxrss_mb"] - small_img["maxrss_mb"]) / ((big * big - ref * ref) / 1e6)
    sec.data = {
        "runs": results,
        "rss_ratio_files": files_ratio,
        "rss_ratio_big_image": big_ratio,
        "pixel_ratio_big_image": px_ratio,
        "mb_per_megapixel_above_reference": per_mpx,
        "target": {
            "ask": "memory flat in the number of files, bounded for huge images",
            "flat_in_files": files_ratio <= 1.1,
        },
    }
    per_file_kb = 1024 * (many["maxrss_mb"] - few["maxrss_mb"]) / (n_large - n_small)
    sec.data["kb_per_extra_file"] = per_file_kb
    sec.notes.append(
        TEXT(
            "files",
            n_large=f"{n_large:,}",
            n_small=f"{n_small:,}",
            ratio=f"{files_ratio:.2f}",
            files_x=n_large // n_small,
            flat="flat" if files_ratio <= 1.1 else "NOT flat",
            kb_per_file=f"{per_file_kb:.2f}",
        )
    )
    sec.notes.append(
        TEXT(
            "big-image",
            big=big,
            ref=ref,
            ratio=f"{big_ratio:.1f}",
            pixels_x=f"{px_ratio:.0f}",
            mb_per_mpx=f"{per_mpx:.1f}",
        )
    )
    sec.target(
        "memory flat in the number of files; bounded for huge images",
        f"x{files_ratio:.2f} for 10x the files; x{big_ratio:.1f} for x{px_ratio:.0f} the pixels",
        sec.data["target"]["flat_in_files"],
    )
