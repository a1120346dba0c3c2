"""The shipped pair in numbers: train/models/default.pt (torch) against infer/model/default.onnx
(onnxruntime through seginfer's own session), on real images, at production shapes.

Production shapes: seginfer runs at most 1024 x 1024 pixels per onnxruntime call
(``MAX_BATCH_PIXELS``), so a batch of 32 is made of small images or tiles and a 1024-px tile runs
alone. Sizes that are not multiples of 8 go through ``Segmenter``, which pads them as seginfer does;
torch gets the same input through ``unsupseg.core.padding``. The dynamic axes are checked by value:
an image's output does not depend on the batch it is in, and when the padded size changes the
ONNX output moves exactly as torch's does. The int8 file (``segexport --int8``) and the
bioimage.io package of the same checkpoint are compared with torch too.

Bounds, each above what was measured on ../shared/realdata (onnxruntime on 2 CPU cores):
``MAX_DIFF`` 1e-4 on probabilities (measured at most 1.5e-5 for the shipped pair, batch 32 of
1024 x 1024; 1.3e-5 at batch 32 of 256 x 256; 8.6e-6 at one 1024-px tile; 3.8e-5 for the model
adapted to stardist's image, tests/test_adapt_real.py, batch 8 of 256 x 256); masks differ on at
most 1e-5 of the pixels (measured: one pixel in 33.5 million, batch 32 of 1024 x 1024; none at the
shapes below on the shared sets; one pixel in 524288, 1.9e-6, for the model adapted to stardist's
image).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from realimages import read_gray, real_crops, real_sets

from unsupseg.core.padding import pad_to_multiple
from unsupseg.infer import Segmenter
from unsupseg.train.adapt import PACKAGED
from unsupseg.train.checkpoint import load_model

MAX_DIFF = 1e-4  # |torch - onnxruntime| on probabilities (measured <= 3.8e-5, see above)
MAX_FLIPS = 1e-5  # fraction of pixels whose mask differs (measured at most 1.9e-6, see above)


@pytest.fixture(scope="module")
def shipped():
    """(torch network in eval mode, model card) of default.pt, read with weights_only=True."""
    torch.set_num_threads(2)
    model, card, ckpt = load_model(PACKAGED)
    assert ckpt["model_config"]["context"], "the packaged network has image-wide context features"
    return model, card


@pytest.fixture(scope="module")
def pages():
    """Real pages (raw, as seginfer reads them) of every set: ../shared/realdata or stardist's image."""
    return [read_gray(image) for files in real_sets().values() for image, _ in files]


def torch_prob(model, x: np.ndarray) -> np.ndarray:
    """(B, 1, H, W) normalised float32 -> torch's probabilities, same shape."""
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def compare(ref: np.ndarray, got: np.ndarray, threshold: float, what: str) -> tuple[float, float]:
    """Assert the bounds; return (max |diff|, fraction of pixels whose mask differs)."""
    assert ref.shape == got.shape, (ref.shape, got.shape)
    diff = float(np.abs(ref - got).max())
    flips = float(np.mean((ref >= threshold) != (got >= threshold)))
    print(f"{what}: max |torch - onnxruntime| {diff:.2e}, masks differ on {flips:.2e} of the pixels")
    assert diff <= MAX_DIFF, f"{what}: max |torch - onnxruntime| = {diff:.3e} > {MAX_DIFF}"
    assert flips <= MAX_FLIPS, f"{what}: masks differ on {flips:.3e} of the pixels > {MAX_FLIPS}"
    return diff, flips


class Recorder:
    """Stands between a Segmenter and its session: the batch shapes that reached onnxruntime."""

    def __init__(self, session):
        self.session, self.shapes = session, []

    def run(self, batch):
        self.shapes.append(tuple(batch.shape))
        return self.session.run(batch)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.fixture(scope="module")
def onnx_seg():
    """The packaged ONNX through seginfer's Segmenter (CPU, the network's output as is), one
    session for every shape of this module."""
    return Segmenter(device="cpu", threads=2, foreground="model", batch_size=32)


