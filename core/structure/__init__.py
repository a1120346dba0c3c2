"""Structure steps: what turns the network's two-region split into the mask of one kind of image.

A two-region network splits an image by intensity; on real images that is not the object a
user means. A structure step takes one page as read, the network's foreground probability
(after the foreground rule) and a folder-level context, and returns the page's mask, using what
is known about that kind of image:

- ``objects``: many compact objects on a background (fluorescence nuclei, cells, particles):
  per-object levels between the local background and the object's peak (objects.py);
- ``membranes``: a network of thin dark boundaries between cells (electron microscopy of
  tissue): boundaries kept by their contrast, at the thickness the image shows (membranes.py);
- ``photo``: one object in a photograph (photo.py);
- ``none``: the network's mask as it is (the generated shapes the packaged network was trained on).

Every step is torch-free (numpy, SciPy, scikit-image), deterministic, and sees one page at a
time; its ``folder_context`` (JSON-serialisable: it is stored in the model card) carries what is
measured once over a sample of the folder (e.g. the objects' typical size and polarity).
"""

from __future__ import annotations

STRUCTURES = ("none", "objects", "membranes", "photo")  # a model card's structure, besides "auto"
