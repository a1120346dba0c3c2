"""Structure steps: what turns the network's two-region split into the mask of one kind of image.

A two-region network splits an image by intensity; on real images that is not the object a
user means. A structure step takes one page as read, the network's foreground probability
(after the foreground rule) and a folder-level context, and returns the page's mask, using what
is known about that kind of image:

- ``objects``: many compact objects on a background (fluorescence nuclei, cells, particles):
  per-object levels between the local background and the object's peak (objects.py);
- ``membranes``: a network of thin dark boundaries between cells (electron microscopy of
  tissue): boundaries kept by their contrast, at the thickness the image shows (membranes.py);
- ``photo``: one object in a photograph: saliency from the border, then GrabCut (photo.py);
- ``none``: the network's mask as it is (the generated shapes the packaged network was trained on).

Every step is torch-free (numpy, SciPy, scikit-image), deterministic, and sees one page at a
time; its ``folder_context`` (JSON-serialisable: it is stored in the model card) carries what is
measured once over a sample of the folder (e.g. the objects' typical size and polarity).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np

from unsupseg.core.structure import membranes, objects, photo

# name -> step module; each has folder_context(pages, probs) -> dict and
# segment(page, prob, context) -> mask. A new step is one module and one line here.
STEPS: dict[str, ModuleType] = {
    "objects": objects,
    "membranes": membranes,
    "photo": photo,
}
STRUCTURES = ("none", *STEPS)  # a model card's structure, besides "auto"


def folder_context(
    name: str, pages: Sequence[np.ndarray], probs: Sequence[np.ndarray | None] | None = None
) -> dict:
    """Step ``name``'s context measured on a sample of a folder's pages (JSON-serialisable;
    ``{}`` for ``"none"``). ``probs``: the network's foreground probability of each page, or None."""
    step = _step(name)
    return {} if step is None else step.folder_context(pages, probs)


def apply(
    name: str, page: np.ndarray, mask: np.ndarray, prob: np.ndarray | None = None, context: dict | None = None
) -> np.ndarray:
    """The mask of one 2-D page (as read) by step ``name``: ``mask``, the network's mask, for
    ``"none"``; otherwise the step's own mask from the page, ``prob`` (the network's foreground
    probability) and ``context`` (from ``folder_context``)."""
    step = _step(name)
    return mask if step is None else step.segment(page, prob, context)


def _step(name: str) -> ModuleType | None:
    """The step module of ``name`` (None for ``"none"``); ValueError naming the choices."""
    if name not in STRUCTURES:
        raise ValueError(f"unknown structure {name!r}: choose one of {', '.join(STRUCTURES)}")
    return STEPS.get(name)
