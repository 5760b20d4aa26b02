"""The CPU detector runtimes: one ONNX graph (FP32 or INT8 Q/DQ), run by OpenVINO or ONNX Runtime.

Both take letterboxed images [B, 3, H, W], float32 RGB / 255 or uint8 RGB, and give the graph the form
it reads (``as_pixels``: the CPU form of the INT8 graph reads uint8), and return candidates
(boxes_xyxy [B, K, 4] in input pixels, scores [B, K], class ids [B, K]). The bundle's graphs select their top-k candidates
inside; upstream-format graphs (raw ``outputs`` [B, N, 5+nc]) are decoded here on the host.
OpenVINO compiles a Q/DQ graph to its INT8 kernels as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import contract as c
from .deps import require
from .errors import ConfigError

RUNTIMES = ("openvino", "ort")
OUTPUTS = (c.CANDIDATE_BOXES, c.CANDIDATE_SCORES, c.CANDIDATE_CLASSES)


def _threads(threads: int) -> int:
    """``threads``, or 0: every CPU this process may use (affinity and cgroup quota, not the node's cores)."""
    from .cpus import usable_cpus

    return threads or usable_cpus()


def split_raw(raw: np.ndarray):
    """Upstream-format rows -> the candidate tensors (every anchor, best class each)."""
    from .geometry import candidates_from_raw

    per_image = [candidates_from_raw(r) for r in raw]
    return tuple(np.stack([p[i] for p in per_image]) for i in range(3))


def as_pixels(images: np.ndarray, dtype) -> np.ndarray:
    """Letterboxed images (float RGB / 255, or uint8 RGB) as ``dtype``, float32 or uint8. Exact both ways
    for letterboxed pixels (a float image holds k / 255); unchanged when already ``dtype``."""
    if images.dtype == dtype:
        return images
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be uint8 pixels or float pixels / 255, got {images.dtype}")
    if dtype == np.uint8:
        return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return images.astype(np.float32)


class _Detector:
    """``infer`` runs the graph on images in either pixel form (``pixels``: the one the graph reads);
    calling also decodes upstream-format (``raw``) outputs into candidates."""

    raw: bool
    pixels: np.dtype

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, images: np.ndarray):
        outputs = self.infer(images)
        return split_raw(outputs[0]) if self.raw else tuple(outputs)


def _output_names(raw: bool) -> tuple[str, ...]:
    return (c.DETECTOR_OUTPUT,) if raw else OUTPUTS


class OpenVinoDetector(_Detector):
    """OpenVINO CPU plugin, latency hint (one request at a time uses every thread it is given).

    The graph is compiled once per batch size with that static shape: on the demo model's INT8 graph
    static shapes ran 1.15x (batch 1) faster than the dynamic batch axis, whose per-inference shape
    handling grows with the node count. ``compile_batches`` compiles sizes ahead (the server's warm-up).
    """

    def __init__(self, path_or_model, threads: int = 0, profiled: bool = False):
        ov = require("openvino")
        self._core = ov.Core()
        self._model = self._core.read_model(str(path_or_model)) if isinstance(path_or_model, (str, Path)) \
            else path_or_model
        self._config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _threads(threads),
                        "PERF_COUNT": profiled}
        names = {name for port in self._model.outputs for name in port.get_names()}
        self.raw = c.CANDIDATE_BOXES not in names
        self.pixels = np.dtype(self._model.input(0).get_element_type().to_dtype())
        self._by_batch: dict[int, tuple] = {}

    def _for_batch(self, batch: int) -> tuple:
        """(compiled model, infer request, output ports) for ``batch`` images, compiled on first use."""
        if batch not in self._by_batch:
            model = self._model.clone()
            shape = list(model.input(0).get_partial_shape())
            model.reshape({model.input(0).any_name: [batch, *shape[1:]]})
            compiled = self._core.compile_model(model, "CPU", self._config)
            self._by_batch[batch] = (compiled, compiled.create_infer_request(),
                                     [compiled.output(n) for n in _output_names(self.raw)])
        return self._by_batch[batch]

    def compiled(self, batch: int):
        """The compiled model for ``batch`` images."""
        return self._for_batch(batch)[0]

    def compile_batches(self, max_batch: int) -> None:
        for batch in range(1, max_batch + 1):
            self._for_batch(batch)

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        """The graph's own outputs (what a throughput measurement times)."""
        _, request, outputs = self._for_batch(len(images))
        result = request.infer({0: as_pixels(images, self.pixels)})
        return [np.asarray(result[o]) for o in outputs]


class OrtDetector(_Detector):
    """ONNX Runtime CPU. ``as_written``: no graph optimizations, so every QuantizeLinear/DequantizeLinear
    runs as its own float op: a Q/DQ graph's fake-quant numerics (what modelopt computes, up to values
    that land on a rounding edge), not ORT's integer kernels. For checking a graph's accuracy against its
    quantization, not for serving. ``profile_prefix``: ORT's own trace of every kernel (``profile_cpu``)."""

    def __init__(self, path: str | Path, threads: int = 0, as_written: bool = False,
                 profile_prefix: str | None = None):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if as_written:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if profile_prefix:  # a JSON trace of every kernel, written by ``session.end_profiling()``
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        options.intra_op_num_threads = _threads(threads)
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: served, the detector shares the cores with the
        # other steps' stubs, and spinning took their CPU (bench-serving, c=4: 13.7 -> 9.2 detector CPU
        # ms per request, +14% req/s; in-process no slower)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its fusions leave Q/DQ scale constants unused, one warning each
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.raw = c.CANDIDATE_BOXES not in {o.name for o in self.session.get_outputs()}
        self.outputs = list(_output_names(self.raw))
        self.pixels = np.dtype(np.uint8 if self.session.get_inputs()[0].type == "tensor(uint8)" else np.float32)

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {c.DETECTOR_INPUT: as_pixels(images, self.pixels)})


def load_detector(path: str | Path, runtime: str, threads: int = 0):
    if runtime not in RUNTIMES:
        raise ConfigError(f"detector runtime must be one of {RUNTIMES}, got {runtime!r}")
    return (OpenVinoDetector if runtime == "openvino" else OrtDetector)(path, threads)
