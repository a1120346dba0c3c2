"""Training configuration and presets.

``seed`` reproduces the notebook exactly; ``default`` is what measured best on this
project's held-out data (see docs/benchmarks.md for the runs that chose it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from unsupseg.core.normalize import Normalization
from unsupseg.train.model import ModelConfig


@dataclass
class TrainConfig:
    data: str | None = None  # None: built-in generator; else an .npz (notebook keys) or a folder
    masks: str | None = None  # folder of masks for --data DIR (evaluation only)
    out: str = "runs/default"  # run folder
    preset: str = "default"  # "default" or "seed"
    arch: str = "unet"  # "seed" or "unet"
    width: int = 8  # first-block channels (8: the accuracy of 16 at 0.7x the cost, docs/model-selection.md)
    init: str = "default"  # "seed" (notebook) or "default" (PyTorch) initialisation
    context: bool = True  # unet: image-wide context features at the bottleneck
    epochs: int = 60  # passes over the training split
    batch_size: int = 32  # images per step
    optimizer: str = "adamw"  # "sgd" or "adamw"
    lr: float = 0.01  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 / decoupled weight decay
    schedule: str = "onecycle"  # "constant" or "onecycle" (warm-up then cosine decay)
    alpha: float = 0.1  # weight of total variation in the loss
    augment: str = "default"  # "default" (8 square symmetries), "seed" (notebook) or "none"
    input_noise: float = 0.7  # training input gets extra noise, std U(0, this) x image range; 0 = off
    crop: int = 64  # side of the random training crops for --data DIR (multiple of 8)
    samples_per_epoch: int = 1000  # crops per epoch for --data DIR
    eval_images: int = 100  # --data DIR: whole images evaluated each epoch, spread over the folder
    workers: int = 0  # --data DIR: DataLoader worker processes reading images (0 = in the main process)
    cache_mb: float = 1024  # --data DIR: decoded images kept in memory (LRU), MB over all workers
    seed: int = 0  # seeds python, numpy and torch (and the built-in generator)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N" or "mps"
    threads: int = 0  # torch CPU threads; 0 = all cores
    init_from: str | None = None  # start from this checkpoint's weights (its arch/width win)
    norm_low: float = 1.0  # percentile of each image mapped to 0 (stored with the model)
    norm_high: float = 99.0  # percentile of each image mapped to 1 (stored with the model)

    def normalization(self) -> Normalization:
        return Normalization(low=self.norm_low, high=self.norm_high)

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, width=self.width, init=self.init, context=self.context)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, dict] = {
    # Chosen by measurement on the built-in validation data (docs/benchmarks.md).
    "default": {},
    # The seed notebook, verbatim.
    "seed": dict(
        arch="seed",
        width=64,
        init="seed",
        context=False,
        epochs=275,
        batch_size=32,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-3,
        schedule="constant",
        alpha=1e-3,
        augment="seed",
        input_noise=0.0,
    ),
}


def make_config(preset: str = "default", **overrides) -> TrainConfig:
    """A TrainConfig from a preset; overrides that are None keep the preset's value."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    kw = dict(PRESETS[preset])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig(preset=preset, **kw)
    cfg.model_config()  # raise ValueError now, before anything is written
    cfg.normalization()
    return cfg