# -- the session: normalised inputs of production shapes -------------------------------------------
@pytest.mark.parametrize(
    "b,h,w",
    [
        (1, 1024, 1024),  # one tile of the default size
        (8, 256, 384),
        (32, 128, 176),  # 32 x 22528 pixels: a full batch under MAX_BATCH_PIXELS
        pytest.param(8, 1024, 1024, marks=pytest.mark.slow),  # 8 tiles in one call (a GPU's batch)
    ],
)
def test_shipped_pair_agrees_in_numbers(shipped, onnx_seg, pages, b, h, w):
    model, card = shipped
    x = np.stack([card.normalization(c) for c in real_crops(pages, b, h, w, seed=b * h)])[:, None]
    x = x.astype(np.float32)
    compare(torch_prob(model, x), onnx_seg.session.run(x), card.threshold, f"batch {b} of {h}x{w}")


@pytest.mark.parametrize("b,h,w", [(1, 1021, 1019), (8, 251, 333), (32, 99, 131)])
def test_sizes_that_need_padding_agree_through_the_segmenter(shipped, onnx_seg, pages, b, h, w):
    """Raw images whose sides are not multiples of 8: Segmenter normalises, pads, batches, crops;
    torch gets the same padding from unsupseg.core.padding. The batch really is ``b`` images."""
    model, card = shipped
    raws = real_crops(pages, b, h, w, seed=b + h)
    rec = Recorder(onnx_seg.session)
    seg = Segmenter(device="cpu", threads=2, foreground="model", batch_size=32, session=rec)
    got = dict(seg.predict_stream([(i, seg.prepare(r[None])) for i, r in enumerate(raws)]))
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    assert rec.shapes == [(b, 1, hp, wp)], rec.shapes
    padded = [pad_to_multiple(card.normalization(r), 8) for r in raws]
    ref = [torch_prob(model, x[None, None])[0, 0, :h, :w] for x in padded]
    probs = [got[i][1][0] for i in range(b)]
    compare(np.stack(ref), np.stack(probs), card.threshold, f"{b} raw images of {h}x{w} (padded {hp}x{wp})")
    masks = np.stack([got[i][0][0] for i in range(b)])
    np.testing.assert_array_equal(masks, np.stack(probs) >= card.threshold)  # foreground "model"


# -- the dynamic axes, by value ------------------------------------------------------------------------
def test_an_image_gives_the_same_output_alone_and_in_a_batch(shipped, onnx_seg, pages):
    """Measured: onnxruntime gives the very same values (difference 0); torch differs by ~2e-6."""
    _, card = shipped
    x = np.stack([card.normalization(c) for c in real_crops(pages, 32, 128, 176, seed=5)])[:, None]
    x = x.astype(np.float32)
    in_32 = onnx_seg.session.run(x)
    in_8 = onnx_seg.session.run(x[8:16])
    worst = 0.0
    for i in (0, 9, 31):
        alone = onnx_seg.session.run(x[i : i + 1])[0]
        worst = max(worst, float(np.abs(alone - in_32[i]).max()))
        if 8 <= i < 16:
            worst = max(worst, float(np.abs(alone - in_8[i - 8]).max()))
    print(f"alone vs in a batch of 8 or 32: max |diff| {worst:.2e}")
    assert worst <= 1e-6


@pytest.mark.parametrize("extra", [8, 64, 200])
def test_the_padded_size_moves_onnx_as_it_moves_torch(shipped, onnx_seg, pages, extra):
    """The same image padded to its multiple of 8, then ``extra`` pixels more (reflect): the output
    on the image moves (image-wide context, borders) and the ONNX file's moves as torch's does. A
    graph with a size baked in at export would fail here."""
    model, card = shipped
    worst, moved = 0.0, 0.0
    for raw in real_crops(pages, 3, 200, 264, seed=extra):
        x = pad_to_multiple(card.normalization(raw), 8)
        h, w = x.shape
        big = np.pad(x, ((0, extra), (0, extra)), mode="reflect")
        ort = [onnx_seg.session.run(a[None, None])[0, 0, :h, :w] for a in (x, big)]
        ref = [torch_prob(model, a[None, None])[0, 0, :h, :w] for a in (x, big)]
        worst = max(worst, float(np.abs((ort[1] - ort[0]) - (ref[1] - ref[0])).max()))
        moved = max(moved, float(np.abs(ref[1] - ref[0]).max()))
    print(f"+{extra} px: torch's output moves by up to {moved:.3f}; onnxruntime's differs by {worst:.2e}")
    assert moved > 1e-3  # the check has something to see
    assert worst <= 2 * MAX_DIFF


