"""Offline build pipeline: YOLOv6 checkpoint -> INT8 Triton model repository.

Import name is ``yolov6_build`` (a package named ``build`` would clash with PyPA ``build``).
This module imports nothing heavy; torch, onnx and friends load lazily where they are used.
"""

__version__ = "0.1.0"
