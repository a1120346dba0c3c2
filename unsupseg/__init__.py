"""unsupseg: unsupervised binary image segmentation.

A small convolutional network learns to split each image into two regions by
minimising a Chan-Vese energy; no labels are needed. The stages live in
sub-packages: ``unsupseg.core`` (no torch), ``unsupseg.train`` (torch),
``unsupseg.export`` (torch + onnx) and ``unsupseg.infer`` (onnxruntime, no torch).
"""

__version__ = "0.1.0"
