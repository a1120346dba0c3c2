"""Golden masks of the packaged model on real images (tests/golden_masks.py makes them): a change of
infer/model/default.onnx or of the path from file to mask (reading, normalisation, padding,
the network, the foreground rule, the mask writer) shows here, and the commit that makes it has to
regenerate the file and say why."""

from __future__ import annotations

import json

import numpy as np
import pytest
from golden_masks import GOLDEN, REGENERATE, available, model_sha256, segment


@pytest.fixture(scope="module")
def golden():
    assert GOLDEN.is_file(), f"{GOLDEN} is missing; make it with {REGENERATE}"
    with np.load(GOLDEN) as z:
        meta = json.loads(str(z["meta"]))
        return meta, {name: z[name] for name in meta["cases"]}


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    return segment(available(), tmp_path_factory.mktemp("golden"))


def test_the_golden_file_covers_every_case(golden):
    from golden_masks import CASES

    meta, _ = golden
    assert sorted(meta["cases"]) == sorted(CASES), f"the golden file is stale; regenerate with {REGENERATE}"


@pytest.mark.parametrize("name", available())
def test_the_packaged_model_writes_the_golden_mask(golden, segmented, name):
    meta, packed = golden
    case = meta["cases"][name]
    mask = segmented[name][0]
    assert list(mask.shape) == case["shape"], (mask.shape, case["shape"])
    want = np.unpackbits(packed[name], count=int(np.prod(case["shape"]))).reshape(case["shape"]).astype(bool)
    differ = int(np.count_nonzero(mask != want))
    near = f"{case['near']} within {meta['near']} of the threshold"
    print(f"{name}: {differ} pixels differ from the golden mask ({near})")
    model = "the same file as" if model_sha256() == meta["model_sha256"] else "another file than"
    assert differ <= case["near"], (
        f"{name}: the packaged model's mask changed on {differ} of {mask.size} pixels "
        f"(foreground {mask.mean():.3f}, golden {case['foreground']:.3f}; at most {case['near']} pixels lie "
        f"within {meta['near']} of the threshold and may flip between CPUs). default.onnx is "
        f"{model} when the golden masks were made. If the "
        f"change is intended, regenerate them with {REGENERATE} and say in the commit message what changed "
        "and why."
    )
