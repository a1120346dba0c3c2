"""Pieces of the self-contained HTML reports (``seginfer --html``, ``segtrain``'s report.html).

A report is one UTF-8 file that opens from disk in any browser with no server and no
network: the style sheet is inline, charts are inline SVG, there is no script at all
(the large view of a thumbnail is a CSS ``:target``), and pictures are data URIs or
files in a folder beside the page. The page is built from strings with the standard
library (``html.escape``); a template engine would add a dependency for a handful of
substitutions.

Every text that comes from outside (file names, error messages, arguments) goes
through ``esc``: HTML-escaped, quotes included, and any file name shown, even one
that is not UTF-8 (its undecodable bytes appear as ``\\xNN``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:0 24px 48px;
max-width:1400px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:24px 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;margin:0 0 12px}.note{color:#555;max-width:900px}.warn{color:#a04000;max-width:900px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #e4e4e4;
text-align:left;vertical-align:top}th{font-weight:600}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums}.kv th{color:#555;font-weight:500}
.wrap{overflow-wrap:anywhere;max-width:900px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #e4e4e4}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px}
.tile{display:block;background:#fff;border:1px solid #ddd;border-radius:4px;padding:4px;color:inherit;
text-decoration:none}.tile:hover{border-color:#0072b2}
.stack{position:relative;width:128px;height:128px;margin:0 auto;background:#222}
.stack img{position:absolute;inset:0;width:100%;height:100%;object-fit:contain;image-rendering:pixelated}
.tile .cap{font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.badge{display:inline-block;font-size:11px;padding:0 4px;border-radius:3px;margin-right:3px;color:#fff}
.b-failed{background:#c0392b}.b-worst{background:#d55e00}.b-random{background:#0072b2}
.none{overflow:hidden;display:flex;align-items:center;justify-content:center;height:100%;color:#ddd;font-size:12px;
padding:6px;text-align:center}
.view{display:none;position:fixed;inset:0;background:#111;z-index:10;overflow:auto;color:#eee;
padding:20px}.view:target{display:block}.view a.close{color:#fff;font-size:16px;float:right}
.view .panels{display:flex;flex-wrap:wrap;gap:16px;margin-top:12px}
.view figure{margin:0}.view figcaption{text-align:center;color:#ccc}
.view .big{position:relative;width:min(31vw,440px);height:min(31vw,440px);background:#000}
.view .big img{position:absolute;inset:0;width:100%;height:100%;object-fit:contain;image-rendering:pixelated}
.view table td,.view table th{border-color:#444}
.legend span{display:inline-block;width:12px;height:12px;vertical-align:middle;margin:0 4px 0 10px}
.pics td{padding:2px}.pics img{width:96px;height:96px;image-rendering:pixelated;display:block}
"""


def display_text(value: object) -> str:
    """``str(value)`` printable as UTF-8: a file name's undecodable bytes (surrogate escapes)
    become ``\\xNN``, so any name can be shown."""
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape" if _escapable(text) else "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


