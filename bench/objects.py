"""Benchmark section "Objects": instance labels on real nuclei, and what --labels costs.

    python -m bench.objects [--model M.onnx] [--quick] [--work DIR] [--epochs N]

1. **Accuracy** on stardist's bundled nuclei (``img2d.tif``, 512x512, 125 annotated
   nuclei, instance labels; bench/realdata.py): F1, AP at IoU 0.5 and 0.5:0.95 and
   panoptic quality (StarDist's matching rule, ``core/instance.py``) of

   - unsupseg's mask labelled as connected components (``seginfer --labels``) and with
     ``--split`` (and a sweep of ``--min-distance``), for the masks of the given model
     (the packaged one by default) and of a model trained on the image's unlabelled
     tiles (``segtrain --data tiles/ --norm-percentiles 1 95``, as bench/realdata.py
     does; skipped with ``--quick``);
   - scikit-image's classical pipeline on the same image: Gaussian blur (sigma 1),
     Otsu threshold, distance-transform watershed with ``peak_local_max`` markers (the
     scikit-image gallery's recipe), and the same without the watershed;
   - the ground-truth mask itself, labelled both ways: what splitting can do when the
     mask is right.

   ``--min-distance`` was chosen on this image (there is no second annotated one in
   the wheel), so the sweep is shown in full.
2. **Speed**: seconds per 512x512 image of ``run_folder`` (what seginfer runs) on a folder
   of the image's 8 orientations, plain vs ``--labels`` (label image + objects.csv),
   ``--labels --split`` and ``--labels --rois``, interleaved repeats, medians; the
   issue's bound is ``--labels`` at most 1.5x the plain run.
3. **Tiles**: the image run whole and in 128-pixel tiles, labels compared.
4. **Memory** (not with ``--quick``): peak RSS of seginfer on a 4096x4096 image, plain,
   ``--labels`` and ``--labels --split`` (labelling holds the page's labels, and the
   split its distance map and watershed buffers).

``measure(work_dir, onnx_path, quick)`` returns the figures and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .realdata import stardist_image

SPLIT_SWEEP = (3, 4, 5, 6, 7, 8, 10, 12)
SPEED_MODES = {
    "plain": ((), False),
    "--labels": (("labels",), False),
    "--labels --split": (("labels",), True),
    "--labels --rois": (("labels", "rois"), False),
}


def _stardist_labels() -> tuple[np.ndarray, np.ndarray]:
    """(image uint16, instance labels) of stardist's img2d.tif / mask2d.tif."""
    import importlib.util

    import tifffile

    image, _ = stardist_image()
    folder = Path(next(iter(importlib.util.find_spec("stardist").submodule_search_locations)))
    return image, tifffile.imread(folder / "data" / "images" / "mask2d.tif")


def _scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    from unsupseg.core.instance import instance_metrics

    m = instance_metrics(truth, labels)
    keys = ("f1", "precision", "recall", "ap50", "ap50_95", "panoptic_quality", "n_pred_objects")
    return {k: m[k] for k in keys}


def classical(image: np.ndarray, watershed_split: bool, min_distance: int = 7) -> np.ndarray:
    """scikit-image's recipe: blur (sigma 1), Otsu, then connected components or a distance watershed."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.segmentation import watershed

    smooth = gaussian(image.astype(np.float32), sigma=1, preserve_range=True)
    mask = smooth > threshold_otsu(smooth)
    components = label(mask, connectivity=1)
    if not watershed_split:
        return components
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def accuracy(masks: dict[str, np.ndarray], image: np.ndarray, truth: np.ndarray) -> dict:
    """Scores of each pipeline: {row label: scores}, plus the --min-distance sweep per mask."""
    from unsupseg.core.labels import DEFAULT_MIN_DISTANCE, label_mask

    rows: dict[str, dict] = {}
    sweep: dict[str, dict[int, float]] = {}
    for name, mask in masks.items():
        rows[f"{name}, connected components"] = _scores(truth, label_mask(mask))
        rows[f"{name}, --split (min distance {DEFAULT_MIN_DISTANCE})"] = _scores(
            truth, label_mask(mask, split=True)
        )
        sweep[name] = {
            d: _scores(truth, label_mask(mask, split=True, min_distance=d))["f1"] for d in SPLIT_SWEEP
        }
    rows["scikit-image: blur + Otsu, connected components"] = _scores(truth, classical(image, False))
    rows["scikit-image: blur + Otsu + distance watershed"] = _scores(truth, classical(image, True))
    return {"rows": rows, "sweep": sweep}


def _write_folder(folder: Path, image: np.ndarray, copies: int) -> int:
    """``copies`` x the image's 8 orientations as 16-bit TIFFs."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(8 * copies):
        variant = np.rot90(image, k % 4)
        tifffile.imwrite(folder / f"nuclei_{k:03d}.tif", variant[:, ::-1] if k % 8 >= 4 else variant)
    return 8 * copies


