"""Is the GPU kept fed? seginfer on folders of files with CUDA, against the model alone and the CPU.

    python -m bench.gpu_feed --out OUT [--model MODEL.onnx] [--device cuda] [--n-small 2000] [--n-large 64]

For 128x128 (``--n-small`` files, batch 64) and 1024x1024 (``--n-large`` files; one image per
onnxruntime call, ``MAX_BATCH_PIXELS``) 8-bit PNGs, the same files through (the CPU runs on
the CPU's default batch size, 8):

- the model alone on the device: the normalised batches already in memory, one session with I/O
  binding (what the main process runs with ``--engine processes``): the ceiling;
- ``seginfer --device cuda --engine processes``: worker processes read, normalise, apply the
  foreground rule and write; the main process runs the one GPU session (I/O binding);
- ``seginfer --device cuda --engine local``: one process, the session and reader/writer threads;
- ``seginfer --device cpu`` (its default engine here): the CPU figure.

images/s come from each run's manifest (``seconds``), and the GPU's utilisation is sampled
with ``nvidia-smi`` every 100 ms during each run (mean and median of the samples; ``-`` without
nvidia-smi). Writes OUT/gpu_feed.json and OUT/gpu_feed.md. ``--device cpu`` runs every step on
the CPU (a dry run of the script: both engines on the CPU, no utilisation; the served model
is tested on the CPU by tests/test_infer_processes.py). ``bench/gpu_check.py`` runs it as its last
step.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

from bench.common import normalised_inputs

SIZES = {"128x128": (128, 64), "1024x1024": (1024, 8)}  # name -> (side, --batch-size)


class GpuSampler:
    """``nvidia-smi`` in the background while a run lasts: utilisation (%) and memory (MiB) samples."""

    def __init__(self, index: int = 0, every_ms: int = 100):
        self.cmd = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu,memory.used"]
        self.cmd += ["--format=csv,noheader,nounits", f"-lms={every_ms}"]
        self.proc: subprocess.Popen | None = None
        self.util: list[float] = []
        self.mem: list[float] = []

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        out, _ = self.proc.communicate()
        for line in out.splitlines():
            try:
                util, mem = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.util.append(util)
            self.mem.append(mem)

    def summary(self) -> dict:
        if not self.util:
            return {"gpu_util_mean": None, "gpu_util_median": None, "gpu_mem_max_mib": None}
        return {
            "gpu_util_mean": statistics.mean(self.util),
            "gpu_util_median": statistics.median(self.util),
            "gpu_mem_max_mib": max(self.mem),
            "samples": len(self.util),
        }


def write_folder(folder: Path, n: int, side: int) -> list[Path]:
    from PIL import Image

    from unsupseg.core.data import generate

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, n, 256):  # in slices: 256 images of 1024x1024 are 256 MB
        imgs, _ = generate(min(256, n - start), side, side, sigma=(0.2, 1.0), seed=4242 + start, quantize=8)
        for i, im in enumerate(imgs):
            paths.append(folder / f"{start + i:05d}.png")
            Image.fromarray(im).save(paths[-1], compress_level=1)
    return paths


def model_alone(model: Path, device: str, paths: list[Path], batch: int) -> dict:
    """The session seginfer's main process runs (I/O binding on CUDA) on normalised batches in memory."""
    from unsupseg.infer.model.session import OnnxSession

    sess = OnnxSession(model, device=device)
    x = normalised_inputs(paths, sess.card.normalization)
    sess.run(x[:batch])  # warm-up: cuDNN's choice, the bound buffers
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        for k in range(0, len(x), batch):
            sess.run(x[k : k + batch])
        seconds = time.perf_counter() - t0
    return {"images_per_s": len(x) / seconds, "io_binding": sess.io_binding, **gpu.summary()}


def seginfer(folder: Path, out: Path, model: Path, device: str, batch: int, engine: str | None) -> dict:
    cmd = [sys.executable, "-m", "unsupseg.infer.cli.seginfer", "--input", str(folder), "--output", str(out)]
    cmd += ["--model", str(model), "--device", device, "--batch-size", str(batch), "--overwrite", "-q"]
    cmd += ["--engine", engine] if engine else []
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-500:]}
    manifest = json.loads((out / "seginfer.json").read_text())
    return {
        "images_per_s": manifest.get("images_per_second"),
        "seconds": manifest.get("seconds"),
        "wall_s": wall,
        "provider": manifest.get("provider"),
        "engine": manifest.get("engine"),
        **gpu.summary(),
    }


def measure(out: Path, model: Path, device: str, n_small: int, n_large: int) -> dict:
    """Every run for both sizes: {size: {run name: figures}}."""
    from unsupseg.infer.model.segmenter import MAX_BATCH_PIXELS  # larger batches are cut to this many pixels

    res = {}
    for name, (side, batch) in SIZES.items():
        n = n_small if side == 128 else n_large
        paths = write_folder(out / f"files_{name}", n, side)
        per_call = max(1, min(batch, MAX_BATCH_PIXELS // (side * side)))  # what seginfer runs per call
        runs = {"model alone": model_alone(model, device, paths, per_call)}
        for engine in ("processes", "local"):
            runs[f"seginfer --device {device} --engine {engine}"] = seginfer(
                paths[0].parent, out / f"masks_{name}_{engine}", model, device, batch, engine
            )
        if device != "cpu":
            runs["seginfer --device cpu (default engine)"] = seginfer(
                paths[0].parent, out / f"masks_{name}_cpu", model, "cpu", 8, None
            )
        res[name] = {"n_files": n, "batch": batch, "runs": runs}
        click.echo(f"gpu_feed {name}: " + json.dumps(runs, default=str)[:400], err=True)
    return res


def table(res: dict, device: str) -> list[str]:
    lines = [
        "| images | run | images/s | GPU utilisation mean / median | of the model alone |",
        "|---|---|---|---|---|",
    ]
    for name, r in res.items():
        ceiling = r["runs"]["model alone"]["images_per_s"]
        for label, v in r["runs"].items():
            if "error" in v:
                lines.append(f"| {r['n_files']:,} x {name} | {label} | failed: {v['error'][:120]} | | |")
                continue
            util = (
                f"{v['gpu_util_mean']:.0f}% / {v['gpu_util_median']:.0f}%"
                if v["gpu_util_mean"] is not None
                else "-"
            )
            share = f"{100 * v['images_per_s'] / ceiling:.0f}%" if ceiling else "-"
            lines.append(
                f"| {r['n_files']:,} x {name} | {label} | {v['images_per_s']:,.0f} | {util} | {share} |"
            )
    return lines


@click.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--model", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None)
@click.option("--device", default="cuda", show_default=True)
@click.option("--n-small", type=int, default=2000, show_default=True, help="128x128 files")
@click.option("--n-large", type=int, default=64, show_default=True, help="1024x1024 files")
def main(out: Path, model: Path | None, device: str, n_small: int, n_large: int) -> None:
    """seginfer with a GPU vs the model alone and the CPU; writes OUT/gpu_feed.json and OUT/gpu_feed.md."""
    from unsupseg.infer.model.segmenter import default_model_path

    out.mkdir(parents=True, exist_ok=True)
    model = model or default_model_path()
    res = measure(out, model, device, n_small, n_large)
    (out / "gpu_feed.json").write_text(json.dumps({"device": device, "sizes": res}, indent=2, default=str))
    lines = table(res, device)
    (out / "gpu_feed.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
