"""The CPU detector runtimes: one ONNX graph (FP32 or the bundle's Q/DQ INT8), run by OpenVINO or ONNX Runtime.

Both take letterboxed images float32 [B, 3, H, W] and return the candidate outputs
(boxes [B, K, 4], scores [B, K], classes int32 [B, K]). OpenVINO compiles the Q/DQ graph to its
INT8 kernels as it is; ONNX Runtime gets the graph rewritten by ``quantize.ort_qdq`` first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import contract as c
from .deps import require
from .errors import ConfigError

RUNTIMES = ("openvino", "ort")
OUTPUTS = (c.CANDIDATE_BOXES, c.CANDIDATE_SCORES, c.CANDIDATE_CLASSES)


def _threads(threads: int) -> int:
    return threads or os.cpu_count() or 1


class OpenVinoDetector:
    """OpenVINO CPU plugin, latency hint (one request at a time uses every thread it is given)."""

    def __init__(self, path: str | Path, threads: int = 0):
        ov = require("openvino")
        core = ov.Core()
        model = core.read_model(str(path))
        self.compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": _threads(threads)})
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in OUTPUTS]

    def __call__(self, images: np.ndarray):
        result = self.request.infer({c.DETECTOR_INPUT: images})
        return tuple(np.asarray(result[o]) for o in self.outputs)


class OrtDetector:
    def __init__(self, path: str | Path, threads: int = 0):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray):
        return tuple(self.session.run(list(OUTPUTS), {c.DETECTOR_INPUT: images}))


def load_detector(path: str | Path, runtime: str, threads: int = 0):
    if runtime not in RUNTIMES:
        raise ConfigError(f"detector runtime must be one of {RUNTIMES}, got {runtime!r}")
    return (OpenVinoDetector if runtime == "openvino" else OrtDetector)(path, threads)
