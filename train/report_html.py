"""``RUN/report.html``: the training run on one page, the seed notebook's figures in a browser.

The run (data, network, device, time), the final metrics, the eight learning curves (mean
line and +/- std band over mini-batches, inline SVG from the epoch rows) and the two
grids of image / prediction / binary / mask for the training and the test images (small
PNGs inside the page). One file with no script and no external resource: it opens from
disk anywhere. Made in well under a second from what the run holds in memory; about
100-300 KB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unsupseg.core.atomic import write_text_atomic
from unsupseg.core.html import esc, kv_table, page, png_data_uri, svg_curve
from unsupseg.core.overlay import display_u8, render_overlay
from unsupseg.train.plots import CURVES

FINAL_KEYS = ("epoch", "train_iou", "test_iou", "train_iou_running", "train_loss", "test_loss")


@torch.no_grad()
def _predict(model, images: np.ndarray, device) -> np.ndarray:
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None].to(device)
    return model(x)[:, 0].float().cpu().numpy()  # (N, 1, H, W) -> (N, H, W)


def _grid(title: str, images: np.ndarray, masks: np.ndarray | None, pred: np.ndarray) -> str:
    head = ["image", "prediction", "binary"] + (["mask", "overlay"] if masks is not None else ["overlay"])
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for k in range(len(images)):
        gray = display_u8(images[k])
        binary = pred[k] >= 0.5
        pics = [gray, (np.clip(pred[k], 0, 1) * 255).astype(np.uint8), binary.astype(np.uint8) * 255]
        truth = None if masks is None else masks[k].astype(bool)
        if truth is not None:
            pics.append(truth.astype(np.uint8) * 255)
        pics.append(render_overlay(gray, binary, truth))
        cells = "".join(
            f'<td><img src="{png_data_uri(p)}" alt="{h}"></td>' for p, h in zip(pics, head, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<h3>{esc(title)}</h3><table class="pics">{"".join(rows)}</table>'


def train_report_html(history: list[dict], summary: dict, grids: dict[str, tuple]) -> str:
    """The page's HTML. ``grids``: {title: (images, masks or None, predictions)}."""
    cfg = summary.get("config") or {}
    run = [
        ("data", summary.get("data")),
        ("network", f"{cfg.get('arch')}, width {cfg.get('width')} (preset {cfg.get('preset')})"),
        (
            "epochs",
            f"{len(history)} of {cfg.get('epochs')}"
            + (" (interrupted)" if summary.get("interrupted") else ""),
        ),
        ("device", f"{summary.get('device')}, {summary.get('processes', 1)} process(es)"),
        ("wall time (s)", f"{summary.get('wall_time_s', 0):,.1f}"),
        ("unsupseg / torch", f"{summary.get('package_version')} / {summary.get('torch_version')}"),
    ]
    final = summary.get("final") or {}
    finals = [(k, final.get(k)) for k in FINAL_KEYS] + [
        ("best test_loss", (summary.get("best") or {}).get("test_loss"))
    ]
    epochs = [r["epoch"] for r in history]
    charts = []
    for _, key, title, ylabel in CURVES:
        if key.endswith("iou") and not summary.get("has_masks"):
            continue
        mean = [r.get(f"{key}_mean") for r in history]
        std = [r.get(f"{key}_std") for r in history]
        charts.append(svg_curve(epochs, mean, std, title, ylabel))
    parts = [
        f"<h1>unsupseg training: {esc(Path(str(cfg.get('out', ''))).name)}</h1>",
        f'<p class="sub">{esc(cfg.get("out", ""))}</p>',
        "<h2>Run</h2>",
        kv_table(run),
        "<h2>Final metrics</h2>",
        kv_table(finals, key_attr=True),
        '<p class="note">IoU in percent, any polarity (the seed notebook\'s metric); the final train IoU '
        "is measured like the test IoU (eval mode, inputs as they are).</p>",
        "<h2>Learning curves</h2>",
        f'<div class="charts">{"".join(charts)}</div>',
        "<h2>Results</h2>",
        '<div class="charts">' + "".join(f"<div>{_grid(t, *g)}</div>" for t, g in grids.items()) + "</div>",
        "<details><summary>configuration</summary>",
        kv_table((k, v if isinstance(v, int | float | str) or v is None else str(v)) for k, v in cfg.items()),
        "</details>",
    ]
    return page(f"unsupseg training: {cfg.get('out', '')}", "\n".join(parts))


def write_train_report(out: Path, history: list[dict], summary: dict, model, data, device) -> Path:
    """Write ``out/report.html`` for a finished run (see module doc); returns its path."""
    grids = {}
    for split, (images, masks) in (("training", data.grid_train), ("test", data.grid_test)):
        images = np.asarray(images)
        masks = np.asarray(masks) if data.has_masks and masks is not None else None
        grids[f"{split} images"] = (images, masks, _predict(model, images, device))
    path = Path(out) / "report.html"
    write_text_atomic(path, train_report_html(history, summary, grids))
    return path
