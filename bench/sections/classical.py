"""Section "classical": unsupseg against Otsu, blur + Otsu, Chan-Vese and morphological
Chan-Vese on the held-out sets (IoU and ms per image), and the targets set against them."""

from __future__ import annotations

import numpy as np

from bench.common import Section, Shared, fmt
from bench.evaluate import baseline_fns, baselines_on_heldout, heldout, unsupseg_on_heldout
from bench.prose import Prose
from bench.timing import median

TEXT = Prose(__file__)
TITLE = "Against the classical methods on held-out images"


def run(shared: Shared) -> Section:
    st = shared.settings
    slow_subset = "" if st.quick else TEXT("slow-subset")
    sec = Section("classical", TITLE, TEXT("intro", threads=st.threads, slow_subset=slow_subset))
    base = baselines_on_heldout(shared)
    uns = unsupseg_on_heldout(shared, shared.onnx_path, "fp32", st.threads, 1 if st.quick else 3)
    uns1 = unsupseg_on_heldout(shared, shared.onnx_path, "fp32-1thread", 1, 1 if st.quick else 3)
    methods = list(baseline_fns())
    iou_rows, ms_rows, cmp_rows, data = [], [], [], {}
    all_10x, all_moon = [], []
    for spec, _images, _ in heldout(shared):
        d, (row_iou, row_ms, row_cmp) = _compare(
            spec, base[spec.name], uns[spec.name], uns1[spec.name], methods
        )
        iou_rows.append(row_iou)
        ms_rows.append(row_ms)
        all_10x.append(d["vs_morph_chan_vese"]["met"])
        if spec.height == 128 and spec.width == 128:
            blur = d["vs_blur_otsu"]
            all_moon.append(blur["beats_iou_all_sigmas"] and max(blur["cost_ratio"].values()) <= 3)
        cmp_rows.append(row_cmp)
        data[spec.name] = d
    sec.table("Polarity-free IoU, % (mean over the set)", ["set", "n", *methods, "unsupseg"], iou_rows)
    sec.table("ms per image", ["set", *methods, "unsupseg", "unsupseg 1 thr"], ms_rows)
    sec.table(
        "unsupseg against morphological Chan-Vese and blur + Otsu",
        [
            "set",
            "IoU unsupseg vs morph CV (same images)",
            "speed-up vs morph CV",
            ">= 10x and higher IoU",
            "cost vs blur+Otsu s1/s2/s4",
            "same, unsupseg 1 thread",
            "IoU above blur+Otsu (all s)",
        ],
        cmp_rows,
    )
    _report(sec, data, all_10x, all_moon)
    return sec


def _compare(spec, b: dict, u: dict, u1: dict, methods: list[str]) -> tuple[dict, tuple[list, list, list]]:
    """One held-out set: the JSON figures and the set's row in each of the three tables."""
    u_iou = 100 * float(np.mean(u["iou"]))
    u_ms, u1_ms = 1000 * median(u["s_per_image"]), 1000 * median(u1["s_per_image"])
    row_iou, row_ms = [spec.name, len(u["iou"])], [spec.name]
    d = {
        "n": len(u["iou"]),
        "unsupseg": {"iou": u_iou, "ms": u_ms, "ms_1thread": u1_ms},
    }
    for m in methods:
        r = b[m]
        iou_m = 100 * float(np.mean(r["iou"]))
        ms_m = 1000 * median(r["s_per_image"])
        d[m] = {"iou": iou_m, "ms": ms_m, "n": r["n"]}
        row_iou.append(fmt(iou_m, 4) + ("" if r["n"] == len(u["iou"]) else f" (n={r['n']})"))
        row_ms.append(fmt(ms_m))
    row_iou.append(f"**{u_iou:.2f}**")
    row_ms += [f"**{fmt(u_ms)}**", fmt(u1_ms)]
    # morphological Chan-Vese on the same images
    n_m = b["morph_chan_vese"]["n"]
    u_iou_same = 100 * float(np.mean(u["iou"][:n_m]))
    speedup = d["morph_chan_vese"]["ms"] / u_ms
    better = u_iou_same > d["morph_chan_vese"]["iou"]
    ok10 = speedup >= 10 and better
    blur = {s: d[f"blur_otsu s{s}"] for s in (1, 2, 4)}
    beats_blur = all(u_iou > v["iou"] for v in blur.values())
    cost = {s: u_ms / v["ms"] for s, v in blur.items()}
    cost1 = {s: u1_ms / v["ms"] for s, v in blur.items()}
    d["vs_morph_chan_vese"] = {"speedup": speedup, "unsupseg_iou_same_images": u_iou_same, "met": ok10}
    d["vs_blur_otsu"] = {"cost_ratio": cost, "cost_ratio_1thread": cost1, "beats_iou_all_sigmas": beats_blur}
    row_cmp = [
        spec.name,
        f"{u_iou_same:.2f} vs {d['morph_chan_vese']['iou']:.2f}",
        f"{speedup:.1f}x",
        "yes" if ok10 else "**no**",
        " / ".join(f"{cost[s]:.1f}x" for s in (1, 2, 4)),
        " / ".join(f"{cost1[s]:.1f}x" for s in (1, 2, 4)),
        "yes" if beats_blur else "**no**",
    ]
    return d, (row_iou, row_ms, row_cmp)


def _report(sec: Section, data: dict, all_10x: list[bool], all_moon: list[bool]) -> None:
    """JSON data, notes and the two targets of the section."""
    sec.data = {
        "sets": data,
        "target_10x_morph_cv": {
            "ask": ">= 10x faster than morph CV at higher IoU, every set",
            "met": all(all_10x),
        },
        "target_moonshot": {
            "ask": "cost per 128x128 image within 3x of blur+Otsu (every sigma), higher IoU than "
            "blur+Otsu on every held-out set",
            "cost_within_3x_at_128": all(all_moon) if all_moon else None,
            "beats_blur_otsu_every_set": all(
                d["vs_blur_otsu"]["beats_iou_all_sigmas"] for d in data.values()
            ),
        },
    }
    mo = sec.data["target_moonshot"]
    mo["met"] = bool(mo["cost_within_3x_at_128"] and mo["beats_blur_otsu_every_set"])
    sec.notes.append(
        TEXT(
            "ten-x",
            status="met" if all(all_10x) else "not met",
            met_sets=sum(all_10x),
            n_sets=len(all_10x),
        )
    )
    sec.notes.append(
        TEXT(
            "moonshot",
            status="met" if mo["met"] else "not met",
            cost_ok=fmt(mo["cost_within_3x_at_128"]),
            beats=fmt(mo["beats_blur_otsu_every_set"]),
        )
    )
    worst = min(s["vs_morph_chan_vese"]["speedup"] for s in data.values())
    sec.target(
        ">= 10x faster than morph. Chan-Vese at higher IoU, every set",
        f"min speed-up {worst:.1f}x",
        sec.data["target_10x_morph_cv"]["met"],
    )
    costs = [
        max(s["vs_blur_otsu"]["cost_ratio"].values()) for k, s in data.items() if k.startswith("128x128")
    ]
    sec.target(
        "moonshot: <= 3x blur+Otsu cost at 128x128 and higher IoU on every set",
        (f"cost up to {max(costs):.1f}x; " if costs else "")
        + f"IoU above on every set: {fmt(mo['beats_blur_otsu_every_set'])}",
        mo["met"],
    )
