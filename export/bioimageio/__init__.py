"""Checkpoint -> bioimage.io model package (``segexport MODEL.pt OUT.zip --bioimageio``).

``export_bioimageio`` (package.py) builds and tests the package; the parts it is made of:

    description.py  rdf.yaml: the bioimageio.spec ModelDescr (tensors, axes, pre-processing, weights, config)
    tensors.py      the test image, test tensors (.npy) and sample tensors (.tif)
    cover.py        cover.png: the test image and its mask
    readme.py       README.md: readme.md (a string.Template) filled from the model card
    citations.py    the papers cited

Why the package looks as it does (probability output, polarity, offline): docs/architecture.md.
"""

from unsupseg.export.bioimageio.citations import CITATIONS
from unsupseg.export.bioimageio.cover import COVER_PANEL
from unsupseg.export.bioimageio.description import SCALE_RANGE_EPS, build_description
from unsupseg.export.bioimageio.package import (
    EXTRA_HINT,
    ONNX_DEVICE,
    PackageReport,
    export_bioimageio,
    run_bioimageio_test,
)
from unsupseg.export.bioimageio.readme import readme_text
from unsupseg.export.bioimageio.tensors import MAX_TEST_SIZE, TEST_SIZE, default_test_image, load_test_image

__all__ = [
    "CITATIONS",
    "COVER_PANEL",
    "EXTRA_HINT",
    "MAX_TEST_SIZE",
    "ONNX_DEVICE",
    "SCALE_RANGE_EPS",
    "TEST_SIZE",
    "PackageReport",
    "build_description",
    "default_test_image",
    "export_bioimageio",
    "load_test_image",
    "readme_text",
    "run_bioimageio_test",
]
