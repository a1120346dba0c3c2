"""Geometric augmentation applied identically to image and mask (torchvision.transforms.v2).

The image is wrapped as ``tv_tensors.Image`` and the mask as ``tv_tensors.Mask``; one
v2 transform call on the pair draws one set of random parameters for both, and masks
are resampled with nearest-neighbour interpolation automatically.

* ``seed``: the notebook's choice, one of vertical flip, horizontal flip, rotation up to
  180 degrees (corners filled with 0).
* ``default``: the eight symmetries of the square (flips and 90-degree rotations);
  exact on the pixel grid, so no interpolation blur and no filled corners.
* ``none``: identity.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

AUGMENTS = ("default", "seed", "none")


def _transpose_square(t: torch.Tensor) -> torch.Tensor:
    # non-square inputs keep their shape so a batch still collates
    return t.transpose(-1, -2) if t.shape[-1] == t.shape[-2] else t


def build_augment(kind: str) -> v2.Transform:
    if kind == "seed":
        return v2.RandomChoice([v2.RandomVerticalFlip(), v2.RandomHorizontalFlip(), v2.RandomRotation(180)])
    if kind == "default":
        return v2.Compose(
            [
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                # a transpose composed with the flips gives all 8 symmetries of the square
                v2.RandomApply([v2.Lambda(_transpose_square)], p=0.5),
            ]
        )
    if kind == "none":
        return v2.Identity()
    raise ValueError(f"unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTS)}")


def apply_pair(
    transform: v2.Transform, image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random draw of ``transform`` to an image (1, H, W) and its mask (1, H, W)."""
    img, msk = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)
