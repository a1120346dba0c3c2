"""Networks that map a normalised image (B, 1, H, W) to a probability map u in [0, 1].

Two families, both fully convolutional and valid for any H, W that are multiples of 8:

* ``seed``: the seed notebook's autoencoder, exactly. Encoder 3 x [Conv 3x3 stride 2,
  pad 1 -> BatchNorm -> ReLU] with 1 -> w -> 2w -> 4w channels (w = 64 in the
  notebook); decoder 3 x [bilinear Upsample x2 (align_corners=False) -> Conv 3x3 ->
  BatchNorm -> ReLU] 4w -> 2w -> w, the last block Upsample -> Conv w -> 1 -> Sigmoid.
* ``unet``: the same encoder and decoder with U-Net skip connections (Ronneberger et
  al., 2015): each decoder stage adds the encoder feature map of its resolution, and a
  full-resolution stem gives the last layer the pixel grid back. Additive skips (not
  concatenation) keep the channel counts, and so the cost, of the seed network.

``init="seed"`` applies the notebook's initialisation (xavier-uniform conv weights,
biases 1, BatchNorm weight 1 and bias 1); ``init="default"`` keeps PyTorch's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

ARCHS = ("seed", "unet")
SIZE_MULTIPLE = 8  # three stride-2 stages


@dataclass
class ModelConfig:
    arch: str = "unet"  # "seed" (notebook autoencoder) or "unet" (with skip connections)
    width: int = 8  # channels of the first encoder block; later blocks use 2x and 4x
    init: str = "default"  # "seed" = notebook initialisation, "default" = PyTorch's
    context: bool = False  # unet only: add image-wide (global average) features at the bottleneck

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")
        if self.context and self.arch != "unet":
            raise ValueError("context features exist only for arch 'unet'")
        if self.init not in ("seed", "default"):
            raise ValueError(f"unknown init {self.init!r}; choose 'seed' or 'default'")

    def to_dict(self) -> dict:
        return asdict(self)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=True), nn.BatchNorm2d(cout), nn.ReLU()
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=True),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class SeedNet(nn.Module):
    """The notebook's autoencoder (no skip connections)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        self.network = nn.Sequential(
            _down(1, w),  # (B, 1, H, W) -> (B, w, H/2, W/2)
            _down(w, 2 * w),  # -> (B, 2w, H/4, W/4)
            _down(2 * w, 4 * w),  # -> (B, 4w, H/8, W/8)
            _up(4 * w, 2 * w),  # -> (B, 2w, H/4, W/4)
            _up(2 * w, w),  # -> (B, w, H/2, W/2)
            nn.Sequential(  # -> (B, 1, H, W)
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(w, 1, 3, stride=1, padding=1, bias=True),
                nn.Sigmoid(),
            ),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class UNet(nn.Module):
    """Seed encoder/decoder plus additive skip connections and a full-resolution stem."""

    def __init__(self, width: int = 16, context: bool = False) -> None:
        super().__init__()
        w = width
        # Global context (ParseNet, Liu et al. 2015): the image-wide mean of the
        # bottleneck features, mapped by a 1x1 conv and added back everywhere. It lets a
        # pixel far from any edge compare itself with the whole image, as the region
        # means a and b of the Chan-Vese energy do, at any image size.
        self.context = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 1), nn.ReLU()) if context else None
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.enc1 = _down(w, w)
        self.enc2 = _down(w, 2 * w)
        self.enc3 = _down(2 * w, 4 * w)
        self.dec3 = _up(4 * w, 2 * w)
        self.dec2 = _up(2 * w, w)
        self.dec1 = _up(w, w)
        self.head = nn.Sequential(nn.Conv2d(w, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)  # (B, w, H, W)
        s1 = self.enc1(s0)  # (B, w, H/2, W/2)
        s2 = self.enc2(s1)  # (B, 2w, H/4, W/4)
        s3 = self.enc3(s2)  # (B, 4w, H/8, W/8)
        if self.context is not None:
            s3 = s3 + self.context(s3.mean(dim=(2, 3), keepdim=True))  # (B, 4w, 1, 1) broadcast
        d2 = self.dec3(s3) + s2  # (B, 2w, H/4, W/4)
        d1 = self.dec2(d2) + s1  # (B, w, H/2, W/2)
        d0 = self.dec1(d1) + s0  # (B, w, H, W)
        return self.head(d0)  # (B, 1, H, W)


def seed_init_(model: nn.Module) -> None:
    """The notebook's initialisation: xavier-uniform convs, biases 1, BatchNorm (1, 1)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 1.0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 1.0)


def build_model(cfg: ModelConfig) -> nn.Module:
    model: nn.Module = SeedNet(cfg.width) if cfg.arch == "seed" else UNet(cfg.width, cfg.context)
    if cfg.init == "seed":
        seed_init_(model)
    return model


def count_flops(cfg: ModelConfig, height: int, width: int) -> int:
    """Multiply-adds x 2 of the convolutions for one (1, H, W) image (BN/ReLU/upsample excluded)."""
    total = 0
    model = build_model(cfg)
    hooks = []

    def hook(mod: nn.Conv2d, _inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += 2 * k * out.numel()

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, height, width))
    for h in hooks:
        h.remove()
    return total
