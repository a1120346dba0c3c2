"""``seginfer``'s options that need more than click's types: the callbacks that parse --shard and
--device, the groups of options for objects (--labels, --split, --split-method, --min-distance,
--labels-3d, --rois) and engines (--engine, --workers, --ray-address, --ray-actors), and the translation of
the command line into ``RunOptions`` and an ``EngineChoice``, with the usage errors of
combinations that do not fit."""

from __future__ import annotations

import click

from unsupseg.core.labels import DEFAULT_MIN_DISTANCE, DEFAULT_SPLIT_METHOD, SPLIT_METHODS
from unsupseg.infer.engines.registry import AUTO, NAMES, OPTIONS, EngineChoice, engine_help
from unsupseg.infer.inputs import parse_shard
from unsupseg.infer.model.segmenter import SegmenterConfig
from unsupseg.infer.model.session import parse_device
from unsupseg.infer.run import RunOptions

# the extra outputs by writer name, and the flag that asks for each
OUTPUT_FLAGS = ("prob", "save_prob"), ("labels", "labels"), ("rois", "rois"), ("overlay", "overlays")


def shard_option(ctx, param, value):
    """--shard I/N, parsed to (I, N)."""
    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def device_option(ctx, param, value):
    """--device, checked (the run parses it again where it is used)."""
    try:
        parse_device(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None
    return value


_OBJECT_OPTIONS = [
    click.option(
        "--labels",
        is_flag=True,
        help="Also write instance labels NAME_labels.tif (uint16, uint32 above 65,535 objects; 0 = "
        "background; 4-connected components of the mask) and one row per object in objects.csv.",
    ),
    click.option(
        "--split",
        is_flag=True,
        help="Separate touching objects: a watershed on the distance transform, cut where the outline "
        "narrows between two objects (for --labels, --rois and instance ground truth).",
    ),
    click.option(
        "--split-method",
        type=click.Choice(SPLIT_METHODS),
        help="With --split: scaled (markers at the h-maxima of the smoothed distance, smoothing and depth "
        "in proportion to the typical object radius: cuts at necks, not at a large object's ragged "
        "outline), hmaxima (the same in fixed pixels, the earlier default: cuts at every neck, however "
        "close the centres) or watershed (markers at least --min-distance apart).  "
        f"[default: {DEFAULT_SPLIT_METHOD}; watershed when --min-distance is given]",
    ),
    click.option(
        "--min-distance",
        type=click.IntRange(min=1),
        metavar="PIXELS",
        help="With --split-method watershed (implied): the least distance between two objects' centres.  "
        f"[default: {DEFAULT_MIN_DISTANCE}, measured on stardist's nuclei]",
    ),
    click.option(
        "--labels-3d",
        is_flag=True,
        help="Label a multi-page image as one volume (objects span pages); default: page by page.",
    ),
    click.option(
        "--rois", is_flag=True, help="Also write ImageJ ROIs NAME_rois.zip (one polygon per object)."
    ),
]


def object_options(f):
    """Add the object options to a click command (in the order listed)."""
    for option in reversed(_OBJECT_OPTIONS):
        f = option(f)
    return f


_ENGINE_OPTIONS = [
    click.option(
        "--engine",
        type=click.Choice(NAMES),
        default=AUTO,
        show_default=True,
        help=engine_help(),
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="Worker processes (implies --engine processes).  [default: cores / --threads; cores - 1 "
        "with --device cuda]",
    ),
    click.option(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray cluster to join with --engine ray (e.g. auto, ray://head:10001).  "
        "[default: a local Ray started for the run]",
    ),
    click.option(
        "--ray-actors",
        type=click.IntRange(min=1),
        help="Actors (onnxruntime sessions) with --engine ray; each uses --threads CPUs (default 1) or "
        "one GPU with --device cuda.  [default: fill the cluster]",
    ),
]


def engine_options(f):
    """Add the engine options to a click command (in the order listed)."""
    for option in reversed(_ENGINE_OPTIONS):
        f = option(f)
    return f


def run_options(p: dict) -> RunOptions:
    """The run's options from the command line's (usage errors for combinations that do not fit)."""
    if p["tile_overlap"] * 2 >= p["tile_size"]:
        raise click.BadParameter(
            f"must be less than half of --tile-size ({p['tile_size']})", param_hint="--tile-overlap"
        )
    segmenter = SegmenterConfig(
        model=p["model"],
        device=p["device"],
        threads=p["threads"],
        tile_size=p["tile_size"],
        tile_overlap=p["tile_overlap"],
        batch_size=p["batch_size"],
        threshold=p["threshold"],
        foreground=p["foreground"],
        min_size=p["min_size"],
        fill_holes=p["fill_holes"],
        structure=p["structure"],
        **_labeling(
            p["labels"],
            p["rois"],
            p["masks"],
            p["split"],
            p["split_method"],
            p["min_distance"],
            p["labels_3d"],
        ),
    )
    return RunOptions(
        segmenter=segmenter,
        recursive=p["recursive"],
        shard=p["shard"],
        fmt=p["fmt"],
        outputs=tuple(name for name, flag in OUTPUT_FLAGS if p[flag]),
        masks=p["masks"],
        overwrite=p["overwrite"],
        skip_existing=p["skip_existing"],
        max_megapixels=p["max_megapixels"],
        html=p["html"],
    )


def _labeling(labels, rois, masks, split, method, min_distance, labels_3d) -> dict:
    """The ``SegmenterConfig`` fields of the labelling; a usage error when nothing would use them.

    ``--min-distance`` is the watershed method's parameter: given alone with ``--split`` it
    selects that method, so command lines written for it keep their results."""
    if (split or method or min_distance is not None or labels_3d) and not (labels or rois or masks):
        raise click.UsageError(
            "--split, --split-method, --min-distance and --labels-3d shape instance labels; add --labels, "
            "--rois or --masks with instance ground truth"
        )
    for given, flag in ((method, "--split-method"), (min_distance, "--min-distance")):
        if given is not None and not split:
            raise click.BadParameter("needs --split", param_hint=flag)
    if min_distance is not None and method not in (None, "watershed"):
        raise click.BadParameter(
            f"is the watershed method's; --split-method {method} does not use it (drop one of them)",
            param_hint="--min-distance",
        )
    method = method or ("watershed" if min_distance is not None else DEFAULT_SPLIT_METHOD)
    return {
        "split": split,
        "split_method": method,
        "min_distance": min_distance or DEFAULT_MIN_DISTANCE,
        "labels_3d": labels_3d,
    }


def engine_choice(p: dict) -> EngineChoice:
    """The engine the command line asks for (an EngineChoiceError, a usage error, when its options
    do not fit it or its package is missing)."""
    return EngineChoice(p["engine"], {option: p[option] for option in OPTIONS})
