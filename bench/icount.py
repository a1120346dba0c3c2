"""Instructions of seginfer's worker path against the CPU ceiling's steps, counted by callgrind.

    python -m bench.icount            # about 30 minutes on 2 cores: three runs under valgrind
    python -m bench.icount --n 50     # a smaller count, a few minutes less (imports dominate)

The processes section of ``make bench`` compares the worker processes' images/s with a CPU
ceiling built from seconds, and seconds on a shared machine move by 10% from run to run.
Instruction counts do not: this runs one script three times under ``valgrind
--tool=callgrind`` (``PYTHONHASHSEED=0``) on the same N generated 128x128 PNGs (the processes
section's images) with the packaged model and one onnxruntime thread:

- ``none``: the setup alone (imports, the model, reading the images once, the ceiling's
  normalised arrays and masks);
- ``path``: the setup, then what a worker process does with its items (``items.run_items``:
  read, normalise, batch, run, foreground rule, write, report row);
- ``steps``: the setup, then the ceiling's steps, each in its own pass as
  ``bench.sections.e2e.cpu_budget`` measures them (decode, normalise, the model on
  preloaded arrays in batches of 8, encode and write the masks).

The setup is the same in all three, so ``path - none`` and ``steps - none`` are the two
measured parts, and their ratio is what the worker path adds to the steps, in instructions.
callgrind counts user-space instructions only: the kernel's share (file system calls) is
left out of both. Requires valgrind (Debian's package).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click


def _child(mode: str, folder: Path, n: int, scratch: Path) -> None:
    from bench.common import normalised_inputs
    from bench.sections.e2e import model_pass, normalise_pass, read_pass, write_pass
    from unsupseg.infer.items import run_items
    from unsupseg.infer.model.segmenter import SegmenterConfig
    from unsupseg.infer.run import RunOptions, plan_run

    opts = RunOptions(segmenter=SegmenterConfig(device="cpu"), overwrite=True)
    items, work = plan_run(folder, scratch, opts)
    work.bind(scratch, "icount")
    items = list(items)[:n]
    seg = opts.segmenter.build(threads=1)
    norm = seg.card.normalization
    paths = [i.src for i in items]
    run_items(seg, work, items[:16], lambda r: None)  # first calls (allocations) in every mode
    # the budget's inputs, made in every mode: pages, normalised arrays, masks
    pages = read_pass(paths)
    x = normalised_inputs(paths, norm)
    masks = [m[0] >= 0.5 for probs in model_pass(seg.session, x, 8) for m in probs]
    (scratch / "steps").mkdir()
    if mode == "path":
        run_items(seg, work, items, lambda r: None)
    elif mode == "steps":  # the passes cpu_budget times, one after the other
        model_pass(seg.session, x, 8)
        read_pass(paths)
        normalise_pass(pages, norm)
        write_pass(masks, scratch / "steps")


def _count(mode: str, folder: Path, n: int, work: Path) -> int:
    """User-space instructions of one run of this module in ``mode`` under callgrind."""
    scratch = work / f"out_{mode}"
    scratch.mkdir()
    out = work / f"callgrind.{mode}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, "-m", "bench.icount", "--child", mode, "--n", str(n)]
    cmd += ["--folder", str(folder), "--scratch", str(scratch)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or not found:
        why = proc.stderr[-2000:]
        raise click.ClickException(f"valgrind run '{mode}' failed ({proc.returncode}):\n{why}")
    return int(found[1].replace(",", ""))


@click.command()
@click.option("--n", default=200, show_default=True, type=click.IntRange(min=16), help="Images counted.")
@click.option("--child", type=click.Choice(["none", "path", "steps"]), hidden=True)
@click.option("--folder", type=click.Path(path_type=Path), hidden=True)
@click.option("--scratch", type=click.Path(path_type=Path), hidden=True)
def main(n: int, child: str | None, folder: Path | None, scratch: Path | None) -> None:
    """Count the worker path's and the ceiling's instructions per image (see the module's doc)."""
    if child:
        _child(child, folder, n, scratch)
        return
    if shutil.which("valgrind") is None:
        raise click.ClickException("valgrind is not installed (Debian: apt-get install valgrind)")
    from bench.common import write_pngs
    from unsupseg.core.data import generate

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory: no disk noise in the setup
    with tempfile.TemporaryDirectory(prefix="unsupseg-icount-", dir=base) as tmp:
        work = Path(tmp)
        images, _ = generate(n, 128, 128, sigma=(0.2, 1.0), seed=4000, quantize=8, max_objects=3)
        write_pngs(work / "images", images)
        counts = {}
        for mode in ("none", "path", "steps"):
            click.echo(f"icount: {mode} under callgrind ...", err=True)
            counts[mode] = _count(mode, work / "images", n, work)
    path, steps = counts["path"] - counts["none"], counts["steps"] - counts["none"]
    click.echo(f"worker path:     {path / n / 1e6:.2f} M instructions per image")
    click.echo(f"ceiling's steps: {steps / n / 1e6:.2f} M instructions per image")
    click.echo(f"worker path / steps: {path / steps:.3f}")


if __name__ == "__main__":
    main()