# -- int8 and the bioimage.io package against torch ----------------------------------------------------
# int8 (static QDQ, calibrated on 2 images of each real set) against torch on the others: measured
# pixel agreement per image at least 0.9965 (horse; nuclei 0.9992, EM 0.9973), mean 0.9988
# (nuclei 0.9998, horse 0.9988, EM 0.9977); |diff| reaches 0.8 on a few pixels at region edges, so
# the bound is on masks. On 2026-12-03, with the same packages (onnxruntime-gpu 1.31.1, onnx 1.23.2)
# and code that does not touch this path, a fresh environment on another host of the same CPU family
# measured least 0.9877 (EM; horse 0.9957), mean 0.9949: onnxruntime's int8 kernels differ between
# hosts. The bound holds on both: each image >= 0.985 and the mean >= 0.99 (a broken quantisation,
# e.g. a wrong calibration range, agrees on far less). int8 is not the default (benchmarks: "drop").
INT8_MIN_AGREEMENT = 0.985
INT8_MIN_MEAN_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """segexport --int8 of default.pt, calibrated on the first 2 images of every set (links)."""
    from realimages import link_folder

    from unsupseg.export.quantize import export_int8

    work = tmp_path_factory.mktemp("int8")
    sets = real_sets()
    cal = [image for files in sets.values() for image, _ in files[:2]]
    link_folder(work / "cal", cal)
    export_int8(PACKAGED, work / "q.onnx", work / "cal", log=lambda m: None)
    held = [image for files in sets.values() for image, _ in (files[2:] or files)]
    return work / "q.onnx", held


@pytest.mark.slow
def test_int8_agrees_with_torch(shipped, int8_model):
    model, card = shipped
    path, held = int8_model
    seg = Segmenter(path, device="cpu", threads=2, foreground="model", structure="none")  # the network's mask
    assert seg.card.quantization == "int8-qdq"
    agreement = []
    for image in held:
        raw = read_gray(image)
        mask, prob = seg.predict(raw)
        x = pad_to_multiple(card.normalization(raw), 8)
        ref = torch_prob(model, x[None, None])[0, 0, : raw.shape[0], : raw.shape[1]]
        agreement.append(float(np.mean(mask == (ref >= card.threshold))))
        diff = float(np.abs(prob - ref).max())
        print(f"{image.name}: int8 vs torch masks agree on {agreement[-1]:.4f}, max |diff| {diff:.3f}")
    mean, least = float(np.mean(agreement)), min(agreement)
    print(f"int8 vs torch, {len(held)} images: mean agreement {mean:.4f}, least {least:.4f}")
    assert least >= INT8_MIN_AGREEMENT
    assert mean >= INT8_MIN_MEAN_AGREEMENT


@pytest.mark.slow
def test_bioimageio_package_agrees_with_torch(shipped, pages, tmp_path_factory):
    """bioimageio.core runs the package (its own pre-processing, the ONNX weights) on real images
    cut to multiples of 8: measured max |diff| 2.1e-5 against torch, no mask pixel differs."""
    from bioimageio.core import create_prediction_pipeline, load_description, predict

    from unsupseg.export.bioimageio import export_bioimageio

    model, card = shipped
    package = tmp_path_factory.mktemp("bioimageio") / "default.zip"
    export_bioimageio(PACKAGED, package, log=lambda m: None)
    pipeline = create_prediction_pipeline(
        load_description(package), devices=["CPUExecutionProvider"], weight_format="onnx"
    )
    picks = [pages[i] for i in np.linspace(0, len(pages) - 1, min(5, len(pages))).round().astype(int)]
    for raw in picks:
        h, w = raw.shape[0] // 8 * 8, raw.shape[1] // 8 * 8
        raw = raw[:h, :w]
        got = predict(model=pipeline, inputs=raw[None, None]).members["prob"].data.to_numpy()
        ref = torch_prob(model, card.normalization(raw)[None, None])
        compare(ref, got, card.threshold, f"bioimage.io package, {raw.dtype} {h}x{w}")
