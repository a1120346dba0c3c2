"""Section "real": real images with ground truth (bench/realsets.py): classical label-free methods,
the packaged model and the model adapted to each folder by ``segtrain --data DIR``."""

from __future__ import annotations

from bench.common import Section, Shared, fmt, log
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "Real images: classical methods, the packaged model, label-free adaptation"
PACKAGED, ADAPTED = "unsupseg packaged model", "unsupseg adapted (segtrain --data)"


def run(shared: Shared) -> Section:
    from bench.realsets import CLASSICAL, DEFAULT_REAL, TUNE, measure

    st = shared.settings
    real = st.real if st.real is not None else (DEFAULT_REAL if DEFAULT_REAL.is_dir() else None)
    sec = Section("real", TITLE, TEXT("intro", real=real or "(none found)", tune=_tune_text(TUNE)))
    rows = measure(real, st.work / "real", st.quick, log)
    parts = [f"{r['set']} {r['split']} ({r['n']})" for r in rows]
    methods = [*CLASSICAL, PACKAGED, ADAPTED]
    sec.table(
        "IoU % as written (foreground rule auto for every method), polarity-free in brackets",
        ["method", *parts],
        [[m] + [_pct(r["scores"][m]) for r in rows] for m in methods],
    )
    sec.table(
        "milliseconds per image (median; unsupseg: its seginfer run, CPU)",
        ["method", *parts],
        [[m] + [fmt(r["scores"][m]["ms"], 3) for r in rows] for m in methods],
    )
    sec.table(
        "label-free adaptation: training time, the snapshot chosen by the held-aside energy, and how "
        "that criterion ranks the snapshots (Spearman of -energy with the as-written IoU; +1 = perfect)",
        ["part", "training s", "chosen step", "Spearman", "IoU as written by step"],
        [[p, *_adaptation(r["adaptation"])] for p, r in zip(parts, rows, strict=True)],
    )
    sec.data = {"rows": rows, "real": str(real) if real else None}
    _targets(sec, rows)
    return sec


def _adaptation(a: dict) -> list:
    steps = ", ".join(f"{c['step']}: {c['iou_as_written']:.1f}" for c in a["candidates"])
    return [fmt(a["train_s"], 3), a["chosen_step"], fmt(a["spearman"]), steps]


def _tune_text(tune: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in tune.items())


def _pct(s: dict) -> str:
    return f"{100 * s['iou']:.1f} ({100 * s['iou_any_polarity']:.1f})"


def _targets(sec: Section, rows: list[dict]) -> None:
    """The issue's targets on the parts not tuned on (report parts and stardist's checks)."""
    for r in rows:
        if r["split"] == "tune":
            continue
        classical = {k: v["iou"] for k, v in r["scores"].items() if not k.startswith("unsupseg")}
        best = max(classical, key=classical.get)
        bar, packaged, adapted = classical[best], r["scores"][PACKAGED]["iou"], r["scores"][ADAPTED]["iou"]
        part = f"{r['set']} {r['split']}"
        sec.target(
            f"packaged model >= best classical, as written ({part}; issue 11)",
            f"{100 * packaged:.1f} vs {100 * bar:.1f} ({best})",
            packaged >= bar,
        )
        need = max(bar + 0.05, 0.80) if r["set"] == "nuclei" else bar + 0.05
        sec.target(
            f"adapted >= best classical + 5{' and >= 80' if r['set'] == 'nuclei' else ''} ({part}; issue 11)",
            f"{100 * adapted:.1f} vs {100 * need:.1f}",
            adapted >= need,
        )
