"""``report.html``: one page that shows where a run's masks are good and where they fail.

    summary.json --(select.py, read_summary: rows streamed)--> Selector (worst, random, failed; histogram)
    shown inputs --(previews.py: inputs, masks, ground truth read back)--> report_files/
    manifest(s) + counts + selection --> report.html (inline CSS and SVG, no script)

Made by ``seginfer --html`` at the end of a run and by ``segreport --html FOLDER`` for a
finished or merged run, from the run's files alone: summary.json (rows and failures),
the manifest(s) seginfer.json (model, provider, device, arguments, times) and the
inputs, masks and ground truth the rows name. The page and its folder of previews
(``report_files/``, named after the page as browsers save pages) are written under
temporary names and renamed into place, the folder as a whole.

The page opens from disk with no server and no network. Clicking a thumbnail opens the
large view (image, mask, overlay; a CSS ``:target``, so no script); the grid holds the
failures and then the worst and the random inputs, worst first, and says how many of
how many it shows. Cost: one pass over the rows (a few hundred kept), a few hundred
inputs read for the previews, about 10 KB of previews each.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from unsupseg.core.atomic import write_text_atomic
from unsupseg.core.html import esc, fmt, html_table, kv_table, page, svg_histogram, svg_scatter
from unsupseg.core.overlay import MASK_COLOUR, TRUTH_COLOUR
from unsupseg.infer.html.previews import Preview, make_previews
from unsupseg.infer.html.select import FAILED, RANDOM, WORST, Entry, Selection, Selector, read_summary

FAILURE_ROWS = 1000  # failures listed in the table (all are in summary.json)


@dataclass
class PageResult:
    path: Path  # report.html
    assets: Path  # its folder of previews
    n_shown: int  # thumbnails in the grid
    n_failed: int  # failed inputs of the run
    seconds: float  # time to build it
    html_bytes: int
    assets_bytes: int


def build_report(
    summary: Path,
    manifests: list[Path],
    html_path: Path,
    worst: int = WORST,
    random: int = RANDOM,
    failed: int = FAILED,
    threads: int = 0,
) -> PageResult:
    """Write ``html_path`` and its ``NAME_files/`` folder for the run of ``summary`` (see module doc)."""
    start = time.perf_counter()
    html_path = Path(html_path)
    head, rows = read_summary(summary)
    if (head.get("mean") or {}).get("iou") is not None:
        by = "iou"
    else:  # no ground truth: the label-free score; the foreground fraction for older summaries
        by = "quality" if head.get("quality") else "fraction"
    selector = Selector(by, worst, random, failed)
    for row in rows:
        selector.add(row)
    for f in head.get("failed", []):
        selector.fail(f)
    sel = selector.result()
    runs = [json.loads(m.read_text(encoding="utf-8")) for m in manifests if m.is_file()]
    cwd = next((r.get("cwd") for r in runs if r.get("cwd")), None)

    assets = html_path.with_name(html_path.stem + "_files")
    tmp = html_path.with_name(f".{assets.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        previews = make_previews(sel.entries, tmp, cwd, threads)
        body = _body(head, sel, runs, previews, assets.name, summary)
        _swap_folder(tmp, assets)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_text_atomic(html_path, page(f"unsupseg report: {summary.parent.name}", body))
    assets_bytes = sum(p.stat().st_size for p in assets.iterdir())
    return PageResult(
        html_path,
        assets,
        len(sel.entries),
        sel.n_failed,
        time.perf_counter() - start,
        html_path.stat().st_size,
        assets_bytes,
    )


def _swap_folder(new: Path, target: Path) -> None:
    """Put ``new`` in the place of ``target``: the old folder is moved aside, then removed."""
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- the page
def _body(head: dict, sel: Selection, runs: list[dict], previews: dict, assets: str, summary: Path) -> str:
    when = next((r.get("finished") or r.get("started") for r in runs), None)
    parts = [
        f"<h1>unsupseg run: {esc(summary.parent.name)}</h1>",
        f'<p class="sub">{esc(summary.parent)}{" — " + esc(when) if when else ""}</p>',
        "<h2>Run</h2>",
        _run_section(runs),
        *_structure_section(runs),
        "<h2>Summary</h2>",
        _summary_section(head),
    ]
    if sel.n_scored:
        title, label = _HISTOGRAM[sel.by]
        parts += [
            f"<h2>{title} histogram</h2>",
            svg_histogram(sel.histogram, 0.0, 1.0, f"{label} ({sel.n_scored:,} images)", label),
        ]
    if sel.scatter:
        sample = "" if len(sel.scatter) == sel.n_pairs else f", a uniform sample of {len(sel.scatter):,}"
        parts += [
            "<h2>Quality score and IoU</h2>",
            svg_scatter(
                sel.scatter,
                f"label-free quality against IoU ({sel.n_pairs:,} images{sample})",
                "quality score (no ground truth used)",
                "IoU",
            ),
            '<p class="note">How far the score, which runs without ground truth, follows the IoU on '
            "these images: where the dots rise from left to right, the lowest scores of a folder "
            "without ground truth point at its worst masks (docs/quality.md).</p>",
        ]
    parts += _failures_section(head.get("failed", []))
    parts += _grid_section(sel, previews, assets)
    return "\n".join(parts)


_HISTOGRAM = {  # what "worst" means -> (histogram title, axis label)
    "iou": ("IoU", "IoU of the mask as written"),
    "quality": ("Quality score", "label-free quality score of the mask"),
    "fraction": ("Foreground fraction", "foreground fraction of the mask"),
}
_WORST = {
    "iou": "lowest IoU",
    "quality": "lowest label-free quality score",
    "fraction": "most extreme foreground fraction (nearly empty or full)",
}


def _run_section(runs: list[dict]) -> str:
    if not runs:
        return '<p class="note">No manifest (seginfer.json) found beside summary.json.</p>'
    first = runs[0]
    card = (first.get("model") or {}).get("card") or {}
    rows = [
        ("model", (first.get("model") or {}).get("path")),
        ("network", f"{card.get('arch', '?')}, width {card.get('width', '?')}"),
        ("foreground rule", first.get("foreground")),
        ("threshold", _g(first.get("threshold"))),
    ]
    if len(runs) == 1:
        rows += [
            ("provider", first.get("provider")),
            ("device", first.get("device")),
            ("CPU threads", first.get("threads")),
            ("started", first.get("started")),
            ("finished", first.get("finished")),
            ("time (s)", _g(first.get("seconds"))),
            ("images/s", _g(first.get("images_per_second"))),
        ]
    out = [kv_table(rows)]
    if len(runs) > 1:
        shard_rows = [
            [
                "/".join(map(str, (r.get("args") or {}).get("shard") or ["?"])),
                r.get("provider"),
                r.get("device"),
                r.get("n_images"),
                r.get("seconds"),
                r.get("images_per_second"),
                r.get("started"),
            ]
            for r in runs
        ]
        header = ["shard", "provider", "device", "images", "time (s)", "images/s", "started"]
        out.append(f"<p>{len(runs)} shards merged:</p>" + html_table(header, shard_rows))
    args = first.get("args") or {}
    out.append("<details><summary>arguments</summary>")
    out.append(kv_table((k, _arg(v)) for k, v in args.items()))
    cmd = " ".join(map(str, first.get("command") or []))
    out.append(f'<p class="wrap"><code>{esc(cmd)}</code></p>')
    versions = ", ".join(f"{k} {v}" for k, v in (first.get("versions") or {}).items())
    out.append(f'<p class="note">{esc(versions)}; Python {esc(first.get("python"))}</p></details>')
    return "".join(out)


def _structure_section(runs: list[dict]) -> list[str]:
    """What turned the network's split into the masks (the structure step), and what --adapt did."""
    first = runs[0] if runs else {}
    structure, adaptation = first.get("structure") or {}, first.get("adaptation") or {}
    if not structure and not adaptation:
        return []
    out = ["<h2>Structure and adaptation</h2>"]
    if structure:
        counted = (structure.get("evidence") or {}).get("votes") or {}
        votes = ", ".join(f"{k} {v}" for k, v in counted.items())
        rows = [
            ("structure step", structure.get("kind")),
            ("decided by", structure.get("from")),
            ("votes of the sampled pages", votes or None),
            ("deciding took (s)", _g(structure.get("seconds"))),
        ]
        out.append(kv_table([(k, v) for k, v in rows if v is not None]))
    if adaptation:
        sample = adaptation.get("sample") or {}
        skipped = sample.get("skipped") or []
        rows = [
            ("adapted model", adaptation.get("path")),
            ("adapted model used again (--skip-existing)", adaptation.get("reused")),
            ("sample (pages)", sample.get("pages")),
            ("left out of the sample", ", ".join(str(s.get("input", s)) for s in skipped) or "none"),
            ("the network", adaptation.get("network")),
            ("training steps", adaptation.get("steps")),
            ("chosen snapshot (step)", adaptation.get("chosen_step")),
            ("refused snapshots (steps)", ", ".join(map(str, adaptation.get("refused") or [])) or "none"),
            ("adaptation time (s)", _g(adaptation.get("seconds"))),
            ("device", adaptation.get("device")),
        ]
        out.append(kv_table([(k, v) for k, v in rows if v is not None]))
        snaps = adaptation.get("snapshots") or []
        if snaps:
            table = [
                [
                    s.get("step"),
                    _g(s.get("criterion")),
                    _g(s.get("agreement")),
                    "yes" if s.get("chosen") else "",
                ]
                for s in snaps
            ]
            out.append(
                "<p>Snapshots (criterion: the energy on held-aside pages, lower is better; agreement "
                "with the start model's masks, under the guard's minimum = refused):</p>"
            )
            out.append(html_table(["step", "criterion", "agreement", "chosen"], table))
    return out


