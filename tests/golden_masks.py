"""Golden masks of the packaged model: what ``seginfer`` (no --model, CPU) writes for a few real
images, kept in tests/golden/packaged_masks.npz so that a change of the packaged model or of the
path from file to mask is seen (tests/test_golden.py).

Regenerate (after a change that is meant to change masks; say why in the commit message):

    make golden            # or: .venv/bin/python tests/golden_masks.py

The file holds only our output: each mask bit-packed (np.packbits) and compressed, its shape, and
how many of its pixels lie within ``NEAR`` of the threshold (those may flip between CPUs or
onnxruntime builds, so the test allows that many to differ). The images themselves stay where
they are: ../shared/realdata (never copied into the repository) and stardist's wheel.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realimages import SHARED_REAL, have_shared, stardist_data  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "packaged_masks.npz"
REGENERATE = "make golden (.venv/bin/python tests/golden_masks.py)"
# |p - threshold| below this may flip across CPUs: 7x the largest torch/onnxruntime difference
# measured on these images (1.5e-5, tests/test_parity_shipped.py)
NEAR = 1e-4

# name -> (source, crop (y0, y1, x0, x1) or None); "shared/..." is ../shared/realdata, "stardist/..."
# stardist's data/images
CASES = {
    "nuclei-0114f484": ("shared/nuclei/images/0114f484a16c152b.png", None),
    "nuclei-1747f621": ("shared/nuclei/images/1747f62148a919c8.png", None),
    "horse005": ("shared/horse/images/horse005.png", None),
    "horse097": ("shared/horse/images/horse097.png", None),
    "em00-crop": ("shared/em/images/em_00.png", (128, 384, 64, 448)),
    "stardist-img2d": ("stardist/img2d.tif", None),
}


def available() -> list[str]:
    """The cases whose images are here: all of them with ../shared/realdata, else stardist's."""
    return [n for n, (src, _) in CASES.items() if have_shared() or src.startswith("stardist/")]


def _source(src: str) -> Path:
    kind, rest = src.split("/", 1)
    return (SHARED_REAL if kind == "shared" else stardist_data()) / rest


def model_sha256() -> str:
    """sha256 of the packaged default.onnx (the model seginfer runs without --model)."""
    from unsupseg.infer import Segmenter

    return hashlib.sha256(Segmenter(device="cpu", threads=1).model_path.read_bytes()).hexdigest()


def segment(names: list[str], work: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (mask bool, foreground probability)} as seginfer writes them for the named cases:
    ``run_folder`` (the function seginfer calls) with the packaged model on the CPU."""
    import tifffile

    from unsupseg.core.imageio import read_mask, read_pages
    from unsupseg.infer import RunOptions, SegmenterConfig, run_folder

    inputs = work / "in"
    inputs.mkdir(parents=True)
    for name in names:
        src, crop = CASES[name]
        path = _source(src)
        if crop is None:
            (inputs / f"{name}{path.suffix}").symlink_to(path.resolve())
        else:
            import imageio.v3 as iio

            y0, y1, x0, x1 = crop
            iio.imwrite(inputs / f"{name}.png", read_pages(path)[0][y0:y1, x0:x1])
    options = RunOptions(segmenter=SegmenterConfig(device="cpu", threads=2), outputs=("prob",))
    result = run_folder(inputs, work / "out", options)
    assert result.n_failed == 0, result.summary
    return {
        n: (read_mask(work / "out" / f"{n}.png")[0], tifffile.imread(work / "out" / f"{n}_prob.tif"))
        for n in names
    }


def main() -> None:
    if not have_shared():
        sys.exit(f"golden_masks: {SHARED_REAL} is missing; the golden masks are made from all the cases")
    names = list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        got = segment(names, Path(tmp))
    arrays, meta = {}, {"model_sha256": model_sha256(), "near": NEAR, "cases": {}}
    from unsupseg.infer import Segmenter

    threshold = Segmenter(device="cpu", threads=1).threshold
    for name, (mask, prob) in got.items():
        arrays[name] = np.packbits(mask)
        # distance of the *foreground* probability from the threshold: the same for either polarity
        near = int(np.count_nonzero(np.abs(prob - threshold) < NEAR))
        meta["cases"][name] = {"shape": list(mask.shape), "near": near, "foreground": float(mask.mean())}
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, meta=np.array(json.dumps(meta, indent=1)), **arrays)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes): {', '.join(names)}")


if __name__ == "__main__":
    main()
