"""Where training runs and how its random streams are seeded.

Every random stream of a run derives from ``--seed``; the strides below keep the derived
seeds of different epochs and DDP ranks apart, so no two streams start from one seed.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from unsupseg.core.errors import UnsupsegError
from unsupseg.train.distributed import DistContext

RANK_SEED_STRIDE = 1_000_003  # torch's seed on rank r is seed * this + r: ranks (and seeds) apart
EPOCH_SEED_STRIDE = 100_003  # numpy's seed for epoch e is seed * this + e (+ rank * RANK_SEED_STRIDE)
RESUME_SEED_STRIDE = 7_919  # a rank > 0 resumed at epoch e adds e * this: apart from its fresh start


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit device that cannot run is an error.

    ``local_rank`` (a torchrun process): 'auto' and 'cuda' mean that process's GPU.
    """
    if local_rank is not None and name in ("auto", "cuda") and torch.cuda.is_available():
        name = f"cuda:{local_rank}"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnsupsegError(f"--device {name}: CUDA is not available to torch here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UnsupsegError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UnsupsegError(f"--device {name}: MPS is not available here; use --device cpu")
    return dev


def set_cpu_threads(threads: int, dist_ctx: DistContext) -> None:
    """``threads`` torch threads, or (0) the machine's cores shared by its processes."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if dist_ctx.enabled else 1
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_world))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, resumed_at: int = 0) -> int:
    """torch's seed on a DDP rank (ranks start from rank 0's weights, their draws differ)."""
    return seed * RANK_SEED_STRIDE + rank + RESUME_SEED_STRIDE * resumed_at


def epoch_noise_seed(seed: int, epoch: int, rank: int) -> int:
    """numpy's seed for one epoch of the in-memory data's noise: reproducible on resume, per rank."""
    return seed * EPOCH_SEED_STRIDE + epoch + RANK_SEED_STRIDE * rank
