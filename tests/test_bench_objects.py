"""bench/objects.py: the accuracy part on stardist's nuclei (the packaged model), and its table."""

from __future__ import annotations

import pytest

from bench.objects import _stardist_labels, accuracy, classical, markdown


@pytest.mark.slow
def test_split_beats_connected_components_on_real_nuclei():
    """The issue's target: F1 at IoU 0.5 with --split >= 10 points above plain components."""
    from unsupseg.infer import Segmenter

    image, truth = _stardist_labels()
    mask = Segmenter(device="cpu").predict(image)[0]
    result = accuracy({"packaged": mask}, image, truth)
    rows = result["rows"]
    plain, split = (
        rows["packaged, connected components"]["f1"],
        next(v["f1"] for k, v in rows.items() if k.startswith("packaged, --split")),
    )
    print(f"F1 at IoU 0.5: components {plain:.3f}, --split {split:.3f}")
    assert split >= plain + 0.10
    classical_f1 = rows["scikit-image: blur + Otsu + distance watershed"]["f1"]
    assert 0.3 < classical_f1 < 1.0  # the baseline ran and matched objects
    assert classical(image, True).max() > classical(image, False).max()  # its watershed split objects
    table = markdown(
        {
            "accuracy": result,
            "speed": {
                "n_images": 1,
                "repeats": 1,
                "seconds_per_image": {"plain": 0.1},
                "ratio_to_plain": {"plain": 1},
            },
            "tiles": {
                "tile": 256,
                "overlap": 64,
                "mask_pixels_differing": 0,
                "labels_identical": True,
                "objects": [1, 1],
                "f1_tiled_vs_whole": 1.0,
            },
        }
    )
    assert f"| packaged, connected components | {plain:.3f} |" in table
