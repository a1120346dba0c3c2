"""Section "adapt": the cost of ``seginfer --adapt`` (issue 21): 40 images of 512x512 (a folder
where no structure step fits, with the default deadline and with time to train the network, and
one where a structure step fits), its share of a 1,000-image run, and its peak memory and time on
one 6000x6000 16-bit image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bench.common import Section, Shared, fmt, log, run_seginfer, write_pngs
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "seginfer --adapt: time and memory"
BUDGET_S = 90.0  # issue 21: adaptation on 40 images of 512x512, 2 cores
SHARE = 0.25  # ... and at most this share of a 1,000-image run
MEMORY_MB = 1024.0  # ... and about 1 GB on images of any size
TRAIN_S = 60  # --adapt-seconds of the row where the network is trained (the default deadline, a
# quarter of the run, leaves a small folder no time to train on 2 cores)


def run(shared: Shared) -> Section:
    st = shared.settings
    n_small, n_large, huge = (8, 60, 1500) if st.quick else (40, 1000, 6000)
    sec = Section("adapt", TITLE, TEXT("intro", threads=st.threads, huge=huge, n_large=n_large))
    base = st.work / "adapt"
    gen = _generated(base / "gen", n_small, 1)
    folders = {  # label: (folder, extra arguments)
        f"{n_small} generated 512x512 (no step fits; the default deadline)": (gen, []),
        f"{n_small} generated 512x512 (no step fits; --adapt-seconds {TRAIN_S}: the network is trained)": (
            gen,
            ["--adapt-seconds", str(TRAIN_S)],
        ),
        f"{n_large:,} generated 512x512": (_generated(base / "gen_large", n_large, 2), []),
    }
    em = _em_folder(base / "em", n_small, st.real)
    if em is not None:
        folders[f"{n_small} EM 512x512 (the membranes step fits)"] = (em, [])
    folders[f"1 image {huge}x{huge}, 16-bit (nuclei: the objects step)"] = (_huge(base / "huge", huge), [])
    rows, data = [], {}
    for label, (folder, extra) in folders.items():
        r = _adapt(folder, base / ("out_" + folder.name), st.threads, extra)
        plain = _plain(folder, base / ("plain_" + folder.name), st.threads) if folder.name != "gen" else None
        r["plain"] = plain
        data[label] = r
        share = r["adapt_s"] / r["wall_s"]
        rows.append(
            [
                label,
                r["structure"],
                f"{'yes' if r['trained'] else 'no'} ({r['steps']} steps)",
                fmt(r["deadline_s"]),
                fmt(r["adapt_s"]),
                fmt(r["wall_s"]),
                f"{100 * share:.0f}%",
                fmt(r["maxrss_mb"]),
                fmt(plain["maxrss_mb"]) if plain else "-",
                fmt(plain["wall_s"]) if plain else "-",
            ]
        )
        log(f"adapt {label}: adapting {r['adapt_s']:.1f} s of {r['wall_s']:.1f} s, {r['maxrss_mb']:.0f} MB")
    sec.table(
        "seginfer --adapt, one process (--engine local), CPU: the adaptation's seconds (its record "
        "in seginfer.json), the whole command's wall seconds and peak RSS, and plain seginfer on "
        "the same folder",
        [
            "folder",
            "structure",
            "network chosen (steps trained)",
            "deadline s",
            "adapting s",
            "--adapt wall s",
            "adapting share",
            "--adapt peak MB",
            "plain peak MB",
            "plain wall s",
        ],
        rows,
    )
    sec.data = {"runs": data}
    labels = list(data)
    if not st.quick:
        for label in [*labels[:2], *(k for k in labels if " EM " in k)]:
            sec.target(
                f"--adapt adapts 40 images of 512x512 in at most {BUDGET_S:.0f} s ({label}; issue 21)",
                f"{data[label]['adapt_s']:.1f} s",
                data[label]["adapt_s"] <= BUDGET_S,
            )
        big = data[labels[2]]
        sec.target(
            f"adapting takes at most {100 * SHARE:.0f}% of a 1,000-image run (issue 21)",
            f"{100 * big['adapt_s'] / big['wall_s']:.0f}%",
            big["adapt_s"] <= SHARE * big["wall_s"],
        )
        huge_r = data[labels[-1]]
        extra = huge_r["maxrss_mb"] - huge_r["plain"]["maxrss_mb"]
        sec.target(
            f"--adapt on a {huge}x{huge} 16-bit image: within about 1 GB more than plain seginfer (issue 21)",
            f"{huge_r['maxrss_mb']:.0f} MB peak, plain seginfer {huge_r['plain']['maxrss_mb']:.0f} MB "
            f"(+{extra:.0f} MB); adapting {huge_r['adapt_s']:.1f} s",
            extra <= MEMORY_MB,
        )
    return sec


def _generated(folder: Path, n: int, seed: int) -> Path:
    """``n`` generated 512x512 8-bit images (the built-in data's generator)."""
    from unsupseg.core.data import generate

    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder
    for start in range(0, n, 50):  # in chunks: 50 images of 512x512 at a time in memory
        k = min(50, n - start)
        seed_k = 7000 * seed + start
        images, _ = generate(k, 512, 512, sigma=(0.2, 1.0), seed=seed_k, quantize=8, max_objects=3)
        paths = write_pngs(folder / f"part{start:05d}", images)
        for p in paths:
            os.replace(p, folder / f"{start:05d}_{p.name}")
        (folder / f"part{start:05d}").rmdir()
    return folder


def _em_folder(folder: Path, n: int, real: Path | None) -> Path | None:
    """``n`` links to the 512x512 EM slices of the real data (each slice more than once), or None."""
    from bench.realsets import DEFAULT_REAL

    src = (real or DEFAULT_REAL) / "em" / "images"
    if not src.is_dir():
        return None
    files = sorted(src.iterdir())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        link = folder / f"{i:03d}_{files[i % len(files)].name}"
        if not link.exists():
            os.symlink(files[i % len(files)].resolve(), link)
    return folder


def _huge(folder: Path, side: int) -> Path:
    """One side x side uint16 TIFF: stardist's nuclei image tiled (mirrored) and scaled to 16 bits."""
    import tifffile

    from bench.realdata import stardist_image

    path = folder / f"nuclei_{side}.tif"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        image, _ = stardist_image()
        tile = np.concatenate([image, image[:, ::-1]], axis=1)
        tile = np.concatenate([tile, tile[::-1]], axis=0).astype(np.float32)
        reps = (side // tile.shape[0] + 1, side // tile.shape[1] + 1)
        big = np.tile(tile, reps)[:side, :side]
        big = (big - big.min()) / max(float(big.max() - big.min()), 1e-9) * 60000
        tifffile.imwrite(path, big.astype(np.uint16))
    return folder


def _args(folder: Path, out: Path, threads: int) -> list[str]:
    """seginfer's arguments for a run of ``folder`` in one process on the CPU."""
    return ["--input", str(folder), "--output", str(out), "--overwrite", "--device", "cpu",
            "--threads", str(threads), "--engine", "local", "-q"]  # fmt: skip


def _adapt(folder: Path, out: Path, threads: int, extra: list[str]) -> dict:
    r = run_seginfer([*_args(folder, out, threads), "--adapt", *extra], measure_rss=True)
    record = json.loads((out / "seginfer.json").read_text())["adaptation"]
    return {
        "maxrss_mb": r["maxrss_mb"],
        "wall_s": r["wall_s"],
        "adapt_s": record["seconds"],
        "trained": record["trained"],
        "steps": record.get("steps"),
        "deadline_s": record.get("deadline_s"),
        "structure": record["structure"]["kind"],
        "n_written": r["n_written"],
    }


def _plain(folder: Path, out: Path, threads: int) -> dict:
    r = run_seginfer(_args(folder, out, threads), measure_rss=True)
    return {"maxrss_mb": r["maxrss_mb"], "wall_s": r["wall_s"]}