def speed(work: Path, onnx_path: Path | None, image: np.ndarray, repeats: int, copies: int) -> dict:
    """Median seconds per image of each mode over ``repeats`` interleaved runs (same warm engine)."""
    from unsupseg.infer import LocalEngine, RunOptions, SegmenterConfig, run_folder

    n = _write_folder(work / "speed_in", image, copies)
    engine = LocalEngine()  # run_folder opens it (loads the model) outside the timed part
    warm = RunOptions(segmenter=SegmenterConfig(model=onnx_path, device="cpu"), overwrite=True)
    run_folder(work / "speed_in", work / "speed_warm", warm, engine)
    times: dict[str, list[float]] = {m: [] for m in SPEED_MODES}
    for r in range(repeats):
        order = list(SPEED_MODES) if r % 2 == 0 else list(SPEED_MODES)[::-1]
        for mode in order:
            outputs, split = SPEED_MODES[mode]
            options = RunOptions(
                segmenter=SegmenterConfig(model=onnx_path, device="cpu", split=split),
                outputs=outputs,
                overwrite=True,
            )
            result = run_folder(work / "speed_in", work / f"speed_{r}_{len(times[mode])}", options, engine)
            times[mode].append(result.seconds / n)
    per_image = {m: statistics.median(v) for m, v in times.items()}
    ratios = {
        m: statistics.median([a / b for a, b in zip(times[m], times["plain"], strict=True)])
        for m in SPEED_MODES
    }
    return {"n_images": n, "repeats": repeats, "seconds_per_image": per_image, "ratio_to_plain": ratios}


def tiles(work: Path, onnx_path: Path | None, image: np.ndarray, tile: int = 256, overlap: int = 64) -> dict:
    """The image whole and in tiles: how far apart are the masks and the --split objects?

    Labelling runs on the blended page, so objects are never cut at seams; what differs
    comes from the blended probabilities near seams (the network sees less context
    there). ``f1_tiled_vs_whole``: the tiled run's objects matched to the whole run's.
    """
    from unsupseg.core.instance import instance_metrics
    from unsupseg.core.labels import label_mask
    from unsupseg.infer import Segmenter

    whole = Segmenter(onnx_path, device="cpu").predict(image)[0]
    tiled = Segmenter(onnx_path, device="cpu", tile_size=tile, tile_overlap=overlap).predict(image)[0]
    lw, lt = label_mask(whole, split=True), label_mask(tiled, split=True)
    return {
        "tile": tile,
        "overlap": overlap,
        "mask_pixels_differing": int(np.count_nonzero(whole != tiled)),
        "labels_identical": bool(np.array_equal(lw, lt)),
        "objects": [int(lw.max()), int(lt.max())],
        "f1_tiled_vs_whole": instance_metrics(lw, lt)["f1"],
    }


def memory(work: Path, onnx_path: Path | None, image: np.ndarray) -> dict:
    """Peak RSS (MB) of seginfer on a 4096x4096 image of the nuclei: plain, --labels, --labels --split."""
    import tifffile

    folder = work / "big_in"
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "big.tif", np.tile(image, (8, 8)))
    out = {}
    modes = (("plain", []), ("--labels", ["--labels"]), ("--labels --split", ["--labels", "--split"]))
    for label, extra in modes:
        cmd = [
            sys.executable,
            "-m",
            "unsupseg.infer.cli.seginfer",
            "--input",
            str(folder),
            "--output",
            str(work / f"big_out_{len(out)}"),
            "--device",
            "cpu",
            "--overwrite",
            "-q",
            *extra,
        ]
        cmd += ["--model", str(onnx_path)] if onnx_path is not None else []
        wrapper = (
            "import json, resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
            "print(json.dumps({'rc': r.returncode, 'kb': kb}))"
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True
        )
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res["rc"] != 0:
            raise RuntimeError(f"seginfer failed: {proc.stderr[-2000:]}")
        out[label] = {"peak_mb": res["kb"] / 1024, "wall_s": time.perf_counter() - t0}
    return out


