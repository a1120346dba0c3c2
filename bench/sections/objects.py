"""Section "objects": instance labels on stardist's annotated nuclei, and what --labels costs
(the measurements are bench/objects.py's ``measure``)."""

from __future__ import annotations

from bench.common import Section, Shared
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "Objects: label images, splitting touching nuclei, instance metrics"
SCORES = ("f1", "precision", "recall", "ap50", "ap50_95", "panoptic_quality")


def run(shared: Shared) -> Section:
    from bench.objects import SPLIT_SWEEP, measure

    st = shared.settings
    sec = Section("objects", TITLE, TEXT("intro"))
    res = measure(st.work / "objects", shared.onnx_path, st.quick)
    acc, spd = res["accuracy"], res["speed"]
    sec.table(
        "stardist's img2d.tif, 125 nuclei; StarDist's matching rule",
        ["pipeline", "F1", "precision", "recall", "AP 0.5", "AP 0.5:0.95", "PQ", "objects"],
        [[name] + [f"{s[k]:.3f}" for k in SCORES] + [s["n_pred_objects"]] for name, s in acc["rows"].items()],
    )
    sec.table(
        "F1 of --split by --min-distance (chosen on this image: the sweep is shown in full)",
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
    _targets(sec, acc, spd)
    return sec


def _targets(sec: Section, acc: dict, spd: dict) -> None:
    """F1 gain of --split over plain components on unsupseg's best mask; --labels cost."""
    from unsupseg.core.labels import DEFAULT_MIN_DISTANCE

    rows, gains = acc["rows"], {}
    for name in acc["sweep"]:
        if name.startswith("unsupseg"):
            plain = rows[f"{name}, connected components"]["f1"]
            gains[name] = (plain, rows[f"{name}, --split (min distance {DEFAULT_MIN_DISTANCE})"]["f1"])
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
