"""One pass over the data: ``train_epoch`` takes the optimiser steps of an epoch,
``evaluate`` measures the network in eval mode; both return the mean and standard
deviation over mini-batches of the Chan-Vese loss, its fidelity and TV terms, and the
polarity-free IoU in percent (``unsupseg.train.metrics``).
"""

from __future__ import annotations

import torch

from unsupseg.train.loss import chan_vese_loss
from unsupseg.train.metrics import SERIES, batch_iou_any_polarity, summarise


def train_epoch(model, loader, optimizer, scheduler, alpha, device, has_masks) -> dict[str, float]:
    model.train()
    vals: dict[str, list[float]] = {k: [] for k in SERIES}
    for inp, image, mask in loader:
        inp, image = inp.to(device, non_blocking=True), image.to(device, non_blocking=True)
        u = model(inp)  # (B, 1, H, W) -> (B, 1, H, W), region-1 probability
        loss, fid, tv = chan_vese_loss(image, u, alpha)  # measured on the image, not the noisier input
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        vals["loss"].append(loss.item())
        vals["fidelity"].append(fid.item())
        vals["tv"].append(tv.item())
        if has_masks:
            vals["iou"].append(100.0 * batch_iou_any_polarity(u.detach(), mask.to(device)).mean().item())
    return summarise(vals)


@torch.no_grad()
def evaluate(model, test, alpha, device, has_masks) -> dict[str, float]:
    model.eval()
    vals: dict[str, list[float]] = {k: [] for k in SERIES}
    for entry in test:  # (image, mask) batches, or folder images with (h, w, has_mask)
        image, mask = entry[0].to(device), entry[1].to(device)
        u = model(image)
        if len(entry) == 3:  # folder image: crop the padding away before scoring
            h, w, with_mask = entry[2]
            image, mask, u = image[..., :h, :w], mask[..., :h, :w], u[..., :h, :w]
        else:
            with_mask = has_masks
        loss, fid, tv = chan_vese_loss(image, u, alpha)
        vals["loss"].append(loss.item())
        vals["fidelity"].append(fid.item())
        vals["tv"].append(tv.item())
        if with_mask:
            vals["iou"].append(100.0 * batch_iou_any_polarity(u, mask).mean().item())
    return summarise(vals)
