"""`segexport`: checkpoint -> one self-contained, verified ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from unsupseg import __version__

EXAMPLE = """
Example:

    segexport runs/default/model.pt model.onnx

    segexport runs/default/model.pt model-int8.onnx --int8 --calibration images/
"""


@click.command(
    epilog=EXAMPLE, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--opset", type=click.IntRange(min=18), default=18, show_default=True, help="ONNX opset.")
@click.option("--no-verify", is_flag=True, help="Skip the torch/onnxruntime comparison (not recommended).")
@click.option("--int8", is_flag=True, help="Also quantise to int8 (static QDQ); needs --calibration.")
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Images for int8 calibration: a folder of images or an .npz (image_train is used).",
)
@click.version_option(__version__, prog_name="segexport")
def main(checkpoint, output, overwrite, opset, no_verify, int8, calibration):
    """Export a segtrain CHECKPOINT (model.pt) to OUTPUT (.onnx).

    The file has dynamic batch, height and width (multiples of 8), carries the
    normalisation, threshold and polarity rule in its metadata, and is checked
    against torch with onnxruntime on the CPU before it is written.
    """
    from unsupseg.core.errors import UnsupsegError

    if not checkpoint.exists():
        raise click.BadParameter(f"{checkpoint}: no such file", param_hint="CHECKPOINT")
    if int8 and calibration is None:
        raise click.BadParameter(
            "--int8 needs --calibration DATA (a folder of images or an .npz)", param_hint="--calibration"
        )
    if output.suffix.lower() != ".onnx":
        raise click.BadParameter(f"{output}: the output should end in .onnx", param_hint="OUTPUT")
    from unsupseg.export.export import export_onnx

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        if int8:
            from unsupseg.export.quantize import export_int8

            export_int8(checkpoint, output, calibration, overwrite=overwrite, opset=opset, log=log)
        else:
            export_onnx(checkpoint, output, overwrite=overwrite, opset=opset, verify=not no_verify, log=log)
    except UnsupsegError as e:
        raise click.UsageError(str(e)) from e
    click.echo(str(output))


if __name__ == "__main__":
    main()
