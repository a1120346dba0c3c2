"""The seed notebook's result figures, written as PNG files.

Eight learning curves (mean line with a +/- std band over mini-batches): loss,
fidelity and regularisation on train and test, IoU on train and test; and two grids of
image / prediction / binary / mask for 10 training and 10 test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CURVES = [
    ("loss_train", "train_loss", "loss (training)", "loss"),
    ("fidelity_train", "train_fidelity", "loss - data fidelity (training)", "loss"),
    ("regularization_train", "train_tv", "loss - regularisation, TV (training)", "TV"),
    ("loss_test", "test_loss", "loss (testing)", "loss"),
    ("fidelity_test", "test_fidelity", "loss - data fidelity (testing)", "loss"),
    ("regularization_test", "test_tv", "loss - regularisation, TV (testing)", "TV"),
    ("iou_train", "train_iou", "IoU, any polarity (training)", "IoU (%)"),
    ("iou_test", "test_iou", "IoU, any polarity (testing)", "IoU (%)"),
]


def _curve(path: Path, history: list[dict], key: str, title: str, ylabel: str) -> None:
    import matplotlib.pyplot as plt

    epochs = np.array([r["epoch"] for r in history])
    mean = np.array([r[f"{key}_mean"] for r in history], dtype=float)
    std = np.array([r[f"{key}_std"] for r in history], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.set_title(title)
    ax.plot(epochs, mean, "-", color="red", label="mean")
    ax.fill_between(epochs, mean - std, mean + std, facecolor="blue", alpha=0.3, label="+/- std")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def _grid(path: Path, title: str, images: np.ndarray, masks: np.ndarray, model, device) -> None:
    import matplotlib.pyplot as plt

    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None].to(device)
    pred = model(x)[:, 0].cpu().numpy()
    rows = len(images)
    fig, axes = plt.subplots(rows, 4, figsize=(3 * 4, 3 * rows), squeeze=False)
    fig.suptitle(title, fontsize=16)
    for r in range(rows):
        panels = [(images[r], None), (pred[r], (0, 1)), (pred[r] >= 0.5, (0, 1)), (masks[r], (0, 1))]
        for c, (im, lim) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(
                im, cmap="gray", vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1]
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(["image", "prediction", "binary", "mask"][c])
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def save_plots(folder: Path, history: list[dict], model, data, device, has_masks: bool) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, key, title, ylabel in CURVES:
        if key.endswith("iou") and not has_masks:
            continue
        p = folder / f"{name}.png"
        _curve(p, history, key, title, ylabel)
        written.append(p)
    for split, (imgs, msks) in (("train", data.grid_train), ("test", data.grid_test)):
        p = folder / f"results_{split}.png"
        _grid(p, f"{'training' if split == 'train' else 'testing'} results", imgs, msks, model, device)
        written.append(p)
    return written
