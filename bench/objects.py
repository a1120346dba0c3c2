"""Benchmark section "Objects": instance labels on real nuclei, and what --labels costs.

    python -m bench.objects [--model M.onnx] [--quick] [--work DIR] [--epochs N] [--real DIR]

0. **Split methods on the nuclei parts** (issue 22): the masks ``seginfer`` writes (the given
   model, the packaged one by default; structure from its card) on the tune part (the first 4
   names) and the report part (the rest) of ``<real>/nuclei`` (instance labels in ``labels/``;
   ../shared/realdata by default) and on stardist's image (a check never tuned on), labelled
   by each method: connected components, ``--split --split-method watershed`` and
   ``--split-method hmaxima`` (the earlier splits), ``--split`` (scaled, the default, chosen on
   the tune part and the Cell Tracking Challenge's GOWT1 and HeLa frames) and scikit-image's
   classical pipeline on the image; and the ground-truth mask labelled by each (what splitting
   can do when the mask is right). F1, AP at IoU 0.5 and 0.5:0.95 and PQ pooled over the
   part's objects (every object counts once, whatever image it is in), and F1 averaged over
   images (as summary.json's ``mean``).
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
   ``--labels --split`` (scaled), ``--labels --split --split-method hmaxima``,
   ``--labels --split --split-method watershed`` and
   ``--labels --rois``, interleaved repeats, medians; the bounds are ``--labels`` at most
   1.5x the plain run (issue 12) and ``--labels --split`` at most 2x (issue 22).
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
from dataclasses import replace
from pathlib import Path

import numpy as np

from .realdata import stardist_image

SPLIT_SWEEP = (3, 4, 5, 6, 7, 8, 10, 12)
# mode -> (outputs, split method or None)
SPEED_MODES = {
    "plain": ((), None),
    "--labels": (("labels",), None),
    "--labels --split": (("labels",), "scaled"),
    "--labels --split --split-method hmaxima": (("labels",), "hmaxima"),
    "--labels --split --split-method watershed": (("labels",), "watershed"),
    "--labels --rois": (("labels", "rois"), None),
}
NUCLEI_TUNE = 4  # bench/realsets.py's TUNE["nuclei"]: the first 4 sorted names are the tune part
# the split methods of the nuclei parts: row name -> label_mask's split method (None: components)
SPLITS = {
    "connected components (--labels)": None,
    "watershed (--split --split-method watershed)": "watershed",
    "hmaxima (--split --split-method hmaxima)": "hmaxima",
    "scaled (--split, the default)": "scaled",
}
CLASSICAL_ROW = "scikit-image: blur + Otsu + distance watershed (on the image)"
PART_SCORES = ("f1", "ap50", "ap50_95", "pq", "f1_mean")


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
        rows[f"{name}, --split --split-method watershed (min distance {DEFAULT_MIN_DISTANCE})"] = _scores(
            truth, label_mask(mask, split=True, method="watershed")
        )
        rows[f"{name}, --split --split-method hmaxima"] = _scores(
            truth, label_mask(mask, split=True, method="hmaxima")
        )
        rows[f"{name}, --split (scaled)"] = _scores(truth, label_mask(mask, split=True))
        sweep[name] = {
            d: _scores(truth, label_mask(mask, split=True, min_distance=d, method="watershed"))["f1"]
            for d in SPLIT_SWEEP
        }
    rows["scikit-image: blur + Otsu, connected components"] = _scores(truth, classical(image, False))
    rows["scikit-image: blur + Otsu + distance watershed"] = _scores(truth, classical(image, True))
    return {"rows": rows, "sweep": sweep}


def nuclei_parts(real: Path | None) -> dict[str, list[tuple[Path, Path]]]:
    """{part: [(image, instance labels)]}: the tune and report parts of ``real``/nuclei (when it
    has ``labels/``) and stardist's image ("stardist check")."""
    import importlib.util

    parts: dict[str, list[tuple[Path, Path]]] = {}
    nuclei = Path(real) / "nuclei" if real is not None else None
    if nuclei is not None and (nuclei / "labels").is_dir():
        from unsupseg.core.files import iter_image_files

        names = sorted(iter_image_files(nuclei / "images", recursive=False))
        pairs = [(nuclei / "images" / n, nuclei / "labels" / (Path(n).stem + ".tif")) for n in names]
        parts["nuclei tune"], parts["nuclei report"] = pairs[:NUCLEI_TUNE], pairs[NUCLEI_TUNE:]
    spec = importlib.util.find_spec("stardist")
    if spec is not None and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
        parts["stardist check"] = [(data / "img2d.tif", data / "mask2d.tif")]
    return parts


