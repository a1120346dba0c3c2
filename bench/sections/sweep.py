"""Section "sweep": accuracy and speed of checkpoints of different widths (``--sweep``), each
exported and run like the default model."""

from __future__ import annotations

import numpy as np

from bench.common import (
    BenchError,
    Section,
    Shared,
    export_checkpoint,
    fmt,
    generated_batch,
    log,
    ort_session,
)
from bench.evaluate import baselines_on_heldout, heldout, unsupseg_on_heldout
from bench.prose import Prose
from bench.timing import median, time_side_by_side

TEXT = Prose(__file__)
TITLE = "Accuracy and speed over widths"
COLUMNS = [
    "checkpoint",
    "model",
    "MFLOP @128",
    "ORT images/s 128 b32",
    "ms/image 128 (Segmenter)",
    "cost vs blur+Otsu s2",
    "mean IoU %",
    "worst-set IoU %",
    "sets above blur+Otsu s2",
]


def run(shared: Shared) -> Section:
    st = shared.settings
    sec = Section("sweep", TITLE, TEXT("intro", threads=st.threads))
    if not st.sweep:
        sec.notes.append(TEXT("not-run"))
        sec.data = {"skipped": "no --sweep checkpoints given"}
        return sec
    base = baselines_on_heldout(shared)
    sets = heldout(shared)
    sets128 = [(s, x, m) for s, x, m in sets if (s.height, s.width) == (128, 128)]
    rows, results = [], []
    for ck in st.sweep:
        if not ck.is_file():
            raise BenchError(f"--sweep: {ck}: no such checkpoint")
        res = _measure(shared, ck, len(results), base, sets128)
        results.append(res)
        ms128 = res["segmenter_ms_128"]
        rows.append(
            [
                ck.as_posix(),
                f"{res['arch']} w{res['width']}",
                fmt(res["mflop_128"]),
                fmt(res["ort_images_per_s_128_b32"]),
                fmt(ms128),
                f"{res['cost_vs_blur_otsu_s2']:.1f}x" if ms128 else "-",
                f"{res['mean_iou']:.2f}",
                f"{res['min_iou']:.2f}",
                f"{res['sets_above_blur_otsu_s2']}/{len(res['iou_per_set'])}",
            ]
        )
        log(f"sweep {ck}: {res['mean_iou']:.2f} IoU, {ms128} ms")
    sec.table("width sweep", COLUMNS, rows)
    sec.data = {"rows": results}
    return sec


def _measure(shared: Shared, ck, index: int, base: dict, sets128: list) -> dict:
    """One checkpoint: exported, timed against blur + Otsu, scored on the held-out sets."""
    from bench.heldout import blur_otsu
    from unsupseg.train.checkpoint import load_model
    from unsupseg.train.model import ModelConfig, count_flops

    st = shared.settings
    path, card = export_checkpoint(ck, st.work / f"sweep_{index}.onnx")
    _, _, ckd = load_model(ck)
    mcfg = ModelConfig(**ckd["model_config"])
    sess = ort_session(path, st.threads)
    x = generated_batch(32, 128, 128, seed=9, card=card)
    blur_x = sets128[0][1][0] if sets128 else x[0, 0]
    t = time_side_by_side(
        {"ort": lambda x=x, s=sess: s.run(x), "blur": lambda im=blur_x: blur_otsu(im, 2.0)},
        st.repeats,
        min_time=0.1 if st.quick else 0.3,
    )
    ips = [32 / s for s in t["ort"]]
    u = unsupseg_on_heldout(shared, path, f"sweep-{ck}", st.threads, 1 if st.quick else 3)
    ious = {k: 100 * float(np.mean(v["iou"])) for k, v in u.items()}
    ms128 = median([1000 * median(u[s.name]["s_per_image"]) for s, _, _ in sets128]) if sets128 else None
    blur_ms = 1000 * median(t["blur"])
    beats = sum(ious[k] > 100 * float(np.mean(base[k]["blur_otsu s2"]["iou"])) for k in ious)
    return {
        "checkpoint": str(ck),
        "arch": mcfg.arch,
        "width": mcfg.width,
        "context": getattr(mcfg, "context", False),
        "mflop_128": count_flops(mcfg, 128, 128) / 1e6,
        "ort_images_per_s_128_b32": median(ips),
        "segmenter_ms_128": ms128,
        "blur_otsu_s2_ms_128": blur_ms,
        "cost_vs_blur_otsu_s2": ms128 / blur_ms if ms128 else None,
        "mean_iou": float(np.mean(list(ious.values()))),
        "min_iou": float(min(ious.values())),
        "sets_above_blur_otsu_s2": beats,
        "iou_per_set": ious,
    }
