"""Section "quant": the int8 (static QDQ) export against fp32, speed of the model alone and IoU
on the held-out sets, with the keep-or-drop decision by the issue's rule."""

from __future__ import annotations

import time

import numpy as np

from bench.common import Section, Shared, fmt, generated_batch, ort_session
from bench.evaluate import unsupseg_on_heldout
from bench.prose import Prose
from bench.timing import cpuinfo, median, paired_ratio, time_side_by_side

TEXT = Prose(__file__)
TITLE = "Quantisation: int8 (static QDQ) vs fp32"


def run(shared: Shared) -> Section:
    from unsupseg.core.data import builtin_splits, save_npz
    from unsupseg.export.quantize import export_int8

    st = shared.settings
    vnni = "avx512_vnni" in cpuinfo()["flags"]
    sec = Section("quant", TITLE, TEXT("intro", threads=st.threads, vnni="has" if vnni else "does not have"))
    npz = st.work / "calibration.npz"
    save_npz(npz, builtin_splits(0))
    q_path = st.work / "model-int8.onnx"
    t0 = time.perf_counter()
    rep = export_int8(st.checkpoint, q_path, npz, overwrite=True, log=lambda m: None)
    export_s = time.perf_counter() - t0
    speed = _speed(shared, q_path)
    sec.table(
        "speed (model alone)",
        ["size", "batch", "fp32 images/s", "int8 images/s", "int8/fp32"],
        [
            [
                f"{s['size']}x{s['size']}",
                s["batch"],
                fmt(s["fp32_images_per_s"]),
                fmt(s["int8_images_per_s"]),
                f"**{s['ratio_int8_over_fp32']:.2f}x**",
            ]
            for s in speed
        ],
    )
    reps = 1 if st.quick else 3
    u32 = unsupseg_on_heldout(shared, shared.onnx_path, "fp32", st.threads, reps)
    u8 = unsupseg_on_heldout(shared, q_path, "int8", st.threads, reps)
    iou_rows, diffs = [], []
    for name in u32:
        a, b = 100 * float(np.mean(u32[name]["iou"])), 100 * float(np.mean(u8[name]["iou"]))
        diffs.append(b - a)
        iou_rows.append([name, f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}"])
    mean_loss = -float(np.mean(diffs))
    worst_loss = -float(min(diffs))
    iou_rows.append(["**mean**", "", "", f"**{-mean_loss:+.2f}**"])
    sec.table("polarity-free IoU %, held-out sets", ["set", "fp32", "int8", "int8 - fp32 (points)"], iou_rows)
    r128 = next(s["ratio_int8_over_fp32"] for s in speed if s["size"] == 128)
    keep = r128 > 1.0 and mean_loss <= 0.5
    sec.data = {
        "export_s": export_s,
        "calibration_images": rep.n_calibration,
        "calibration_mask_agreement": rep.mask_agreement,
        "size_bytes": {"fp32": rep.fp32_size_bytes, "int8": rep.size_bytes},
        "speed": speed,
        "iou_diff_points": dict(zip(u32, diffs, strict=True)),
        "mean_iou_loss_points": mean_loss,
        "worst_iou_loss_points": worst_loss,
        "keep": keep,
        "rule": "keep if faster at 128x128 batch 32 and the mean held-out IoU loss is at most 0.5 points",
    }
    _notes(sec, rep, r128, mean_loss, worst_loss, keep)
    return sec


def _speed(shared: Shared, q_path) -> list[dict]:
    """fp32 and int8 model alone, side by side, per (size, batch)."""
    st = shared.settings
    s32, s8 = ort_session(shared.onnx_path, st.threads), ort_session(q_path, st.threads)
    speed = []
    for size, b in ((32, 32), (128, 32)) if st.quick else ((32, 32), (128, 32), (512, 1)):
        x = generated_batch(b, size, size, seed=77 + size, card=shared.card)
        t = time_side_by_side(
            {"fp32": lambda x=x: s32.run(x), "int8": lambda x=x: s8.run(x)},
            st.repeats,
            min_time=0.1 if st.quick else 0.4,
        )
        speed.append(
            {
                "size": size,
                "batch": b,
                "fp32_images_per_s": median([b / s for s in t["fp32"]]),
                "int8_images_per_s": median([b / s for s in t["int8"]]),
                "ratio_int8_over_fp32": paired_ratio(t["fp32"], t["int8"]),
            }
        )
    return speed


def _notes(sec: Section, rep, r128: float, mean_loss: float, worst_loss: float, keep: bool) -> None:
    sec.notes.append(
        TEXT(
            "result",
            speed=f"{r128:.2f}",
            mean_change=f"{-mean_loss:+.2f}",
            worst_change=f"{-worst_loss:+.2f}",
            agreement=f"{100 * rep.mask_agreement:.2f}",
            int8_kb=f"{rep.size_bytes / 1e3:.0f}",
            fp32_kb=f"{rep.fp32_size_bytes / 1e3:.0f}",
        )
    )
    sec.notes.append(TEXT("decision", decision="keep" if keep else "drop"))
    sec.target(
        "int8: keep if faster at <= 0.5 points IoU loss",
        f"{r128:.2f}x, {-mean_loss:+.2f} points",
        "keep" if keep else "drop",
    )
