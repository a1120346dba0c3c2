"""Section "objects": instance labels on annotated nuclei (the split methods on the nuclei parts,
stardist's image), and what --labels costs (the measurements are bench/objects.py's ``measure``)."""

from __future__ import annotations

from bench.common import Section, Shared
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "Objects: label images, splitting touching nuclei, instance metrics"
SCORES = ("f1", "precision", "recall", "ap50", "ap50_95", "panoptic_quality")


def run(shared: Shared) -> Section:
    from bench.objects import SPLIT_HEADER, SPLIT_SWEEP, measure, split_rows

    st = shared.settings
    sec = Section("objects", TITLE, TEXT("intro"))
    res = measure(st.work / "objects", shared.onnx_path, st.quick, real=st.real)
    acc, spd = res["accuracy"], res["speed"]
    for name, part in res["split_methods"].items():
        sec.table(
            f"{name}: {part['images']} images, {part['true_objects']} true objects; pooled over objects, "
            "StarDist's matching rule, percent",
            SPLIT_HEADER,
            split_rows(part),
        )
    sec.table(
        "stardist's img2d.tif, 125 nuclei; StarDist's matching rule",
        ["pipeline", "F1", "precision", "recall", "AP 0.5", "AP 0.5:0.95", "PQ", "objects"],
        [[name] + [f"{s[k]:.3f}" for k in SCORES] + [s["n_pred_objects"]] for name, s in acc["rows"].items()],
    )
    sec.table(
        "F1 of --split --split-method watershed by --min-distance (chosen on this image: the sweep is "
        "shown in full)",
        ["mask", *map(str, SPLIT_SWEEP)],
        [[name] + [f"{row[d]:.3f}" for d in SPLIT_SWEEP] for name, row in acc["sweep"].items()],
    )
    sec.table(
        f"{spd['n_images']} images of 512x512, median of {spd['repeats']} interleaved runs (run_folder)",
        ["mode", "ms per image", "x plain"],
        [
            [m, f"{s * 1e3:.1f}", f"{spd['ratio_to_plain'][m]:.2f}"]
            for m, s in spd["seconds_per_image"].items()
        ],
    )
    til = res["tiles"]
    sec.notes.append(
        TEXT(
            "tiles",
            tile=til["tile"],
            overlap=til["overlap"],
            differing=til["mask_pixels_differing"],
            f1=f"{til['f1_tiled_vs_whole']:.3f}",
        )
    )
    if "memory" in res:
        sec.notes.append(
            TEXT("memory", peaks=", ".join(f"{k} {v['peak_mb']:.0f} MB" for k, v in res["memory"].items()))
        )
    sec.data = {k: v for k, v in res.items() if k != "markdown"}
    _targets(sec, acc, spd, res["split_methods"])
    return sec


def _targets(sec: Section, acc: dict, spd: dict, parts: dict) -> None:
    """F1 gain of --split over plain components on unsupseg's best mask; --labels cost; issue 22's
    F1 and PQ on the held-out nuclei and --labels --split cost."""
    from bench.objects import SPLITS

    held_out = parts.get("nuclei report")
    if held_out is not None:
        s = held_out["rows"][f"unsupseg mask, {next(k for k, v in SPLITS.items() if v == 'scaled')}"]
        sec.target(
            "--split F1 at IoU 0.5 >= 85 and PQ >= 70 on held-out nuclei (issue 22; nuclei report part, "
            "packaged model)",
            f"F1 {100 * s['f1']:.1f}, PQ {100 * s['pq']:.1f}",
            s["f1"] >= 0.85 and s["pq"] >= 0.70,
        )
    ratio = spd["ratio_to_plain"].get("--labels --split")
    if ratio is not None:
        sec.target(
            "--labels --split at most 2x the plain run per 512x512 image (issue 22)",
            f"{ratio:.2f}x",
            ratio <= 2.0,
        )
    rows, gains = acc["rows"], {}
    for name in acc["sweep"]:
        if name.startswith("unsupseg"):
            plain = rows[f"{name}, connected components"]["f1"]
            gains[name] = (plain, rows[f"{name}, --split (scaled)"]["f1"])
    if gains:
        name, (plain, split) = max(gains.items(), key=lambda kv: kv[1][1])
        sec.target(
            "--split F1 at IoU 0.5 >= plain connected components + 10 points (issue 12)",
            f"{100 * split:.1f} vs {100 * plain:.1f} ({name})",
            split - plain >= 0.10,
        )
    ratio = spd["ratio_to_plain"].get("--labels")
    if ratio is not None:
        sec.target(
            "--labels at most 1.5x the plain run per 512x512 image (issue 12)", f"{ratio:.2f}x", ratio <= 1.5
        )