def pooled(overlaps: list) -> dict:
    """F1, AP (TP / (TP + FP + FN)) at IoU 0.5, AP over 0.5:0.95 and PQ of a part's objects,
    matched image by image (StarDist's rule) and counted together."""
    from unsupseg.core.instance import THRESHOLDS, match

    aps, out = [], {}
    for t in THRESHOLDS:
        ms = [match(ov, t) for ov in overlaps]
        tp, fp, fn = (sum(getattr(m, k) for m in ms) for k in ("tp", "fp", "fn"))
        aps.append(tp / max(tp + fp + fn, 1))
        if t == 0.5:
            matched_iou = sum(m.mean_matched_iou * m.tp for m in ms)
            out = {
                "f1": 2 * tp / max(2 * tp + fp + fn, 1),
                "ap50": aps[-1],
                "pq": matched_iou / max(tp + (fp + fn) / 2, 1),
                "n_true": tp + fn,
                "n_pred": tp + fp,
            }
    return {**out, "ap50_95": float(np.mean(aps))}


def split_methods(work: Path, onnx_path: Path | None, parts: dict[str, list[tuple[Path, Path]]]) -> dict:
    """{part: {"images", "true_objects", "rows": {row: scores}}} of every split method on seginfer's
    masks and on the true masks."""
    from unsupseg.core.imageio import read_labels, read_mask, read_pages
    from unsupseg.core.instance import overlaps
    from unsupseg.core.labels import label_mask
    from unsupseg.infer import RunOptions, SegmenterConfig, run_folder

    result = {}
    for part, pairs in parts.items():
        folder = work / "parts" / part.replace(" ", "_")
        (folder / "in").mkdir(parents=True, exist_ok=True)
        for image, _ in pairs:
            link = folder / "in" / image.name
            if not link.exists():
                link.symlink_to(image.resolve())
        options = RunOptions(segmenter=SegmenterConfig(model=onnx_path, device="cpu"), overwrite=True)
        run_folder(folder / "in", folder / "out", options)  # seginfer's masks (structure from the card)
        found: dict[str, list] = {}
        for image, truth_path in pairs:
            truth = read_labels(truth_path)[0]
            mask = read_mask(folder / "out" / (image.stem + ".png"))[0]
            labelled = {}
            for name, method in SPLITS.items():
                for source, m in (("unsupseg mask", mask), ("ground-truth mask", truth > 0)):
                    split = dict(split=True, method=method) if method else {}
                    labelled[f"{source}, {name}"] = label_mask(m, **split)
            labelled[CLASSICAL_ROW] = classical(read_pages(image)[0], True)
            for row, labels in labelled.items():
                found.setdefault(row, []).append(overlaps(truth, labels))
        rows = {}
        for row, ovs in found.items():
            rows[row] = pooled(ovs)
            rows[row]["f1_mean"] = float(np.mean([pooled([ov])["f1"] for ov in ovs]))
        result[part] = {"images": len(pairs), "true_objects": rows[CLASSICAL_ROW]["n_true"], "rows": rows}
    return result


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
            outputs, method = SPEED_MODES[mode]
            config = SegmenterConfig(model=onnx_path, device="cpu", split=method is not None)
            if method is not None:
                config = replace(config, split_method=method)
            options = RunOptions(
                segmenter=config,
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


def measure(
    work_dir: Path, onnx_path: Path | None, quick: bool, epochs: int = 20, real: Path | None = None
) -> dict:
    """Every figure of the section and its Markdown (``result["markdown"]``)."""
    from unsupseg.infer import Segmenter

    from .realsets import DEFAULT_REAL

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    real = real if real is not None else (DEFAULT_REAL if DEFAULT_REAL.is_dir() else None)
    parts = nuclei_parts(real)
    if quick:
        parts = {k: v[:2] for k, v in parts.items()}
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
        "split_methods": split_methods(work, onnx_path, parts),
        "accuracy": accuracy(masks, image, truth),
        "speed": speed(work, onnx_path, image, repeats=3 if quick else 5, copies=1 if quick else 4),
        "tiles": tiles(work, onnx_path, image),
    }
    if not quick:
        result["memory"] = memory(work, onnx_path, image)
    result["seconds"] = time.perf_counter() - t0
    result["markdown"] = markdown(result)
    return result


SPLIT_HEADER = ["labels from", "F1", "AP 0.5", "AP 0.5:0.95", "PQ", "F1 mean over images", "objects"]


def split_rows(part: dict) -> list[list]:
    """Rows of one part's split-method table (SPLIT_HEADER), scores in percent."""
    return [
        [row] + [f"{100 * s[k]:.1f}" for k in PART_SCORES] + [s["n_pred"]] for row, s in part["rows"].items()
    ]


def markdown(result: dict) -> str:
    acc, spd, til = result["accuracy"], result["speed"], result["tiles"]
    lines = []
    for name, part in result["split_methods"].items():
        lines += [
            f"{name} ({part['images']} images, {part['true_objects']} true objects; pooled over objects):",
            "",
            "| " + " | ".join(SPLIT_HEADER) + " |",
            "|" + "---|" * len(SPLIT_HEADER),
            *("| " + " | ".join(map(str, r)) + " |" for r in split_rows(part)),
            "",
        ]
    lines += [
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
    parser.add_argument("--real", type=Path, help="folder of real sets (default: ../shared/realdata)")
    args = parser.parse_args()
    result = measure(args.work, args.model, args.quick, args.epochs, args.real)
    print(result["markdown"])
    print(f"\n_Section time: {result['seconds']:.0f} s._")
    (args.work / "objects.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