def _escapable(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def esc(value: object) -> str:
    """Any value as HTML text or attribute value: shown (``display_text``) and escaped."""
    return html.escape(display_text(value), quote=True)


def fmt(value: object, digits: int = 4) -> str:
    """A number for a table: floats with ``digits`` decimals, ints with separators, None as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def page(title: str, body: str) -> str:
    """A whole HTML document: inline style, no script, no external resource (not even a favicon)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def kv_table(rows: Iterable[tuple[str, object]], key_attr: bool = False) -> str:
    """A two-column table of (name, value); values are escaped. ``key_attr``: each value cell
    carries ``data-key="name"`` (tests and scripts read the figures off the page)."""
    out = ['<table class="kv">']
    for key, value in rows:
        attr = f' data-key="{esc(key)}"' if key_attr else ""
        num = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
        shown = fmt(value) if isinstance(value, int | float) or value is None else value
        out.append(f"<tr><th>{esc(key)}</th><td{num}{attr}>{esc(shown)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def html_table(header: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    """A table with a header row; cells are escaped, numbers right-aligned."""
    out = [f'<table class="{esc(cls)}"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for v in row:
            num = isinstance(v, int | float) and not isinstance(v, bool)
            cells.append(f'<td class="num">{esc(fmt(v))}</td>' if num else f"<td>{esc(fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def png_data_uri(image) -> str:
    """A Pillow image or uint8 array as a ``data:image/png;base64,...`` URI."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- inline SVG charts
_W, _H, _L, _R, _T, _B = 380, 230, 56, 12, 26, 34  # size and margins of a chart


def _ticks(lo: float, hi: float) -> list[float]:
    return [lo, (lo + hi) / 2, hi] if hi > lo else [lo]


def _frame(title: str, xlabel: str, ylabel: str, xt: list[tuple[float, str]], yt: list[tuple[float, str]]):
    parts = [
        f'<svg class="chart" role="img" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        f'font-family="sans-serif" font-size="11">',
        f"<title>{esc(title)}</title>",
        f'<text x="{_W / 2}" y="16" text-anchor="middle" font-size="13">{esc(title)}</text>',
        f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - _R}" y2="{_H - _B}" stroke="#888"/>',
        f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_H - _B}" stroke="#888"/>',
        f'<text x="{(_L + _W - _R) / 2}" y="{_H - 4}" text-anchor="middle">{esc(xlabel)}</text>',
        f'<text x="12" y="{(_T + _H - _B) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(_T + _H - _B) / 2})">{esc(ylabel)}</text>',
    ]
    for x, label in xt:
        parts.append(f'<text x="{x:.1f}" y="{_H - _B + 14}" text-anchor="middle">{esc(label)}</text>')
    for y, label in yt:
        parts.append(f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end">{esc(label)}</text>')
        parts.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" stroke="#eee"/>')
    return parts


def svg_curve(x: Sequence[float], mean: Sequence, std: Sequence, title: str, ylabel: str) -> str:
    """A learning curve: the mean as a line and a +/- std band (points with no value are left out)."""
    pts = [
        (float(a), float(m), float(s or 0.0))
        for a, m, s in zip(x, mean, std, strict=True)
        if m is not None and math.isfinite(float(m))
    ]
    if not pts:
        return f'<p class="note">{esc(title)}: no values</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    lo = min(p[1] - p[2] for p in pts)
    hi = max(p[1] + p[2] for p in pts)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5

    def sx(v: float) -> float:
        return _L + (v - x0) / ((x1 - x0) or 1) * (_W - _L - _R)

    def sy(v: float) -> float:
        return _H - _B - (v - lo) / (hi - lo) * (_H - _T - _B)

    xt = [(sx(v), f"{v:g}") for v in ([x0, x1] if x1 > x0 else [x0])]
    yt = [(sy(v), f"{v:.3g}") for v in _ticks(lo, hi)]
    parts = _frame(title, "epoch", ylabel, xt, yt)
    band = [(sx(a), sy(m + s)) for a, m, s in pts] + [(sx(a), sy(m - s)) for a, m, s in reversed(pts)]
    parts.append(
        '<polygon fill="#0072b2" fill-opacity="0.25" points="'
        + " ".join(f"{a:.1f},{b:.1f}" for a, b in band)
        + '"><title>+/- std</title></polygon>'
    )
    line = " ".join(f"{sx(a):.1f},{sy(m):.1f}" for a, m, _ in pts)
    parts.append(f'<polyline fill="none" stroke="#d55e00" stroke-width="1.6" points="{line}"/>')
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(counts: Sequence[int], lo: float, hi: float, title: str, xlabel: str) -> str:
    """Bars of ``counts`` over equal bins from ``lo`` to ``hi``; each bar's count in its tooltip."""
    n = len(counts)
    top = max(max(counts), 1)
    width = (_W - _L - _R) / n
    xt = [(_L + k * (_W - _L - _R) / 4, f"{lo + k * (hi - lo) / 4:g}") for k in range(5)]
    yt = [(_H - _B - v / top * (_H - _T - _B), f"{v:,}") for v in sorted({0, top // 2, top})]
    parts = _frame(title, xlabel, "images", xt, yt)
    for k, c in enumerate(counts):
        h = c / top * (_H - _T - _B)
        a, b = lo + k * (hi - lo) / n, lo + (k + 1) * (hi - lo) / n
        parts.append(
            f'<rect x="{_L + k * width + 0.5:.1f}" y="{_H - _B - h:.1f}" width="{max(width - 1, 0.5):.1f}" '
            f'height="{h:.1f}" fill="#0072b2"><title>{a:g} to {b:g}: {c:,}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_scatter(points: Sequence[tuple[float, float]], title: str, xlabel: str, ylabel: str) -> str:
    """Points (x, y), both in [0, 1], as dots on the unit square (values outside are clipped)."""
    span_x, span_y = _W - _L - _R, _H - _T - _B
    ticks = [0.0, 0.5, 1.0]
    xt = [(_L + v * span_x, f"{v:g}") for v in ticks]
    yt = [(_H - _B - v * span_y, f"{v:g}") for v in ticks]
    parts = _frame(title, xlabel, ylabel, xt, yt)
    for x, y in points:
        cx = _L + min(max(float(x), 0.0), 1.0) * span_x
        cy = _H - _B - min(max(float(y), 0.0), 1.0) * span_y
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.2" fill="#0072b2" fill-opacity="0.55">'
            f"<title>{x:.3f}, {y:.3f}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
