"""Section "processes": seginfer's worker processes vs one process vs the model alone and the CPU
ceiling, on the same folder, interleaved; how the engine scales (1 and all workers measured here,
4-64 cores modelled from the measured CPU costs); its memory in the number of files; the start-up
of worker processes (fork server vs spawn)."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    SEGINFER,
    Section,
    Shared,
    fmt,
    log,
    normalised_inputs,
    ort_session,
    peak_tree_rss,
    run_seginfer,
    write_pngs,
)
from bench.prose import Prose
from bench.sections.e2e import cpu_budget
from bench.timing import median, spread, usable_cores

TEXT = Prose(__file__)
TITLE = "Every core: worker processes vs one process, against the CPU ceiling"
SCALING_CORES = (1, 2, 4, 8, 16, 32, 64)


def run(shared: Shared) -> Section:
    from unsupseg.core.data import generate

    st = shared.settings
    n, reps = (200, 1) if st.quick else (2000, 5)
    cores = usable_cores()
    sec = Section("processes", TITLE, TEXT("intro", n=f"{n:,}", cores=cores, repeats=reps))
    images, _ = generate(n, 128, 128, sigma=(0.2, 1.0), seed=4000, quantize=8, max_objects=3)
    base = st.work / "processes"
    paths = write_pngs(base / "images", images)
    norm = shared.card.normalization
    x = normalised_inputs(paths, norm)
    sessions = {t: ort_session(shared.onnx_path, t) for t in sorted({1, cores})}
    rows = [_repeat(shared, paths, x, sessions, base, cores, r) for r in range(reps)]
    memory = _memory(shared, base, st.quick)
    start = _startup(shared, base, paths)
    _report(sec, rows, memory, start, cores, n)
    return sec


# -- measuring ---------------------------------------------------------------------------------------
def _seginfer(shared: Shared, src: Path, out: Path, *extra: str) -> dict:
    args = ["--input", str(src), "--output", str(out), "--model", str(shared.onnx_path), "--device", "cpu"]
    return run_seginfer([*args, "-q", "--overwrite", *extra])


def _repeat(shared: Shared, paths, x, sessions: dict, base: Path, cores: int, r: int) -> dict:
    """One repeat: the CPU budget and the three seginfer runs, in alternating order."""
    src, n, row = base / "images", len(paths), {}
    norm = shared.card.normalization

    def budget():
        one = cpu_budget(paths, sessions[1], x, 8, norm, base / "budget", cores)
        row["model_ms_1"], row["file_ms"], row["steps_ms"] = one["model_ms"], one["file_ms"], one["steps_ms"]
        row["model_ips_1"] = 1e3 * one["model_cores"] / one["model_ms"]  # its pass's images/s
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(0, n, 8):
            sessions[cores].run(x[k : k + 8])
        row["model_ms_all"] = 1e3 * (time.process_time() - c0) / n
        row["model_ips_all"] = n / (time.perf_counter() - t0)
        loaded = _loaded_budget(shared, paths, base, cores)
        row["loaded_model_ms"], row["loaded_file_ms"] = loaded["model_ms"], loaded["file_ms"]

    def tool(key: str, *extra: str):
        def go():
            res = _seginfer(shared, src, base / f"out_{key}", *extra)
            assert res["n_written"] == n, res
            row[key] = n / res["run_s"]
            row[f"{key}_wall"] = n / res["wall_s"]
            cpu = res["engine"].get("cpu_s")
            if cpu:
                row[f"{key}_main_ms"] = 1e3 * cpu["main"] / n
                # per image once the models are loaded; the start-up (loading them) apart, per worker
                row[f"{key}_workers_ms"] = 1e3 * (cpu["workers"] - cpu["workers_start"]) / n
                row[f"{key}_start_cpu_s"] = cpu["workers_start"] / res["engine"]["workers"]

        return go

    steps = [
        budget,
        tool("local", "--engine", "local", "--threads", str(cores)),
        tool("w1", "--engine", "processes", "--workers", "1", "--threads", "1"),
        tool("wn", "--engine", "processes", "--workers", str(cores), "--threads", "1"),
    ]
    for step in steps if r % 2 == 0 else steps[::-1]:
        step()
    row["ceiling"] = 1e3 * cores / (min(row["model_ms_1"], row["model_ms_all"]) + row["file_ms"])
    row["loaded_ceiling"] = 1e3 * cores / (row["loaded_model_ms"] + row["loaded_file_ms"])
    log(
        f"processes r{r}: ceiling {row['ceiling']:.0f}/s, local {row['local']:.0f}/s, "
        f"1 worker {row['w1']:.0f}/s, {cores} workers {row['wn']:.0f}/s"
    )
    return row


def _loaded_budget(shared: Shared, paths, base: Path, cores: int) -> dict:
    """The CPU budget's steps (1 thread each) in ``cores`` processes at once, started together:
    what each step costs per image when every core is busy (shared caches, memory bandwidth and
    the host's other load), as the workers run. Means over the processes."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing of this process's sessions
    barrier, results = ctx.Barrier(cores), ctx.Queue()
    norm = shared.card.normalization
    args = [(shared.onnx_path, paths, norm, base / f"loaded_{i}", barrier, results) for i in range(cores)]
    procs = [ctx.Process(target=_budget_child, args=a) for a in args]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=900) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    return {k: sum(g[k] for g in got) / len(got) for k in ("model_ms", "file_ms")}


