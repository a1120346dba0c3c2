"""Multi-process training with torch DistributedDataParallel, launched by ``torchrun``.

    torchrun --nproc_per_node 4 -m unsupseg.train.cli --data images/ --out runs/big

``torchrun`` starts one process per GPU (or per CPU share) and sets RANK, WORLD_SIZE and
LOCAL_RANK; ``segtrain`` sees them and joins the process group: NCCL when it trains on
CUDA, gloo on the CPU. Each rank trains on its own share of every epoch's samples with
its own batch of ``--batch-size`` (the global batch is batch size x world size; the
learning rate is not scaled). Gradients are averaged by DDP, so all ranks hold the same
weights after every step; BatchNorm running statistics are rank 0's (DDP broadcasts
buffers from rank 0 before each forward; SyncBatchNorm would need GPUs only). Rank 0
alone evaluates, prints and writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from unsupseg.core.errors import UnsupsegError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistContext:
    """The rank layout torchrun (or any launcher using its variables) set, else one process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise UnsupsegError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e})") from None
    if world < 1 or not 0 <= rank < world:
        raise UnsupsegError(f"bad process layout: RANK={rank}, WORLD_SIZE={world}")
    return DistContext(rank, world, local)


def setup(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (no-op for a single process)."""
    if not ctx.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def check_same(ctx: DistContext, value: int, what: str, device: torch.device) -> None:
    """Raise on every rank if ranks disagree on ``value`` (e.g. the number of files seen)."""
    if not ctx.enabled:
        return
    t = torch.tensor([value, -value], dtype=torch.int64, device=device)  # NCCL needs CUDA tensors
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise UnsupsegError(
            f"ranks disagree on {what} (from {-int(t[1])} to {int(t[0])}); every rank must see the same "
            "data, e.g. the same --data folder on a shared file system"
        )


def sync_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if not ctx.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)
