"""Real images with ground truth: classical label-free methods, plain ``seginfer`` (the packaged
model, its structure step decided per folder), the packaged network alone, and the one command
``seginfer --adapt``, all scored the same way.

    python -m bench.realsets [--real ../shared/realdata] [--quick] [--work DIR]

Sets: every ``<real>/<set>/images`` + ``<set>/masks`` folder (``../shared/realdata`` by default:
nuclei, horse, em; read in place, never copied), plus stardist's bundled nuclei (2-D: one
512x512 image; 3-D: 31 pages of 61x57, one file each), installed by ``make install``. Each
set of the shared folder is cut into a *tune* part (the first file names, sorted: the part
every setting was chosen on, docs/model-selection.md) and a *report* part (the rest);
stardist's images were never tuned on.

Per part: the mean IoU % (as written: every classical method's two regions go through the same
foreground rule, ``auto``; and polarity-free), milliseconds per image, and what ``--adapt`` did
(its structure step, whether it trained the network, its time: the whole command's wall time).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"
TUNE = {"nuclei": 4, "horse": 12, "em": 4}  # the first N sorted file names of a set are its tune part


@dataclass
class Part:
    set: str  # nuclei, horse, em, stardist2d, stardist3d
    split: str  # tune, report or check
    folder: Path  # a folder of links to the part's images (and masks/ beside it)
    masks: Path


def _link_folder(dst: Path, files: list[Path]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f.resolve(), dst / f.name)
    return dst


def shared_parts(real: Path, work: Path, quick: bool) -> list[Part]:
    """The tune and report parts of every set in ``real`` (links: the data stays where it is)."""
    from unsupseg.core.files import MaskIndex, iter_image_files

    parts = []
    for set_dir in sorted(p for p in real.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir()):
        names = sorted(iter_image_files(set_dir / "images", recursive=False))
        n_tune = TUNE.get(set_dir.name, len(names) * 2 // 5)
        index = MaskIndex(set_dir / "masks")
        for split, chosen in (("tune", names[:n_tune]), ("report", names[n_tune:])):
            chosen = chosen[:2] if quick else chosen
            if not chosen:
                continue
            base = work / set_dir.name / split
            images = _link_folder(base / "images", [set_dir / "images" / n for n in chosen])
            masks = _link_folder(base / "masks", [index.find(n) for n in chosen if index.find(n)])
            parts.append(Part(set_dir.name, split, images, masks))
    return parts


def stardist_parts(work: Path, quick: bool) -> list[Part]:
    """stardist's 2-D image and the 3-D stack's pages, as files (empty when the wheel is missing)."""
    import importlib.util

    import tifffile

    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    parts = []
    for name, image, mask in (
        ("stardist2d", "img2d.tif", "mask2d.tif"),
        ("stardist3d", "img3d.tif", "mask3d.tif"),
    ):
        img, gt = tifffile.imread(data / image), tifffile.imread(data / mask) > 0
        img, gt = (img[None], gt[None]) if img.ndim == 2 else (img, gt)
        base = work / name
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(exist_ok=True)
        for k in range(min(len(img), 3) if quick else len(img)):
            tifffile.imwrite(base / "images" / f"{name}_{k:02d}.tif", img[k])
            tifffile.imwrite(base / "masks" / f"{name}_{k:02d}.tif", gt[k].astype(np.uint8) * 255)
        parts.append(Part(name, "check", base / "images", base / "masks"))
    return parts


# ----------------------------------------------------------------------------- classical methods
def _unit(image: np.ndarray) -> np.ndarray:
    """The image scaled to [0, 1] by its minimum and maximum (BASELINES.md)."""
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / max(hi - lo, 1e-12)


def _blur_otsu(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    def method(image: np.ndarray) -> np.ndarray:
        from skimage.filters import gaussian, threshold_otsu

        b = gaussian(image, sigma=sigma) if sigma else image
        return b > threshold_otsu(b)

    return method


def _blur_li(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    def method(image: np.ndarray) -> np.ndarray:
        from skimage.filters import gaussian, threshold_li

        b = gaussian(image, sigma=sigma) if sigma else image
        return b > threshold_li(b)

    return method


def _chan_vese(image: np.ndarray) -> np.ndarray:
    from skimage.segmentation import chan_vese

    return chan_vese(_unit(image), mu=0.25, max_num_iter=100).astype(bool)


def _morph_cv(image: np.ndarray) -> np.ndarray:
    from skimage.segmentation import morphological_chan_vese

    return morphological_chan_vese(_unit(image), num_iter=50, smoothing=2).astype(bool)


CLASSICAL = {
    "Otsu": _blur_otsu(0),
    "blur 1 + Otsu": _blur_otsu(1),
    "blur 2 + Otsu": _blur_otsu(2),
    "blur 4 + Otsu": _blur_otsu(4),
    "Li": _blur_li(0),
    "blur 1 + Li": _blur_li(1),
    "blur 2 + Li": _blur_li(2),
    "skimage chan_vese": _chan_vese,
    "morphological Chan-Vese": _morph_cv,
}


def _pairs(part: Part) -> list[tuple[np.ndarray, np.ndarray]]:
    """(gray image float32, mask) of every image of the part that has a mask (first page)."""
    from unsupseg.core.files import MaskIndex, iter_image_files
    from unsupseg.core.imageio import read_image, read_mask

    index = MaskIndex(part.masks)
    out = []
    for rel in sorted(iter_image_files(part.folder)):
        mask = index.find(rel)
        if mask is not None:
            out.append((read_image(part.folder / rel)[0], read_mask(mask)[0]))
    return out


def classical(part: Part) -> dict[str, dict]:
    """{method: {iou, iou_any_polarity, ms}} over the part's images, as written with rule auto."""
    from unsupseg.core.metrics import iou, iou_any_polarity
    from unsupseg.core.polarity import apply_polarity

    pairs = _pairs(part)
    out = {}
    for name, method in CLASSICAL.items():
        written, free, times = [], [], []
        for image, truth in pairs:
            t0 = time.perf_counter()
            region = method(image)
            times.append(time.perf_counter() - t0)
            mask = apply_polarity(image, region.astype(np.float32), 0.5, "auto")[0]
            written.append(iou(mask, truth))
            free.append(iou_any_polarity(mask, truth))
        out[name] = {"iou": float(np.mean(written)), "iou_any_polarity": float(np.mean(free)),
                     "ms": 1e3 * float(np.median(times))}  # fmt: skip
    return out