def train_on_tiles(work: Path, epochs: int) -> Path:
    """A model trained on the image's unlabelled 128x128 tiles (bench/realdata.py's recipe)."""
    from .realdata import write_tiles

    write_tiles(work / "tiles")
    run = work / "trained"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "unsupseg.train.cli",
            "--data",
            str(work / "tiles" / "images"),
            "--out",
            str(run),
            "--epochs",
            str(epochs),
            "--samples-per-epoch",
            "1000",
            "--norm-percentiles",
            "1",
            "95",
            "--overwrite",
            "-q",
            "--no-plots",
        ],
        check=True,
    )
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
    return run / "model.onnx"


def measure(work_dir: Path, onnx_path: Path | None, quick: bool, epochs: int = 20) -> dict:
    """Every figure of the section and its Markdown (``result["markdown"]``)."""
    from unsupseg.infer import Segmenter

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    image, truth = _stardist_labels()
    model_name = f"model {Path(onnx_path).name}" if onnx_path is not None else "packaged model"
    masks = {f"unsupseg ({model_name}) mask": Segmenter(onnx_path, device="cpu").predict(image)[0]}
    if not quick:
        trained = train_on_tiles(work, epochs)
        masks[f"unsupseg (trained on the tiles, {epochs} epochs) mask"] = Segmenter(
            trained, device="cpu"
        ).predict(image)[0]
    masks["ground-truth mask"] = truth > 0
    result = {
        "accuracy": accuracy(masks, image, truth),
        "speed": speed(work, onnx_path, image, repeats=3 if quick else 5, copies=1 if quick else 4),
        "tiles": tiles(work, onnx_path, image),
    }
    if not quick:
        result["memory"] = memory(work, onnx_path, image)
    result["seconds"] = time.perf_counter() - t0
    result["markdown"] = markdown(result)
    return result


def markdown(result: dict) -> str:
    acc, spd, til = result["accuracy"], result["speed"], result["tiles"]
    lines = [
        "On stardist's `img2d.tif` (512x512, 125 annotated nuclei; StarDist's matching rule, IoU 0.5 unless "
        "stated):",
        "",
        "| pipeline | F1 | precision | recall | AP 0.5 | AP 0.5:0.95 | PQ | objects |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in acc["rows"].items():
        lines.append(
            f"| {name} | {s['f1']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['ap50']:.3f} | "
            f"{s['ap50_95']:.3f} | {s['panoptic_quality']:.3f} | {s['n_pred_objects']} |"
        )
    lines += [
        "",
        "F1 of `--split` by `--min-distance`:",
        "",
        "| mask | " + " | ".join(map(str, SPLIT_SWEEP)) + " |",
        "|---|" + "---|" * len(SPLIT_SWEEP),
    ]
    for name, row in acc["sweep"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[d]:.3f}" for d in SPLIT_SWEEP) + " |")
    lines += [
        "",
        f"Speed, {spd['n_images']} images of 512x512, median of {spd['repeats']} interleaved runs "
        "(`run_folder`, CPU):",
        "",
        "| mode | ms per image | x plain |",
        "|---|---|---|",
    ]
    for mode, sec in spd["seconds_per_image"].items():
        lines.append(f"| {mode} | {sec * 1e3:.1f} | {spd['ratio_to_plain'][mode]:.2f} |")
    lines += [
        "",
        f"Tiles ({til['tile']}, overlap {til['overlap']}) vs whole image: {til['mask_pixels_differing']} "
        f"mask pixels differ; --split objects {til['objects'][1]} vs {til['objects'][0]}, "
        f"identical: {'yes' if til['labels_identical'] else 'no'}, F1 of the tiled objects against the "
        f"whole image's {til['f1_tiled_vs_whole']:.3f}.",
    ]
    if "memory" in result:
        mem = result["memory"]
        lines += [
            "",
            "Peak RSS of seginfer on a 4096x4096 image: "
            + ", ".join(f"{k} {v['peak_mb']:.0f} MB" for k, v in mem.items())
            + ".",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: the packaged one)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_objects"), help="scratch folder")
    parser.add_argument("--quick", action="store_true", help="no training, no memory run, fewer repeats")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the model trained on the tiles")
    args = parser.parse_args()
    result = measure(args.work, args.model, args.quick, args.epochs)
    print(result["markdown"])
    print(f"\n_Section time: {result['seconds']:.0f} s._")
    (args.work / "objects.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
