"""Section "quality": how far the label-free quality score (infer/quality.py) follows the true
IoU on real images, and what it costs.

Per part of every real set (bench/realsets.py: tune and report parts of ../shared/realdata,
stardist's images as checks), ``run_folder`` with the packaged model and ground truth: Spearman
correlation of the score with the IoU as written, the precision of "the lowest 10% by score" at
finding the lowest 10% by IoU, the median score and whether the run warned. Outside ``--quick``
the same with the model ``seginfer --adapt`` adapts to the part (its median score on the
adaptation sample before and after is in its record). Cost: the same folder of 512x512 images
run with and without the score, interleaved repeats, the median ratio of the run times.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from bench.common import Section, Shared, log
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "Quality score: label-free, against the true IoU"
COST_IMAGES, COST_SIDE = 24, 512
# Interleaved pairs of runs: one run of 24 images moves by +-8% on a shared 2-core machine, and
# the score costs about 1 ms of a 29 ms image, so 5 pairs could not tell 3% from 9% (2026-12-03:
# one 5-pair run said +8.8%, a 7-pair run +3.6%). 15 pairs take about 25 s (--quick: the repeats).
COST_REPEATS = 15


def run(shared: Shared) -> Section:
    from bench.realsets import DEFAULT_REAL, shared_parts, stardist_parts

    st = shared.settings
    real = st.real if st.real is not None else (DEFAULT_REAL if DEFAULT_REAL.is_dir() else None)
    from unsupseg.infer.quality import WARN_MEDIAN

    sec = Section("quality", TITLE, TEXT("intro", real=real or "(none found)", warn=WARN_MEDIAN))
    work = st.work / "quality"
    parts = (shared_parts(real, work / "parts", st.quick) if real else []) + stardist_parts(
        work / "stardist", st.quick
    )
    rows = []
    for part in parts:
        structure = None  # the model card's ("auto"), unless that names a step this version lacks
        for model in ("packaged",) if st.quick else ("packaged", "adapted"):
            log(f"quality: {part.set} {part.split}, {model} model")
            row, structure = _measure(part, model, work / f"{part.set}_{part.split}_{model}", structure)
            rows.append(row)
    sec.table(
        "per part: Spearman of the score with the IoU as written, precision of the lowest 10% by score "
        "at finding the lowest 10% by IoU (k images each), median score, mean IoU, the run's warning",
        [
            "part",
            "model",
            "structure",
            "n",
            "Spearman [90% interval]",
            "lowest 10%: precision (k)",
            "median score",
            "mean IoU",
            "warned",
        ],
        [_row(r) for r in rows],
    )
    cost = _cost(work / "cost", st.repeats if st.quick else max(st.repeats, COST_REPEATS))
    sec.table(
        f"cost: {cost['n_images']} images of {COST_SIDE}x{COST_SIDE}, median of {cost['repeats']} "
        "interleaved runs (run_folder, packaged model, CPU)",
        ["run", "ms per image", "x without"],
        [
            ["without the score", f"{cost['without'] * 1e3:.1f}", "1.00"],
            ["with the score", f"{cost['with'] * 1e3:.1f}", f"{cost['ratio']:.3f}"],
        ],
    )
    sec.data = {"rows": rows, "cost": cost, "real": str(real) if real else None}
    _targets(sec, rows, cost)
    return sec


def _measure(part, model: str, out: Path, structure: str | None) -> tuple[dict, str | None]:
    """One part's run: the figures of the table, and the structure step it ran with. When "auto"
    names a step this version lacks (the photo step, to come), the part runs with "none" and the
    table says so."""
    import json
    from dataclasses import replace

    from scipy.stats import spearmanr

    from unsupseg.infer import RunOptions, SegmenterConfig, run_folder

    note = ""
    while True:
        config = SegmenterConfig(device="cpu", structure=structure)
        options = RunOptions(segmenter=config, masks=part.masks, overwrite=True)
        try:
            if model == "adapted":
                from unsupseg.infer.cli.adapt import adapt_first

                options, record = adapt_first(part.folder, out, options, lambda m: None)
                options = replace(options, adaptation=record)
            result = run_folder(part.folder, out, options)
            break
        except ValueError as e:
            if "unknown structure" not in str(e) or structure is not None:
                raise
            note, structure = f"auto failed ({e}); ", "none"
    summary = json.loads(result.files.summary.read_text())
    manifest = json.loads(result.files.manifest.read_text())
    cases = [c for c in summary["metric_per_case"] if c["iou"] is not None and c["quality"] is not None]
    q = np.array([c["quality"] for c in cases])
    iou = np.array([c["iou"] for c in cases])
    k = max(1, round(0.1 * len(cases)))
    lowest_q = set(np.argsort(q, kind="stable")[:k])
    lowest_iou = set(np.argsort(iou, kind="stable")[:k])
    rho = float(spearmanr(q, iou)[0]) if len(cases) > 2 and np.ptp(q) > 0 and np.ptp(iou) > 0 else None
    interval = _interval(q, iou) if rho is not None else None
    adaptation = (manifest.get("adaptation") or {}).get("quality")
    kind = manifest["structure"]["kind"]
    ran = note + kind if note or structure is None else f"{structure} (as the packaged run)"
    row = {
        "set": part.set,
        "split": part.split,
        "model": model,
        "structure": ran,
        "n": len(cases),
        "spearman": rho,
        "spearman_90": interval,
        "k": k,
        "precision_lowest_10": len(lowest_q & lowest_iou) / k,
        "median_quality": summary["quality"]["median"],
        "mean_iou": float(iou.mean()),
        "warned": summary["quality"]["warning"] is not None,
        "adaptation_sample": adaptation,
    }
    return row, structure


def _interval(q: np.ndarray, iou: np.ndarray, n: int = 2000) -> list[float] | None:
    """The 90% bootstrap interval of the Spearman correlation (the part's images resampled with
    their IoU, ``n`` times; resamples of one value only are left out): how much a part this small
    can tell. By hand, as a loop of a few lines: scipy.stats.bootstrap's seed keyword changed its
    name within the scipy versions this project allows."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        i = rng.integers(0, len(q), len(q))
        if np.ptp(q[i]) > 0 and np.ptp(iou[i]) > 0:
            values.append(float(spearmanr(q[i], iou[i])[0]))
    return [round(float(v), 3) for v in np.percentile(values, [5, 95])] if values else None


