"""Section "real": the packaged default model vs models trained by ``segtrain --data`` on the
unlabeled tiles of a real annotated image (bench/realdata.py), and Otsu baselines."""

from __future__ import annotations

from bench.common import Section, Shared, fmt, log
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "Real images: training on an unlabeled folder"


def run(shared: Shared) -> Section:
    from bench.realdata import STARDIST_SPEC, RealDataMissing, run_real_data

    st = shared.settings
    sec = Section("real", TITLE, TEXT("intro", stardist=STARDIST_SPEC))
    epochs, samples, tile = (1, 64, 256) if st.quick else (20, 1000, 128)
    try:
        res = run_real_data(
            st.work / "real", st.checkpoint, epochs=epochs, samples=samples, tile=tile, log=log
        )
    except RealDataMissing as e:
        sec.notes.append(TEXT("not-run", reason=e))
        return sec
    rows = [
        [
            name,
            fmt(100 * r["iou"], 3),
            fmt(100 * r["iou_any_polarity"], 3),
            fmt(100 * r["dice"], 3),
            fmt(r.get("train_s")),
        ]
        for name, r in res.items()
    ]
    sec.table(
        "16 tiles of 128x128, mean over tiles, %",
        ["method", "IoU", "IoU any polarity", "Dice", "training s"],
        rows,
    )
    default = res["unsupseg packaged default model"]["iou"]
    trained = {k: v["iou"] for k, v in res.items() if k.startswith("segtrain")}
    best = max(trained, key=trained.get)
    sec.notes.append(
        TEXT("best", best_iou=f"{100 * trained[best]:.1f}", default_iou=f"{100 * default:.1f}", best=best)
    )
    sec.data = {"results": res, "epochs": epochs, "samples_per_epoch": samples, "tile": tile}
    sec.target(
        "training on a real unlabeled folder beats the default model there (issue 2)",
        f"IoU {100 * trained[best]:.1f}% vs {100 * default:.1f}%",
        trained[best] > default,
    )
    return sec
