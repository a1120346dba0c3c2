"""`segtrain`: train the unsupervised segmenter and write a run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from unsupseg import __version__

EXAMPLE = """
Example:

    segtrain --out runs/default                    # built-in data, default preset

    segtrain --data images/ --out runs/mine        # adapt the packaged model to a folder (no labels)

    segtrain --data images/ --masks gt/ --out runs/cells --epochs 40

    torchrun --nproc_per_node 4 -m unsupseg.train.cli --data images/ --out runs/big
                                                   # DDP: one process per GPU
"""


@click.command(
    epilog=EXAMPLE, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Training data: an .npz with image_train/mask_train/image_test/mask_test, or a folder "
    "of unlabeled images (PNG, JPEG, BMP, TIFF; any size). Default: the built-in generator.",
)
@click.option(
    "--masks",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of ground-truth masks for --data DIR, used only to report IoU.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=Path("runs/default"),
    show_default=True,
    help="Run folder for model.pt, metrics and plots.",
)
@click.option(
    "--preset",
    type=click.Choice(["default", "seed", "adapt"]),
    default=None,
    help="default: train from scratch (the project's recipe); seed: the notebook's network and "
    "hyper-parameters; adapt: fine-tune the packaged model to --data DIR without labels and choose "
    "the snapshot by a label-free criterion (train/adapt.py).  [default: adapt for --data DIR "
    "when no training option is given, else default]",
)
@click.option(
    "--structure",
    type=click.Choice(["auto", "none", "objects", "membranes", "photo"]),
    default=None,
    help="With the adapt preset: the structure step of the adapted model (core/structure/): auto "
    "decides it on the folder; none makes the network write the masks (it is then fine-tuned); "
    "objects, membranes or photo use that step.  [default: auto]",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Epochs (preset value if not given)."
)
@click.option("--arch", type=click.Choice(["unet", "seed"]), default=None, help="Network family.")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Channels of the first block.")
@click.option(
    "--context/--no-context", default=None, help="unet: add image-wide context features (default on)."
)
@click.option("--alpha", type=click.FloatRange(min=0), default=None, help="Weight of total variation.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None, help="Optimiser.")
@click.option(
    "--augment",
    type=click.Choice(["default", "seed", "none"]),
    default=None,
    help="default: flips and 90-degree rotations; seed: the notebook's flips/rotation.",
)
@click.option("--crop", type=click.IntRange(min=8), default=None, help="Random crop side for --data DIR.")
@click.option(
    "--samples-per-epoch",
    type=click.IntRange(min=1),
    default=None,
    help="Random crops per epoch for --data DIR.",
)
@click.option(
    "--eval-images",
    type=click.IntRange(min=1),
    default=None,
    help="Whole images of --data DIR evaluated each epoch, spread over the folder (default 100).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes reading --data DIR images while training (default 0: the training process reads).",
)
@click.option(
    "--cache-mb",
    type=click.FloatRange(min=0),
    default=None,
    help="Memory for decoded --data DIR images, over all workers (default 1024). The folder itself "
    "streams from disk, so memory stays flat however many files it holds.",
)
@click.option(
    "--norm-percentiles",
    nargs=2,
    type=click.FloatRange(0, 100),
    default=None,
    metavar="LOW HIGH",
    help="Per-image normalisation: these percentiles map to 0 and 1 (default 1 99). Lower HIGH "
    "(e.g. 95) when a few very bright objects would otherwise squash the rest.",
)
@click.option(
    "--init-from",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Start from the weights of this model.pt (fine-tuning); its architecture and width are used.",
)
@click.option("--seed", type=int, default=None, help="Random seed (data generator, init, shuffling).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="CPU threads for torch (0 = all cores).",
)
@click.option("--overwrite", is_flag=True, help="Replace the files of an existing run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option(
    "--save-data",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the built-in data set to this .npz (notebook format) and exit.",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.version_option(__version__, prog_name="segtrain")
# Long because each option is a parameter and passes on to make_config; the steps are few:
# --save-data, usage checks, run_training, report.
def main(
    data,
    masks,
    out,
    preset,
    structure,
    epochs,
    arch,
    width,
    context,
    alpha,
    lr,
    batch_size,
    optimizer,
    augment,
    crop,
    samples_per_epoch,
    eval_images,
    workers,
    cache_mb,
    norm_percentiles,
    init_from,
    seed,
    device,
    threads,
    overwrite,
    resume,
    save_data,
    no_plots,
    quiet,
):
    """Train a segmenter without labels by minimising a Chan-Vese energy.

    Writes OUT/model.pt, OUT/metrics.csv, OUT/metrics.json and OUT/plots/*.png.
    Masks, where given, are used only to report IoU.
    """
    # Long only by its parameter list (one per option, as click passes them); the work is in
    # _adapt and _train.

    if save_data is not None:
        from unsupseg.core.data import builtin_splits, save_npz

        save_npz(save_data, builtin_splits(seed or 0))
        click.echo(f"wrote {save_data}")
        return
    if data is not None and not data.exists():
        raise click.BadParameter(f"{data}: no such file or folder", param_hint="--data")
    if masks is not None and data is None:
        raise click.BadParameter(
            "--masks needs --data DIR (the built-in data has its own masks)", param_hint="--masks"
        )
    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")

    shaping = dict(
        epochs=epochs, arch=arch, width=width, context=context, alpha=alpha, lr=lr, batch_size=batch_size,
        optimizer=optimizer, augment=augment, crop=crop, samples_per_epoch=samples_per_epoch,
        eval_images=eval_images, workers=workers, cache_mb=cache_mb, norm_percentiles=norm_percentiles,
    )  # fmt: skip
    if preset is None:
        given = any(v is not None for v in shaping.values())
        preset = "adapt" if data is not None and data.is_dir() and not given and not resume else "default"
    if preset == "adapt":
        adapt = dict(structure=structure or "auto", seed=seed or 0, device=device, threads=threads)
        _adapt(data, masks, out, shaping, init_from, adapt, overwrite, resume, no_plots)
        return
    if structure is not None:
        raise click.BadParameter(
            "applies to the adapt preset (segtrain --data DIR)", param_hint="--structure"
        )

    _train(
        preset,
        data,
        masks,
        out,
        shaping,
        init_from,
        seed,
        device,
        threads,
        overwrite,
        resume,
        quiet,
        no_plots,
    )


def _train(
    preset, data, masks, out, shaping, init_from, seed, device, threads, overwrite, resume, quiet, no_plots
):
    """Training from scratch (or from --init-from) with the preset and the options given."""
    from unsupseg.core.errors import UnsupsegError
    from unsupseg.train.config import make_config
    from unsupseg.train.loop import run_training

    options = dict(shaping)
    norm = options.pop("norm_percentiles")
    try:
        cfg = make_config(
            preset,
            data=None if data is None else str(data),
            masks=None if masks is None else str(masks),
            out=str(out),
            seed=seed,
            init_from=None if init_from is None else str(init_from),
            norm_low=None if norm is None else norm[0],
            norm_high=None if norm is None else norm[1],
            device=device,
            threads=threads,
            **options,
        )
        result = run_training(
            cfg,
            overwrite=overwrite,
            resume=resume,
            log=lambda m: click.echo(m, err=True),
            progress=not quiet,
            plots=not no_plots,
            resume_epochs=shaping["epochs"],
        )
    except (UnsupsegError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    if result.interrupted:
        sys.exit(130)
    fin = result.final
    if fin.get("train_iou") is not None:
        click.echo(f"final train IoU: {fin['train_iou']:.2f}")
    if fin.get("test_iou") is not None:
        click.echo(f"final test IoU: {fin['test_iou']:.2f}")


def _adapt(data, masks, out, shaping, init_from, adapt: dict, overwrite, resume, no_plots) -> None:
    """--preset adapt: train/adapt_run.py with its own settings (options that shape training do not apply)."""
    from unsupseg.core.errors import UnsupsegError

    if data is None or not data.is_dir():
        raise click.UsageError("--preset adapt needs --data DIR, a folder of images to adapt to")
    given = [k.replace("_", "-") for k, v in shaping.items() if v is not None]
    if given or resume:
        what = ", ".join(f"--{k}" for k in given + (["resume"] if resume else []))
        raise click.UsageError(
            f"{what} does not apply to --preset adapt (it has its own settings, train/adapt.py); "
            "leave it out, or pass --preset default to train from scratch"
        )
    from unsupseg.train.adapt import AdaptConfig
    from unsupseg.train.adapt_run import run_adaptation

    cfg = AdaptConfig(
        data=str(data),
        out=str(out),
        masks=None if masks is None else str(masks),
        start=None if init_from is None else str(init_from),
        **adapt,
    )
    try:
        summary = run_adaptation(cfg, overwrite, log=lambda m: click.echo(m, err=True), plots=not no_plots)
    except (UnsupsegError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    except KeyboardInterrupt:
        click.echo("segtrain: interrupted; the adaptation wrote no model (run it again)", err=True)
        sys.exit(130)
    fin = summary["final"]
    for key, name in (("train_iou", "train"), ("test_iou", "test (held aside)")):
        if fin.get(key) is not None:
            click.echo(f"final {name} IoU: {fin[key]:.2f}")


if __name__ == "__main__":
    main()
