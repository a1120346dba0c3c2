"""``seginfer``'s object options (--labels, --split, --min-distance, --labels-3d, --rois) and their checks."""

from __future__ import annotations

import click

from unsupseg.core.labels import DEFAULT_MIN_DISTANCE

_OPTIONS = [
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
    for option in reversed(_OPTIONS):
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
