"""Section "gpu": a placeholder until the CUDA figures are measured (bench/gpu_check.py is the
prepared script); it says whether this machine has a GPU."""

from __future__ import annotations

from bench.common import Section, Shared
from bench.prose import Prose

TEXT = Prose(__file__)
TITLE = "GPU"


def run(shared: Shared) -> Section:
    sec = Section("gpu", TITLE, TEXT("intro"))
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
            "seginfer --device cuda, worker processes feeding one GPU session (I/O binding) vs one "
            "process, 128x128 and 1024x1024 files: images/s, GPU utilisation (bench/gpu_feed.py)",
        )
    ]
    sec.table("CUDA", ["measurement", "result"], rows)
    sec.data = {"status": status}
    return sec
