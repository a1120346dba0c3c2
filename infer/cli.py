"""``seginfer``: segment a folder of images with an unsupseg ONNX model.

A thin layer over ``unsupseg.infer.api.Segmenter`` and ``unsupseg.infer.pipeline``:
parse and check the arguments, run, print a short report. Exit codes (DESIGN.md):
0 all inputs written, 1 some inputs failed (the rest were written), 2 usage error.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from unsupseg import __version__
from unsupseg.infer.api import DEFAULT_BATCH_SIZE
from unsupseg.infer.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE


def _shard(ctx, param, value):
    if value is None:
        return None
    from unsupseg.infer.pipeline import parse_shard

    try:
        return parse_shard(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def _device(ctx, param, value):
    from unsupseg.infer.session import parse_device

    try:
        parse_device(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None
    return value


def _suffix(shard):
    return "" if shard is None else f"-shard-{shard[0]}-of-{shard[1]}"


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
    callback=_device,
    metavar="auto|cpu|cuda[:N]",
    help="auto: CUDA if it works, else CPU. cuda when it cannot run is an error naming the cause.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="CPU threads for onnxruntime.  [default: all cores]"
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
    type=click.Choice(["bright", "dark", "model"]),
    help="Which region is foreground, per image: the brighter or darker one (mean intensity inside "
    "vs outside the prediction), or the model's output as is.  [default: from the model metadata, "
    "usually bright]",
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
@click.option("--overwrite", is_flag=True, help="Replace existing masks.")
@click.option(
    "--skip-existing", is_flag=True, help="Keep existing masks and process only the rest (resume a run)."
)
@click.option(
    "--shard",
    callback=_shard,
    metavar="I/N",
    help="Process the I-th of N deterministic slices of the inputs (1/N .. N/N); "
    "run files get a -shard-I-of-N suffix.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help='Run here, or on a Ray cluster with a pool of onnxruntime actors (pip install "unsupseg[ray]"); '
    "--output must then be on a file system all Ray nodes share.",
)
@click.option(
    "--ray-address",
    metavar="ADDRESS",
    help="Ray cluster to join with --engine ray (e.g. auto, ray://head:10001).  "
    "[default: a local Ray started for the run]",
)
@click.option(
    "--ray-actors",
    type=click.IntRange(min=1),
    help="Actors (onnxruntime sessions) with --engine ray; each uses --threads CPUs (default 1) or "
    "one GPU with --device cuda.  [default: fill the cluster]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no table; errors only.")
@click.option("--verbose", "-v", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="seginfer")
def main(
    input_path,
    output,
    model,
    masks,
    recursive,
    device,
    threads,
    batch_size,
    tile_size,
    tile_overlap,
    threshold,
    foreground,
    fmt,
    save_prob,
    overwrite,
    skip_existing,
    shard,
    engine,
    ray_address,
    ray_actors,
    quiet,
    verbose,
):
    """Segment images into foreground and background with an unsupseg ONNX model.

    Reads PNG, JPEG, BMP and TIFF (8/16-bit, float32, multi-page). Colour is converted
    to gray with the BT.709 luma weights (0.2125 R + 0.7154 G + 0.0721 B; alpha ignored);
    each image is normalised as the model card says, padded to the model's size multiple
    (cropped back after) or run in overlapping tiles when large. Writes one 0/255 mask
    per input at the same relative path under --output, summary.json (always) and a run
    manifest seginfer.json.

    Exit codes: 0 all written, 1 some inputs failed (named on stderr and in summary.json;
    the rest were written), 2 usage error.
    """
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="seginfer: %(message)s",
        stream=sys.stderr,
    )
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing exclude each other; pick one")
    if tile_overlap * 2 >= tile_size:
        raise click.BadParameter(
            f"must be less than half of --tile-size ({tile_size})", param_hint="--tile-overlap"
        )
    if engine != "ray" and (ray_address or ray_actors):
        raise click.UsageError("--ray-address and --ray-actors need --engine ray")
    if engine == "ray":
        from unsupseg.infer.ray_engine import RayEngineError, require_ray

        try:
            require_ray()
        except RayEngineError as e:
            raise click.UsageError(str(e)) from None

    from unsupseg.core.errors import DeviceError, ModelFileError, OutputExistsError
    from unsupseg.infer import pipeline
    from unsupseg.infer.api import Segmenter
    from unsupseg.infer.report import Report

    # Inputs and outputs first: cheap checks before the model loads.
    try:
        items = pipeline.plan(pipeline.gather_inputs(input_path, recursive), output, shard)
        if not overwrite and not skip_existing:
            pipeline.check_overwrite(items, fmt, save_prob)
    except (pipeline.InputError, OutputExistsError) as e:
        raise click.UsageError(str(e)) from None
    segmenter_kwargs = dict(
        model=model,
        device=device,
        threads=threads,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        batch_size=batch_size,
        threshold=threshold,
        foreground=foreground,
    )
    try:
        # With --engine ray the GPUs are on the workers: the driver checks the model on the CPU.
        local_device = "cpu" if engine == "ray" else device
        segmenter = Segmenter(**{**segmenter_kwargs, "device": local_device})
    except DeviceError as e:
        raise click.BadParameter(str(e), param_hint="--device") from None
    except ModelFileError as e:
        raise click.BadParameter(str(e), param_hint="--model") from None
    if not quiet:
        reason = segmenter.session.fallback_reason
        why = f" (CUDA not used: {reason})" if reason else ""
        where = (
            f"Ray actors, --device {device}"
            if engine == "ray"
            else f"{segmenter.provider} on {segmenter.device}{why}"
        )
        click.echo(f"seginfer: {where}, {len(items)} images", err=True)

    output.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(shard)
    manifest_path = output / f"seginfer{suffix}.json"
    manifest = _manifest(click.get_current_context().params, segmenter, len(items))
    _write_json(manifest_path, manifest)

    # per-case rows go to a hidden temporary file beside the summary (removed when the run
    # ends, however it ends): memory stays flat in the number of inputs
    from unsupseg.core.imageio import temp_path_beside

    with Report(n_images=len(items), spool=temp_path_beside(output / f"summary{suffix}.json")) as report:
        options = pipeline.RunOptions(fmt=fmt, save_prob=save_prob, skip_existing=skip_existing, masks=masks)
        start = time.perf_counter()
        with _progress(len(items), quiet) as bar:

            def on_done(src, error):
                if error is not None:
                    where = "" if error.startswith(str(src)) else f"{src}: "
                    bar.write(f"seginfer: failed: {where}{error}", file=sys.stderr)
                bar.update(1)
                if report.failed:
                    bar.set_postfix(failed=report.n_failed, refresh=False)

            if engine == "ray":
                from unsupseg.infer import ray_engine

                try:
                    ray_engine.run(items, options, segmenter_kwargs, report, ray_address, ray_actors, on_done)
                except ray_engine.RayEngineError as e:
                    raise click.ClickException(str(e)) from None
            else:
                pipeline.run(segmenter, items, options, report, lambda item, err: on_done(item.src, err))
        elapsed = time.perf_counter() - start

        report.write(output / f"summary{suffix}.json", output / f"report{suffix}.csv" if masks else None)
        manifest.update(
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            seconds=round(elapsed, 3),
            images_per_second=round(report.n_written / elapsed, 2) if elapsed > 0 else None,
            n_written=report.n_written,
            n_failed=report.n_failed,
        )
        _write_json(manifest_path, manifest)
        if not quiet:
            click.echo(report.table())
        if report.failed:
            click.echo(
                f"seginfer: {report.n_failed} input(s) failed; see {output / f'summary{suffix}.json'}",
                err=True,
            )
            sys.exit(1)


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=quiet, file=sys.stderr, dynamic_ncols=True, desc="seginfer")


def _write_json(path: Path, data: dict) -> None:
    from unsupseg.core.imageio import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def _manifest(params: dict, segmenter, n_images: int) -> dict:
    import platform
    from importlib import metadata

    versions = {}
    for pkg in (
        "unsupseg",
        "onnxruntime-gpu",
        "onnxruntime",
        "numpy",
        "tifffile",
        "imageio",
        "pillow",
        "click",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "command": sys.argv,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()},
        "model": {"path": str(segmenter.model_path), "card": segmenter.card.to_dict()},
        "threshold": segmenter.threshold,
        "foreground": segmenter.foreground,
        "provider": segmenter.provider,
        "device": segmenter.device,
        "cuda_not_used": segmenter.session.fallback_reason,
        "threads": segmenter.session.threads,
        "n_images": n_images,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


if __name__ == "__main__":
    main()
