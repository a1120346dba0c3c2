"""Scale test: ``seginfer --engine ray`` on a local 2-worker Ray cluster vs the plain local run.

Generates N (default 20,000) noisy-disk 128x128 PNGs with their masks, runs

    seginfer --input IMAGES --output local/ --masks TRUTH --threads 2
    seginfer --input IMAGES --output ray/   --masks TRUTH --engine ray --ray-address ADDR
             --ray-actors 2 --threads 1

where ADDR is a ``ray.cluster_utils.Cluster`` with a CPU-less head and two worker
nodes of one CPU each (separate raylets, as on two machines), and checks that both
write the same masks (byte for byte) and the same summary.json (output folder
names aside). Prints a markdown table and writes ``--json``. Not part of
``make test``: it takes minutes.

Example: python bench/scale.py --n 20000 --json bench/scale-results.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, truth: Path, n: int, size: int = 128) -> None:
    """n PNGs: 1-3 bright disks (0.8) on a dark background (0.2) + N(0, 0.1) noise; masks beside."""
    import imageio.v3 as iio

    for d in (folder, truth):
        d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        rng = np.random.default_rng(i)
        mask = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            r = rng.uniform(0.1, 0.25) * size
            cy, cx = rng.uniform(r, size - r, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        image = np.where(mask, 0.8, 0.2) + rng.normal(0, 0.1, mask.shape)
        name = f"{i // 1000:03d}/img{i:06d}.png"  # 1,000 files per sub-folder
        (folder / name).parent.mkdir(exist_ok=True)
        (truth / name).parent.mkdir(exist_ok=True)
        iio.imwrite(folder / name, (np.clip(image, 0, 1) * 255).astype(np.uint8))
        iio.imwrite(truth / name, mask.astype(np.uint8) * 255)


def seginfer(args: list, env: dict | None = None) -> tuple[float, int]:
    """Run the seginfer CLI in a fresh process; (wall seconds, exit code)."""
    cmd = [sys.executable, "-m", "unsupseg.infer.cli.seginfer", *map(str, args), "-q"]
    start = time.perf_counter()
    rc = subprocess.run(cmd, env=env).returncode
    return time.perf_counter() - start, rc


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


def main() -> None:
    # One function on purpose: the scale test is a script read top to bottom (generate, run
    # locally, run on the Ray cluster, compare), as the module docstring lists it.
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="images to generate")
    ap.add_argument("--model", help="ONNX model  [default: the packaged model]")
    ap.add_argument("--workdir", help="where images and masks go  [default: a temporary folder]")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    tmp = Path(a.workdir or tempfile.mkdtemp(prefix="unsupseg-scale-"))
    images, truth = tmp / "images", tmp / "truth"
    t0 = time.perf_counter()
    if not images.exists():
        make_images(images, truth, a.n)
    print(f"{a.n} images in {images} ({time.perf_counter() - t0:.0f} s to generate)", file=sys.stderr)
    common = ["--input", images, "--masks", truth, "-r", "--device", "cpu"]
    common += ["--model", a.model] if a.model else []

    local_s, local_rc = seginfer([*common, "--output", tmp / "local", "--threads", "2"])

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    ray.shutdown()  # only to wait for the nodes; seginfer connects by itself
    try:
        ray_s, ray_rc = seginfer(
            [*common, "--output", tmp / "ray", "--engine", "ray", "--ray-address", cluster.address]
            + ["--ray-actors", "2", "--threads", "1"],
            env={**os.environ, "RAY_ADDRESS": cluster.address},
        )
    finally:
        cluster.shutdown()

    def summary(out: Path) -> str:
        return (out / "summary.json").read_text().replace(str(out), "OUT")

    masks_equal = digest(tmp / "local") == digest(tmp / "ray")
    summary_equal = summary(tmp / "local") == summary(tmp / "ray")
    s = json.loads((tmp / "local" / "summary.json").read_text())
    results = {
        "n_images": a.n,
        "size": "128x128",
        "local": {"seconds": round(local_s, 1), "images_per_second": round(a.n / local_s, 1), "rc": local_rc},
        "ray_2_workers": {
            "seconds": round(ray_s, 1),
            "images_per_second": round(a.n / ray_s, 1),
            "rc": ray_rc,
        },
        "masks_identical": masks_equal,
        "summary_identical": summary_equal,
        "mean": s["mean"],
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    print(
        "| run | seconds | images/s |\n|---|---:|---:|\n"
        f"| local seginfer (--threads 2) | {local_s:.1f} | {a.n / local_s:.1f} |\n"
        f"| Ray, 2 worker nodes x 1 actor (--threads 1) | {ray_s:.1f} | {a.n / ray_s:.1f} |\n\n"
        f"masks identical: {masks_equal}; summary.json identical: {summary_equal}"
    )
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    if not (masks_equal and summary_equal and local_rc == ray_rc == 0):
        sys.exit(1)


if __name__ == "__main__":
    main()