def _g(v: object) -> object:
    """A number as it reads best in the run table (3 significant digits at least)."""
    return f"{v:,.4g}" if isinstance(v, float) else v


def _arg(v: object) -> object:
    return v if isinstance(v, int | float | str) or v is None else json.dumps(v, default=str)


def _summary_section(head: dict) -> str:
    mean = head.get("mean") or {}
    rows = [(k, head.get(k)) for k in ("n_images", "n_written", "n_skipped", "n_failed")]
    rows += [(f"mean {k}", mean.get(k)) for k in ("iou", "iou_any_polarity", "dice")]
    quality = head.get("quality") or {}
    rows += [(f"quality {k.replace('_', ' ')}", quality.get(k)) for k in ("median", "mean", "lowest_decile")]
    note = ""
    if mean.get("iou") is None:
        note = '<p class="note">No ground truth (run without --masks, or no mask matched): no IoU.</p>'
    if quality.get("warning"):
        note += f'<p class="warn"><b>Warning:</b> {esc(quality["warning"])}</p>'
    return kv_table(rows, key_attr=True) + note


def _failures_section(failed: list[dict]) -> list[str]:
    if not failed:
        return []
    shown = sorted(failed, key=lambda f: f["input"])[:FAILURE_ROWS]
    more = len(failed) - len(shown)
    tail = f'<p class="note">and {more:,} more in summary.json</p>' if more > 0 else ""
    return [
        f"<h2>Failures ({len(failed):,})</h2>",
        html_table(["input", "reason"], ([f["input"], f["error"]] for f in shown), "wrap") + tail,
    ]