def _budget_child(onnx_path: Path, paths, norm, scratch: Path, barrier, results) -> None:
    sess = ort_session(onnx_path, 1)
    x = normalised_inputs(paths, norm)
    sess.run(x[:8])  # the first run allocates
    barrier.wait()  # every process starts its steps at once
    results.put(cpu_budget(paths, sess, x, 8, norm, scratch, 1))


def _memory(shared: Shared, base: Path, quick: bool) -> dict:
    """Peak summed RSS of seginfer's process tree with worker processes, few vs many small files."""
    from unsupseg.core.data import generate

    n_small, n_large = (100, 1000) if quick else (1000, 10000)
    imgs, _ = generate(n_large, 32, 32, sigma=(0.2, 0.8), seed=6000, quantize=8)
    out = {}
    for n in (n_small, n_large):
        src = base / f"mem_{n}"
        write_pngs(src, imgs[:n])
        cmd = [*SEGINFER, "--input", str(src), "--output", str(base / f"mem_out_{n}"), "--model"]
        cmd += [str(shared.onnx_path), "--device", "cpu", "--engine", "processes", "-q", "--overwrite"]
        out[n] = peak_tree_rss(cmd)
        log(f"processes memory {n} files: tree {out[n]['tree_mb']:.0f} MB, main {out[n]['main_mb']:.0f} MB")
    return {"n_small": n_small, "n_large": n_large, "runs": out}


_START = """
import json, sys, time
from unsupseg.infer import RunOptions, SegmenterConfig, run_folder
from unsupseg.infer.engines.processes import ProcessEngine
src, out, model, method = sys.argv[1:5]
engine = ProcessEngine(start_method=method)
t0 = time.perf_counter()
run_folder(src, out, RunOptions(SegmenterConfig(model=model, device="cpu"), overwrite=True), engine=engine)
print(json.dumps({**engine.stats, "run_folder_s": time.perf_counter() - t0}))
"""


def _startup(shared: Shared, base: Path, paths) -> dict:
    """Start-up of the workers with each start method (a fresh interpreter each time, as seginfer),
    and the wall time of seginfer on 64 files with and without worker processes."""
    import shutil

    small = base / "small"
    small.mkdir(exist_ok=True)
    for p in paths[:64]:
        shutil.copy(p, small / p.name)
    out: dict = {"methods": {}}
    args = [str(small), str(base / "start_out"), str(shared.onnx_path)]
    for method in ("forkserver", "spawn"):
        runs = []
        for _ in range(3):
            cmd = [sys.executable, "-c", _START, *args, method]
            runs.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
        out["methods"][method] = {
            "start_s": median([r["start_s"] for r in runs]),
            "ready_s": median([r["ready_s"] for r in runs]),
        }
    walls: dict[str, list[float]] = {"local": [], "processes": []}
    for r in range(3):
        for engine in ("local", "processes") if r % 2 == 0 else ("processes", "local"):
            walls[engine].append(_seginfer(shared, small, base / "small_out", "--engine", engine)["wall_s"])
    out["wall_64"] = {k: median(v) for k, v in walls.items()}
    return out


