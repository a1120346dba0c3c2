"""``seginfer --labels --split`` on real nuclei with instance ground truth, as a user runs it.

The folder: the tune part of ../shared/realdata/nuclei (the first 4 names, the part the split's
settings were chosen on; labels/ holds their instance labels), or stardist's annotated image
when that folder is absent (never tuned on). The packaged model, structure auto.

- the default split (scaled) beats plain connected components on F1 at IoU 0.5 by a margin
  (measured on the tune part: 0.812 -> 0.893, mean over images; on stardist's image 0.517 ->
  0.765), and the
  earlier hmaxima and watershed are still there by name;
- splitting relabels the foreground, never shrinks it: the masks of the runs are identical;
- seginfer.json records the method.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from realimages import SHARED_REAL, link_folder, stardist_data

from bench.realsets import TUNE

BIN = Path(sys.executable).parent
MARGIN = 0.05  # F1 points (of 1) the split must add to connected components


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("split_real")
    labels = SHARED_REAL / "nuclei" / "labels"
    if labels.is_dir():
        images = sorted((SHARED_REAL / "nuclei" / "images").glob("*.png"))[: TUNE["nuclei"]]
        truth = [labels / (p.stem + ".tif") for p in images]
    else:
        data = stardist_data()
        images, truth = [data / "img2d.tif"], [data / "mask2d.tif"]
    link_folder(root / "images", images)
    (root / "labels").mkdir()
    for image, t in zip(images, truth, strict=True):
        assert t.is_file(), f"{t}: the instance labels of {image} are missing"
        (root / "labels" / (image.stem + ".tif")).symlink_to(t.resolve())
    return root / "images", root / "labels"


def _run(folder: tuple[Path, Path], out: Path, *flags: str) -> dict:
    images, labels = folder
    cmd = [str(BIN / "seginfer"), "--input", str(images), "--output", str(out), "--masks", str(labels)]
    cmd += ["--labels", "--device", "cpu", "-q", *flags]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_split_beats_connected_components_on_real_nuclei(folder, tmp_path):
    runs = {
        "components": [],
        "scaled": ["--split"],
        "hmaxima": ["--split", "--split-method", "hmaxima"],
        "watershed": ["--split", "--split-method", "watershed"],
    }
    f1, masks = {}, {}
    for name, flags in runs.items():
        out = tmp_path / name
        summary = _run(folder, out, *flags)
        f1[name] = summary["mean"]["f1"]
        manifest = json.loads((out / "seginfer.json").read_text())
        assert manifest["labeling"]["split"] == (None if name == "components" else name)
        masks[name] = {}
        for path in sorted(out.glob("*_labels.tif")):
            labels = tifffile.imread(path)
            mask = iio.imread(path.with_name(path.name.replace("_labels.tif", ".png"))) > 0
            np.testing.assert_array_equal(labels > 0, mask)  # every foreground pixel has an object
            masks[name][path.name] = mask
        assert masks[name], f"{out}: no label images"
    print(f"F1 at IoU 0.5 (mean over images): {f1}")
    assert f1["scaled"] >= f1["components"] + MARGIN, f1
    for name in runs:  # splitting does not change the foreground
        for key, mask in masks[name].items():
            np.testing.assert_array_equal(mask, masks["components"][key])
