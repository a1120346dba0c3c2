"""``make bench``: where unsupseg stands, in ratios measured side by side on this machine.

    python -m bench.run                       # everything -> docs/benchmarks.md, bench/results.json
    python -m bench.run --quick --out /tmp/b  # smoke run with tiny counts (about 2 minutes)
    python -m bench.run --sections model,quant --sweep runs/w4/model.pt,runs/w8/model.pt

Sections (``--sections``): model (torch eager vs onnxruntime, GFLOP/s against the CPU's
peak), e2e (seginfer on a folder vs the model alone), processes (worker processes vs one
process vs the CPU ceiling, the scaling model, memory and start-up), classical (Otsu, blur + Otsu,
Chan-Vese, morphological Chan-Vese vs unsupseg on held-out images), sweep (accuracy and
speed over widths, from ``--sweep`` checkpoints), real (real sets: classical methods, the packaged
model and label-free adaptation), quality (the label-free quality score against the IoU on
the real sets, its cost), objects (instance labels on real nuclei, --labels cost),
memory (peak RSS of seginfer), training (images/s, ``make train`` wall time), stream
(``segtrain --data DIR`` memory), quant (int8 vs fp32), report (report.html of a large run:
size and build time), gpu.

Every section uses the same weights: ``--checkpoint`` is exported to a temporary .onnx
with ``segexport``'s own code, so torch and onnxruntime run identical parameters.

Where things are: this file is the CLI and the registry ``SECTIONS`` (name -> module, in
page order); bench/sections/NAME.py measures one section and bench/sections/NAME.md holds its
prose; bench/common.py has Settings, Shared, Section and the helpers every section uses;
bench/evaluate.py the held-out scores several sections share; bench/report.py (with
bench/report.md) renders the page and results.json; bench/prose.py reads the .md files.

To add a section, e.g. ``html``:

1. copy bench/sections/gpu.py (the smallest) to bench/sections/html.py: a ``TITLE`` and
   ``run(shared: Shared) -> Section`` that measures (small counts when
   ``shared.settings.quick``), then fills the Section with ``sec.table(...)``, ``sec.notes``,
   ``sec.data`` (what goes to results.json) and, for a target, ``sec.target(ask, measured,
   met)`` (a row of the targets table at the top of the page);
2. write its prose in bench/sections/html.md: ``## intro`` and any fixed notes as ``## name``
   blocks with ``${placeholders}`` (format in bench/prose.py), read with ``TEXT("intro", ...)``;
3. import it beside the others below and add ``"html": html,`` to ``SECTIONS`` where it should
   appear on the page; tests/test_bench.py lists the sections the quick run must write.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import click

from bench.common import ROOT, Section, Settings, Shared, export_checkpoint, log
from bench.report import render, results_json
from bench.sections import (
    adapt,
    classical,
    e2e,
    gpu,
    memory,
    model,
    objects,
    processes,
    quality,
    quant,
    real,
    report,
    stream,
    sweep,
    training,
)
from bench.timing import machine, usable_cores

# name -> module with run(shared) -> Section; the order is the order of running and of the page
SECTIONS = {
    "model": model,
    "e2e": e2e,
    "processes": processes,
    "classical": classical,
    "sweep": sweep,
    "real": real,
    "adapt": adapt,
    "quality": quality,
    "objects": objects,
    "memory": memory,
    "training": training,
    "stream": stream,
    "quant": quant,
    "report": report,
    "gpu": gpu,
}

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
    "--real",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Folder of real sets (<set>/images + <set>/masks) for the real section.  "
    "[default: ../shared/realdata when it exists]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write OUT/benchmarks.md and OUT/results.json instead of docs/benchmarks.md and bench/results.json.",
)
def main(checkpoint, quick, sections, sweep, threads, repeats, real, out):
    """Benchmark unsupseg on this machine; write docs/benchmarks.md and bench/results.json."""
    from unsupseg.core.atomic import write_text_atomic
    from unsupseg.train.checkpoint import sha256_file

    t_start = time.perf_counter()
    wanted = _parse_sections(sections)
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
            real=real,
        )
        shared, mach, done = run_sections(st, wanted)

    meta = _meta(st, shared, mach, sha256_file(checkpoint), t_start)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(md_path, render(meta, done))
    write_text_atomic(json_path, results_json(meta, done))
    log(f"wrote {md_path} and {json_path} ({meta['total_s'] / 60:.1f} min)")


def _parse_sections(sections: str) -> list[str]:
    wanted = [s.strip() for s in sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad or not wanted:
        raise click.BadParameter(
            f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}", param_hint="--sections"
        )
    return wanted


def run_sections(st: Settings, wanted: list[str]) -> tuple[Shared, dict, dict[str, Section]]:
    """Export the checkpoint into ``st.work``, describe the machine, run the wanted sections in
    registry order: (shared, machine description, {name: Section})."""
    from unsupseg.train.checkpoint import load_model
    from unsupseg.train.model import ModelConfig

    shared = Shared(st)
    _, card, ckd = load_model(st.checkpoint)
    shared.model_config = ModelConfig(**ckd["model_config"])
    log(f"exporting {st.checkpoint}")
    shared.onnx_path, shared.card = export_checkpoint(st.checkpoint, st.work / "model.onnx")
    mach = machine(st.threads)
    done: dict[str, Section] = {}
    for key, module in SECTIONS.items():
        if key not in wanted:
            continue
        log(f"section {key} ...")
        t0 = time.perf_counter()
        sec = module.run(shared)
        sec.seconds = time.perf_counter() - t0
        done[key] = sec
        log(f"section {key}: {sec.seconds:.0f} s")
    return shared, mach, done


def _meta(st: Settings, shared: Shared, mach: dict, sha: str, t_start: float) -> dict:
    """The run as the page's header and results.json describe it."""
    try:
        from unsupseg.infer.model.segmenter import Segmenter

        packaged = Segmenter(device="cpu", threads=1).card.checkpoint_sha256 == sha
    except Exception:  # no packaged model: say so in the report, do not fail the benchmark
        packaged = False
    cmd = "python -m bench.run" + ("" if len(sys.argv) <= 1 else " " + shlex.join(sys.argv[1:]))
    return {
        "command": cmd,
        "quick": st.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "checkpoint": str(st.checkpoint),
        "checkpoint_sha256": sha,
        "is_packaged_default": packaged,
        "model": f"{shared.model_config.arch} width {shared.model_config.width}",
        "machine": mach,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "total_s": time.perf_counter() - t_start,
    }


if __name__ == "__main__":
    main()
