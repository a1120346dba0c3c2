"""Section "e2e": seginfer on a folder of PNG files vs the model alone on the same images, and
the CPU time per image of each file step that seginfer cannot skip."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import Section, Shared, fmt, log, normalised_inputs, ort_session, run_seginfer, write_pngs
from bench.prose import Prose
from bench.timing import median

TEXT = Prose(__file__)
TITLE = "End to end: seginfer on a folder vs the model alone"


def run(shared: Shared) -> Section:
    from unsupseg.core.data import generate
    from unsupseg.infer.model.segmenter import DEFAULT_BATCH_SIZE

    st = shared.settings
    n = 200 if st.quick else 2000
    reps = 1 if st.quick else 3
    batches = (DEFAULT_BATCH_SIZE,) if st.quick else (DEFAULT_BATCH_SIZE, 32)
    sec = Section("e2e", TITLE, TEXT("intro", n=f"{n:,}", threads=st.threads, repeats=reps))
    images, _ = generate(n, 128, 128, sigma=(0.2, 1.0), seed=4000, quantize=8, max_objects=3)
    src = st.work / "e2e" / "images"
    paths = write_pngs(src, images)
    norm = shared.card.normalization
    x = normalised_inputs(paths, norm)
    sess = ort_session(shared.onnx_path, st.threads)
    results = []
    for b in batches:
        res = _measure(shared, sess, x, src, b, reps)
        results.append(res)
        log(
            f"e2e b{b}: model {res['model_images_per_s']:.0f}/s seginfer "
            f"{res['seginfer_images_per_s']:.0f}/s ({100 * res['fraction_kept']:.0f}%)"
        )
    budget = cpu_budget(paths, sess, x, DEFAULT_BATCH_SIZE, norm, st.work / "e2e" / "budget", st.threads)
    _report(sec, st.threads, results, budget, DEFAULT_BATCH_SIZE)
    return sec


def _report(sec: Section, threads: int, results: list[dict], budget: dict, default_batch: int) -> None:
    """Tables, notes, JSON data and target of the section from the measured figures."""
    rows = [
        [
            res["batch"],
            fmt(res["model_images_per_s"]),
            fmt(res["seginfer_images_per_s"]),
            f"**{100 * res['fraction_kept']:.0f}%**",
            fmt(res["seginfer_wall_s"]),
            f"{100 * res['fraction_kept_wall']:.0f}%",
        ]
        for res in results
    ]
    sec.table(
        f"{results[0]['n_images']:,} files of 128x128",
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
    sec.table(
        "CPU time per image (process CPU time, all threads; sequential, one step at a time)",
        ["step", "ms of CPU per image"],
        [[k, fmt(v, 3)] for k, v in budget["steps_ms"].items()]
        + [
            ["file work, total", f"**{fmt(budget['file_ms'], 3)}**"],
            [f"model alone (batch {default_batch}, {threads} threads)", f"**{fmt(budget['model_ms'], 3)}**"],
        ],
    )
    default = results[0]
    met = default["fraction_kept"] >= 0.8
    sec.data = {
        "rows": results,
        "cpu_budget": budget,
        "target": {
            "ask": "seginfer keeps >= 80% of the model-alone throughput at 128x128 (default batch size)",
            "fraction": default["fraction_kept"],
            "ceiling": budget["ceiling"],
            "met": met,
        },
    }
    kept = f"{100 * default['fraction_kept']:.0f}"
    sec.notes.append(TEXT("kept", batch=default_batch, kept=kept, status="met" if met else "not met"))
    sec.notes.append(
        TEXT(
            "budget",
            model_ms=fmt(budget["model_ms"], 3),
            model_cores=fmt(budget["model_cores"], 3),
            file_ms=fmt(budget["file_ms"], 3),
            threads=threads,
            ceiling=f"{100 * budget['ceiling']:.0f}",
            kept=kept,
        )
    )
    sec.target("seginfer keeps >= 80% of model-alone throughput (128x128)", f"{kept}%", met)


def _measure(shared: Shared, sess, x: np.ndarray, src: Path, b: int, reps: int) -> dict:
    """seginfer and the model alone at batch size ``b``, alternating over ``reps`` repeats."""
    st = shared.settings
    n = len(x)

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
        "--engine",
        "local",
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
    return {
        "batch": b,
        "n_images": n,
        "repeats": reps,
        "model_images_per_s": median(ips_model),
        "seginfer_images_per_s": median(ips_tool),
        "seginfer_wall_images_per_s": median(ips_wall),
        "seginfer_wall_s": median([t["wall_s"] for t in tool]),
        "fraction_kept": median([a / bb for a, bb in zip(ips_tool, ips_model, strict=True)]),
        "fraction_kept_wall": median([a / bb for a, bb in zip(ips_wall, ips_model, strict=True)]),
        "model_all": ips_model,
        "seginfer_all": ips_tool,
    }


def cpu_budget(paths, sess, x, batch, norm, scratch: Path, cores: int) -> dict:
    """CPU time per image of the model and of each unavoidable per-file step, measured
    one step at a time in this process (``time.process_time``: all threads), and the
    bound they set with ``cores`` cores at the measured model-alone rate."""
    scratch.mkdir(parents=True, exist_ok=True)
    n = len(paths)

    def cpu(fn) -> float:
        t0 = time.process_time()
        out = fn()
        return 1e3 * (time.process_time() - t0) / n, out

    wall0 = time.perf_counter()
    model_ms, probs = cpu(lambda: model_pass(sess, x, batch))
    rate = n / (time.perf_counter() - wall0)  # images/s of this same pass: CPU and rate agree
    read_ms, pages = cpu(lambda: read_pass(paths))
    norm_ms, _ = cpu(lambda: normalise_pass(pages, norm))
    masks = [m[0] >= 0.5 for batch_probs in probs for m in batch_probs]
    write_ms, _ = cpu(lambda: write_pass(masks, scratch))
    steps = {"read + decode PNG": read_ms, "normalise": norm_ms, "encode PNG + write + rename": write_ms}
    file_ms = sum(steps.values())
    return {
        "steps_ms": steps,
        "file_ms": file_ms,
        "model_ms": model_ms,
        "model_cores": rate * model_ms / 1e3,
        "ceiling": min(1.0, cores / (rate * (model_ms + file_ms) / 1e3)),
    }


# The budget's steps, each one pass over the images (cpu_budget times them; bench/icount.py
# counts their instructions).
def model_pass(sess, x: np.ndarray, batch: int) -> list:
    return [sess.run(x[k : k + batch]) for k in range(0, len(x), batch)]


def read_pass(paths) -> list:
    from unsupseg.core.imageio import read_pages

    return [read_pages(p) for p in paths]


def normalise_pass(pages, norm) -> list:
    return [norm(pg[0]) for pg in pages]


def write_pass(masks, scratch: Path) -> None:
    from unsupseg.core.imageio import write_mask

    for i, m in enumerate(masks):
        write_mask(scratch / f"{i}.png", m)
