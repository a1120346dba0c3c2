"""What every benchmark section uses: the run's settings, the Section it returns, number
formatting, and the helpers that make inputs and run seginfer / segtrain as subprocesses."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEGINFER = [sys.executable, "-c", "from unsupseg.infer.cli.seginfer import main; main()"]
SEGTRAIN = [sys.executable, "-c", "from unsupseg.train.cli import main; main()"]


class BenchError(click.ClickException):
    exit_code = 2


@dataclass
class Settings:
    quick: bool  # --quick: tiny counts, a smoke run
    threads: int  # CPU threads for every contender
    checkpoint: Path  # the model benchmarked (--checkpoint)
    sweep: list[Path]  # checkpoints of other widths (--sweep)
    work: Path  # scratch folder (temporary)
    repeats: int = 5  # timing repeats
    real: Path | None = None  # folder of real sets (--real); None: ../shared/realdata when it exists


@dataclass
class Section:
    """One section of docs/benchmarks.md; ``data`` (with title and seconds) goes to results.json."""

    key: str
    title: str
    intro: str = ""
    tables: list[dict] = field(default_factory=list)  # {"caption", "columns", "rows"}
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    seconds: float = 0.0
    targets: list[list[str]] = field(default_factory=list)  # rows of the page's targets table

    def table(self, caption: str, columns: list[str], rows: list[list]) -> None:
        self.tables.append({"caption": caption, "columns": columns, "rows": rows})

    def target(self, ask: str, measured: str, met: bool | str | None) -> None:
        """A row of the targets table at the top of the page; ``met`` True / False / None ("-"),
        or a word for the status column."""
        status = met if isinstance(met, str) else "-" if met is None else ("met" if met else "**not met**")
        self.targets.append([ask, measured, status])


@dataclass
class Shared:
    """What several sections use: the exported model and the held-out results of unsupseg."""

    settings: Settings
    onnx_path: Path | None = None
    card: object = None
    model_config: object = None
    heldout: list | None = None  # [(spec, images, masks)]
    cache: dict = field(default_factory=dict)


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
    from unsupseg.core.data import generate

    imgs, _ = generate(b, h, w, sigma=(0.2, 1.0), seed=seed, max_objects=3)
    return np.stack([card.normalization(im) for im in imgs])[:, None].astype(np.float32)


def ort_session(path: Path, threads: int):
    from unsupseg.infer.model.session import OnnxSession

    return OnnxSession(path, device="cpu", threads=threads)


def normalised_inputs(paths, norm) -> np.ndarray:
    """The model's input for each file, (N, 1, H, W) float32: its first page normalised with
    the model card's ``norm``, as seginfer does (the model-alone figures run on these)."""
    from unsupseg.core.imageio import read_image

    return np.stack([norm(read_image(p)[0]) for p in paths])[:, None].astype(np.float32)


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
    out["engine"] = manifest.get("engine", {})
    return out


def _tree_rss_kb(root: int) -> tuple[int, int]:
    """(summed RSS of ``root`` and all its descendants, RSS of ``root``) in kB, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, own, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4  # pages of 4 kB
        except (OSError, IndexError, ValueError):
            rss = 0
        total += rss
        own = rss if pid == root else own
        todo.extend(children.get(pid, []))
    return total, own


def peak_tree_rss(cmd: list[str], every: float = 0.02) -> dict:
    """Run ``cmd``; the peak of the summed RSS of its process tree (main process, fork server,
    worker processes) and of its main process alone, sampled every ``every`` seconds, in MB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_total = peak_main = 0
    while proc.poll() is None:
        total, own = _tree_rss_kb(proc.pid)
        peak_total, peak_main = max(peak_total, total), max(peak_main, own)
        time.sleep(every)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"failed: {shlex.join(cmd)}\n{err[-2000:]}")
    return {"tree_mb": peak_total / 1024, "main_mb": peak_main / 1024, "wall_s": time.perf_counter() - t0}


def peak_rss_run(
    cmd: list[str], ok: tuple[int, ...] = (0,)
) -> tuple[float, float, subprocess.CompletedProcess]:
    """(peak RSS MB, wall s, process) of ``cmd``; an exit code outside ``ok`` is a BenchError.

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
    if proc.returncode != 0 or res["rc"] not in ok:
        raise BenchError(f"failed ({res['rc']}): {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
    return res["maxrss_kb"] / 1024, wall, proc


def export_checkpoint(ckpt: Path, out: Path) -> tuple[Path, object]:
    """``ckpt`` exported to ``out`` with segexport's own code: (out, the model card)."""
    from unsupseg.export.export import export_onnx

    report = export_onnx(ckpt, out, overwrite=True, log=lambda m: None)
    return out, report.card