# ----------------------------------------------------------------------------- unsupseg
PACKAGED = "unsupseg seginfer (packaged model)"
NETWORK = "unsupseg network alone (--structure none)"
ADAPTED = "unsupseg seginfer --adapt"


def segment(part: Part, model: Path | None, out: Path, structure: str | None = None) -> dict:
    """seginfer's run (run_folder, CPU) over the part with ground truth: {iou, iou_any_polarity, ms,
    structure}. ``structure``: None = the model card's (the packaged card's is auto)."""
    from unsupseg.infer import RunOptions, SegmenterConfig, run_folder

    options = RunOptions(
        segmenter=SegmenterConfig(model=model, device="cpu", structure=structure),
        masks=part.masks,
        overwrite=True,
    )
    result = run_folder(part.folder, out, options)
    mean, n = result.summary["mean"], max(1, result.summary["n_written"])
    manifest = json.loads((out / "seginfer.json").read_text())
    return {"iou": mean["iou"], "iou_any_polarity": mean["iou_any_polarity"], "ms": 1e3 * result.seconds / n,
            "structure": (manifest.get("structure") or {}).get("kind")}  # fmt: skip


def seginfer_adapt(part: Part, out: Path) -> tuple[dict, dict]:
    """The one command a user types, ``seginfer --input PART --masks .. --output OUT --adapt``, run
    as a process: ({iou, iou_any_polarity, ms, structure}, {seconds, adapt_s, structure, trained,
    chosen_step, sample})."""
    from bench.common import run_seginfer  # BenchError naming the command when it fails

    args = ["--input", str(part.folder), "--masks", str(part.masks), "--output", str(out), "--adapt",
            "--overwrite", "--device", "cpu", "-q"]  # fmt: skip
    seconds = run_seginfer(args)["wall_s"]
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "seginfer.json").read_text())
    record = manifest.get("adaptation") or {}
    n = max(1, summary["n_written"])
    mean, structure = summary["mean"], (manifest.get("structure") or {}).get("kind")
    scores = {"iou": mean["iou"], "iou_any_polarity": mean["iou_any_polarity"], "ms": 1e3 * seconds / n,
              "structure": structure}  # fmt: skip
    info = {
        "seconds": seconds,
        "adapt_s": record.get("seconds"),
        "structure": (record.get("structure") or {}).get("kind"),
        "trained": record.get("trained"),
        "chosen_step": record.get("chosen_step"),
        "sample": (record.get("sample") or {}).get("pages"),
    }
    return scores, info


def spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return None
    r = spearmanr(a, b).correlation
    return None if r != r else float(r)


def measure(real: Path | None, work: Path, quick: bool, log: Callable[[str], None] = print) -> list[dict]:
    """One row per part: its classical scores, plain seginfer's (the packaged model: structure auto),
    the packaged network's alone and ``seginfer --adapt``'s."""
    parts = (shared_parts(real, work / "parts", quick) if real is not None else []) + stardist_parts(
        work / "parts", quick
    )
    rows = []
    for part in parts:
        log(f"real: {part.set} {part.split}")
        out = work / "out" / part.set / part.split
        scores = classical(part)
        scores[PACKAGED] = segment(part, None, out / "packaged")
        scores[NETWORK] = segment(part, None, out / "network", structure="none")
        scores[ADAPTED], info = seginfer_adapt(part, out / "adapted")
        rows.append({"set": part.set, "split": part.split, "n": len(_pairs(part)), "scores": scores,
                     "adaptation": info})  # fmt: skip
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL if DEFAULT_REAL.is_dir() else None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_real"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = measure(args.real, args.work, args.quick)
    print(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
