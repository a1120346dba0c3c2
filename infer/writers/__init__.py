"""Per-image outputs, one writer each. The mask is always written; the others are
chosen by name (``RunOptions.outputs``).

To add an output type: write one module with an ``OutputWriter`` subclass (see
base.py and prob.py) and register it with one line in ``WRITERS`` below.
"""

from unsupseg.infer.writers.base import OutputWriter, Segmentation
from unsupseg.infer.writers.labels import LabelsWriter
from unsupseg.infer.writers.mask import MaskWriter
from unsupseg.infer.writers.overlay import OverlayWriter
from unsupseg.infer.writers.prob import ProbWriter
from unsupseg.infer.writers.rois import RoisWriter

# output name -> writer class (the mask writer is always there and is not listed)
WRITERS: dict[str, type[OutputWriter]] = {
    ProbWriter.name: ProbWriter,
    OverlayWriter.name: OverlayWriter,
    LabelsWriter.name: LabelsWriter,
    RoisWriter.name: RoisWriter,
}

__all__ = [
    "WRITERS",
    "LabelsWriter",
    "MaskWriter",
    "OutputWriter",
    "OverlayWriter",
    "ProbWriter",
    "RoisWriter",
    "Segmentation",
]