def _grid_section(sel: Selection, previews: dict[str, Preview], assets: str) -> list[str]:
    what = _WORST[sel.by]
    counts = (
        f'<p id="counts">Showing <b>{len(sel.entries):,}</b> inputs: the worst <b>{sel.n_worst:,}</b> '
        f"of {sel.n_scored:,} ({esc(what)}), a random <b>{sel.n_random:,}</b> of {sel.n_rows:,} "
        f"(the smallest hashes of their paths: the same on every build), and "
        f"<b>{sel.n_failed_shown:,}</b> of {sel.n_failed:,} failed. Worst first. "
        "Click a thumbnail for the image, the mask and the overlay.</p>"
    )
    legend = (
        f'<p class="legend">outlines:<span style="background:rgb{MASK_COLOUR}"></span>mask'
        f'<span style="background:rgb{TRUTH_COLOUR}"></span>ground truth (just outside it); '
        "with label images, each object in its own colour</p>"
    )
    tiles, views = [], []
    for e in sel.entries:
        tile, view = _entry(e, previews.get(e.key) or Preview(), assets, sel.by)
        tiles.append(tile)
        views.append(view)
    return [
        "<h2>Thumbnails</h2>",
        counts,
        legend,
        '<div class="grid">',
        *tiles,
        "</div>",
        *views,
    ]


