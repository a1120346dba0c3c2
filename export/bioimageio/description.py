"""The rdf.yaml: a ``bioimageio.spec`` ModelDescr (format 0.5) built from the model card and its files.

One function per part of the description: input and output tensors with their axes, the
pre-processing, the weights, the config with the training details, the tags.
bioimageio.spec is an optional extra, imported inside the functions that use it.
"""

from __future__ import annotations

from pathlib import Path

from unsupseg import __version__
from unsupseg.core.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard
from unsupseg.core.normalize import Normalization
from unsupseg.export.bioimageio.citations import CITATIONS
from unsupseg.export.export import ExportError

SCALE_RANGE_EPS = 1e-6  # the spec's default epsilon in (x - lo) / (hi - lo + eps)


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
    from bioimageio.spec.model.v0_5 import Author, CiteEntry, Doi, FileDescr, LicenseId, ModelDescr

    _check_normalization(card.normalization)
    inputs = [_input_tensor(card, files)]
    outputs = [_output_tensor(card, files)]
    tags = _tags(card)
    config = _config(card, train, epochs, n_parameters)
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
        inputs=inputs,
        outputs=outputs,
        weights=_weights(files["onnx"], opset),
        config=config,
    )


def _check_normalization(norm: Normalization) -> None:
    if norm.high <= 1.0:
        raise ExportError(
            f"the upper normalisation percentile {norm.high:g} cannot be written as a bioimage.io "
            "scale_range (it needs max_percentile > 1); retrain with --norm-percentiles LOW HIGH, HIGH > 1"
        )


def _input_tensor(card: ModelCard, files: dict[str, Path]):
    """``image``: (batch, channel = 1, y, x); y and x are ``m + n * m`` for the size multiple m."""
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        ParameterizedSize,
        SpaceInputAxis,
        TensorId,
    )

    m = int(card.size_multiple)
    preprocessing = _preprocessing(card.normalization)
    return InputTensorDescr(
        id=TensorId(INPUT_NAME),
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


def _preprocessing(norm: Normalization) -> list:
    """The model card's normalisation: a per-image percentile ``scale_range`` over (y, x), then ``clip``."""
    from bioimageio.spec.model.v0_5 import AxisId, ClipDescr, ClipKwargs, ScaleRangeDescr, ScaleRangeKwargs

    steps = [
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
        steps.append(ClipDescr(kwargs=ClipKwargs(min=0.0, max=1.0)))
    return steps


def _output_tensor(card: ModelCard, files: dict[str, Path]):
    """``prob``: the input's axes, y and x sized by reference to the input; no post-processing."""
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        FileDescr,
        Identifier,
        IntervalOrRatioDataDescr,
        OutputTensorDescr,
        SizeReference,
        SpaceOutputAxis,
        TensorId,
    )

    image_id = TensorId(INPUT_NAME)
    return OutputTensorDescr(
        id=TensorId(OUTPUT_NAME),
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


def _tags(card: ModelCard) -> list[str]:
    tags = ["unsupervised", "chan-vese", "binary-segmentation", "semantic-segmentation", "2d", "onnx"]
    if card.arch == "unet":
        tags.append("unet")
    return tags


def _weights(onnx_path: Path, opset: int):
    from bioimageio.spec.model.v0_5 import OnnxWeightsDescr, WeightsDescr

    return WeightsDescr(
        onnx=OnnxWeightsDescr(
            source=onnx_path,
            opset_version=opset,
            comment=f"exported by unsupseg {__version__} (torch.onnx, dynamo), checked against torch",
        )
    )


def _config(card: ModelCard, train: dict, epochs: int | None, n_parameters: int | None):
    """``config.bioimageio`` (architecture, task, training) and ``config.unsupseg`` (the model card)."""
    from bioimageio.spec.model.v0_5 import BioimageioConfig, Config

    training = _training(card.normalization, train, epochs)
    return Config(
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


def _training(norm: Normalization, train: dict, epochs: int | None):
    """The training details as the checkpoint's train_config records them (None where it does not)."""
    from bioimageio.spec.model.v0_5 import TrainingDetails

    return TrainingDetails(
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
