"""unsupseg and the classical baselines on the held-out sets (bench/heldout.py), scored once per
run and kept in ``Shared``: the classical, sweep and quant sections all read these results."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import Shared, log

SLOW = ("chan_vese", "morph_chan_vese")  # baselines run on a subset of each set (see baselines_on_heldout)


def heldout(shared: Shared):
    """Held-out sets (bench/heldout.py) plus a noise sweep at 128x128; cut down with --quick."""
    if shared.heldout is None:
        from bench.heldout import HeldoutSpec, heldout_sets

        sets = heldout_sets()
        sweep = [
            HeldoutSpec(f"128x128 noise {s:.2f}", 20, 128, 128, (s, s), max_objects=3)
            for s in (0.25, 0.5, 0.75, 1.0, 1.25)
        ]
        sets += [(s, *s.make(3000 + i)) for i, s in enumerate(sweep)]
        if shared.settings.quick:
            sets = [(s, x[:3], m[:3]) for s, x, m in sets if s.height * s.width <= 128 * 128][:3]
        shared.heldout = sets
    return shared.heldout


def segment_set(seg, images) -> tuple[list[np.ndarray], float]:
    """Masks for raw images with a Segmenter (batched as seginfer does); seconds for the whole set."""
    t0 = time.perf_counter()
    items = ((i, seg.prepare(im[None])) for i, im in enumerate(images))
    masks = [None] * len(images)
    for i, result in seg.predict_stream(items):
        if isinstance(result, BaseException):
            raise result
        masks[i] = result[0][0]
    return masks, time.perf_counter() - t0


def unsupseg_on_heldout(shared: Shared, onnx_path: Path, key: str, threads: int, repeats: int) -> dict:
    """Per set: IoU per image and median seconds per image of a Segmenter (cached by key)."""
    from unsupseg.core.metrics import iou_any_polarity
    from unsupseg.infer.model.segmenter import Segmenter

    if key in shared.cache:
        return shared.cache[key]
    seg = Segmenter(onnx_path, device="cpu", threads=threads)
    out = {}
    for spec, images, masks in heldout(shared):
        seg.predict(images[0])  # warm-up: onnxruntime sets up each new input shape on its first call
        times, pred = [], None
        for _ in range(repeats):
            pred, dt = segment_set(seg, images)
            times.append(dt / len(images))
        out[spec.name] = {
            "iou": [iou_any_polarity(p, m) for p, m in zip(pred, masks, strict=True)],
            "s_per_image": times,
        }
    shared.cache[key] = out
    return out


def baseline_fns():
    """{name: fn(image) -> mask} of the classical baselines, in the order of the page's columns."""
    from functools import partial

    from bench.heldout import blur_otsu, chan_vese, morph_chan_vese, otsu

    return {
        "otsu": otsu,
        "blur_otsu s1": partial(blur_otsu, sigma=1.0),
        "blur_otsu s2": partial(blur_otsu, sigma=2.0),
        "blur_otsu s4": partial(blur_otsu, sigma=4.0),
        "chan_vese": chan_vese,
        "morph_chan_vese": morph_chan_vese,
    }


def baselines_on_heldout(shared: Shared) -> dict:
    """Per set and method: per-image IoU and median seconds per image (cached)."""
    from unsupseg.core.metrics import iou_any_polarity

    if "baselines" in shared.cache:
        return shared.cache["baselines"]
    st = shared.settings
    out = {}
    for spec, images, masks in heldout(shared):
        out[spec.name] = {}
        for name, fn in baseline_fns().items():
            slow = name in SLOW
            n = min(len(images), 1 if st.quick else 20) if slow else len(images)
            reps = 1 if slow else (1 if st.quick else 3)
            fn(images[0])  # warm-up: imports and first-call set-up are not per-image cost
            times, preds = [], None
            for _ in range(reps):
                t0 = time.perf_counter()
                preds = [fn(im) for im in images[:n]]
                times.append((time.perf_counter() - t0) / n)
            out[spec.name][name] = {
                "n": n,
                "repeats": reps,
                "iou": [iou_any_polarity(p, m) for p, m in zip(preds, masks[:n], strict=True)],
                "s_per_image": times,
            }
        log(f"classical {spec.name}: done")
    shared.cache["baselines"] = out
    return out
