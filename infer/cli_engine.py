"""``seginfer``'s engine options (--engine, --workers, --ray-address, --ray-actors), and their engine."""

from __future__ import annotations

import click

from unsupseg.infer.choice import RULE

_OPTIONS = [
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
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def make_engine(name: str, workers: int | None, ray_address: str | None, ray_actors: int | None):
    """The engine the options name; None for auto (``run_folder`` chooses, ``choice.py``).
    A usage error when an option does not fit the engine or the engine's package is missing."""
    if name != "ray" and (ray_address or ray_actors):
        raise click.UsageError("--ray-address and --ray-actors need --engine ray")
    if workers is not None and name not in ("auto", "processes"):
        raise click.UsageError(f"--workers needs --engine processes (or auto), not --engine {name}")
    if name == "local":
        from unsupseg.infer.engine import LocalEngine

        return LocalEngine()
    if name == "processes" or workers is not None:
        from unsupseg.infer.process_engine import ProcessEngine

        return ProcessEngine(workers)
    if name == "auto":
        return None
    from unsupseg.infer.ray_engine import RayEngine, RayEngineError, require_ray

    try:
        require_ray()
    except RayEngineError as e:
        raise click.UsageError(str(e)) from None
    return RayEngine(ray_address, ray_actors)
