"""Run by tests/test_ddp.py under torchrun: train briefly, save this rank's weights.

Usage: torchrun --nproc_per_node 2 tests/ddp_worker.py OUT DATA
(DATA: an .npz or a folder). Each rank writes OUT/rank{R}.pt with its final state_dict
and the mean training loss of each epoch (ranks see different samples, so those differ).
"""

import os
import sys

import torch

from unsupseg.train import loop
from unsupseg.train.config import make_config


def main(out: str, data: str) -> None:
    rank = int(os.environ["RANK"])
    epoch_losses = []
    real_train_epoch = loop.train_epoch

    def recording_train_epoch(*args, **kwargs):
        result = real_train_epoch(*args, **kwargs)
        epoch_losses.append(result["loss_mean"])
        return result

    loop.train_epoch = recording_train_epoch
    cfg = make_config(
        data=data,
        out=os.path.join(out, "run"),
        epochs=2,
        width=4,
        batch_size=8,
        crop=32,
        samples_per_epoch=64,
        device="cpu",
        threads=1,
    )
    result = loop.run_training(cfg, progress=False, plots=False, log=lambda m: None)
    state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    torch.save({"state_dict": state, "losses": epoch_losses}, os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
