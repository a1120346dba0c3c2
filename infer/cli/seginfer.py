"""``seginfer``: segment a folder of images with an unsupseg ONNX model.

A thin layer over ``unsupseg.infer.run.run_folder``: parse and check the arguments,
run, print a short report. Exit codes (exits.py): 0 all inputs written, 1 some
inputs failed (the rest were written), 2 usage error, 3 the run stopped because of
its output (disk full, read-only, folder removed, permission denied).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from unsupseg import __version__
from unsupseg.core.imageio import PILLOW_MAX_PIXELS
from unsupseg.infer.cli.console import Progress, resume_command, stop_message
from unsupseg.infer.cli.exits import exit_codes, exit_if_failed
from unsupseg.infer.cli.options import (
    device_option,
    engine_choice,
    engine_options,
    object_options,
    run_options,
    shard_option,
)
from unsupseg.infer.errors import RunStopped
from unsupseg.infer.model.segmenter import DEFAULT_BATCH_SIZE
from unsupseg.infer.model.tiles import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from unsupseg.infer.run import run_folder


# main is long only by its option list: the body builds RunOptions, calls run_folder and reports.
@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: seginfer --input images/ --output masks/ --masks truth/ --device cuda",
)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A folder of images, one image, or a .txt file listing image paths (one per line).",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the masks (same relative paths as the inputs), summary.json and seginfer.json.",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ONNX file written by segexport.  [default: the packaged model]",
)
@click.option(
    "--masks",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Ground-truth masks (matched by relative path or stem, any format, nonzero = foreground): "
    "adds report.csv and IoU/Dice to summary.json.",
)
@click.option("--recursive", "-r", is_flag=True, help="Include images in sub-folders of --input.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    callback=device_option,
    metavar="auto|cpu|cuda[:N]",
    help="auto: CUDA if it works, else CPU. cuda when it cannot run is an error naming the cause.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="onnxruntime's CPU threads per session: per worker process with --engine processes, for the "
    "one session with --engine local.  [default: 1 per worker process; all cores in one process]",
)
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images (or tiles) of one padded shape per onnxruntime call.",
)
@click.option(
    "--tile-size",
    default=DEFAULT_TILE_SIZE,
    show_default=True,
    type=click.IntRange(min=8),
    help="Images with a side above this run in overlapping tiles (bounded memory).",
)
@click.option(
    "--tile-overlap",
    default=DEFAULT_OVERLAP,
    show_default=True,
    type=click.IntRange(min=0),
    help="Overlap of neighbouring tiles in pixels; blended with linear ramps.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Probability threshold.  [default: from the model metadata, usually 0.5]",
)
@click.option(
    "--foreground",
    type=click.Choice(["auto", "border", "minority", "bright", "dark", "model"]),
    help="Which of the two regions is foreground, per image. auto: the one that touches the image "
    "border less and covers less of the image (their mean share), right for bright and dark objects; "
    "border or minority: one of the two alone; bright/dark: the higher/lower mean intensity; model: "
    "the network's output as is.  [default: from the model metadata, auto for new models]",
)
@click.option(
    "--adapt",
    is_flag=True,
    help="First adapt the model to the input folder without labels (a sample of 32 inputs), write it "
    "as OUTPUT/adapted.onnx (reusable with --model), then segment every input with it. The best masks "
    'on a new kind of image. Needs torch (pip install "unsupseg[train]").',
)
@click.option(
    "--adapt-only",
    is_flag=True,
    help="With --adapt: write OUTPUT/adapted.onnx and stop (then e.g. --model OUTPUT/adapted.onnx "
    "--shard I/N in several jobs).",
)
@click.option(
    "--adapt-seconds",
    type=click.FloatRange(min=1.0),
    help="With --adapt: the adaptation's deadline in seconds; the network is trained only when this "
    "leaves it at least 5 s after the rest (sampling, the structure step's decision, the choice among "
    "snapshots; the sampling and the decision may take longer than a short deadline).  "
    "[default: a quarter of the run with it (a third of the time segmenting takes), 10 to 60 s]",
)
@click.option(
    "--structure",
    type=click.Choice(["auto", "none", "objects", "membranes", "photo"]),
    help="What the images show, which turns the network's two-region split into the mask: objects "
    "(compact objects such as nuclei: a level per object between its background and its peak), "
    "membranes (thin dark boundaries between cells, as in electron microscopy), photo (one object in "
    "a photograph), none (the network's mask as it is); auto decides for the folder from a sample of "
    "16 inputs and records why in seginfer.json.  [default: from the model metadata, auto for the "
    "packaged model]",
)
@click.option(
    "--min-size",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Drop foreground objects (4-connected) with fewer pixels than this; 0 keeps every object.",
)
@click.option(
    "--fill-holes",
    is_flag=True,
    help="Fill background regions enclosed by foreground (holes in objects).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "tif"]),
    default="png",
    show_default=True,
    help="Mask format, 0/255 uint8. Multi-page inputs always give multi-page TIFF.",
)
@click.option(
    "--save-prob", is_flag=True, help="Also write the foreground probability as float32 NAME_prob.tif."
)
@click.option(
    "--overlays",
    is_flag=True,
    help="Also write NAME_overlay.png: the input in gray with the mask outlined in orange and, with "
    "--masks, the ground truth in sky blue.",
)
@click.option(
    "--html",
    is_flag=True,
    help="Also write report.html (opens offline): the run, the summary, an IoU histogram, failures and "
    "thumbnails of the worst, a random sample and the failed inputs (previews in report_files/).",
)
@object_options
@click.option(
    "--max-megapixels",
    default=PILLOW_MAX_PIXELS / 1e6,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Refuse images with more megapixels per page, from the file's header before anything is "
    "allocated (a guard against decompression bombs; the default is Pillow's limit). Raise it to "
    "process a real image that large: it runs in tiles.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing masks.")
@click.option(
    "--skip-existing", is_flag=True, help="Keep existing masks and process only the rest (resume a run)."
)
@click.option(
    "--shard",
    callback=shard_option,
    metavar="I/N",
    help="Process the I-th of N deterministic slices of the inputs (1/N .. N/N); "
    "run files get a -shard-I-of-N suffix.",
)
@engine_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no table; errors only.")
@click.option("--verbose", "-v", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="seginfer")
def main(**params):
    """Segment images into foreground and background with an unsupseg ONNX model.

    Reads PNG, JPEG, BMP and TIFF (8/16-bit, float32, multi-page). Colour is converted
    to gray with the BT.709 luma weights (0.2125 R + 0.7154 G + 0.0721 B; alpha ignored);
    each image is normalised as the model card says, padded to the model's size multiple
    (cropped back after) or run in overlapping tiles when large. Writes one 0/255 mask
    per input at the same relative path under --output, summary.json (always) and a run
    manifest seginfer.json; with --html a report.html to look at the results in a browser.

    Objects: --labels writes label images and objects.csv, --rois ImageJ ROIs; instance
    label images in --masks add instance metrics (F1, AP, PQ) to summary.json.

    Exit codes: 0 all written, 1 some inputs failed (named on stderr and in summary.json;
    the rest were written), 2 usage error (or another run of the same run files into
    --output is on), 3 stopped because of the output (file system full or read-only,
    folder removed, permission denied): the message says how many masks were written
    (none is partial) and gives the command that resumes with --skip-existing.
    """
    verbose, quiet = params["verbose"], params["quiet"]
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="seginfer: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:  # tifffile's notes on odd files; a file it cannot read is named by our own message
        logging.getLogger("tifffile").setLevel(logging.ERROR)
    ctx = click.get_current_context()
    progress = Progress(quiet, params["device"])
    with exit_codes((RunStopped,), lambda e: stop_message(e, resume_command(ctx))):
        options = run_options(params)
        engine = engine_choice(params)
        _quiet_pillow_bomb_warning()
        if params["adapt_only"] and not params["adapt"]:
            raise click.BadParameter("needs --adapt", param_hint="--adapt-only")
        if params["adapt_seconds"] is not None and not params["adapt"]:
            raise click.BadParameter("needs --adapt", param_hint="--adapt-seconds")
        if params["adapt"]:
            options = _adapted(params, options, quiet)
            if params["adapt_only"]:
                progress.close()
                return
        try:
            result = run_folder(params["input_path"], params["output"], options, engine, progress, ctx.params)
        finally:
            progress.close()
    if not quiet:
        click.echo(result.summary_text)
        warning = (result.summary.get("quality") or {}).get("warning")
        if warning:  # the folder's median score is low (infer/quality.py); also in the manifest
            click.echo(f"seginfer: warning: {warning}", err=True)
        if result.page is not None:
            click.echo(f"seginfer: wrote {result.page.path} ({result.page.seconds:.1f} s)", err=True)
    exit_if_failed("seginfer", result.n_failed, result.files.summary)


def _adapted(params: dict, options, quiet: bool):
    """--adapt: the run's options with the model adapted to the folder (cli/adapt.py)."""
    from dataclasses import replace

    from unsupseg.infer.cli.adapt import adapt_first, check_adapt

    check_adapt(params)

    def log(message: str) -> None:
        if not quiet:
            click.echo(f"seginfer: {message}", err=True)

    seconds = params["adapt_seconds"]
    options, record = adapt_first(params["input_path"], params["output"], options, log, seconds)
    return replace(options, adaptation=record)


def _quiet_pillow_bomb_warning() -> None:
    """Pillow warns about images above its limit; seginfer refuses them itself (--max-megapixels),
    naming the file and the way out, so Pillow's warning would only repeat it without either."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


if __name__ == "__main__":
    main()
