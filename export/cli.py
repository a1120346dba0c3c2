"""`segexport`: checkpoint -> one self-contained, verified ONNX file, or a bioimage.io model package."""

from __future__ import annotations

from pathlib import Path

import click

from unsupseg import __version__

EXAMPLE = """
Example:

    segexport runs/default/model.pt model.onnx

    segexport runs/default/model.pt model-int8.onnx --int8 --calibration images/

    segexport runs/default/model.pt model.bioimageio.zip --bioimageio
"""


@click.command(
    epilog=EXAMPLE, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--opset", type=click.IntRange(min=18), default=18, show_default=True, help="ONNX opset.")
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the torch/onnxruntime comparison, and with --bioimageio bioimageio.core's test of the "
    "package (not recommended).",
)
@click.option("--int8", is_flag=True, help="Also quantise to int8 (static QDQ); needs --calibration.")
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Images for int8 calibration: a folder of images or an .npz (image_train is used).",
)
@click.option(
    "--bioimageio",
    is_flag=True,
    help="Write a bioimage.io model package (.zip: ONNX weights, rdf.yaml, test tensors, cover, README) "
    "for deepImageJ, ilastik, QuPath, napari and bioimageio.core, tested with bioimageio.core before it "
    "is kept. Needs the extra: pip install 'unsupseg[bioimageio]'.",
)
@click.option(
    "--test-image",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="--bioimageio: the image for the package's test tensors and cover (default: a generated one); "
    "centre-cropped to a multiple of 8, at most 512x512.",
)
@click.option(
    "--author",
    "authors",
    multiple=True,
    help="--bioimageio: an author of the model (repeat for several).  [default: unsupseg]",
)
@click.version_option(__version__, prog_name="segexport")
def main(checkpoint, output, overwrite, opset, no_verify, int8, calibration, bioimageio, test_image, authors):
    """Export a segtrain CHECKPOINT (model.pt) to OUTPUT (.onnx), or with --bioimageio
    to a bioimage.io model package (.zip).

    The ONNX file has dynamic batch, height and width (multiples of 8), carries the
    normalisation, threshold and polarity rule in its metadata, and is checked
    against torch with onnxruntime on the CPU before it is written. The package holds
    that file and its bioimage.io description (format 0.5); check it with
    `bioimageio test OUTPUT`.
    """
    from unsupseg.core.errors import UnsupsegError

    if not checkpoint.exists():
        raise click.BadParameter(f"{checkpoint}: no such file", param_hint="CHECKPOINT")
    if int8 and calibration is None:
        raise click.BadParameter(
            "--int8 needs --calibration DATA (a folder of images or an .npz)", param_hint="--calibration"
        )
    if bioimageio and int8:
        raise click.BadParameter(
            "--bioimageio packages the float32 model; export --int8 separately", param_hint="--int8"
        )
    if not bioimageio and (test_image is not None or authors):
        raise click.BadParameter("--test-image and --author go with --bioimageio", param_hint="--bioimageio")
    suffix = output.suffix.lower()
    if bioimageio and suffix != ".zip":
        raise click.BadParameter(f"{output}: a bioimage.io package should end in .zip", param_hint="OUTPUT")
    if not bioimageio and suffix == ".zip":
        raise click.BadParameter(
            f"{output}: add --bioimageio to write a bioimage.io package, or name an .onnx output",
            param_hint="OUTPUT",
        )
    if not bioimageio and suffix != ".onnx":
        raise click.BadParameter(f"{output}: the output should end in .onnx", param_hint="OUTPUT")
    from unsupseg.export.export import export_onnx

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        if bioimageio:
            from unsupseg.export.bioimageio import export_bioimageio

            export_bioimageio(
                checkpoint,
                output,
                overwrite=overwrite,
                opset=opset,
                verify=not no_verify,
                test_image=test_image,
                authors=authors or ("unsupseg",),
                log=log,
            )
        elif int8:
            from unsupseg.export.quantize import export_int8

            export_int8(checkpoint, output, calibration, overwrite=overwrite, opset=opset, log=log)
        else:
            export_onnx(checkpoint, output, overwrite=overwrite, opset=opset, verify=not no_verify, log=log)
    except UnsupsegError as e:
        raise click.UsageError(str(e)) from e
    click.echo(str(output))


if __name__ == "__main__":
    main()