# -- reporting -----------------------------------------------------------------------------------------
def _med(rows: list[dict], key: str) -> float:
    return median([r[key] for r in rows])


def _ratio(rows: list[dict], num: str, den: str) -> float:
    return median([r[num] / r[den] for r in rows])


def _report(sec: Section, rows: list[dict], memory: dict, start: dict, cores: int, n: int) -> None:
    ceiling = _med(rows, "ceiling")
    kept = _ratio(rows, "wn", "ceiling")
    kept_loaded = _ratio(rows, "wn", "loaded_ceiling")
    busy = _ratio(rows, "ceiling", "loaded_ceiling")  # the steps' CPU per image: every core busy / one
    speedup = _ratio(rows, "wn", "local")
    line = lambda name, key: [  # noqa: E731
        name,
        fmt(_med(rows, key)),
        spread([r[key] for r in rows]),
        f"{100 * _ratio(rows, key, 'ceiling'):.0f}%",
        f"{_ratio(rows, key, 'local'):.2f}x",
    ]
    sec.table(
        f"{n:,} files of 128x128: images/s, median of {len(rows)} repeats (min-max), ratios per repeat",
        ["run", "images/s", "spread", "of the CPU ceiling", "vs --engine local"],
        [
            line("model alone, 1 thread (normalised arrays in memory)", "model_ips_1"),
            line(f"model alone, {cores} threads", "model_ips_all"),
            line("CPU ceiling: cores / (model + file work CPU per image)", "ceiling"),
            line(f"CPU ceiling, every core busy (the steps in {cores} processes at once)", "loaded_ceiling"),
            line(f"seginfer --engine local (one process, {cores} threads)", "local"),
            line("seginfer --engine processes --workers 1", "w1"),
            [f"**seginfer --engine processes --workers {cores}** (the default here)", *line("", "wn")[1:]],
        ],
    )
    w, s = _med(rows, "wn_workers_ms"), _med(rows, "wn_main_ms")
    start_cpu = _med(rows, "wn_start_cpu_s")
    model = min(_med(rows, "model_ms_1"), _med(rows, "model_ms_all"))
    file_ms = _med(rows, "file_ms")
    sec.table(
        "CPU time per image (ms; process CPU time, medians)",
        ["what", "ms of CPU per image"],
        [
            ["model alone, 1 thread", fmt(_med(rows, "model_ms_1"), 3)],
            [f"model alone, {cores} threads", fmt(_med(rows, "model_ms_all"), 3)],
            *[
                [f"file work: {k}", fmt(median([r["steps_ms"][k] for r in rows]), 3)]
                for k in rows[0]["steps_ms"]
            ],
            ["**model (the cheaper) + file work: the ceiling's cost**", f"**{fmt(model + file_ms, 3)}**"],
            [f"model, 1 thread, in each of {cores} processes at once", fmt(_med(rows, "loaded_model_ms"), 3)],
            [f"file work, in each of {cores} processes at once", fmt(_med(rows, "loaded_file_ms"), 3)],
            [f"worker processes ({cores} workers), all steps, once the model is loaded", fmt(w, 3)],
            ["a worker's start-up (unpickling, loading the model), once per worker", fmt(1e3 * start_cpu, 3)],
            ["main process (plan, hand out, report): the serial part", fmt(s, 3)],
        ],
    )
    scaling = [_scale(c, w, s, model + file_ms) for c in SCALING_CORES]
    sec.table(
        "Scaling model: images/s on C cores = min(C / (W + S), 1 / S), W and S from the table above",
        ["cores", "modelled images/s", "CPU ceiling C / (model + file)", "of the ceiling"],
        [[c, fmt(x), fmt(ceil), f"{100 * x / ceil:.0f}%"] for c, x, ceil in scaling],
    )
    mem = memory["runs"]
    small, large = mem[memory["n_small"]], mem[memory["n_large"]]
    mem_ratio = large["tree_mb"] / small["tree_mb"]
    sec.table(
        "Memory with worker processes: peak summed RSS of the process tree (main, fork server, workers)",
        ["files (32x32)", "process tree MB", "main process MB"],
        [[f"{k:,}", fmt(v["tree_mb"]), fmt(v["main_mb"])] for k, v in mem.items()],
    )
    methods = start["methods"]
    sec.table(
        "Start-up of the worker processes (median of 3 fresh interpreters)",
        ["start method", "Process.start of all workers, s", "a worker's model loaded after its start, s"],
        [[m, fmt(v["start_s"], 2), fmt(v["ready_s"], 2)] for m, v in methods.items()],
    )
    extra = start["wall_64"]["processes"] - start["wall_64"]["local"]
    gain_ms = 1e3 * (1 / _med(rows, "local") - 1 / _med(rows, "wn"))
    sec.notes += [
        TEXT("kept", kept=f"{100 * kept:.0f}", ceiling=fmt(ceiling), speedup=f"{speedup:.2f}", cores=cores),
        TEXT(
            "loaded",
            busy=f"{100 * (busy - 1):+.0f}",
            cores=cores,
            loaded=fmt(_med(rows, "loaded_ceiling")),
            kept_loaded=f"{100 * kept_loaded:.0f}",
        ),
        TEXT("scaling", w=fmt(w, 3), s=fmt(s, 3), knee=fmt((w + s) / s), top=fmt(1e3 / s)),
        TEXT(
            "startup",
            extra=fmt(extra, 2),
            breakeven=fmt(1e3 * extra / gain_ms) if gain_ms > 0 else "-",
            gain=fmt(gain_ms, 2),
        ),
        TEXT(
            "memory", ratio=f"{mem_ratio:.2f}", small=f"{memory['n_small']:,}", large=f"{memory['n_large']:,}"
        ),
    ]
    sec.data = {
        "rows": rows,
        "median": {
            "ceiling": ceiling,
            "kept": kept,
            "kept_loaded": kept_loaded,
            "busy_cost": busy,
            "speedup_vs_local": speedup,
            "workers_ms": w,
            "main_ms": s,
        },
        "scaling": [{"cores": c, "images_per_s": x, "ceiling": ceil} for c, x, ceil in scaling],
        "memory": memory,
        "startup": start,
    }
    sec.target(
        "worker processes >= 90% of the CPU ceiling, 2,000 128x128 PNGs (issue 16)",
        f"{100 * kept:.0f}% ({fmt(_med(rows, 'wn'))} of {fmt(ceiling)} images/s)",
        kept >= 0.9,
    )
    sec.target(
        "... the same against the ceiling with every core busy (what the hardware gives N processes)",
        f"{100 * kept_loaded:.0f}%",
        None,
    )
    sec.target("... i.e. about 1.5x today's seginfer (--engine local)", f"{speedup:.2f}x", None)
    sec.target(
        "memory flat in the number of files with N workers (issue 16)",
        f"x{mem_ratio:.2f} for {memory['n_large'] // memory['n_small']}x the files",
        mem_ratio <= 1.1,
    )


def _scale(cores: int, w: float, s: float, cost: float) -> tuple[int, float, float]:
    """(cores, modelled images/s, ceiling images/s) for per-image CPU ``w`` in the workers and ``s``
    in the main process (ms): the cores run both, and the main process is one core at most."""
    return cores, min(1e3 * cores / (w + s), 1e3 / s), 1e3 * cores / cost
