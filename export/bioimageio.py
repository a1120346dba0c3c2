"""Checkpoint -> bioimage.io model package (model description format 0.5), tested before it is kept.

deepImageJ, ilastik, QuPath, napari and bioimageio.core load models through the
bioimage.io model description: an ``rdf.yaml`` beside the weights, test tensors,
pre/post-processing, a cover and a README, zipped into one package. This module
builds that description with ``bioimageio.spec``'s own model description classes
(``bioimageio.spec.model.v0_5``), never hand-written YAML, and packages it with
``save_bioimageio_package``:

* weights: the ONNX file ``export_onnx`` writes and verifies against torch (what
  ``segexport MODEL.pt MODEL.onnx`` writes, model card in its metadata), with its opset;
* input ``image``: axes batch (free), channel (1), y and x with a parameterized size
  ``min + n * step`` where min and step are the model's size multiple (8);
* pre-processing: the model card's normalisation in the spec's own terms, a per-image
  percentile ``scale_range`` over (y, x) with the card's percentiles, then ``clip`` to
  [0, 1] (the spec's scale_range adds ``eps`` = 1e-6 to the denominator: a relative
  difference of 1e-6 / (p_high - p_low) from seginfer, below the parity tolerance for
  any image whose percentile range is not tiny);
* output ``prob``: the same axes, y and x sized by reference to the input;
* test tensors: a generated image (or ``test_image``) and the probability that
  seginfer's own normalisation and onnxruntime session give for it, so the zoo's
  reproduction test also checks that the spec's pre-processing matches seginfer's;
* a cover (the test image, and its seginfer mask over it) and a README naming what the
  model does, how it was trained without labels and on what, its held-out figures, the
  polarity rule and the citation of the method.

The package is then run through ``bioimageio.core.test_description`` (format
validation and reproduction of the test outputs, the check the model zoo runs) on the
CPU, and written (renamed into place) only if that passes.

Decisions:

* **The threshold is documented metadata, not a ``binarize`` step.** The network ends in
  a sigmoid, so its one output already is the probability (no ``sigmoid``
  post-processing: that would apply it twice). A ``binarize`` output would be the
  network's region 1, and which region is the object is decided per image by seginfer's
  polarity rule, which the spec cannot express: such a "mask" would be the background on
  the images where the rule flips it. A probability map is what pixel-classification
  tools such as ilastik and QuPath work with (they threshold it themselves), deepImageJ
  shows it as an image that thresholds at the documented value to the mask, and a
  continuous output keeps the zoo's reproduction test meaningful, where a binarized one
  flips pixels that lie within rounding error of the threshold. The threshold and the polarity
  rule are in the output's description, in ``config.unsupseg`` (the whole model card),
  in the README, and in the ONNX file's own metadata.
* **Polarity** (foreground = the brighter region by default, chosen per image) cannot be
  written in the spec; the package README says so and how to apply it.
* **Offline.** Nothing here needs the network: no URLs in the description (the citations
  are DOIs, which the spec checks by pattern only), no GitHub user names (those are
  looked up online), and the package is validated from local files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg import __version__
from unsupseg.core.errors import OutputExistsError
from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard
from unsupseg.export.export import OPSET, ExportError, export_onnx

EXTRA_HINT = "install the extra: pip install 'unsupseg[bioimageio]'"
TEST_SIZE = 128  # side of the generated test image
MAX_TEST_SIZE = 512  # a given test image is centre-cropped to at most this side
COVER_PANEL = 256  # pixels per cover panel side
SCALE_RANGE_EPS = 1e-6  # the spec's default epsilon in (x - lo) / (hi - lo + eps)
ONNX_DEVICE = "CPUExecutionProvider"  # the package is tested where seginfer's parity is checked

CITATIONS = (
    (
        "Chan, T. F. and Vese, L. A. Active contours without edges. IEEE Transactions on "
        "Image Processing 10(2), 266-277 (2001): the energy the network minimises.",
        "10.1109/83.902291",
    ),
    (
        "Kim, B. and Ye, J. C. Mumford-Shah loss functional for image segmentation with deep "
        "learning. IEEE Transactions on Image Processing 29, 1856-1866 (2020): training a "
        "network by minimising it, without labels.",
        "10.1109/TIP.2019.2941265",
    ),
)


@dataclass
class PackageReport:
    path: Path
    card: ModelCard
    size_bytes: int
    onnx_max_abs_diff: float  # |torch - onnxruntime| at export (export_onnx's verification)
    test_status: str  # bioimageio.core's test: "passed" (or "skipped" with verify=False)
    format_version: str  # model description format written, e.g. "0.5.12"


def _require_bioimageio():
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError as e:
        raise ExportError(f"a bioimage.io package needs bioimageio.core ({e}); {EXTRA_HINT}") from e


# ----------------------------------------------------------------------------- test image
def default_test_image(seed: int = 4) -> np.ndarray:
    """A generated TEST_SIZE^2 image (the built-in data's shapes and noise) at camera-like intensities.

    The offset and gain make the normalisation visible in the test: raw values are far
    from [0, 1] and only the pre-processing brings them there.
    """
    from unsupseg.train.data import generate

    images, _ = generate(1, TEST_SIZE, TEST_SIZE, sigma=(0.3, 0.3), polarity="bright", seed=seed)
    return (images[0] * 400.0 + 1000.0).astype(np.float32)


def load_test_image(path: str | os.PathLike, multiple: int) -> np.ndarray:
    """A gray image from ``path``, centre-cropped to a multiple of ``multiple`` (at most MAX_TEST_SIZE).

    Read as seginfer reads it (colour converted to gray); a multi-page file gives its first page.
    """
    from unsupseg.core.imageio import read_image

    image = read_image(path)[0]  # (pages, H, W) float32 -> the first page
    h, w = (min(MAX_TEST_SIZE, s) // multiple * multiple for s in image.shape)
    if h == 0 or w == 0:
        raise ExportError(
            f"{path}: {image.shape[0]}x{image.shape[1]} is smaller than the model's size multiple "
            f"{multiple}; pass a larger test image"
        )
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[y0 : y0 + h, x0 : x0 + w], dtype=np.float32)


# ----------------------------------------------------------------------------- cover and README
def _cover(norm: np.ndarray, mask: np.ndarray, path: Path) -> None:
    """Two square panels side by side (2:1, as bioimage.io asks): the normalised image, and the
    mask in colour over it; a non-square image is fitted into each panel on black."""
    from PIL import Image

    gray = np.round(np.clip(norm, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    overlay = rgb.copy()
    overlay[mask] = 0.5 * rgb[mask] + 0.5 * np.array([255, 64, 160], dtype=np.float32)
    h, w = gray.shape
    size = (max(1, round(COVER_PANEL * w / max(h, w))), max(1, round(COVER_PANEL * h / max(h, w))))
    cover = Image.new("RGB", (2 * COVER_PANEL, COVER_PANEL))
    for i, panel in enumerate((rgb, overlay)):
        im = Image.fromarray(panel.astype(np.uint8)).resize(size, Image.NEAREST)
        cover.paste(im, (i * COVER_PANEL + (COVER_PANEL - size[0]) // 2, (COVER_PANEL - size[1]) // 2))
    cover.save(path, format="PNG")


def _fmt(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f}%"


def _ordinal(x: float) -> str:
    if x != int(x):
        return f"{x:g}th"
    n = int(x)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _training_data(train: dict) -> tuple[str, str]:
    """(what the model was trained on, what its held-out figure was measured on)."""
    data = train.get("data")
    if not data:
        return (
            "the built-in generated data: 1000 training images of 32x32 pixels, each with one or two "
            "shapes (ellipses, rectangles, polygons, smooth blobs), bright or dark on the opposite "
            "background, plus Gaussian noise (sigma 0.05 to 0.5 for a contrast of 1)",
            "the 1000 test images of the built-in data, drawn with another seed and never trained on",
        )
    name = Path(data).name
    if str(data).endswith(".npz"):
        return f"the `image_train` images of `{name}`", f"the `image_test` images of `{name}`, not trained on"
    return (
        f"the unlabeled images of the folder `{name}`",
        f"whole images of `{name}` scored against the masks of `--masks` (the network trained on "
        "these images without their masks: not independent of training)",
    )


def readme_text(card: ModelCard, train: dict, epochs: int | None, opset: int, name: str) -> str:
    """The package's documentation (README.md): what the model does, how it was trained, its figures."""
    norm = card.normalization
    clip = ", clipped to [0, 1] (`clip`)" if norm.clip else ""
    trained_on, held_out = _training_data(train)
    t, rule, m = card.threshold, card.polarity, card.size_multiple
    lo, hi = _ordinal(norm.low), _ordinal(norm.high)
    version = card.package_version or __version__
    epochs = "?" if epochs is None else epochs
    tc = {k: train.get(k, "?") for k in ("preset", "batch_size", "optimizer", "lr", "schedule", "augment")}
    tc.update({k: train.get(k, "?") for k in ("input_noise", "alpha")})
    sha = card.checkpoint_sha256 or "?"
    return f"""# {name}

Unsupervised binary segmentation of 2-D gray images. The network splits each image into two
regions (objects and background) and outputs, per pixel, the probability of its region 1.
It was trained **without labels**, by minimising a Chan-Vese energy, with unsupseg
{version} ({card.arch} network, width {card.width}).

## Input and output

* Input `{INPUT_NAME}`: (batch, channel = 1, y, x), one gray channel, any intensity range and
  data type. y and x must be multiples of {m}: pad other sizes (unsupseg pads by reflection)
  and crop the output.
* Pre-processing: per image, the {lo} and {hi} percentiles are mapped to 0 and 1
  (`scale_range`){clip}.
* Output `{OUTPUT_NAME}`: (batch, channel = 1, y, x), float32 in [0, 1], the probability of the
  network's region 1. The network ends in a sigmoid, so there is no post-processing.
* Mask: the pixels with probability >= {t:g}. The threshold is documented here and in
  `config.unsupseg`, not applied as a post-processing step, because which region is the
  object is decided per image (next section).

## Which region is the object (polarity)

Trained without labels, the network separates two regions but does not know which one is the
object. unsupseg's `seginfer` decides it per image with the rule `{rule}`:
{_polarity_text(rule)}
**This rule cannot be expressed in the bioimage.io model description**, so tools that run this
package show the probability of the network's region 1 as it is; on some images region 1
is the background.

To get the mask unsupseg writes: threshold the probability at {t:g}; then, for the rule `bright`,
invert the mask if the mean intensity inside it is lower than outside (for `dark`: higher).
Or run the ONNX file of this package with `seginfer --model weights.onnx`, which applies the rule.

## Training (no labels)

For an image I (normalised as above) and the network's output u = f(I) in [0, 1] over n pixels,
training minimised

    a = sum(I u) / sum(u),  b = sum(I (1 - u)) / sum(1 - u)
    fidelity = (1/n) sum( u (I - a)^2 + (1 - u) (I - b)^2 )
    TV = (1/n) sum( |u(x+1, y) - u(x, y)| + |u(x, y+1) - u(x, y)| )
    loss = fidelity + alpha TV,  alpha = {tc["alpha"]}

averaged over each batch: the Chan-Vese two-region fit with a total-variation penalty on the
boundary. No masks were used for training.

* Data: {trained_on}.
* Preset `{tc["preset"]}`: {epochs} epochs, batch {tc["batch_size"]}, optimiser {tc["optimizer"]}
  (learning rate {tc["lr"]}, schedule {tc["schedule"]}), augmentation `{tc["augment"]}`, extra
  input noise up to {tc["input_noise"]} x the image range (the network sees a noisier image
  than the loss measures).
* Weights: ONNX, opset {opset}, exported from the checkpoint with sha256 `{sha}` and
  checked against torch with onnxruntime.

## Validation

The checkpoint's final figures, polarity-free IoU (the better of the mask and its complement
against the ground-truth mask, mean over images; masks were used only for this score):

| images | IoU |
|---|---|
| {held_out} | {_fmt(card.test_iou)} |
| training | {_fmt(card.train_iou)} |

To validate on your own annotated images:
`seginfer --input images/ --masks masks/ --output out/ --model weights.onnx`
writes `summary.json` with the mean IoU and Dice. The test output of this package was computed by
unsupseg's own normalisation and onnxruntime session; `bioimageio test` reproduces it from the test
input through the pre-processing above.

## Limitations

The model sees one gray channel and splits it into exactly two regions; images with more than
two intensity classes, or objects that differ from the background only in texture, are split
into whichever two regions have the lowest energy. Check it on your own images before relying on it.

## Citation

{_citation_text()}
"""


def _polarity_text(rule: str) -> str:
    return {
        "bright": "the region with the higher mean intensity is the object.",
        "dark": "the region with the lower mean intensity is the object.",
        "model": "the network's region 1 is the object, as it is.",
    }[rule]


def _citation_text() -> str:
    return "\n".join(f"* {text} doi:{doi}" for text, doi in CITATIONS)


# ----------------------------------------------------------------------------- description
def build_description(
    card: ModelCard,
    train: dict,
    epochs: int | None,
    files: dict[str, Path],
    opset: int,
    name: str,
    authors: tuple[str, ...],
    n_parameters: int | None = None,
):
    """The bioimageio.spec ModelDescr (format 0.5) for the files in ``files``.

    ``files``: onnx, test_input, test_output, sample_input, sample_output, cover, readme.
    """
    from bioimageio.spec.model.v0_5 import (
        Author,
        AxisId,
        BatchAxis,
        BioimageioConfig,
        ChannelAxis,
        CiteEntry,
        ClipDescr,
        ClipKwargs,
        Config,
        Doi,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        LicenseId,
        ModelDescr,
        OnnxWeightsDescr,
        OutputTensorDescr,
        ParameterizedSize,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxis,
        TensorId,
        TrainingDetails,
        WeightsDescr,
    )

    norm = card.normalization
    if norm.high <= 1.0:
        raise ExportError(
            f"the upper normalisation percentile {norm.high:g} cannot be written as a bioimage.io "
            "scale_range (it needs max_percentile > 1); retrain with --norm-percentiles LOW HIGH, HIGH > 1"
        )
    m = int(card.size_multiple)
    image_id, prob_id = TensorId(INPUT_NAME), TensorId(OUTPUT_NAME)
    preprocessing = [
        ScaleRangeDescr(
            kwargs=ScaleRangeKwargs(
                axes=[AxisId("y"), AxisId("x")],
                min_percentile=norm.low,
                max_percentile=norm.high,
                eps=SCALE_RANGE_EPS,
            )
        )
    ]
    if norm.clip:
        preprocessing.append(ClipDescr(kwargs=ClipKwargs(min=0.0, max=1.0)))
    image = InputTensorDescr(
        id=image_id,
        description="gray image, any range; y and x multiples of the size step",
        axes=[
            BatchAxis(),
            ChannelAxis(channel_names=[Identifier("gray")]),
            SpaceInputAxis(id=AxisId("y"), size=ParameterizedSize(min=m, step=m)),
            SpaceInputAxis(id=AxisId("x"), size=ParameterizedSize(min=m, step=m)),
        ],
        test_tensor=FileDescr(source=files["test_input"]),
        sample_tensor=FileDescr(source=files["sample_input"]),
        data=IntervalOrRatioDataDescr(type="float32"),
        preprocessing=preprocessing,
    )
    prob = OutputTensorDescr(
        id=prob_id,
        description=f"probability of region 1; mask: >= {card.threshold:g}, polarity: see README"[:128],
        axes=[
            BatchAxis(),
            ChannelAxis(channel_names=[Identifier("region1")]),
            SpaceOutputAxis(id=AxisId("y"), size=SizeReference(tensor_id=image_id, axis_id=AxisId("y"))),
            SpaceOutputAxis(id=AxisId("x"), size=SizeReference(tensor_id=image_id, axis_id=AxisId("x"))),
        ],
        test_tensor=FileDescr(source=files["test_output"]),
        sample_tensor=FileDescr(source=files["sample_output"]),
        data=IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    tags = ["unsupervised", "chan-vese", "binary-segmentation", "semantic-segmentation", "2d", "onnx"]
    if card.arch == "unet":
        tags.append("unet")
    training = TrainingDetails(
        training_preprocessing=(
            f"per-image percentile normalisation ({norm.low:g}, {norm.high:g}); augmentation "
            f"{train.get('augment', '?')}; extra input noise {train.get('input_noise', '?')} x range"
        ),
        training_epochs=epochs,
        training_batch_size=train.get("batch_size"),
        initial_learning_rate=train.get("lr"),
        learning_rate_schedule=train.get("schedule"),
        loss_function="Chan-Vese energy: two-region fidelity + alpha * total variation (no labels)",
        loss_function_kwargs={"alpha": train.get("alpha")},
        optimizer=train.get("optimizer"),
        optimizer_kwargs={"weight_decay": train.get("weight_decay")},
    )
    config = Config(
        bioimageio=BioimageioConfig(
            architecture_type=f"{card.arch} width {card.width}",
            architecture_description=(
                "encoder-decoder CNN ending in a sigmoid; input height and width multiples of "
                f"{card.size_multiple}"
            ),
            task="binary semantic segmentation",
            model_parameter_count=n_parameters,
            training=training,
        ),
        unsupseg={"model_card": card.to_dict(), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME},
    )
    return ModelDescr(
        name=name,
        description=(
            "Unsupervised binary segmentation of 2-D gray images trained without labels by minimising "
            f"a Chan-Vese energy (unsupseg). Output: probability of region 1; mask at >= "
            f"{card.threshold:g}; which region is the object is chosen per image (see README)."
        ),
        authors=[Author(name=a) for a in authors],
        cite=[CiteEntry(text=text, doi=Doi(doi)) for text, doi in CITATIONS],
        license=LicenseId("MIT"),
        tags=tags,
        documentation=FileDescr(source=files["readme"]),
        covers=[FileDescr(source=files["cover"])],
        inputs=[image],
        outputs=[prob],
        weights=WeightsDescr(
            onnx=OnnxWeightsDescr(
                source=files["onnx"],
                opset_version=opset,
                comment=f"exported by unsupseg {__version__} (torch.onnx, dynamo), checked against torch",
            )
        ),
        config=config,
    )


# ----------------------------------------------------------------------------- test
def run_bioimageio_test(path: Path, devices: tuple[str, ...] | None = (ONNX_DEVICE,)):
    """Run bioimageio.core's test of a package: format validation, reproduction of the test
    outputs, inference at several parameterized sizes. Returns the ValidationSummary."""
    from bioimageio.core import test_description

    return test_description(path, devices=None if devices is None else list(devices))


def _failures(summary) -> str:
    lines = []
    for detail in summary.details:
        if detail.status != "passed":
            lines.append(f"{detail.name}: " + "; ".join(e.msg for e in detail.errors)[:600])
    return "\n".join(lines) or summary.format()


# ----------------------------------------------------------------------------- entry point
def export_bioimageio(
    ckpt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    overwrite: bool = False,
    opset: int = OPSET,
    verify: bool = True,
    test_image: str | os.PathLike | None = None,
    authors: tuple[str, ...] = ("unsupseg",),
    name: str | None = None,
    log: Callable[[str], None] = print,
) -> PackageReport:
    """Export model.pt as a bioimage.io model package (.zip), test it, write it atomically.

    Everything is built in a temporary folder beside ``out_path`` and the zip is renamed
    into place only after bioimageio.core's test passed (``verify``); on any error
    nothing is left behind.
    """
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise ExportError(f"{out_path.parent}: output folder does not exist; create it first")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path}: exists; pass --overwrite to replace it")
    _require_bioimageio()
    from unsupseg.infer.api import apply_polarity
    from unsupseg.infer.session import OnnxSession
    from unsupseg.train.checkpoint import load_model

    model, card, ckpt = load_model(ckpt_path)  # typed errors for files that are not ours
    n_parameters = sum(int(p.numel()) for p in model.parameters())
    train = dict(ckpt.get("train_config") or {})
    epochs = ckpt.get("epoch")
    name = name or f"unsupseg {card.arch} width {card.width}"
    image = default_test_image() if test_image is None else load_test_image(test_image, card.size_multiple)

    work = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
    try:
        files = {k: work / v for k, v in _FILE_NAMES.items()}
        # export_onnx's own "wrote" line would name the temporary folder; its checks are kept
        onnx_log = lambda m: None if m.startswith("wrote ") else log(m)  # noqa: E731
        report = export_onnx(ckpt_path, files["onnx"], opset=opset, verify=verify, log=onnx_log)
        card = report.card  # with package version and checkpoint hash
        opset = _onnx_opset(files["onnx"])

        # test tensors: seginfer's normalisation and onnxruntime session
        norm = card.normalization(image)
        prob = OnnxSession(files["onnx"], device="cpu").run(norm[None, None])
        np.save(files["test_input"], image[None, None])
        np.save(files["test_output"], prob)
        _write_tiff(files["sample_input"], image)
        _write_tiff(files["sample_output"], prob[0, 0])
        mask, _ = apply_polarity(norm, prob[0, 0], card.threshold, card.polarity)
        _cover(norm, mask, files["cover"])
        files["readme"].write_text(readme_text(card, train, epochs, opset, name), encoding="utf-8")

        from bioimageio.spec import save_bioimageio_package

        tmp_zip = work / "package.zip"
        try:  # pydantic's ValidationError is a ValueError, and so is an invalid written package
            descr = build_description(card, train, epochs, files, opset, name, authors, n_parameters)
            save_bioimageio_package(descr, output_path=tmp_zip)
        except ValueError as e:
            raise ExportError(
                f"{out_path}: the bioimage.io description is not valid ({e}); nothing was written"
            ) from e
        status = "skipped"
        if verify:
            summary = run_bioimageio_test(tmp_zip)
            status = summary.status
            if status != "passed":
                raise ExportError(
                    f"{out_path}: bioimageio.core's test of the package did not pass ({status}); "
                    f"nothing was written:\n{_failures(summary)}"
                )
            log(f"  bioimageio.core test: {status} (format {descr.format_version}, test outputs reproduced)")
        os.replace(tmp_zip, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = out_path.stat().st_size
    log(f"wrote {out_path} ({size / 1e6:.2f} MB, bioimage.io model format {descr.format_version})")
    return PackageReport(out_path, card, size, report.max_abs_diff, status, descr.format_version)


_FILE_NAMES = {
    "onnx": "weights.onnx",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "sample_input": "sample_input.tif",
    "sample_output": "sample_output.tif",
    "cover": "cover.png",
    "readme": "README.md",
}


def _write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, np.asarray(array, dtype=np.float32), photometric="minisblack")


def _onnx_opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))
