"""Checkpoint -> bioimage.io model package (``segexport MODEL.pt OUT.zip --bioimageio``).

``export_bioimageio`` (package.py) is the entry point; the names below are the public ones.
"""

from unsupseg.export.bioimageio.citations import CITATIONS
from unsupseg.export.bioimageio.description import SCALE_RANGE_EPS, build_description
from unsupseg.export.bioimageio.package import (
    COVER_PANEL,
    EXTRA_HINT,
    MAX_TEST_SIZE,
    ONNX_DEVICE,
    TEST_SIZE,
    PackageReport,
    default_test_image,
    export_bioimageio,
    load_test_image,
    run_bioimageio_test,
)
from unsupseg.export.bioimageio.readme import readme_text

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
