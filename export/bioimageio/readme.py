"""The package's README.md: the template ``readme.md`` beside this file, filled with ``string.Template``.

The template holds the prose; this module computes its ``$placeholders`` from the model card and
the checkpoint's training configuration (``?`` where the checkpoint does not record a setting).
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from unsupseg import __version__
from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard
from unsupseg.export.bioimageio.citations import citation_text

TEMPLATE = Path(__file__).with_name("readme.md")  # package data (pyproject's package-data)
# training settings the README quotes as recorded in the checkpoint's train_config
TRAIN_KEYS = ("preset", "batch_size", "optimizer", "lr", "schedule", "augment", "input_noise", "alpha")
POLARITY_TEXT = {  # seginfer's --foreground rules (core/polarity.py), as the README states them
    "auto": "the region that touches the image border less and covers less of the image is the "
    "object: with b the share of border pixels (first and last rows and columns) and a the share "
    "of all pixels in the thresholded region, the region is the object when (a + b) / 2 < 1/2, "
    "else its complement is.",
    "border": "the region with the smaller share of the image border is the object.",
    "minority": "the region with fewer pixels is the object.",
    "bright": "the region with the higher mean intensity is the object.",
    "dark": "the region with the lower mean intensity is the object.",
    "model": "the network's region 1 is the object, as it is.",
}


def readme_text(card: ModelCard, train: dict, epochs: int | None, opset: int, name: str) -> str:
    """The package's documentation (README.md): what the model does, how it was trained, its figures."""
    norm = card.normalization
    trained_on, held_out = _training_data(train)
    values = {key: train.get(key, "?") for key in TRAIN_KEYS}
    values.update(
        name=name,
        version=card.package_version or __version__,
        arch=card.arch,
        width=card.width,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        multiple=card.size_multiple,
        low=_ordinal(norm.low),
        high=_ordinal(norm.high),
        clip=", clipped to [0, 1] (`clip`)" if norm.clip else "",
        threshold=f"{card.threshold:g}",
        rule=card.polarity,
        polarity_rule=POLARITY_TEXT[card.polarity],
        trained_on=trained_on,
        held_out=held_out,
        epochs="?" if epochs is None else epochs,
        opset=opset,
        checkpoint_sha256=card.checkpoint_sha256 or "?",
        test_iou=_percent(card.test_iou),
        train_iou=_percent(card.train_iou),
        citations=citation_text(),
    )
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)


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


def _percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f}%"


def _ordinal(x: float) -> str:
    """99 -> "99th", 1 -> "1st", 0.5 -> "0.5th"."""
    if x != int(x):
        return f"{x:g}th"
    n = int(x)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