def _row(r: dict) -> list:
    rho = "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}"
    if r.get("spearman_90"):
        rho += " [{:+.2f}, {:+.2f}]".format(*r["spearman_90"])
    return [
        f"{r['set']} {r['split']}",
        r["model"],
        r["structure"],
        r["n"],
        rho,
        f"{r['precision_lowest_10']:.2f} ({r['k']})",
        f"{r['median_quality']:.2f}",
        f"{r['mean_iou']:.3f}",
        "yes" if r["warned"] else "no",
    ]


def _cost(work: Path, repeats: int) -> dict:
    """Seconds per image with and without the score, interleaved runs on one warm engine."""
    import imageio.v3 as iio

    from unsupseg.core.data import generate
    from unsupseg.infer import LocalEngine, RunOptions, SegmenterConfig, run_folder

    images, _ = generate(COST_IMAGES, COST_SIDE, COST_SIDE, seed=5, quantize=8, max_objects=6)
    folder = work / "in"
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        iio.imwrite(folder / f"c{i:03d}.png", image)
    engine = LocalEngine()
    config = SegmenterConfig(device="cpu")
    run_folder(folder, work / "warm", RunOptions(segmenter=config, overwrite=True), engine)
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(max(repeats, 3)):
        for scored in (True, False) if r % 2 == 0 else (False, True):
            options = RunOptions(segmenter=config, overwrite=True, quality=scored)
            result = run_folder(folder, work / f"run_{r}_{scored}", options, engine)
            times[scored].append(result.seconds / COST_IMAGES)
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    return {
        "n_images": COST_IMAGES,
        "repeats": len(ratios),
        "with": statistics.median(times[True]),
        "without": statistics.median(times[False]),
        "ratio": statistics.median(ratios),
    }


def _targets(sec: Section, rows: list[dict], cost: dict) -> None:
    """Issue 23's targets: Spearman >= 0.6 on every real set's report part, cost <= 5%."""
    for r in rows:
        if r["split"] != "report":
            continue
        rho = r["spearman"]
        sec.target(
            f"quality score: Spearman with IoU >= 0.6 ({r['set']} report, {r['model']} model; issue 23)",
            "n/a" if rho is None else f"{rho:+.2f} (n={r['n']})",
            None if rho is None else rho >= 0.6,
        )
    sec.target(
        f"quality score costs <= 5% of the run at {COST_SIDE}x{COST_SIDE} (issue 23)",
        f"{100 * (cost['ratio'] - 1):+.1f}%",
        cost["ratio"] <= 1.05,
    )
