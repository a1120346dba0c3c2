"""Which region of an adapted model is the object: inherited from the start model over the folder.

The per-image foreground rule (``auto``: the region that touches the border less and covers less)
is right for the packaged model on most pages, but after adaptation, under the adaptation's log
normalisation, it can pick the background on every page of a folder whose objects are large and
touch the frame (stardist's 3-D pages: 64.0 IoU either way, 12.7 as written). The start model, in
its own normalisation and with its own rule, still writes those pages the right way round.

So after adaptation each image's region 1 (prob >= 0.5) is matched to the start model's written
mask: it *agrees* when IoU(region 1, start) >= IoU(region 0, start). When at least
``consistency`` of the images agree the same way (one imaging modality, one polarity: every
microscopy folder measured), that orientation is fixed for the folder: the model card's rule
becomes ``model`` and, when region 0 is the object, the network's last convolution is negated so
that its output is the object's probability (sigmoid(-z) = 1 - sigmoid(z)). A folder whose images
disagree (photographs with dark and bright objects) keeps the per-image rule ``auto``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from unsupseg.core.metrics import iou


@dataclass
class Orientation:
    agree: float  # share of the images whose region 1 matches the start model's object
    consistency: float  # max(agree, 1 - agree)
    fixed: bool  # the folder's orientation is fixed (rule "model")
    inverted: bool  # ... with region 0 as the object (the output was negated)

    def to_dict(self) -> dict:
        return asdict(self)


def orientation(regions: list[np.ndarray], reference: list[np.ndarray], consistency: float) -> Orientation:
    """The folder's orientation from each image's region 1 and the start model's written mask."""
    if not regions:
        return Orientation(1.0, 1.0, False, False)
    agree = float(np.mean([iou(r, q) >= iou(~r, q) for r, q in zip(regions, reference, strict=True)]))
    share = max(agree, 1.0 - agree)
    fixed = share >= consistency
    return Orientation(agree, share, fixed, fixed and agree < 0.5)


@torch.no_grad()
def invert_output(model: torch.nn.Module) -> None:
    """Make the network output 1 - p: negate its last convolution (the one before the sigmoid).
    Checked on a random input; raises for a network where that is not what happens."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("no convolution to invert in this network")
    last = convs[-1]
    device = last.weight.device
    was_training = model.training
    model.eval()
    x = torch.rand(1, 1, 32, 32, device=device)
    before = model(x)
    _negate(last)
    after = model(x)
    model.train(was_training)
    if not torch.allclose(after, 1.0 - before, atol=1e-5):
        _negate(last)  # back as it was
        raise ValueError("negating the last convolution does not invert this network's output")


def _negate(conv: torch.nn.Conv2d) -> None:
    conv.weight.neg_()
    if conv.bias is not None:
        conv.bias.neg_()
