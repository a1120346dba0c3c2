"""The GPU checks of issues 3, 4 and 5 as one prepared script, for a machine with CUDA.

    python -m bench.gpu_check --checkpoint runs/default/model.pt --out OUT_DIR [--device cuda]

1. export on CUDA: the checkpoint's model on the GPU vs the exported file run by
   onnxruntime on the CPU, same inputs, export tolerances (rtol 1e-3, atol 1e-5);
2. torch CUDA model alone: images/s at 128x128 (batch 64) and 512x512 (batch 8), fp32
   and bf16 / fp16 autocast;
3. training images/s on CUDA (default preset, 32x32 batches);
4. seginfer --device cuda on 2,000 generated 128x128 PNGs and 64 of 1024x1024, with worker
   processes feeding the one GPU session (--engine processes) and with one process (--engine
   local), vs the model alone on the GPU and seginfer --device cpu: images/s and the GPU's
   utilisation (bench/gpu_feed.py, which also runs alone); a run that fails records its error.

Everything lands in OUT_DIR/gpu_check.json and a Markdown table OUT_DIR/gpu_check.md
to paste into docs/benchmarks.md with the card's name. ``--device cpu`` runs the same
code on the CPU (a dry run of the script itself).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from bench import gpu_feed


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(fn, n_images: int, device, min_time: float = 1.0) -> float:
    fn()  # warm-up (cuDNN algorithm choice, allocator)
    _sync(device)
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        runs += 1
    _sync(device)
    return runs * n_images / (time.perf_counter() - t0)


@click.command()
@click.option(
    "--checkpoint", type=click.Path(path_type=Path, exists=True), default=Path("runs/default/model.pt")
)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--device", default="cuda", show_default=True)
@click.option("--n-files", type=int, default=2000, show_default=True, help="128x128 files for seginfer")
@click.option("--n-large", type=int, default=64, show_default=True, help="1024x1024 files for seginfer")
def main(checkpoint: Path, out: Path, device: str, n_files: int, n_large: int) -> None:
    """Run the prepared GPU checks and write OUT/gpu_check.json and OUT/gpu_check.md."""
    # One long function on purpose: a prepared script, run once on a borrowed GPU machine and
    # read top to bottom; its numbered steps are the module docstring's list.
    import torch

    from unsupseg.export.export import ATOL, RTOL, export_onnx, verification_inputs
    from unsupseg.infer.model.session import OnnxSession
    from unsupseg.train.checkpoint import load_model
    from unsupseg.train.config import make_config
    from unsupseg.train.loop import run_training

    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    res: dict = {"device": device, "torch": torch.__version__}
    if dev.type == "cuda":
        res["card"] = torch.cuda.get_device_name(dev)

    # 1. export parity: torch on the device vs onnxruntime on the CPU
    model, card, _ = load_model(checkpoint)
    onnx_path = out / "model.onnx"
    export_onnx(checkpoint, onnx_path, overwrite=True, verify=True, log=lambda m: None)
    model = model.to(dev)
    sess = OnnxSession(onnx_path, device="cpu")
    worst, ok = 0.0, True
    for _, x in verification_inputs():
        with torch.no_grad():
            ref = model(torch.from_numpy(x).to(dev)).float().cpu().numpy()
        got = sess.run(x)
        worst = max(worst, float(np.abs(ref - got).max()))
        ok &= bool(np.allclose(got, ref, rtol=RTOL, atol=ATOL))
    res["export_parity"] = {"max_abs_diff": worst, "within_tolerance": ok}

    # 2. torch model alone, fp32 and autocast
    rows = []
    for size, batch in ((128, 64), (512, 8)):
        x = torch.rand(batch, 1, size, size, device=dev)
        for mode in ("fp32", "bf16", "fp16"):
            if mode != "fp32" and dev.type != "cuda":
                continue
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)

            def step(x=x, dtype=dtype):
                with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    model(x)

            rows.append(
                {"size": size, "batch": batch, "mode": mode, "images_per_s": _throughput(step, batch, dev)}
            )
    res["model_alone"] = rows

    # 3. training images/s (a few epochs of the default preset on the device)
    cfg = make_config("default", out=str(out / "train_run"), epochs=3, device=device)
    t0 = time.perf_counter()
    run_training(cfg, overwrite=True, log=lambda m: None, progress=False, plots=False)
    res["training_images_per_s"] = 3 * 1000 / (time.perf_counter() - t0)

    # 4. seginfer on files: is the GPU fed? (bench/gpu_feed.py: 128x128 and 1024x1024 files, worker
    # processes feeding the one GPU session vs one process, GPU utilisation, vs the model alone and the CPU)
    feed = gpu_feed.measure(out / "feed", onnx_path, device, n_files, n_large)
    res["seginfer"] = feed

    (out / "gpu_check.json").write_text(json.dumps(res, indent=2))
    lines = [
        f"GPU checks on {res.get('card', device)} (torch {res['torch']}), `python -m bench.gpu_check`",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| export parity, torch {device} vs onnxruntime CPU | max abs diff {worst:.2e}, "
        f"{'within' if ok else 'OUTSIDE'} rtol {RTOL} / atol {ATOL} |",
    ]
    lines += [
        f"| model alone {r['size']}x{r['size']} batch {r['batch']} {r['mode']} "
        f"| {r['images_per_s']:,.0f} images/s |"
        for r in rows
    ]
    lines.append(f"| training (default preset) | {res['training_images_per_s']:,.0f} images/s |")
    lines += ["", *gpu_feed.table(feed, device)]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
