"""The model: everything between a raw image and its mask, and the packaged network (default.onnx).

``Segmenter`` (segmenter.py) normalises, pads or tiles, batches and thresholds; it runs the
network through the onnxruntime session (session.py), the batching scheduler (scheduler.py),
large pages tile by tile (tiles.py) and the mask's clean-up (postprocess.py).
"""
