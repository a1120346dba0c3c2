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


def apply_augment(transform: v2.Transform, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Apply one random draw of ``transform`` to images and, last, a mask, each (1, H, W).

    All but the last tensor are wrapped as ``tv_tensors.Image`` (the network input and
    the image the loss sees), the last as ``tv_tensors.Mask``; one call, one draw.
    """
    *images, mask = tensors
    wrapped = [tv_tensors.Image(t) for t in images] + [tv_tensors.Mask(mask)]
    out = transform(*wrapped)
    return tuple(t.as_subclass(torch.Tensor) for t in out)
