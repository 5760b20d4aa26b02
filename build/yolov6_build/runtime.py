"""The CPU detector runtimes: one ONNX graph (FP32 or INT8 Q/DQ), run by OpenVINO or ONNX Runtime.

Both take letterboxed images float32 [B, 3, H, W] and return candidates (boxes_xyxy [B, K, 4] in
input pixels, scores [B, K], class ids [B, K]). The bundle's graphs select their top-k candidates
inside; upstream-format graphs (raw ``outputs`` [B, N, 5+nc]) are decoded here on the host.
OpenVINO compiles a Q/DQ graph to its INT8 kernels as it is.
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


def split_raw(raw: np.ndarray):
    """Upstream-format rows -> the candidate tensors (every anchor, best class each)."""
    from .geometry import candidates_from_raw

    per_image = [candidates_from_raw(r) for r in raw]
    return tuple(np.stack([p[i] for p in per_image]) for i in range(3))


class _Detector:
    """``infer`` runs the graph; calling decodes upstream-format (``raw``) outputs into candidates."""

    raw: bool

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, images: np.ndarray):
        outputs = self.infer(images)
        return split_raw(outputs[0]) if self.raw else tuple(outputs)


def _output_names(raw: bool) -> tuple[str, ...]:
    return (c.DETECTOR_OUTPUT,) if raw else OUTPUTS


class OpenVinoDetector(_Detector):
    """OpenVINO CPU plugin, latency hint (one request at a time uses every thread it is given)."""

    def __init__(self, path_or_model, threads: int = 0):
        ov = require("openvino")
        core = ov.Core()
        model = core.read_model(str(path_or_model)) if isinstance(path_or_model, (str, Path)) else path_or_model
        self.compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": _threads(threads)})
        self.request = self.compiled.create_infer_request()
        names = {name for port in self.compiled.outputs for name in port.get_names()}
        self.raw = c.CANDIDATE_BOXES not in names
        self.outputs = [self.compiled.output(n) for n in _output_names(self.raw)]

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        """The graph's own outputs (what a throughput measurement times)."""
        result = self.request.infer({c.DETECTOR_INPUT: images})
        return [np.asarray(result[o]) for o in self.outputs]


class OrtDetector(_Detector):
    def __init__(self, path: str | Path, threads: int = 0):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.raw = c.CANDIDATE_BOXES not in {o.name for o in self.session.get_outputs()}
        self.outputs = list(_output_names(self.raw))

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {c.DETECTOR_INPUT: images})


def load_detector(path: str | Path, runtime: str, threads: int = 0):
    if runtime not in RUNTIMES:
        raise ConfigError(f"detector runtime must be one of {RUNTIMES}, got {runtime!r}")
    return (OpenVinoDetector if runtime == "openvino" else OrtDetector)(path, threads)
