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

from ..deps import require

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
    if any(k in t for k in ("eltwise", "subgraph", "add", "mul", "sub", "div", "sigmoid", "relu", "exp", "math")):
        return "elementwise + activations"
    if any(k in t for k in ("concat", "resize", "interpolate", "pool", "split", "slice")):
        return "concat / resize / pool"
    return "other"


def profile_openvino(path_or_model, images: np.ndarray, runs: int = 20, threads: int = 0) -> dict[str, float]:
    """Milliseconds per image per group, OpenVINO CPU plugin compiled as served: ``OpenVinoDetector``'s
    settings and its static batch shape (the dynamic batch axis compiles differently: on the bundle's
    graphs it left the stem's output quantizer unfused, 5% of the n model's time)."""
    from ..runtime import OpenVinoDetector

    request = OpenVinoDetector(path_or_model, threads, profiled=True).compiled(len(images)).create_infer_request()
    request.infer({0: images})  # warm-up
    totals: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: images})
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            precision = (re.search(r"_(I8|U8|FP32|BF16|F16|I32)$", info.exec_type) or [None, ""])[1]
            totals[_group(info.node_type, precision)] += info.real_time.total_seconds() * 1e3
    return {g: round(totals[g] / runs / len(images), 3) for g in GROUPS if totals[g]}


def profile_ort(path: Path, images: np.ndarray, runs: int = 20, threads: int = 0) -> dict[str, float]:
    """Milliseconds per image per group, ONNX Runtime CPU with the serving settings."""
    import os

    ort = require("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs + 1):
            session.run(None, {name: images})
        trace = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    kernels = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for event in kernels:
        op = event["args"].get("op_name", "")
        precision = "I8" if op.startswith(("QLinear", "ConvInteger", "MatMulInteger")) else ""
        totals[_group(op, precision)] += event["dur"] / 1e3
    return {g: round(totals[g] / (runs + 1) / len(images), 3) for g in GROUPS if totals[g]}


def profile_table(profiles: dict[str, dict[str, float]]) -> str:
    """Markdown: one column per profiled path, ms per image per group, and the total."""
    names = list(profiles)
    lines = ["| ms per image | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for group in GROUPS:
        if any(group in p for p in profiles.values()):
            lines.append(f"| {group} | " + " | ".join(f"{profiles[n].get(group, 0):.2f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(profiles[n].values()):.2f}**" for n in names) + " |")
    return "\n".join(lines) + "\n"
