"""Real images with ground truth that ship inside a registry package.

stardist 0.9.2 carries one hand-annotated fluorescence image of nuclei from the 2018
Data Science Bowl (BBBC038, Caicedo et al. 2019) in its wheel:
``stardist/data/images/img2d.tif`` (512x512, 125 nuclei, brighter than background)
and ``mask2d.tif`` (instance labels; > 0 is foreground). The Makefile installs the
wheel with ``--no-deps`` (3 MB, no TensorFlow) and nothing is fetched at run time.
The package itself is never imported: its files are found with importlib.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

STARDIST_SPEC = "stardist==0.9.2"


class RealDataMissing(RuntimeError):
    pass


def stardist_image() -> tuple[np.ndarray, np.ndarray]:
    """(image uint16 (512, 512), mask bool (512, 512))."""
    import tifffile

    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise RealDataMissing(f"install the data with: pip install --no-deps {STARDIST_SPEC}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif") > 0


def write_tiles(out: Path, tile: int = 128) -> int:
    """Cut the image into tile x tile pieces: out/images/*.tif and out/masks/*.png."""
    import tifffile

    from unsupseg.core.imageio import write_mask

    img, gt = stardist_image()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    n = 0
    for y in range(0, img.shape[0] - tile + 1, tile):
        for x in range(0, img.shape[1] - tile + 1, tile):
            name = f"dsb_y{y:03d}_x{x:03d}"
            tifffile.imwrite(out / "images" / f"{name}.tif", img[y : y + tile, x : x + tile])
            write_mask(out / "masks" / f"{name}.png", gt[y : y + tile, x : x + tile])
            n += 1
    return n


def _seginfer_summary(images: Path, masks: Path, out: Path, model: Path | None) -> dict:
    import json
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "unsupseg.infer.cli",
        "--input",
        str(images),
        "--masks",
        str(masks),
        "--output",
        str(out),
        "--device",
        "cpu",
        "--overwrite",
        "-q",
    ]
    if model is not None:
        cmd += ["--model", str(model)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "summary.json").read_text())["mean"]


def segtrain_variants(default_ckpt: Path, epochs: int) -> list[tuple[str, list[str]]]:
    """The ways a user would train on the folder: (label, extra segtrain arguments)."""
    return [
        (f"segtrain --data tiles/ ({epochs} epochs, default settings)", []),
        (
            f"segtrain --data tiles/ --norm-percentiles 1 95 ({epochs} epochs)",
            ["--norm-percentiles", "1", "95"],
        ),
        (
            f"segtrain --data tiles/ --norm-percentiles 1 95 --init-from default ({epochs} epochs, lr 0.002)",
            ["--norm-percentiles", "1", "95", "--init-from", str(default_ckpt), "--lr", "0.002"],
        ),
    ]


def run_real_data(
    work: Path, default_ckpt: Path, epochs: int = 20, samples: int = 1000, tile: int = 128, log=print
) -> dict:
    """The packaged default model vs models trained on the unlabeled tiles vs Otsu baselines.

    Transductive, as a user would run it: ``segtrain --data tiles/`` sees the images,
    never the masks (they only score). Returns {label: {"iou", "iou_any_polarity",
    "dice", "train_s"}}; ``iou`` is seginfer's IoU of the mask as written (brighter
    region = foreground), ``iou_any_polarity`` the notebook's metric.
    """
    tiles = work / "dsb_tiles"
    n = write_tiles(tiles, tile)
    log(f"real data: {n} tiles of {tile}x{tile} from stardist's img2d.tif")
    results: dict[str, dict] = {}
    results["unsupseg packaged default model"] = _seginfer_summary(
        tiles / "images", tiles / "masks", work / "pred_default", None
    )
    for k, (label, extra) in enumerate(segtrain_variants(default_ckpt, epochs)):
        results[label] = _train_and_score(
            tiles, work / f"run_{k}", work / f"pred_{k}", epochs, samples, extra
        )
    results.update(_classical_scores(tiles))
    return results


def _train_and_score(tiles: Path, run: Path, pred: Path, epochs: int, samples: int, extra: list[str]) -> dict:
    """segtrain on the tile images (timed), segexport, then seginfer's mean scores on the tiles."""
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "unsupseg.train.cli",
            "--data",
            str(tiles / "images"),
            "--out",
            str(run),
            "--epochs",
            str(epochs),
            "--samples-per-epoch",
            str(samples),
            "--overwrite",
            "-q",
            "--no-plots",
            *extra,
        ],
        check=True,
    )
    train_s = time.perf_counter() - t0
    subprocess.run(
        [
            sys.executable,
            "-m",
            "unsupseg.export.cli",
            str(run / "model.pt"),
            str(run / "model.onnx"),
            "--overwrite",
        ],
        check=True,
        capture_output=True,
    )
    scores = _seginfer_summary(tiles / "images", tiles / "masks", pred, run / "model.onnx")
    scores["train_s"] = train_s
    return scores


def _classical_scores(tiles: Path) -> dict[str, dict]:
    """Otsu and blur + Otsu on every tile: mean IoU, polarity-free IoU and Dice."""
    from unsupseg.core.imageio import read_image, read_mask
    from unsupseg.core.metrics import dice, iou, iou_any_polarity

    from .heldout import blur_otsu, otsu

    results = {}
    for name, fn in (
        ("Otsu", otsu),
        ("Gaussian blur (sigma 1) + Otsu", lambda x: blur_otsu(x, 1.0)),
        ("Gaussian blur (sigma 2) + Otsu", blur_otsu),
    ):
        scores = {"iou": [], "iou_any_polarity": [], "dice": []}
        for f in sorted((tiles / "images").iterdir()):
            x = read_image(f)[0]
            gt = read_mask(tiles / "masks" / f"{f.stem}.png")[0]
            pred = fn(x)  # bright foreground, as in these images
            scores["iou"].append(iou(pred, gt))
            scores["iou_any_polarity"].append(iou_any_polarity(pred, gt))
            scores["dice"].append(dice(pred, gt))
        results[name] = {k: float(np.mean(v)) for k, v in scores.items()}
    return results
