"""``seginfer``'s groups of options and their checks: objects (--labels, --split, --min-distance,
--labels-3d, --rois) and engines (--engine, --workers, --ray-address, --ray-actors)."""

from __future__ import annotations

import click

from unsupseg.core.labels import DEFAULT_MIN_DISTANCE
from unsupseg.infer.engines.registry import RULE

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
        help="Separate touching objects: watershed on the distance transform (for --labels, --rois and "
        "instance ground truth).",
    ),
    click.option(
        "--min-distance",
        type=click.IntRange(min=1),
        metavar="PIXELS",
        help="With --split: the least distance between two objects' centres.  "
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


def labeling_options(labels, rois, masks, split, min_distance, labels_3d) -> dict:
    """The ``SegmenterConfig`` fields of the labelling; a usage error when nothing would use them."""
    if (split or min_distance is not None or labels_3d) and not (labels or rois or masks):
        raise click.UsageError(
            "--split, --min-distance and --labels-3d shape instance labels; add --labels, --rois or "
            "--masks with instance ground truth"
        )
    if min_distance is not None and not split:
        raise click.BadParameter("needs --split", param_hint="--min-distance")
    return {"split": split, "min_distance": min_distance or DEFAULT_MIN_DISTANCE, "labels_3d": labels_3d}


_ENGINE_OPTIONS = [
    click.option(
        "--engine",
        type=click.Choice(["auto", "local", "processes", "ray"]),
        default="auto",
        show_default=True,
        help=f"Where the images are segmented. local: one process, one onnxruntime session, reader and "
        "writer threads. processes: worker processes, each with its own session of --threads threads, "
        "reading, segmenting and writing its share (with --device cuda the main process runs the one GPU "
        f'session and the workers feed it). ray: a Ray cluster (pip install "unsupseg[ray]"; --output '
        f"on a file system all nodes share). {RULE}",
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


def make_engine(name: str, workers: int | None, ray_address: str | None, ray_actors: int | None):
    """The engine the options name; None for auto (``run_folder`` chooses, ``engines/registry.py``).
    A usage error when an option does not fit the engine or the engine's package is missing."""
    if name != "ray" and (ray_address or ray_actors):
        raise click.UsageError("--ray-address and --ray-actors need --engine ray")
    if workers is not None and name not in ("auto", "processes"):
        raise click.UsageError(f"--workers needs --engine processes (or auto), not --engine {name}")
    if name == "local":
        from unsupseg.infer.engines.local import LocalEngine

        return LocalEngine()
    if name == "processes" or workers is not None:
        from unsupseg.infer.engines.processes import ProcessEngine

        return ProcessEngine(workers)
    if name == "auto":
        return None
    from unsupseg.infer.engines.ray import RayEngine, require_ray

    require_ray()  # EngineChoiceError: a usage error
    return RayEngine(ray_address, ray_actors)
