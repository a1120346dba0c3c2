"""Which structure step fits a folder, decided without labels from a sample of its pages.

Each sampled page votes for one kind, from a few measurements (``page_evidence``):

- **membranes** when the dark class of a blur + Li threshold is a thin network that encloses
  many cells: it covers less than half of the page, its largest connected piece holds most of
  it, it encloses more than ``MEMBRANE_HOLES`` background regions per megapixel, its median width
  (twice the distance to its edge along its skeleton) is at most ``MEMBRANE_WIDTH`` pixels, and
  the texture is even over the page (``texture_cv`` below ``EVEN_TEXTURE``);
- **objects** when the objects step finds at least ``MIN_OBJECTS`` objects of at least 20 pixels
  whose median solidity is at least ``MIN_SOLIDITY`` (compact, convex objects: nuclei, cells);
- **photo** when the grey levels spread widely (histogram entropy at least ``PHOTO_ENTROPY`` bits
  over 64 bins), the texture changes over the page (``texture_cv`` at least ``PHOTO_TEXTURE``) and
  the objects found are not compact (median solidity below ``MIN_SOLIDITY``);
- **none** otherwise (e.g. the generated shapes the packaged network was trained on: their
  noise is even over the page and they hold one to three objects).

The folder's kind is the one at least half of the pages vote for, else "none" (the network's
masks as they are: a step is used only when the sample agrees on it). Pages are cut to their
central ``WINDOW`` x ``WINDOW`` pixels, so the decision costs about the same for any image size
(about 0.1-0.2 s per page on one core).

The thresholds were set on the tune parts of the real sets (fluorescence nuclei, EM membranes,
horse photographs), on extra nuclei sets (GOWT1, HeLa, NIH3T3), an extra EM set (Drosophila VNC)
and photographs (DAVIS frames), and on the generated held-out sets and the demo sample, all of
which they separate with a margin (docs/model-selection.md gives each set's measurements).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from unsupseg.core.normalize import stretch
from unsupseg.core.padding import central_window
from unsupseg.core.structure.rule import Structure

WINDOW = 512  # pages are measured on their central window of this side
MEMBRANE_HOLES = 200.0  # enclosed background regions per megapixel: EM 233-546; nuclei 16-335, photos 0-303
MEMBRANE_WIDTH = 12.0  # median width of the dark network, px: EM 8-10; photos 6-54, nuclei 19-151
MEMBRANE_DARK = 0.5  # the dark class's share of the page: EM 0.35-0.43; nuclei 0.56-0.97
MEMBRANE_CONNECTED = 0.8  # the share of the dark class in its largest piece: EM 0.84-0.97
EVEN_TEXTURE = 0.2  # coefficient of variation of the local std over an 8x8 grid: EM 0.09-0.16,
# generated shapes 0.01-0.20; photos 0.20-0.77 (0.28-0.70 horses)
PHOTO_TEXTURE = 0.25  # ... at least this for a photo vote: clear of the generated shapes' 0.20
MIN_OBJECTS = 5  # objects of >= 20 px for an "objects" vote: nuclei pages 6-306
MIN_SOLIDITY = 0.85  # their median solidity: nuclei 0.88-0.97; horses 0.51-0.80, DAVIS 0.54-0.86
PHOTO_ENTROPY = 5.0  # bits over 64 grey levels: photos 5.1-6.0; fluorescence nuclei 1.6-5.5


@dataclass
class Detection:
    structure: Structure  # the folder's step, with its folder context
    evidence: dict = field(default_factory=dict)  # the votes and the medians of the measurements


def detect_structure(pages: list[np.ndarray], probs: list[np.ndarray | None]) -> Detection:
    """The structure step of a folder from sampled 2-D pages (as read) and the network's foreground
    probability of each (None where not known). Pages that vote for a step also give its context."""
    from unsupseg.core.structure import folder_context

    measured = [page_evidence(page, prob) for page, prob in zip(pages, probs, strict=True)]
    votes = Counter(m["vote"] for m in measured)
    kind, n = votes.most_common(1)[0] if votes else ("none", 0)
    if kind != "none" and n * 2 < len(measured):
        kind = "none"
    chosen = [i for i, m in enumerate(measured) if m["vote"] == kind]
    context = folder_context(kind, [pages[i] for i in chosen], [probs[i] for i in chosen]) if chosen else {}
    keys = [k for k in (measured[0] if measured else {}) if k != "vote"]
    evidence = {
        "pages": len(measured),
        "votes": dict(votes),
        "median": {k: round(float(np.median([m[k] for m in measured])), 4) for k in keys},
    }
    return Detection(Structure(kind, context), evidence)


def page_evidence(page: np.ndarray, prob: np.ndarray | None = None) -> dict:
    """The measurements of one page and its vote (see the module's docstring)."""
    from unsupseg.core.structure import objects

    x = stretch(central_window(np.asarray(page, dtype=np.float32), WINDOW))
    if prob is not None:
        prob = central_window(np.asarray(prob, dtype=np.float32), WINDOW)
    m = {**_texture(x), **_dark_network(x)}
    found = objects.segment(x, prob, None)
    m.update(_compactness(found))
    m["vote"] = _vote(m)
    return m


def _vote(m: dict) -> str:
    if (
        m["texture_cv"] < EVEN_TEXTURE
        and m["dark_share"] < MEMBRANE_DARK
        and m["dark_connected"] > MEMBRANE_CONNECTED
        and m["holes_per_mp"] > MEMBRANE_HOLES
        and m["dark_width"] <= MEMBRANE_WIDTH
    ):
        return "membranes"
    if m["n_objects"] >= MIN_OBJECTS and m["solidity"] >= MIN_SOLIDITY:
        return "objects"
    if m["entropy"] >= PHOTO_ENTROPY and m["texture_cv"] >= PHOTO_TEXTURE and m["solidity"] < MIN_SOLIDITY:
        return "photo"
    return "none"


def _texture(x: np.ndarray) -> dict:
    """Histogram entropy (64 bins) and how the local standard deviation varies over an 8 x 8 grid."""
    from scipy import ndimage as ndi

    hist = np.histogram(x, 64, (0.0, 1.0))[0] / x.size
    hist = hist[hist > 0]
    mean = ndi.gaussian_filter(x, 2.0)
    std = np.sqrt(np.maximum(ndi.gaussian_filter(x * x, 2.0) - mean * mean, 0.0))
    h, w = x.shape
    by, bx = max(1, h // 8), max(1, w // 8)
    blocks = std[: by * (h // by), : bx * (w // bx)].reshape(h // by, by, w // bx, bx).mean(axis=(1, 3))
    return {
        "entropy": float(-(hist * np.log2(hist)).sum()),
        "texture_cv": float(blocks.std() / (blocks.mean() + 1e-9)),
    }


def _dark_network(x: np.ndarray) -> dict:
    """The dark class of a blur (sigma 2) + Li threshold: its share, connectedness, the background
    regions it encloses per megapixel and its median width along its skeleton."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_li
    from skimage.morphology import skeletonize

    b = ndi.gaussian_filter(x, 2.0)
    if float(b.max()) == float(b.min()):
        return {"dark_share": 0.0, "dark_connected": 0.0, "holes_per_mp": 0.0, "dark_width": 0.0}
    dark = b < threshold_li(b)
    lab, k = ndi.label(dark)
    sizes = np.bincount(lab.ravel())[1:] if k else np.zeros(1)
    holes, n_holes = ndi.label(~dark)
    edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    enclosed = n_holes - int(np.count_nonzero(edge))
    skeleton = skeletonize(dark)
    width = 2.0 * float(np.median(ndi.distance_transform_edt(dark)[skeleton])) if skeleton.any() else 0.0
    return {
        "dark_share": float(dark.mean()),
        "dark_connected": float(sizes.max() / max(sizes.sum(), 1)),
        "holes_per_mp": enclosed / x.size * 1e6,
        "dark_width": width,
    }


def _compactness(mask: np.ndarray) -> dict:
    """How many objects of at least 20 pixels, and their median solidity."""
    from skimage.measure import label, regionprops

    regions = [r for r in regionprops(label(mask)) if r.area >= 20]
    solidity = float(np.median([r.solidity for r in regions])) if regions else 0.0
    return {"n_objects": len(regions), "solidity": solidity}
