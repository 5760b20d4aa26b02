"""Where a CPU detector's time goes, op by op, from the runtimes' own profilers.

OpenVINO: ``PERF_COUNT`` per executed node (its type after OpenVINO's fusions, the kernel it ran and
that kernel's precision, e.g. ``brgconv_avx512_core_vnni_I8``). ONNX Runtime: its JSON trace, one
event per node kernel. Both are summed over several inferences and grouped into what they are:
integer or float convolutions, quantize/dequantize and layout conversions, the head's decode, the
top-k selection, the rest.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


GROUPS = ("conv int8", "conv float", "quantize / convert / reorder", "top-k + gather", "elementwise + activations",
          "concat / resize / pool", "other")


def _group(node_type: str, precision: str) -> str:
    t = node_type.lower()
    if "conv" in t:
        return "conv int8" if precision in ("I8", "U8") else "conv float"
    if any(k in t for k in ("quantize", "reorder", "convert", "fakequantize", "dequantize")):
        return "quantize / convert / reorder"
    if any(k in t for k in ("topk", "gather")):
        return "top-k + gather"
    if any(k in t for k in ("eltwise", "subgraph", "add", "mul", "sub", "div", "sigmoid", "tanh", "relu", "exp", "math")):
        return "elementwise + activations"
    if any(k in t for k in ("concat", "resize", "interpolate", "pool", "split", "slice")):
        return "concat / resize / pool"
    return "other"


def kernel_precision(exec_type: str) -> str:
    """The precision at the end of an OpenVINO kernel name, upper case: ``brgconv_avx512_core_vnni_I8`` and
    ``brgconv_avx512_amx_i8`` (the AMX kernels spell it in lower case) are both "I8"; "" if none."""
    found = re.search(r"_(I8|U8|FP32|BF16|F16|I32)$", exec_type, re.IGNORECASE)
    return found[1].upper() if found else ""


class OpenVinoProfile:
    """OpenVINO CPU plugin compiled as served: ``OpenVinoDetector``'s settings and its static batch shape
    (the dynamic batch axis compiles differently: on the bundle's graphs it left the stem's output
    quantizer unfused, 5% of the n model's time). ``run`` adds inferences; ``groups`` sums them."""

    def __init__(self, path_or_model, images: np.ndarray, threads: int = 0):
        from ..runtime import OpenVinoDetector, as_pixels

        detector = OpenVinoDetector(path_or_model, threads, profiled=True)
        self.images, self.runs = as_pixels(images, detector.pixels), 0
        self.request = detector.compiled(len(images)).create_infer_request()
        self.request.infer({0: self.images})  # warm-up
        self.totals: dict[str, float] = defaultdict(float)

    def run(self, runs: int) -> None:
        for _ in range(runs):
            self.request.infer({0: self.images})
            for info in self.request.profiling_info:
                if info.status != info.Status.EXECUTED:
                    continue
                self.totals[_group(info.node_type, kernel_precision(info.exec_type))] += \
                    info.real_time.total_seconds() * 1e3
        self.runs += runs

    def groups(self) -> dict[str, float]:
        """Milliseconds per image per group."""
        return {g: round(self.totals[g] / self.runs / len(self.images), 3) for g in GROUPS if self.totals[g]}


class OrtProfile:
    """ONNX Runtime CPU with ``OrtDetector``'s settings, timed by its own trace (one event per kernel)."""

    def __init__(self, path: Path, images: np.ndarray, threads: int = 0):
        from ..runtime import OrtDetector, as_pixels

        self._tmp = tempfile.TemporaryDirectory()
        detector = OrtDetector(path, threads, profile_prefix=str(Path(self._tmp.name) / "ort"))
        self.images, self.runs, self.session = as_pixels(images, detector.pixels), 0, detector.session
        self._feed = {self.session.get_inputs()[0].name: self.images}
        self.session.run(None, self._feed)  # warm-up, left out below

    def run(self, runs: int) -> None:
        for _ in range(runs):
            self.session.run(None, self._feed)
        self.runs += runs

    def groups(self) -> dict[str, float]:
        with self._tmp:
            trace = json.loads(Path(self.session.end_profiling()).read_text())
        kernels = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        runs = [e["ts"] for e in trace if e.get("cat") == "Session" and e["name"] == "model_run"]
        warm_up_end = sorted(runs)[1] if len(runs) > 1 else 0
        totals: dict[str, float] = defaultdict(float)
        for event in kernels:
            if event["ts"] < warm_up_end:
                continue
            op = event["args"].get("op_name", "")
            precision = "I8" if op.startswith(("QLinear", "ConvInteger", "MatMulInteger")) else ""
            totals[_group(op, precision)] += event["dur"] / 1e3
        return {g: round(totals[g] / self.runs / len(self.images), 3) for g in GROUPS if totals[g]}


def profile_paths(graphs: dict, images: np.ndarray, threads: int = 0, rounds: int = 5,
                  runs: int = 4) -> dict[str, dict[str, float]]:
    """{path: ms per image per group} for ``graphs`` ({path: (runtime, graph)}), in ``rounds`` interleaved
    rounds of ``runs`` inferences each, so that every path sees the same drift of the machine."""
    profilers = {name: (OpenVinoProfile if runtime == "openvino" else OrtProfile)(graph, images, threads)
                 for name, (runtime, graph) in graphs.items()}
    for _ in range(rounds):
        for profiler in profilers.values():
            profiler.run(runs)
    return {name: profiler.groups() for name, profiler in profilers.items()}


def profile_table(profiles: dict[str, dict[str, float]]) -> str:
    """Markdown: one column per profiled path, ms per image per group, and the total."""
    names = list(profiles)
    lines = ["| ms per image | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for group in GROUPS:
        if any(group in p for p in profiles.values()):
            lines.append(f"| {group} | " + " | ".join(f"{profiles[n].get(group, 0):.2f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(profiles[n].values()):.2f}**" for n in names) + " |")
    return "\n".join(lines) + "\n"
