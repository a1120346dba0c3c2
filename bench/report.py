"""docs/benchmarks.md and bench/results.json from the sections of one run: the page header
(run and machine), the targets table, then each section's intro, tables and notes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import Section, fmt
from bench.prose import Prose

TEXT = Prose(__file__)


def md_table(t: dict) -> str:
    lines = [f"**{t['caption']}**", ""]
    lines.append("| " + " | ".join(t["columns"]) + " |")
    lines.append("|" + "|".join("---" for _ in t["columns"]) + "|")
    for r in t["rows"]:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |")
    return "\n".join(lines)


def header(meta: dict) -> str:
    """Title, how to read the page, and the run: command, checkpoint, machine, versions."""
    m = meta["machine"]
    return TEXT(
        "header",
        command=meta["command"],
        quick=" " + TEXT("quick") if meta["quick"] else "",
        date=meta["date"],
        total_min=f"{meta['total_s'] / 60:.1f}",
        checkpoint=meta["checkpoint"],
        model=meta["model"],
        sha=meta["checkpoint_sha256"][:12],
        packaged=TEXT("packaged" if meta.get("is_packaged_default") else "not-packaged"),
        cpu=m["cpu"],
        vendor=m["vendor"],
        family=m["cpu_family"],
        cores=m["cores"],
        mhz=m["mhz"],
        simd=", ".join(m["simd"]),
        memory_gb=m["memory_gb"],
        threads=m["threads_used"],
        load_start=", ".join(f"{x:.2f}" for x in m["load_average_start"] or []),
        load_end=", ".join(f"{x:.2f}" for x in meta.get("load_average_end") or []),
        versions=", ".join(f"{k} {val}" for k, val in m["versions"].items()),
        platform=m["platform"],
    )


def render(meta: dict, sections: dict[str, Section]) -> str:
    """The Markdown page; sections in the order given, numbered from 1."""
    out = [header(meta), ""]
    targets = [row for sec in sections.values() for row in sec.targets]
    if targets:
        columns = ["target", "measured", "status"]
        out += [md_table({"caption": "Targets", "columns": columns, "rows": targets}), ""]
    for i, sec in enumerate(sections.values(), start=1):
        out += [f"## {i}. {sec.title}", ""]
        if sec.intro:
            out += [sec.intro, ""]
        for t in sec.tables:
            out += [md_table(t), ""]
        for n in sec.notes:
            out.append(f"- {n}")
        if sec.notes:
            out.append("")
        out += [f"_Section time: {sec.seconds:.0f} s._", ""]
    return "\n".join(out)


def results_json(meta: dict, sections: dict[str, Section]) -> str:
    """bench/results.json: the run's meta and each section's title, seconds and data."""
    results = {
        "meta": meta,
        "sections": {k: {"title": s.title, "seconds": s.seconds, **s.data} for k, s in sections.items()},
    }
    return json.dumps(results, indent=2, default=_json_default) + "\n"


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))
