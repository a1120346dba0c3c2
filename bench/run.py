"""``make bench``: where unsupseg stands, in ratios measured side by side on this machine.

    python -m bench.run                       # everything -> docs/benchmarks.md, bench/results.json
    python -m bench.run --quick --out /tmp/b  # smoke run with tiny counts (about 2 minutes)
    python -m bench.run --sections model,quant --sweep runs/w4/model.pt,runs/w8/model.pt

Sections (``--sections``): model (torch eager vs onnxruntime, GFLOP/s against the CPU's
peak), e2e (seginfer on a folder vs the model alone), classical (Otsu, blur + Otsu,
Chan-Vese, morphological Chan-Vese vs unsupseg on held-out images), sweep (accuracy and
speed over widths, from ``--sweep`` checkpoints), memory (peak RSS of seginfer), training
(images/s, ``make train`` wall time), quant (int8 vs fp32), gpu.

Every section uses the same weights: ``--checkpoint`` is exported to a temporary .onnx
with ``segexport``'s own code, so torch and onnxruntime run identical parameters.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from bench.timing import (
    cpuinfo,
    machine,
    median,
    paired_ratio,
    practical_peak,
    spread,
    theoretical_peak,
    time_side_by_side,
    usable_cores,
)

SECTIONS = ("model", "e2e", "classical", "sweep", "real", "memory", "training", "stream", "quant", "gpu")
ROOT = Path(__file__).resolve().parent.parent
SEGINFER = [sys.executable, "-c", "from unsupseg.infer.cli import main; main()"]
SEGTRAIN = [sys.executable, "-c", "from unsupseg.train.cli import main; main()"]


class BenchError(click.ClickException):
    exit_code = 2


@dataclass
class Settings:
    quick: bool
    threads: int
    checkpoint: Path
    sweep: list[Path]
    work: Path  # scratch folder (temporary)
    repeats: int = 5


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    tables: list[dict] = field(default_factory=list)  # {"caption", "columns", "rows"}
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    seconds: float = 0.0

    def table(self, caption: str, columns: list[str], rows: list[list]) -> None:
        self.tables.append({"caption": caption, "columns": columns, "rows": rows})


@dataclass
class Shared:
    """What several sections use: the exported model and the held-out results of unsupseg."""

    settings: Settings
    onnx_path: Path | None = None
    card: object = None
    model_config: object = None
    heldout: list | None = None  # [(spec, images, masks)]
    cache: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers
def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def log(msg: str) -> None:
    click.echo(f"bench: {msg}", err=True)


def generated_batch(b: int, h: int, w: int, seed: int, card) -> np.ndarray:
    """(b, 1, h, w) normalised generated images."""
    from unsupseg.train.data import generate

    imgs, _ = generate(b, h, w, sigma=(0.2, 1.0), seed=seed, max_objects=3)
    return np.stack([card.normalization(im) for im in imgs])[:, None].astype(np.float32)


def ort_session(path: Path, threads: int):
    from unsupseg.infer.session import OnnxSession

    return OnnxSession(path, device="cpu", threads=threads)


def write_pngs(folder: Path, images: np.ndarray) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"img_{i:05d}.png"
        Image.fromarray(im).save(p, format="PNG", compress_level=1)
        paths.append(p)
    return paths


def run_seginfer(args: list[str], measure_rss: bool = False) -> dict:
    """Run seginfer in a subprocess; wall seconds, its own manifest, and (optionally) peak RSS
    (``peak_rss_run``)."""
    cmd = SEGINFER + args
    out = {}
    if measure_rss:
        out["maxrss_mb"], out["wall_s"], _ = peak_rss_run(cmd)
    else:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out["wall_s"] = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"seginfer failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-2000:]}")
    output = Path(args[args.index("--output") + 1])
    manifest = json.loads((output / "seginfer.json").read_text())
    out["run_s"] = manifest["seconds"]
    out["n_written"] = manifest["n_written"]
    return out


def peak_rss_run(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(peak RSS MB, wall s, process) of ``cmd``.

    Peak RSS: a fresh wrapper process runs ``cmd`` as its only child and reports
    ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, so no other child of this process counts.
    """
    wrapper = (
        "import json, resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(json.dumps({'rc': r.returncode, "
        "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"rc": -1}
    if proc.returncode != 0 or res["rc"] != 0:
        raise BenchError(f"failed: {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
    return res["maxrss_kb"] / 1024, wall, proc


def heldout(shared: Shared):
    """Held-out sets (bench/heldout.py) plus a noise sweep at 128x128; cut down with --quick."""
    if shared.heldout is None:
        from bench.heldout import HeldoutSpec, heldout_sets

        sets = heldout_sets()
        sweep = [
            HeldoutSpec(f"128x128 noise {s:.2f}", 20, 128, 128, (s, s), max_objects=3)
            for s in (0.25, 0.5, 0.75, 1.0, 1.25)
        ]
        sets += [(s, *s.make(3000 + i)) for i, s in enumerate(sweep)]
        if shared.settings.quick:
            sets = [(s, x[:3], m[:3]) for s, x, m in sets if s.height * s.width <= 128 * 128][:3]
        shared.heldout = sets
    return shared.heldout


def segment_set(seg, images) -> tuple[list[np.ndarray], float]:
    """Masks for raw images with a Segmenter (batched as seginfer does); seconds for the whole set."""
    t0 = time.perf_counter()
    items = ((i, seg.prepare(im[None])) for i, im in enumerate(images))
    masks = [None] * len(images)
    for i, result in seg.predict_stream(items):
        if isinstance(result, BaseException):
            raise result
        masks[i] = result[0][0]
    return masks, time.perf_counter() - t0


def unsupseg_on_heldout(shared: Shared, onnx_path: Path, key: str, threads: int, repeats: int) -> dict:
    """Per set: IoU per image and median seconds per image of a Segmenter (cached by key)."""
    from unsupseg.core.metrics import iou_any_polarity
    from unsupseg.infer.api import Segmenter

    if key in shared.cache:
        return shared.cache[key]
    seg = Segmenter(onnx_path, device="cpu", threads=threads)
    out = {}
    for spec, images, masks in heldout(shared):
        seg.predict(images[0])  # warm-up: onnxruntime sets up each new input shape on its first call
        times, pred = [], None
        for _ in range(repeats):
            pred, dt = segment_set(seg, images)
            times.append(dt / len(images))
        out[spec.name] = {
            "iou": [iou_any_polarity(p, m) for p, m in zip(pred, masks, strict=True)],
            "s_per_image": times,
        }
    shared.cache[key] = out
    return out


def export_checkpoint(ckpt: Path, out: Path) -> tuple[Path, object]:
    from unsupseg.export.export import export_onnx

    report = export_onnx(ckpt, out, overwrite=True, log=lambda m: None)
    return out, report.card


# ----------------------------------------------------------------------------- sections
def section_model(shared: Shared) -> Section:
    import torch

    from unsupseg.train.checkpoint import load_model
    from unsupseg.train.model import count_flops

    st = shared.settings
    sec = Section(
        "model",
        "Model alone: torch eager vs onnxruntime (CPU)",
        f"Same weights (the checkpoint and its ONNX export), {st.threads} threads on both sides "
        "(`torch.set_num_threads`, onnxruntime intra-op threads as seginfer sets them), normalised "
        "generated images already in memory, no pre- or post-processing. images/s is the median of "
        f"{st.repeats} repeats (fewer for the largest case, stated); the ratio is the median of the "
        "per-repeat ratios. GFLOP/s counts the convolutions only (`count_flops`: 2 x multiply-adds). "
        "Two shapes are repeated with one thread on both sides: torch's OpenMP threads meet at a barrier "
        "in every operator, so when other processes share the cores (load average above the core count, "
        "see the top of this page) a descheduled thread stalls the other and torch's small-shape figures "
        "collapse; onnxruntime (no spinning) suffers less. One thread has no barrier and is the steadier "
        "comparison on a busy machine.",
    )
    model, _, _ = load_model(st.checkpoint)
    peak_t = theoretical_peak(cpuinfo(), st.threads)
    peak_p = practical_peak(st.threads, n=1024 if st.quick else 2048, repeats=3 if st.quick else st.repeats)
    sizes = (32, 128) if st.quick else (32, 128, 512)
    batches = (1, 8) if st.quick else (1, 32)
    cases = [(st.threads, size, b) for size in sizes for b in batches]
    if st.threads > 1:  # one thread: no synchronisation between threads, less sensitive to other load
        cases += [(1, 32, 1), (1, 128, batches[-1])]
    rows, results = [], []
    sessions = {}
    for threads, size, b in cases:
        torch.set_num_threads(threads)
        sess = sessions.setdefault(threads, ort_session(shared.onnx_path, threads))
        flops = count_flops(shared.model_config, size, size)
        x = generated_batch(b, size, size, seed=size + b, card=shared.card)
        xt = torch.from_numpy(x)

        def torch_call(xt=xt):
            with torch.inference_mode():
                return model(xt)

        heavy = size * size * b >= 512 * 512 * 8
        reps = 3 if heavy else st.repeats
        t = time_side_by_side(
            {"torch": torch_call, "ort": lambda x=x, s=sess: s.run(x)},
            reps,
            min_time=0.1 if st.quick else 0.5,
        )
        ips_t = [b / s for s in t["torch"]]
        ips_o = [b / s for s in t["ort"]]
        ratio = paired_ratio(t["torch"], t["ort"])
        gf_t, gf_o = flops * median(ips_t) / 1e9, flops * median(ips_o) / 1e9
        peak_scale = threads / st.threads  # the peaks are for st.threads cores
        res = {
            "threads": threads,
            "size": size,
            "batch": b,
            "repeats": reps,
            "flops_per_image": flops,
            "torch_images_per_s": median(ips_t),
            "ort_images_per_s": median(ips_o),
            "torch_all": ips_t,
            "ort_all": ips_o,
            "ratio_ort_over_torch": ratio,
            "torch_gflops": gf_t,
            "ort_gflops": gf_o,
            "ort_fraction_of_practical_peak": gf_o / (peak_p["gflops"] * peak_scale),
            "ort_fraction_of_theoretical_peak": gf_o / (peak_t["gflops"] * peak_scale)
            if peak_t["gflops"]
            else None,
        }
        results.append(res)
        rows.append(
            [
                threads,
                f"{size}x{size}",
                b,
                reps,
                fmt(flops / 1e6),
                fmt(median(ips_t)),
                fmt(median(ips_o)),
                f"**{ratio:.2f}x**",
                fmt(gf_t),
                fmt(gf_o),
                f"{100 * res['ort_fraction_of_practical_peak']:.0f}%",
            ]
        )
        log(
            f"model {threads} thr {size}x{size} b{b}: torch {median(ips_t):.1f}/s "
            f"ort {median(ips_o):.1f}/s ({ratio:.2f}x)"
        )
    torch.set_num_threads(st.threads)
    sec.table(
        f"{shared.card.arch} width {shared.card.width}, fp32",
        [
            "threads",
            "size",
            "batch",
            "repeats",
            "MFLOP/image",
            "torch images/s",
            "onnxruntime images/s",
            "ratio ORT/torch",
            "torch GFLOP/s",
            "ORT GFLOP/s",
            "ORT % of sgemm peak (per thread)",
        ],
        rows,
    )
    sec.table(
        "CPU peak (fp32)",
        ["peak", "GFLOP/s", "how"],
        [
            ["theoretical", fmt(peak_t["gflops"]), peak_t["assumption"]],
            [
                "practical (sgemm)",
                fmt(peak_p["gflops"]),
                f"torch.mm of two {peak_p['n']}x{peak_p['n']} fp32 matrices, {st.threads} threads, "
                f"median of {peak_p['repeats']} (range {spread(peak_p['all'])})",
            ],
        ],
    )
    ratios = [r["ratio_ort_over_torch"] for r in results if r["threads"] == st.threads]
    sec.data = {"rows": results, "peak_theoretical": peak_t, "peak_practical": peak_p}
    sec.data["target"] = {
        "ask": "onnxruntime >= 1.5x torch eager",
        "min_ratio": min(ratios),
        "met": min(ratios) >= 1.5,
    }
    sec.notes.append(
        f"onnxruntime / torch: {min(ratios):.2f}x to {max(ratios):.2f}x over these shapes "
        f"(target >= 1.5x: {'met' if min(ratios) >= 1.5 else 'not met on every shape'})."
    )
    return sec


def section_e2e(shared: Shared) -> Section:
    from unsupseg.core.imageio import read_image
    from unsupseg.infer.api import DEFAULT_BATCH_SIZE
    from unsupseg.train.data import generate

    st = shared.settings
    n = 200 if st.quick else 2000
    reps = 1 if st.quick else 3
    batches = (DEFAULT_BATCH_SIZE,) if st.quick else (DEFAULT_BATCH_SIZE, 32)
    sec = Section(
        "e2e",
        "End to end: seginfer on a folder vs the model alone",
        f"{n:,} generated 128x128 8-bit PNG files (noise 0.2-1.0). seginfer runs as a subprocess "
        f"(`seginfer --input DIR --output OUT --model MODEL --device cpu --threads {st.threads} "
        "--batch-size B -q --overwrite`); its images/s comes from its own manifest (`seconds`: reading, "
        "normalising, padding, inference, polarity, writing PNG masks; not the interpreter start and "
        "model load, which the wall time column includes). The model alone runs the same images, already "
        "read and normalised, through the same onnxruntime session settings at the same batch size. "
        f"Median of {reps} repeats, seginfer and model alone alternating; fraction = median of the "
        "per-repeat ratios.",
    )
    images, _ = generate(n, 128, 128, sigma=(0.2, 1.0), seed=4000, quantize=8, max_objects=3)
    src = st.work / "e2e" / "images"
    paths = write_pngs(src, images)
    norm = shared.card.normalization
    x = np.stack([norm(read_image(p)[0]) for p in paths])[:, None].astype(np.float32)
    sess = ort_session(shared.onnx_path, st.threads)
    rows, results = [], []
    for b in batches:

        def model_alone(b=b):
            t0 = time.perf_counter()
            for k in range(0, n, b):
                sess.run(x[k : k + b])
            return time.perf_counter() - t0

        args = [
            "--input",
            str(src),
            "--output",
            str(st.work / "e2e" / f"out_b{b}"),
            "--model",
            str(shared.onnx_path),
            "--device",
            "cpu",
            "--threads",
            str(st.threads),
            "--batch-size",
            str(b),
            "-q",
            "--overwrite",
        ]
        model_alone()  # warm-up
        m_s, tool = [], []
        for r in range(reps):
            run_args = args.copy()
            run_args[3] = str(st.work / "e2e" / f"out_b{b}_r{r}")  # a fresh folder: a first run
            steps = [
                lambda m=m_s, f=model_alone: m.append(f()),
                lambda a=run_args, t=tool: t.append(run_seginfer(a)),
            ]
            for f in steps if r % 2 == 0 else steps[::-1]:
                f()
        assert all(t["n_written"] == n for t in tool)
        ips_model = [n / s for s in m_s]
        ips_tool = [n / t["run_s"] for t in tool]
        ips_wall = [n / t["wall_s"] for t in tool]
        walls = [t["wall_s"] for t in tool]
        frac = median([a / bb for a, bb in zip(ips_tool, ips_model, strict=True)])
        frac_wall = median([a / bb for a, bb in zip(ips_wall, ips_model, strict=True)])
        res = {
            "batch": b,
            "n_images": n,
            "repeats": reps,
            "model_images_per_s": median(ips_model),
            "seginfer_images_per_s": median(ips_tool),
            "seginfer_wall_images_per_s": median(ips_wall),
            "seginfer_wall_s": median(walls),
            "fraction_kept": frac,
            "fraction_kept_wall": frac_wall,
            "model_all": ips_model,
            "seginfer_all": ips_tool,
        }
        results.append(res)
        rows.append(
            [
                b,
                fmt(median(ips_model)),
                fmt(median(ips_tool)),
                f"**{100 * frac:.0f}%**",
                fmt(median(walls)),
                f"{100 * frac_wall:.0f}%",
            ]
        )
        log(
            f"e2e b{b}: model {median(ips_model):.0f}/s seginfer {median(ips_tool):.0f}/s ({100 * frac:.0f}%)"
        )
    sec.table(
        f"{n:,} files of 128x128",
        [
            "batch size",
            "model alone images/s",
            "seginfer images/s",
            "fraction kept",
            "seginfer wall s (with start-up)",
            "fraction kept, wall",
        ],
        rows,
    )
    default = results[0]
    budget = _e2e_cpu_budget(paths, sess, x, DEFAULT_BATCH_SIZE, norm, st.work / "e2e" / "budget", st.threads)
    sec.table(
        "CPU time per image (process CPU time, all threads; sequential, one step at a time)",
        ["step", "ms of CPU per image"],
        [[k, fmt(v, 3)] for k, v in budget["steps_ms"].items()]
        + [
            ["file work, total", f"**{fmt(budget['file_ms'], 3)}**"],
            [
                f"model alone (batch {DEFAULT_BATCH_SIZE}, {st.threads} threads)",
                f"**{fmt(budget['model_ms'], 3)}**",
            ],
        ],
    )
    sec.data = {
        "rows": results,
        "cpu_budget": budget,
        "target": {
            "ask": "seginfer keeps >= 80% of the model-alone throughput at 128x128 (default batch size)",
            "fraction": default["fraction_kept"],
            "ceiling": budget["ceiling"],
            "met": default["fraction_kept"] >= 0.8,
        },
    }
    sec.notes.append(
        f"Default batch size {DEFAULT_BATCH_SIZE}: seginfer keeps {100 * default['fraction_kept']:.0f}% "
        f"of the model-alone throughput (target >= 80%: "
        f"{'met' if default['fraction_kept'] >= 0.8 else 'not met'})."
    )
    sec.notes.append(
        f"Where the time goes: the model alone costs {fmt(budget['model_ms'], 3)} ms of CPU per "
        f"image and keeps {fmt(budget['model_cores'], 3)} of the {st.threads} "
        "cores busy; the file work that cannot be skipped (PNG decode, normalisation, PNG encode "
        f"and the atomic write) adds {fmt(budget['file_ms'], 3)} ms of CPU per image. With perfect "
        f"overlap and no other cost, the {st.threads} cores would allow "
        f"{st.threads} / (rate x (model + file work)) = **{100 * budget['ceiling']:.0f}%** of the "
        f"model-alone throughput; seginfer keeps {100 * default['fraction_kept']:.0f}%. The rest goes "
        "to the threads' contention for the two cores (onnxruntime's threads wait for a descheduled "
        "peer, reader and writer threads share one Python "
        "interpreter lock) and to per-batch glue (batch assembly, polarity, the report row)."
    )
    return sec


def _e2e_cpu_budget(paths, sess, x, batch, norm, scratch: Path, cores: int) -> dict:
    """CPU time per image of the model and of each unavoidable per-file step, measured
    one step at a time in this process (``time.process_time``: all threads), and the
    bound they set with ``cores`` cores at the measured model-alone rate."""
    from unsupseg.core.imageio import read_pages, write_mask

    scratch.mkdir(parents=True, exist_ok=True)
    n = len(paths)

    def cpu(fn) -> float:
        t0 = time.process_time()
        out = fn()
        return 1e3 * (time.process_time() - t0) / n, out

    wall0 = time.perf_counter()
    model_ms, _ = cpu(lambda: [sess.run(x[k : k + batch]) for k in range(0, n, batch)])
    rate = n / (time.perf_counter() - wall0)  # images/s of this same pass: CPU and rate agree
    read_ms, pages = cpu(lambda: [read_pages(p) for p in paths])
    norm_ms, normed = cpu(lambda: [norm(pg[0]) for pg in pages])
    probs = [sess.run(x[k : k + batch]) for k in range(0, n, batch)]
    masks = [m[0] >= 0.5 for batch_probs in probs for m in batch_probs]
    write_ms, _ = cpu(lambda: [write_mask(scratch / f"{i}.png", m) for i, m in enumerate(masks)])
    steps = {"read + decode PNG": read_ms, "normalise": norm_ms, "encode PNG + write + rename": write_ms}
    file_ms = sum(steps.values())
    return {
        "steps_ms": steps,
        "file_ms": file_ms,
        "model_ms": model_ms,
        "model_cores": rate * model_ms / 1e3,
        "ceiling": min(1.0, cores / (rate * (model_ms + file_ms) / 1e3)),
    }


def _baseline_fns():
    from functools import partial

    from bench.heldout import blur_otsu, chan_vese, morph_chan_vese, otsu

    return {
        "otsu": otsu,
        "blur_otsu s1": partial(blur_otsu, sigma=1.0),
        "blur_otsu s2": partial(blur_otsu, sigma=2.0),
        "blur_otsu s4": partial(blur_otsu, sigma=4.0),
        "chan_vese": chan_vese,
        "morph_chan_vese": morph_chan_vese,
    }


SLOW = ("chan_vese", "morph_chan_vese")


def baselines_on_heldout(shared: Shared) -> dict:
    """Per set and method: per-image IoU and median seconds per image (cached)."""
    from unsupseg.core.metrics import iou_any_polarity

    if "baselines" in shared.cache:
        return shared.cache["baselines"]
    st = shared.settings
    out = {}
    for spec, images, masks in heldout(shared):
        out[spec.name] = {}
        for name, fn in _baseline_fns().items():
            slow = name in SLOW
            n = min(len(images), 1 if st.quick else 20) if slow else len(images)
            reps = 1 if slow else (1 if st.quick else 3)
            fn(images[0])  # warm-up: imports and first-call set-up are not per-image cost
            times, preds = [], None
            for _ in range(reps):
                t0 = time.perf_counter()
                preds = [fn(im) for im in images[:n]]
                times.append((time.perf_counter() - t0) / n)
            out[spec.name][name] = {
                "n": n,
                "repeats": reps,
                "iou": [iou_any_polarity(p, m) for p, m in zip(preds, masks[:n], strict=True)],
                "s_per_image": times,
            }
        log(f"classical {spec.name}: done")
    shared.cache["baselines"] = out
    return out


def section_classical(shared: Shared) -> Section:
    st = shared.settings
    sec = Section(
        "classical",
        "Against the classical methods on held-out images",
        "Held-out sets from bench/heldout.py (seeds, sizes, noise levels, polarities and bit depths never "
        "used in training) plus a noise sweep at 128x128 (20 images per level, seeds 3000+). IoU is "
        "polarity-free (`iou_any_polarity`, max of the mask's and its complement's IoU), mean over the "
        "images, in percent. ms/image is wall time per image over the set, median of 3 repeats for the "
        "fast methods and 1 run for the slow ones. Baselines run single-threaded (numpy/scikit-image); "
        f"unsupseg is the Segmenter of seginfer (normalise, pad, batch 8, onnxruntime with {st.threads} "
        "threads, polarity), with one thread in the `unsupseg 1 thr` column. Chan-Vese methods use "
        "skimage with bench/heldout.py's parameters on the normalised image: `chan_vese` mu 0.25, "
        "max 100 iterations; `morphological_chan_vese` 50 iterations, smoothing 2. "
        + (
            "The slow methods (Chan-Vese, morphological Chan-Vese) run on the first 20 images of a set "
            "only (the `n` column); their comparison with unsupseg uses unsupseg's IoU on the same images."
            if not st.quick
            else ""
        ),
    )
    base = baselines_on_heldout(shared)
    uns = unsupseg_on_heldout(shared, shared.onnx_path, "fp32", st.threads, 1 if st.quick else 3)
    uns1 = unsupseg_on_heldout(shared, shared.onnx_path, "fp32-1thread", 1, 1 if st.quick else 3)
    methods = list(_baseline_fns())
    iou_rows, ms_rows, cmp_rows, data = [], [], [], {}
    all_10x, all_moon = [], []
    for spec, _images, _ in heldout(shared):
        b, u, u1 = base[spec.name], uns[spec.name], uns1[spec.name]
        u_iou = 100 * float(np.mean(u["iou"]))
        u_ms, u1_ms = 1000 * median(u["s_per_image"]), 1000 * median(u1["s_per_image"])
        row_iou, row_ms = [spec.name, len(u["iou"])], [spec.name]
        d = {
            "n": len(u["iou"]),
            "unsupseg": {"iou": u_iou, "ms": u_ms, "ms_1thread": u1_ms},
        }
        for m in methods:
            r = b[m]
            iou_m = 100 * float(np.mean(r["iou"]))
            ms_m = 1000 * median(r["s_per_image"])
            d[m] = {"iou": iou_m, "ms": ms_m, "n": r["n"]}
            row_iou.append(fmt(iou_m, 4) + ("" if r["n"] == len(u["iou"]) else f" (n={r['n']})"))
            row_ms.append(fmt(ms_m))
        row_iou.append(f"**{u_iou:.2f}**")
        row_ms += [f"**{fmt(u_ms)}**", fmt(u1_ms)]
        iou_rows.append(row_iou)
        ms_rows.append(row_ms)
        # morphological Chan-Vese on the same images
        mcv = b["morph_chan_vese"]
        n_m = mcv["n"]
        u_iou_same = 100 * float(np.mean(u["iou"][:n_m]))
        speedup = d["morph_chan_vese"]["ms"] / u_ms
        better = u_iou_same > d["morph_chan_vese"]["iou"]
        ok10 = speedup >= 10 and better
        all_10x.append(ok10)
        blur = {s: d[f"blur_otsu s{s}"] for s in (1, 2, 4)}
        beats_blur = all(u_iou > v["iou"] for v in blur.values())
        cost = {s: u_ms / v["ms"] for s, v in blur.items()}
        cost1 = {s: u1_ms / v["ms"] for s, v in blur.items()}
        d["vs_morph_chan_vese"] = {"speedup": speedup, "unsupseg_iou_same_images": u_iou_same, "met": ok10}
        d["vs_blur_otsu"] = {
            "cost_ratio": cost,
            "cost_ratio_1thread": cost1,
            "beats_iou_all_sigmas": beats_blur,
        }
        if spec.height == 128 and spec.width == 128:
            all_moon.append(beats_blur and max(cost.values()) <= 3)
        cmp_rows.append(
            [
                spec.name,
                f"{u_iou_same:.2f} vs {d['morph_chan_vese']['iou']:.2f}",
                f"{speedup:.1f}x",
                "yes" if ok10 else "**no**",
                " / ".join(f"{cost[s]:.1f}x" for s in (1, 2, 4)),
                " / ".join(f"{cost1[s]:.1f}x" for s in (1, 2, 4)),
                "yes" if beats_blur else "**no**",
            ]
        )
        data[spec.name] = d
    sec.table(
        "Polarity-free IoU, % (mean over the set)",
        ["set", "n", *methods, "unsupseg"],
        iou_rows,
    )
    sec.table(
        "ms per image",
        ["set", *methods, "unsupseg", "unsupseg 1 thr"],
        ms_rows,
    )
    sec.table(
        "unsupseg against morphological Chan-Vese and blur + Otsu",
        [
            "set",
            "IoU unsupseg vs morph CV (same images)",
            "speed-up vs morph CV",
            ">= 10x and higher IoU",
            "cost vs blur+Otsu s1/s2/s4",
            "same, unsupseg 1 thread",
            "IoU above blur+Otsu (all s)",
        ],
        cmp_rows,
    )
    sec.data = {
        "sets": data,
        "target_10x_morph_cv": {
            "ask": ">= 10x faster than morph CV at higher IoU, every set",
            "met": all(all_10x),
        },
        "target_moonshot": {
            "ask": "cost per 128x128 image within 3x of blur+Otsu (every sigma), higher IoU than "
            "blur+Otsu on every held-out set",
            "cost_within_3x_at_128": all(all_moon) if all_moon else None,
            "beats_blur_otsu_every_set": all(
                d["vs_blur_otsu"]["beats_iou_all_sigmas"] for d in data.values()
            ),
        },
    }
    sec.data["target_moonshot"]["met"] = bool(
        sec.data["target_moonshot"]["cost_within_3x_at_128"]
        and sec.data["target_moonshot"]["beats_blur_otsu_every_set"]
    )
    sec.notes.append(
        f">= 10x faster than morphological Chan-Vese at higher IoU on every set: "
        f"{'met' if all(all_10x) else 'not met'} ({sum(all_10x)}/{len(all_10x)} sets)."
    )
    mo = sec.data["target_moonshot"]
    sec.notes.append(
        "Moonshot (within 3x of blur+Otsu's cost at 128x128, higher IoU on every set): "
        f"{'met' if mo['met'] else 'not met'} (cost within 3x at 128x128: "
        f"{fmt(mo['cost_within_3x_at_128'])}; IoU above blur+Otsu on every set: "
        f"{fmt(mo['beats_blur_otsu_every_set'])}). Blur+Otsu is reported at sigma 1, 2 and 4: picking "
        "the best sigma per set would use the ground truth."
    )
    return sec


def section_sweep(shared: Shared) -> Section:
    from bench.heldout import blur_otsu
    from unsupseg.train.model import ModelConfig, count_flops

    st = shared.settings
    sec = Section(
        "sweep",
        "Accuracy and speed over widths",
        "Each `--sweep` checkpoint is exported and run like the default model: model-alone onnxruntime "
        f"images/s at 128x128 batch 32 ({st.threads} threads), seginfer's Segmenter ms/image on the "
        "128x128 held-out images, and the mean polarity-free IoU over all held-out sets, with the blur + "
        "Otsu (sigma 2) cost measured side by side.",
    )
    if not st.sweep:
        sec.notes.append(
            "Not run: pass `--sweep runs/w4/model.pt,runs/w8/model.pt,...` (checkpoints of different widths)."
        )
        sec.data = {"skipped": "no --sweep checkpoints given"}
        return sec
    base = baselines_on_heldout(shared)
    sets = heldout(shared)
    sets128 = [(s, x, m) for s, x, m in sets if (s.height, s.width) == (128, 128)]
    rows, results = [], []
    for ck in st.sweep:
        if not ck.is_file():
            raise BenchError(f"--sweep: {ck}: no such checkpoint")
        path, card = export_checkpoint(ck, st.work / f"sweep_{len(results)}.onnx")
        from unsupseg.train.checkpoint import load_model

        _, _, ckd = load_model(ck)
        mcfg = ModelConfig(**ckd["model_config"])
        sess = ort_session(path, st.threads)
        x = generated_batch(32, 128, 128, seed=9, card=card)
        blur_x = sets128[0][1][0] if sets128 else x[0, 0]
        t = time_side_by_side(
            {"ort": lambda x=x, s=sess: s.run(x), "blur": lambda im=blur_x: blur_otsu(im, 2.0)},
            st.repeats,
            min_time=0.1 if st.quick else 0.3,
        )
        ips = [32 / s for s in t["ort"]]
        u = unsupseg_on_heldout(shared, path, f"sweep-{ck}", st.threads, 1 if st.quick else 3)
        ious = {k: 100 * float(np.mean(v["iou"])) for k, v in u.items()}
        ms128 = median([1000 * median(u[s.name]["s_per_image"]) for s, _, _ in sets128]) if sets128 else None
        blur_ms = 1000 * median(t["blur"])
        beats = sum(ious[k] > 100 * float(np.mean(base[k]["blur_otsu s2"]["iou"])) for k in ious)
        res = {
            "checkpoint": str(ck),
            "arch": mcfg.arch,
            "width": mcfg.width,
            "context": getattr(mcfg, "context", False),
            "mflop_128": count_flops(mcfg, 128, 128) / 1e6,
            "ort_images_per_s_128_b32": median(ips),
            "segmenter_ms_128": ms128,
            "blur_otsu_s2_ms_128": blur_ms,
            "cost_vs_blur_otsu_s2": ms128 / blur_ms if ms128 else None,
            "mean_iou": float(np.mean(list(ious.values()))),
            "min_iou": float(min(ious.values())),
            "sets_above_blur_otsu_s2": beats,
            "iou_per_set": ious,
        }
        results.append(res)
        rows.append(
            [
                ck.as_posix(),
                f"{mcfg.arch} w{mcfg.width}",
                fmt(res["mflop_128"]),
                fmt(res["ort_images_per_s_128_b32"]),
                fmt(ms128),
                f"{res['cost_vs_blur_otsu_s2']:.1f}x" if ms128 else "-",
                f"{res['mean_iou']:.2f}",
                f"{res['min_iou']:.2f}",
                f"{beats}/{len(ious)}",
            ]
        )
        log(f"sweep {ck}: {res['mean_iou']:.2f} IoU, {ms128} ms")
    sec.table(
        "width sweep",
        [
            "checkpoint",
            "model",
            "MFLOP @128",
            "ORT images/s 128 b32",
            "ms/image 128 (Segmenter)",
            "cost vs blur+Otsu s2",
            "mean IoU %",
            "worst-set IoU %",
            "sets above blur+Otsu s2",
        ],
        rows,
    )
    sec.data = {"rows": results}
    return sec


def section_memory(shared: Shared) -> Section:
    from PIL import Image

    from unsupseg.train.data import generate

    st = shared.settings
    n_small, n_large = (100, 1000) if st.quick else (1000, 10000)
    big, ref = (2048, 512) if st.quick else (8192, 1024)
    sec = Section(
        "memory",
        "Memory: peak RSS of seginfer",
        "Peak resident set size of the seginfer process (`ru_maxrss` of RUSAGE_CHILDREN, read in a fresh "
        f"wrapper process that runs only seginfer), {st.threads} threads, default batch size and tile size "
        "(1024, overlap 64). Small files: 32x32 8-bit PNG. Big images: 8-bit PNG of generated shapes "
        "(upscaled) plus noise, run in overlapping tiles.",
    )
    base = st.work / "memory"
    imgs, _ = generate(n_large, 32, 32, sigma=(0.2, 0.8), seed=6000, quantize=8)
    write_pngs(base / "small_large", imgs)
    write_pngs(base / "small_few", imgs[:n_small])
    rng = np.random.default_rng(7)
    for side in (ref, big):
        m, _ = generate(1, 512, 512, sigma=(0, 0), seed=side, max_objects=3)
        mask = np.kron(m[0] > 0.5, np.ones((side // 512, side // 512), dtype=bool)) if side >= 512 else m[0]
        img = np.where(mask, 160, 90).astype(np.int16)
        img = np.clip(img + rng.normal(0, 40, img.shape).astype(np.int16), 0, 255).astype(np.uint8)
        (base / f"big_{side}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(base / f"big_{side}" / f"img_{side}.png", format="PNG", compress_level=1)
        del img, mask
    runs = {
        f"{n_small:,} files 32x32": base / "small_few",
        f"{n_large:,} files 32x32": base / "small_large",
        f"1 image {ref}x{ref}": base / f"big_{ref}",
        f"1 image {big}x{big}": base / f"big_{big}",
    }
    rows, results = [], {}
    for label, folder in runs.items():
        args = [
            "--input",
            str(folder),
            "--output",
            str(base / ("out_" + folder.name)),
            "--model",
            str(shared.onnx_path),
            "--device",
            "cpu",
            "--threads",
            str(st.threads),
            "-q",
            "--overwrite",
        ]
        r = run_seginfer(args, measure_rss=True)
        results[label] = r
        rows.append([label, fmt(r["maxrss_mb"]), fmt(r["wall_s"]), fmt(r["n_written"] / r["run_s"])])
        log(f"memory {label}: {r['maxrss_mb']:.0f} MB")
    few, many = results[f"{n_small:,} files 32x32"], results[f"{n_large:,} files 32x32"]
    small_img, big_img = results[f"1 image {ref}x{ref}"], results[f"1 image {big}x{big}"]
    sec.table("seginfer peak RSS", ["input", "peak RSS MB", "wall s", "images/s (run loop)"], rows)
    files_ratio = many["maxrss_mb"] / few["maxrss_mb"]
    px_ratio = (big / ref) ** 2
    big_ratio = big_img["maxrss_mb"] / small_img["maxrss_mb"]
    per_mpx = (big_img["maxrss_mb"] - small_img["maxrss_mb"]) / ((big * big - ref * ref) / 1e6)
    sec.data = {
        "runs": results,
        "rss_ratio_files": files_ratio,
        "rss_ratio_big_image": big_ratio,
        "pixel_ratio_big_image": px_ratio,
        "mb_per_megapixel_above_reference": per_mpx,
        "target": {
            "ask": "memory flat in the number of files, bounded for huge images",
            "flat_in_files": files_ratio <= 1.1,
        },
    }
    per_file_kb = 1024 * (many["maxrss_mb"] - few["maxrss_mb"]) / (n_large - n_small)
    sec.data["kb_per_extra_file"] = per_file_kb
    sec.notes.append(
        f"{n_large:,} vs {n_small:,} files: peak RSS x{files_ratio:.2f} for x{n_large // n_small} the files "
        f"({'flat' if files_ratio <= 1.1 else 'NOT flat'}: within 10% counts as flat), "
        f"{per_file_kb:.2f} kB per extra file. Kept per input: one relative-path string (the planned "
        "items are made on demand); the summary.json rows are spooled to a temporary SQLite file in the "
        "output folder and streamed back sorted when the run ends; images, masks and batches are not kept."
    )
    sec.notes.append(
        f"{big}x{big} vs {ref}x{ref}: peak RSS x{big_ratio:.1f} for x{px_ratio:.0f} the pixels, about "
        f"{per_mpx:.1f} MB per extra megapixel: the image stays as read (uint8 here) and the mask as bool; "
        "each tile is normalised when it is cut, tile probabilities are blended into a band of rows "
        "(float32) that is thresholded and dropped once no later tile overlaps it, and no full-size float32 "
        "copy exists (`--save-prob` adds the float32 probability). The network sees at most "
        "`MAX_BATCH_PIXELS` (one 1024x1024 tile) per call; onnxruntime's own buffers for that tile are "
        "most of the rest."
    )
    return sec


def section_training(shared: Shared) -> Section:
    import torch

    from unsupseg.train.config import make_config
    from unsupseg.train.data import generate, save_npz
    from unsupseg.train.loss import chan_vese_loss
    from unsupseg.train.model import build_model

    st = shared.settings
    cfg = make_config("default")
    sec = Section(
        "training",
        "Training",
        f"Default preset ({cfg.arch} width {cfg.width}, batch {cfg.batch_size}, {cfg.optimizer}, 32x32 "
        f"images), CPU, {st.threads} threads. `step` times forward, Chan-Vese loss, backward and optimiser "
        "step on batches already in memory (median of repeats); `segtrain` is a short timed run of the "
        "command (data preparation, per-sample noise and augmentation, evaluation on the test split each "
        "epoch included), images/s = training images x epochs / wall time.",
    )
    torch.set_num_threads(st.threads)
    model = build_model(cfg.model_config())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=cfg.weight_decay)
    x = torch.from_numpy(generated_batch(cfg.batch_size, 32, 32, seed=11, card=shared.card))

    def step():
        u = model(x)
        loss, _, _ = chan_vese_loss(x, u, cfg.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time_side_by_side({"step": step}, st.repeats, min_time=0.2 if st.quick else 1.0)["step"]
    step_ips = [cfg.batch_size / s for s in t]

    # a short segtrain run
    n_train, epochs = (64, 1) if st.quick else (1000, 1)
    data_args = []
    if st.quick:
        xtr, ytr = generate(n_train, seed=21)
        xte, yte = generate(32, seed=22)
        npz = st.work / "train_small.npz"
        save_npz(npz, {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
        data_args = ["--data", str(npz)]
    out = st.work / "segtrain"
    cmd = SEGTRAIN + [
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--threads",
        str(st.threads),
        "--device",
        "cpu",
        "--no-plots",
        "-q",
        "--overwrite",
        *data_args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"segtrain failed: {proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    run_ips = n_train * epochs / metrics["wall_time_s"]
    rows = [
        [
            "training step (in memory)",
            fmt(median(step_ips)),
            f"median of {st.repeats}, range {spread(step_ips)}",
        ],
        [
            f"segtrain, {n_train:,} images x {epochs} epoch",
            fmt(run_ips),
            f"wall {metrics['wall_time_s']:.1f} s in the run ({wall:.1f} s with start-up)",
        ],
    ]
    sec.table("training throughput (CPU)", ["what", "images/s", "how"], rows)
    mt = ROOT / "runs" / "default" / "metrics.json"
    make_train = None
    if mt.is_file():
        m = json.loads(mt.read_text())
        make_train = {
            "wall_time_s": m.get("wall_time_s"),
            "final_test_iou": m.get("final", {}).get("test_iou"),
            "final_train_iou": m.get("final", {}).get("train_iou"),
            "epochs": m.get("config", {}).get("epochs"),
            "device": m.get("config", {}).get("device"),
        }
        sec.table(
            "`make train` (runs/default/metrics.json)",
            ["epochs", "wall time", "final test IoU %", "final train IoU %"],
            [
                [
                    fmt(make_train["epochs"]),
                    f"{make_train['wall_time_s'] / 60:.1f} min" if make_train["wall_time_s"] else "-",
                    fmt(make_train["final_test_iou"], 4),
                    fmt(make_train["final_train_iou"], 4),
                ]
            ],
        )
        sec.notes.append(
            "`make train` figures are read from runs/default/metrics.json, not re-measured here."
        )
    else:
        sec.notes.append(
            "`make train` wall time: run `make train` first (runs/default/metrics.json is missing)."
        )
    sec.data = {
        "step_images_per_s": median(step_ips),
        "step_all": step_ips,
        "segtrain_images_per_s": run_ips,
        "segtrain_wall_s": metrics["wall_time_s"],
        "segtrain_images": n_train,
        "segtrain_epochs": epochs,
        "make_train": make_train,
    }
    if run_ips < 0.5 * median(step_ips):
        sec.notes.append(
            f"segtrain reaches {100 * run_ips / median(step_ips):.0f}% of the in-memory step rate: the rest "
            "is data preparation per sample (noise, normalisation, augmentation) and the per-epoch "
            "evaluation."
        )
    return sec


def section_stream(shared: Shared) -> Section:
    from unsupseg.train.data import generate

    st = shared.settings
    n_few, n_many = (200, 2000) if st.quick else (2000, 50000)
    samples = 256 if st.quick else 2048
    sec = Section(
        "stream",
        "Training from a folder: streamed, flat memory",
        f"`segtrain --data DIR` on folders of {n_few:,} and {n_many:,} generated 64x64 8-bit PNG files "
        f"(1 epoch of {samples:,} random 64x64 crops, width {shared.model_config.width}, "
        f"{st.threads} threads, `--no-plots`). Peak RSS of the segtrain process as in the memory section; "
        "images/s = crops / the run's own wall time (listing the folder, loading the evaluation images and "
        "the per-epoch evaluation included). The folder is listed once into a temporary file; the process "
        "keeps 8 bytes per file (memory-mapped offsets), the 100 evaluation images and at most `--cache-mb` "
        "of decoded images.",
    )
    base = st.work / "stream"
    imgs, _ = generate(n_many, 64, 64, sigma=(0.2, 0.8), seed=8000, quantize=8)
    write_pngs(base / "many", imgs)
    write_pngs(base / "few", imgs[:n_few])
    del imgs
    rows, results = [], {}
    for label, folder, workers in (
        (f"{n_few:,} files", base / "few", 0),
        (f"{n_many:,} files", base / "many", 0),
        (f"{n_many:,} files, --workers 1", base / "many", 1),
    ):
        out = base / f"run_{folder.name}_{workers}"
        cmd = SEGTRAIN + [
            "--data",
            str(folder),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--samples-per-epoch",
            str(samples),
            "--width",
            str(shared.model_config.width),
            "--threads",
            str(st.threads),
            "--workers",
            str(workers),
            "--device",
            "cpu",
            "--no-plots",
            "-q",
            "--overwrite",
        ]
        rss, wall, _ = peak_rss_run(cmd)
        m = json.loads((out / "metrics.json").read_text())
        ips = samples / m["wall_time_s"]
        results[label] = {"maxrss_mb": rss, "wall_s": wall, "run_s": m["wall_time_s"], "images_per_s": ips}
        rows.append([label, fmt(rss), fmt(wall), fmt(ips)])
        log(f"stream {label}: {rss:.0f} MB, {ips:.0f} crops/s")
    few, many = results[f"{n_few:,} files"], results[f"{n_many:,} files"]
    ratio = many["maxrss_mb"] / few["maxrss_mb"]
    per_file = 1024 * 1024 * (many["maxrss_mb"] - few["maxrss_mb"]) / (n_many - n_few)
    sec.table("segtrain --data DIR", ["folder", "peak RSS MB", "wall s (with start-up)", "crops/s"], rows)
    sec.data = {
        "runs": results,
        "rss_ratio_files": ratio,
        "bytes_per_extra_file": per_file,
        "files_ratio": n_many // n_few,
        "target": {"ask": "training streams a folder with flat memory (issue 6)", "met": ratio <= 1.1},
    }
    growth = (
        f"{per_file:.0f} bytes per extra file; at that rate a folder of 1,000,000 files adds "
        f"{per_file * 1e6 / 2**20:.0f} MB"
        if per_file > 0
        else "no growth measurable"
    )
    sec.notes.append(
        f"{n_many:,} vs {n_few:,} files: peak RSS x{ratio:.2f} for x{n_many // n_few} the files, {growth} "
        f"({'flat' if ratio <= 1.1 else 'NOT flat'}: within 10% counts as flat). Loading the larger folder "
        f"into memory as normalised float32, as segtrain did before it streamed, would take "
        f"{n_many * 64 * 64 * 4 / 2**20:.0f} MB. Most of the peak is the torch runtime itself."
    )
    w0, w1 = many["images_per_s"], results[f"{n_many:,} files, --workers 1"]["images_per_s"]
    sec.notes.append(
        f"One reader process: x{w1 / w0:.2f} the crops/s of reading in the training process on this "
        f"{usable_cores()}-core machine (the reader competes with training for the same cores; on a machine "
        "with spare cores or slow storage, `--workers` is what keeps the network fed)."
    )
    return sec


def section_quant(shared: Shared) -> Section:
    from unsupseg.export.quantize import export_int8
    from unsupseg.train.data import builtin_splits, save_npz

    st = shared.settings
    sec = Section(
        "quant",
        "Quantisation: int8 (static QDQ) vs fp32",
        "`segexport --int8 --calibration DATA` (export/quantize.py): QDQ, activations uint8 and weights int8 "
        "per channel, MinMax calibration on 200 images of the built-in training split (written as an .npz), "
        f"onnxruntime CPU with {st.threads} threads (this CPU has AVX-512 VNNI). Speed: model alone, "
        "median of repeats, fp32 and int8 alternating; IoU: seginfer's Segmenter on the held-out sets.",
    )
    npz = st.work / "calibration.npz"
    save_npz(npz, builtin_splits(0))
    q_path = st.work / "model-int8.onnx"
    t0 = time.perf_counter()
    rep = export_int8(st.checkpoint, q_path, npz, overwrite=True, log=lambda m: None)
    export_s = time.perf_counter() - t0
    s32, s8 = ort_session(shared.onnx_path, st.threads), ort_session(q_path, st.threads)
    rows, speed = [], []
    for size, b in ((32, 32), (128, 32)) if st.quick else ((32, 32), (128, 32), (512, 1)):
        x = generated_batch(b, size, size, seed=77 + size, card=shared.card)
        t = time_side_by_side(
            {"fp32": lambda x=x: s32.run(x), "int8": lambda x=x: s8.run(x)},
            st.repeats,
            min_time=0.1 if st.quick else 0.4,
        )
        r = paired_ratio(t["fp32"], t["int8"])
        speed.append(
            {
                "size": size,
                "batch": b,
                "fp32_images_per_s": median([b / s for s in t["fp32"]]),
                "int8_images_per_s": median([b / s for s in t["int8"]]),
                "ratio_int8_over_fp32": r,
            }
        )
        rows.append(
            [
                f"{size}x{size}",
                b,
                fmt(speed[-1]["fp32_images_per_s"]),
                fmt(speed[-1]["int8_images_per_s"]),
                f"**{r:.2f}x**",
            ]
        )
    sec.table("speed (model alone)", ["size", "batch", "fp32 images/s", "int8 images/s", "int8/fp32"], rows)
    reps = 1 if st.quick else 3
    u32 = unsupseg_on_heldout(shared, shared.onnx_path, "fp32", st.threads, reps)
    u8 = unsupseg_on_heldout(shared, q_path, "int8", st.threads, reps)
    iou_rows, diffs = [], []
    for name in u32:
        a, b = 100 * float(np.mean(u32[name]["iou"])), 100 * float(np.mean(u8[name]["iou"]))
        diffs.append(b - a)
        iou_rows.append([name, f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}"])
    mean_loss = -float(np.mean(diffs))
    worst_loss = -float(min(diffs))
    iou_rows.append(["**mean**", "", "", f"**{-mean_loss:+.2f}**"])
    sec.table("polarity-free IoU %, held-out sets", ["set", "fp32", "int8", "int8 - fp32 (points)"], iou_rows)
    r128 = next(s["ratio_int8_over_fp32"] for s in speed if s["size"] == 128)
    keep = r128 > 1.0 and mean_loss <= 0.5
    sec.data = {
        "export_s": export_s,
        "calibration_images": rep.n_calibration,
        "calibration_mask_agreement": rep.mask_agreement,
        "size_bytes": {"fp32": rep.fp32_size_bytes, "int8": rep.size_bytes},
        "speed": speed,
        "iou_diff_points": dict(zip(u32, diffs, strict=True)),
        "mean_iou_loss_points": mean_loss,
        "worst_iou_loss_points": worst_loss,
        "keep": keep,
        "rule": "keep if faster at 128x128 batch 32 and the mean held-out IoU loss is at most 0.5 points",
    }
    sec.notes.append(
        f"int8 is {r128:.2f}x fp32 at 128x128 batch 32; IoU change {-mean_loss:+.2f} points on average "
        f"(worst set {-worst_loss:+.2f}); masks agree with fp32 on {100 * rep.mask_agreement:.2f}% of the "
        f"calibration pixels; file {rep.size_bytes / 1e3:.0f} kB vs {rep.fp32_size_bytes / 1e3:.0f} kB."
    )
    sec.notes.append(
        f"Decision by the issue's rule (faster, IoU loss <= 0.5 points): **{'keep' if keep else 'drop'}** "
        "int8 as an option (`segexport --int8`); which file ships as the packaged default is a separate "
        "decision."
    )
    return sec


def section_real(shared: Shared) -> Section:
    from bench.realdata import STARDIST_SPEC, RealDataMissing, run_real_data

    st = shared.settings
    sec = Section(
        "real",
        "Real images: training on an unlabeled folder",
        "stardist's annotated fluorescence nuclei (DSB 2018 / BBBC038, 512x512, 125 nuclei, shipped in the "
        f"`{STARDIST_SPEC}` wheel, installed with --no-deps by the Makefile), cut into 128x128 tiles. "
        "`segtrain --data tiles/` trains on the images only (transductive, as a user would run it); the "
        "masks only score. seginfer segments every tile; `iou` is the IoU of the mask as written (brighter "
        "region = foreground), `iou_any_polarity` the notebook's metric. The image has three intensity "
        "populations (background, dim nuclei, a few very bright mitotic nuclei): with the default "
        "normalisation (1st-99th percentile) the bright nuclei squash the dim ones towards the background, "
        "and a two-region energy then splits bright from the rest. `--norm-percentiles 1 95` is the "
        "label-free fix a user makes after looking at the image.",
    )
    epochs, samples, tile = (1, 64, 256) if st.quick else (20, 1000, 128)
    try:
        res = run_real_data(
            st.work / "real", st.checkpoint, epochs=epochs, samples=samples, tile=tile, log=log
        )
    except RealDataMissing as e:
        sec.notes.append(f"Not run: {e}")
        return sec
    rows = [
        [
            name,
            fmt(100 * r["iou"], 3),
            fmt(100 * r["iou_any_polarity"], 3),
            fmt(100 * r["dice"], 3),
            fmt(r.get("train_s")),
        ]
        for name, r in res.items()
    ]
    sec.table(
        "16 tiles of 128x128, mean over tiles, %",
        ["method", "IoU", "IoU any polarity", "Dice", "training s"],
        rows,
    )
    default = res["unsupseg packaged default model"]["iou"]
    trained = {k: v["iou"] for k, v in res.items() if k.startswith("segtrain")}
    best = max(trained, key=trained.get)
    sec.notes.append(
        f"Best folder-trained model: {100 * trained[best]:.1f}% IoU vs {100 * default:.1f}% for the packaged "
        f"default model ({best})."
    )
    sec.data = {"results": res, "epochs": epochs, "samples_per_epoch": samples, "tile": tile}
    return sec


def section_gpu(shared: Shared) -> Section:
    sec = Section(
        "gpu",
        "GPU",
        "torch CUDA model-alone throughput at 128x128 (batch 64) and 512x512 (batch 8), fp32 and "
        "bf16/fp16 autocast, and training images/s.",
    )
    try:
        import torch

        has = torch.cuda.is_available()
    except ImportError:
        has = False
    status = (
        "not measured yet (no GPU on this machine)" if not has else "not measured yet (GPU script pending)"
    )
    rows = [
        [what, status]
        for what in (
            "model alone 128x128 batch 64 fp32 / autocast",
            "model alone 512x512 batch 8 fp32 / autocast",
            "training images/s",
        )
    ]
    sec.table("CUDA", ["measurement", "result"], rows)
    sec.data = {"status": status}
    return sec


RUNNERS = {
    "model": section_model,
    "e2e": section_e2e,
    "classical": section_classical,
    "sweep": section_sweep,
    "real": section_real,
    "memory": section_memory,
    "training": section_training,
    "stream": section_stream,
    "quant": section_quant,
    "gpu": section_gpu,
}


# ----------------------------------------------------------------------------- report
def _md_table(t: dict) -> str:
    lines = [f"**{t['caption']}**", ""]
    lines.append("| " + " | ".join(t["columns"]) + " |")
    lines.append("|" + "|".join("---" for _ in t["columns"]) + "|")
    for r in t["rows"]:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |")
    return "\n".join(lines)


def _targets(sections: dict[str, Section]) -> list[list[str]]:
    rows = []

    def add(ask, value, met):
        rows.append([ask, value, "-" if met is None else ("met" if met else "**not met**")])

    if "model" in sections:
        t = sections["model"].data["target"]
        add(
            "onnxruntime >= 1.5x torch eager (model alone)",
            f"min {t['min_ratio']:.2f}x over shapes",
            t["met"],
        )
    if "e2e" in sections:
        t = sections["e2e"].data["target"]
        add(
            "seginfer keeps >= 80% of model-alone throughput (128x128)",
            f"{100 * t['fraction']:.0f}%",
            t["met"],
        )
    if "classical" in sections:
        d = sections["classical"].data
        sets = d["sets"].values()
        worst = min(s["vs_morph_chan_vese"]["speedup"] for s in sets)
        add(
            ">= 10x faster than morph. Chan-Vese at higher IoU, every set",
            f"min speed-up {worst:.1f}x",
            d["target_10x_morph_cv"]["met"],
        )
        mo = d["target_moonshot"]
        costs = [
            max(s["vs_blur_otsu"]["cost_ratio"].values())
            for k, s in d["sets"].items()
            if k.startswith("128x128")
        ]
        add(
            "moonshot: <= 3x blur+Otsu cost at 128x128 and higher IoU on every set",
            (f"cost up to {max(costs):.1f}x; " if costs else "")
            + f"IoU above on every set: {fmt(mo['beats_blur_otsu_every_set'])}",
            mo["met"],
        )
    if "real" in sections and sections["real"].data:
        res = sections["real"].data["results"]
        default = res["unsupseg packaged default model"]["iou"]
        best = max(v["iou"] for k, v in res.items() if k.startswith("segtrain"))
        add(
            "training on a real unlabeled folder beats the default model there (issue 2)",
            f"IoU {100 * best:.1f}% vs {100 * default:.1f}%",
            best > default,
        )
    if "memory" in sections:
        d = sections["memory"].data
        add(
            "memory flat in the number of files; bounded for huge images",
            f"x{d['rss_ratio_files']:.2f} for 10x the files; x{d['rss_ratio_big_image']:.1f} for "
            f"x{d['pixel_ratio_big_image']:.0f} the pixels",
            d["target"]["flat_in_files"],
        )
    if "stream" in sections:
        d = sections["stream"].data
        add(
            "segtrain --data DIR streams: memory flat in the number of files (issue 6)",
            f"x{d['rss_ratio_files']:.2f} for x{d['files_ratio']} the files",
            d["target"]["met"],
        )
    if "quant" in sections:
        d = sections["quant"].data
        r = next(s["ratio_int8_over_fp32"] for s in d["speed"] if s["size"] == 128)
        add(
            "int8: keep if faster at <= 0.5 points IoU loss",
            f"{r:.2f}x, {-d['mean_iou_loss_points']:+.2f} points",
            None,
        )
        rows[-1][2] = "keep" if d["keep"] else "drop"
    return rows


def render(meta: dict, sections: dict[str, Section]) -> str:
    m = meta["machine"]
    v = m["versions"]
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/run.py); every figure is also in `bench/results.json`. "
        "Comparisons are measured side by side in one run and quoted as ratios of medians over repeats. "
        "The machine is shared with other work, so absolute figures move between runs; the ratios are what "
        "to compare.",
        "",
        f"- command: `{meta['command']}`"
        + (" (quick smoke run: tiny counts, not for quoting)" if meta["quick"] else ""),
        f"- date: {meta['date']}, total {meta['total_s'] / 60:.1f} min",
        f"- checkpoint: `{meta['checkpoint']}` ({meta['model']}), "
        f"sha256 `{meta['checkpoint_sha256'][:12]}...`"
        + (
            "; it is the packaged default model's source"
            if meta.get("is_packaged_default")
            else "; the packaged model was exported from a different checkpoint"
        ),
        f"- CPU: {m['cpu']} ({m['vendor']}, family {m['cpu_family']}), {m['cores']} usable cores at "
        f"{m['mhz']} MHz nominal, SIMD {', '.join(m['simd'])}; memory {m['memory_gb']} GB; "
        f"threads used: {m['threads_used']}",
        f"- load average at start / end: {', '.join(f'{x:.2f}' for x in m['load_average_start'] or [])} / "
        f"{', '.join(f'{x:.2f}' for x in meta.get('load_average_end') or [])}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- platform: {m['platform']}",
        "",
    ]
    targets = _targets(sections)
    if targets:
        out += [
            _md_table(
                {"caption": "Targets (issue 5)", "columns": ["target", "measured", "status"], "rows": targets}
            ),
            "",
        ]
    for i, (_key, sec) in enumerate(sections.items(), start=1):
        out += [f"## {i}. {sec.title}", ""]
        if sec.intro:
            out += [sec.intro, ""]
        for t in sec.tables:
            out += [_md_table(t), ""]
        for n in sec.notes:
            out.append(f"- {n}")
        if sec.notes:
            out.append("")
        out += [f"_Section time: {sec.seconds:.0f} s._", ""]
    return "\n".join(out)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


EXAMPLE = """
Example:

    python -m bench.run                                   # full run, ~15 min on 2 cores

    python -m bench.run --quick --out /tmp/bench          # smoke run, ~2 min

    python -m bench.run --sections classical,quant --sweep runs/w4/model.pt,runs/w8/model.pt
"""


@click.command(
    epilog=EXAMPLE, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("runs/default/model.pt"),
    show_default=True,
    help="The model to benchmark (exported to a temporary .onnx, so torch and onnxruntime share weights).",
)
@click.option("--quick", is_flag=True, help="Tiny counts: a smoke run of every section (not for quoting).")
@click.option(
    "--sections",
    default=",".join(SECTIONS),
    show_default=True,
    help="Comma-separated subset of the sections.",
)
@click.option(
    "--sweep", default="", help="Comma-separated checkpoints of different widths for the sweep section."
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads.  [default: usable cores]"
)
@click.option(
    "--repeats", type=click.IntRange(min=1), default=None, help="Timing repeats (default 5, quick 2)."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write OUT/benchmarks.md and OUT/results.json instead of docs/benchmarks.md and bench/results.json.",
)
def main(checkpoint, quick, sections, sweep, threads, repeats, out):
    """Benchmark unsupseg on this machine; write docs/benchmarks.md and bench/results.json."""
    from unsupseg.train.checkpoint import sha256_file

    t_start = time.perf_counter()
    wanted = [s.strip() for s in sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad or not wanted:
        raise click.BadParameter(
            f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}", param_hint="--sections"
        )
    if not checkpoint.is_file():
        raise click.BadParameter(
            f"{checkpoint}: no such checkpoint; make it with `make train` (writes runs/default/model.pt) "
            "or pass --checkpoint PATH",
            param_hint="--checkpoint",
        )
    md_path = (out / "benchmarks.md") if out else ROOT / "docs" / "benchmarks.md"
    json_path = (out / "results.json") if out else ROOT / "bench" / "results.json"
    threads = threads or usable_cores()
    sweep_paths = [Path(s.strip()) for s in sweep.split(",") if s.strip()]
    for p in sweep_paths:
        if not p.is_file():
            raise click.BadParameter(f"{p}: no such checkpoint", param_hint="--sweep")

    with tempfile.TemporaryDirectory(prefix="unsupseg-bench-") as tmp:
        st = Settings(
            quick=quick,
            threads=threads,
            checkpoint=checkpoint,
            sweep=sweep_paths,
            work=Path(tmp),
            repeats=repeats or (2 if quick else 5),
        )
        shared = Shared(st)
        from unsupseg.train.checkpoint import load_model

        _, card, ckd = load_model(checkpoint)
        from unsupseg.train.model import ModelConfig

        shared.model_config = ModelConfig(**ckd["model_config"])
        log(f"exporting {checkpoint}")
        shared.onnx_path, shared.card = export_checkpoint(checkpoint, Path(tmp) / "model.onnx")
        mach = machine(threads)
        done: dict[str, Section] = {}
        for key in SECTIONS:
            if key not in wanted:
                continue
            log(f"section {key} ...")
            t0 = time.perf_counter()
            sec = RUNNERS[key](shared)
            sec.seconds = time.perf_counter() - t0
            done[key] = sec
            log(f"section {key}: {sec.seconds:.0f} s")

    sha = sha256_file(checkpoint)
    try:
        from unsupseg.infer.api import Segmenter

        packaged = Segmenter(device="cpu", threads=1).card.checkpoint_sha256 == sha
    except Exception:  # no packaged model: say so in the report, do not fail the benchmark
        packaged = False
    cmd = "python -m bench.run" + ("" if len(sys.argv) <= 1 else " " + shlex.join(sys.argv[1:]))
    meta = {
        "command": cmd,
        "quick": quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha,
        "is_packaged_default": packaged,
        "model": f"{shared.model_config.arch} width {shared.model_config.width}",
        "machine": mach,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "total_s": time.perf_counter() - t_start,
    }
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    from unsupseg.core.atomic import write_text_atomic

    write_text_atomic(md_path, render(meta, done))
    results = {
        "meta": meta,
        "sections": {k: {"title": s.title, "seconds": s.seconds, **s.data} for k, s in done.items()},
    }
    write_text_atomic(json_path, json.dumps(results, indent=2, default=_json_default) + "\n")
    log(f"wrote {md_path} and {json_path} ({meta['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