def _src(assets: str, name: str | None) -> str:
    return "" if name is None else esc(f"{quote(assets)}/{quote(name)}")


def _entry(e: Entry, p: Preview, assets: str, by: str) -> tuple[str, str]:
    badges = "".join(
        f'<span class="badge b-{t}">{t}</span>' for t in ("failed", "worst", "random") if t in e.tags
    )
    row = e.row or {}
    if by == "fraction":
        value = f"fg {fmt(e.fraction, 3)}"
    else:
        value = f"{'IoU' if by == 'iou' else 'quality'} {fmt(row.get(by), 3)}"
    name = os.path.basename(e.input) or e.input
    if p.image is None:
        why = p.problem or e.error or "no preview"
        stack = f'<div class="none">{esc(why)}</div>'
    else:
        lines = f'<img src="{_src(assets, p.lines)}" alt="" loading="lazy">' if p.lines else ""
        stack = f'<img src="{_src(assets, p.image)}" alt="" loading="lazy">{lines}'
    tile = (
        f'<a class="tile" id="t-{e.key}" href="#v-{e.key}" title="{esc(e.input)}">'
        f'<div class="stack">{stack}</div><div class="cap">{esc(value)}</div>'
        f'<div class="cap">{badges or "&nbsp;"}</div><div class="cap">{esc(name)}</div></a>'
    )
    details = [
        ("input", e.input),
        ("mask", row.get("output")),
        ("ground truth", row.get("mask")),
        ("status", row.get("status") or "failed"),
        ("IoU", row.get("iou")),
        ("IoU any polarity", row.get("iou_any_polarity")),
        ("Dice", row.get("dice")),
        ("quality score", row.get("quality")),
        ("foreground fraction", e.fraction),
        (
            "size",
            None
            if p.size is None
            else f"{p.size[1]} x {p.size[0]}" + (f", {p.pages} pages (page 1 shown)" if p.pages > 1 else ""),
        ),
    ]
    if e.error:
        details.append(("error", e.error))
    if p.problem:
        details.append(("preview", p.problem))
    panels = ""
    if p.image is not None:
        big = f'<img src="{_src(assets, p.image)}" alt="image" loading="lazy">'
        figs = [f'<figure><div class="big">{big}</div><figcaption>image</figcaption></figure>']
        if p.mask is not None:
            mask = f'<img src="{_src(assets, p.mask)}" alt="mask" loading="lazy">'
            lines = f'<img src="{_src(assets, p.lines)}" alt="outlines" loading="lazy">'
            figs.append(f'<figure><div class="big">{mask}</div><figcaption>mask</figcaption></figure>')
            figs.append(
                f'<figure><div class="big">{big}{lines}</div><figcaption>overlay</figcaption></figure>'
            )
        panels = f'<div class="panels">{"".join(figs)}</div>'
    view = (
        f'<div class="view" id="v-{e.key}"><a class="close" href="#t-{e.key}">close ✕</a>'
        f"<h3>{badges} {esc(name)}</h3>{kv_table(details)}{panels}</div>"
    )
    return tile, view
