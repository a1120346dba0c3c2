"""bench/objects.py: the accuracy part on stardist's nuclei (the packaged model), the split methods
on the nuclei parts, and their tables."""

from __future__ import annotations

import numpy as np
import pytest

from bench.objects import _stardist_labels, accuracy, classical, markdown, pooled, split_methods


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
        rows["packaged, --split (scaled)"]["f1"],
    )
    print(f"F1 at IoU 0.5: components {plain:.3f}, --split {split:.3f}")
    assert split >= plain + 0.10
    classical_f1 = rows["scikit-image: blur + Otsu + distance watershed"]["f1"]
    assert 0.3 < classical_f1 < 1.0  # the baseline ran and matched objects
    assert classical(image, True).max() > classical(image, False).max()  # its watershed split objects
    table = markdown(
        {
            "split_methods": {},
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


def test_pooled_scores_of_one_image_are_stardists():
    """Pooled over one image, the part scores are instance_metrics' own; over two images, objects
    are counted together (F1 from the summed TP, FP, FN)."""
    from scipy import ndimage

    from unsupseg.core.instance import instance_metrics, overlaps
    from unsupseg.core.labels import label_mask

    rng = np.random.default_rng(0)
    truth = label_mask(ndimage.binary_opening(rng.random((80, 80)) > 0.45))
    pred = label_mask(np.roll(truth > 0, 2, axis=1), split=True)
    one, m = pooled([overlaps(truth, pred)]), instance_metrics(truth, pred)
    for ours, theirs in (("f1", "f1"), ("ap50", "ap50"), ("ap50_95", "ap50_95"), ("pq", "panoptic_quality")):
        assert one[ours] == pytest.approx(m[theirs])
    two = pooled([overlaps(truth, pred), overlaps(truth, truth)])
    tp = m["n_true_objects"] * m["recall"] + truth.max()
    assert two["f1"] == pytest.approx(2 * tp / (m["n_true_objects"] + m["n_pred_objects"] + 2 * truth.max()))


@pytest.mark.slow
def test_split_methods_on_a_labelled_part(tmp_path):
    """The split-method table of a part (stardist's image): every method scored, the split ahead
    of connected components, and the ground-truth mask ahead of unsupseg's."""
    from realimages import stardist_data

    data = stardist_data()
    result = split_methods(tmp_path, None, {"check": [(data / "img2d.tif", data / "mask2d.tif")]})
    part = result["check"]
    rows = part["rows"]
    assert part["images"] == 1 and part["true_objects"] == len(np.unique(_stardist_labels()[1])) - 1
    split = rows["unsupseg mask, scaled (--split, the default)"]
    assert split["f1"] > rows["unsupseg mask, connected components (--labels)"]["f1"] + 0.1
    assert rows["ground-truth mask, scaled (--split, the default)"]["f1"] > split["f1"]
    assert 0 < split["pq"] <= split["f1"] and split["ap50_95"] < split["ap50"] < split["f1"]
