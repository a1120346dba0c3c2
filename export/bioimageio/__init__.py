"""Checkpoint -> bioimage.io model package (``segexport MODEL.pt OUT.zip --bioimageio``).

``export_bioimageio`` (package.py) is the entry point; the names below are the public ones.
"""

from unsupseg.export.bioimageio.package import (
    CITATIONS,
    COVER_PANEL,
    EXTRA_HINT,
    MAX_TEST_SIZE,
    ONNX_DEVICE,
    SCALE_RANGE_EPS,
    TEST_SIZE,
    PackageReport,
    build_description,
    default_test_image,
    export_bioimageio,
    load_test_image,
    readme_text,
    run_bioimageio_test,
)

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
