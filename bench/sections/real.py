"""Section "real": real images with ground truth (bench/realsets.py): classical label-free methods
(blur + Li among them), plain ``seginfer`` with the packaged model, the packaged network alone, and
the one command ``seginfer --adapt``; the issue's targets on the parts not tuned on."""

from __future__ import annotations

from bench.common import Section, Shared, fmt, log
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "Real images: classical methods, the packaged model, seginfer --adapt"


def run(shared: Shared) -> Section:
    from bench.realsets import ADAPTED, CLASSICAL, DEFAULT_REAL, NETWORK, PACKAGED, TUNE, measure

    st = shared.settings
    real = st.real if st.real is not None else (DEFAULT_REAL if DEFAULT_REAL.is_dir() else None)
    sec = Section("real", TITLE, TEXT("intro", real=real or "(none found)", tune=_tune_text(TUNE)))
    rows = measure(real, st.work / "real", st.quick, log)
    parts = [f"{r['set']} {r['split']} ({r['n']})" for r in rows]
    methods = [*CLASSICAL, NETWORK, PACKAGED, ADAPTED]
    sec.table(
        "IoU % as written (classical methods: foreground rule auto), polarity-free in brackets",
        ["method", *parts],
        [[m] + [_pct(r["scores"][m]) for r in rows] for m in methods],
    )
    sec.table(
        "milliseconds per image (median for classical methods; unsupseg: the whole run's wall time "
        "over its images, CPU; --adapt: the whole command, adaptation included)",
        ["method", *parts],
        [[m] + [fmt(r["scores"][m]["ms"], 3) for r in rows] for m in methods],
    )
    sec.table(
        "what seginfer decided: the structure step of plain seginfer and of --adapt, whether --adapt "
        "trained the network (it does only when no step fits), and the command's wall time",
        ["part", "seginfer structure", "--adapt structure", "trained", "--adapt s", "of which adapting s"],
        [
            [p, r["scores"][PACKAGED]["structure"], *_adaptation(r["adaptation"])]
            for p, r in zip(parts, rows, strict=True)
        ],
    )
    sec.data = {"rows": rows, "real": str(real) if real else None}
    _targets(sec, rows)
    return sec


def _adaptation(a: dict) -> list:
    return [a["structure"], a["trained"], fmt(a["seconds"], 3), fmt(a["adapt_s"], 3)]


def _tune_text(tune: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in tune.items())


def _pct(s: dict) -> str:
    return f"{100 * s['iou']:.1f} ({100 * s['iou_any_polarity']:.1f})"


def _targets(sec: Section, rows: list[dict]) -> None:
    """Issue 21's targets on the parts not tuned on (report parts and stardist's checks)."""
    from bench.realsets import ADAPTED, CLASSICAL, PACKAGED

    for r in rows:
        if r["split"] == "tune":
            continue
        part, sc = f"{r['set']} {r['split']}", r["scores"]
        for key, how in (("iou", "as written"), ("iou_any_polarity", "polarity-free")):
            classical = {k: sc[k][key] for k in CLASSICAL}
            best = max(classical, key=classical.get)
            bar, adapted = classical[best], sc[ADAPTED][key]
            need = max(bar + 0.05, 0.85) if r["set"].startswith(("nuclei", "stardist2d")) else bar + 0.05
            floor = " and >= 85" if r["set"].startswith(("nuclei", "stardist2d")) else ""
            sec.target(
                f"seginfer --adapt >= best classical + 5{floor}, {how} ({part}; issue 21)",
                f"{100 * adapted:.1f} vs {100 * need:.1f} ({best} {100 * bar:.1f})",
                adapted >= need,
            )
        classical = {k: sc[k]["iou"] for k in CLASSICAL}
        best = max(classical, key=classical.get)
        sec.target(
            f"plain seginfer (packaged model) >= best classical, as written ({part}; issue 21)",
            f"{100 * sc[PACKAGED]['iou']:.1f} vs {100 * classical[best]:.1f} ({best})",
            sc[PACKAGED]["iou"] >= classical[best],
        )
