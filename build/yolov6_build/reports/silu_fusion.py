"""What OpenVINO's CPU plugin pays for one head conv with each activation form (``make bench-silu``).

The demo head's 3x3 convs (32 channels at 40x40) end in SiLU, and their output is quantized for the
1x1 prediction conv. Each variant here is that conv, built with OpenVINO's own opset, followed by a 1x1
conv reading its output; ``PERF_COUNT`` gives the 3x3 conv's kernel time (with whatever OpenVINO fused
into it) and the time of the nodes after it up to the 1x1 conv (an activation kernel left on its own).
It measured why ``cpu_qdq.silu_as_tanh`` exists and shows whether it still pays on another CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..deps import require
from .machine import describe_machine, machine_header

# (label, INT8 conv, activation, output quantized for the next conv)
VARIANTS = (
    ("INT8 conv, no activation, requantized", True, None, True),
    ("INT8 conv + ReLU, requantized", True, "relu", True),
    ("INT8 conv + SiLU x*sigmoid(x), float output", True, "sigmoid", False),
    ("INT8 conv + SiLU x*sigmoid(x), requantized (before)", True, "sigmoid", True),
    ("INT8 conv + SiLU h*(1+tanh h), requantized (served)", True, "tanh", True),
    ("float conv + SiLU x*sigmoid(x)", False, "sigmoid", False),
)


def _fake_quantize(ops, tensor, low, high, levels: int = 256):
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    return ops.fake_quantize(tensor, ops.constant(low), ops.constant(high), ops.constant(low), ops.constant(high),
                             levels)


def _weights(ops, shape, quantized: bool, rng):
    """Per-output-channel symmetric int8 weights (as the bundle's) or float ones."""
    weights = rng.standard_normal(shape).astype(np.float32) * 0.1
    if not quantized:
        return ops.constant(weights)
    amax = np.abs(weights).reshape(shape[0], -1).max(axis=1).reshape(-1, 1, 1, 1)
    return _fake_quantize(ops, ops.constant(weights), -amax, amax, 255)


def _activation(ops, x, form: str | None):
    if form == "relu":
        return ops.relu(x)
    if form == "sigmoid":
        return ops.multiply(x, ops.sigmoid(x))
    if form == "tanh":
        half = ops.multiply(x, ops.constant(np.float32(0.5)))
        return ops.multiply(half, ops.add(ops.tanh(half), ops.constant(np.float32(1))))
    return x


def head_conv_model(int8: bool, activation: str | None, requantized: bool, channels: int = 32, size: int = 40,
                    seed: int = 0):
    """3x3 conv (+ bias, activation) -> [quantizer] -> 1x1 conv to 8 channels, as an ``ov.Model``."""
    ov = require("openvino")
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)
    image = ops.parameter([1, channels, size, size], np.float32, name="x")
    x = _fake_quantize(ops, image, -1.0, 127 / 128) if int8 else image
    x = ops.convolution(x, _weights(ops, (channels, channels, 3, 3), int8, rng), [1, 1], [1, 1], [1, 1], [1, 1])
    x = _activation(ops, ops.add(x, ops.constant(rng.standard_normal((1, channels, 1, 1)).astype(np.float32))),
                    activation)
    if requantized:
        x = _fake_quantize(ops, x, *((0.0, 2.0) if activation == "relu" else (-1.0, 127 / 128)))
    x = ops.convolution(x, _weights(ops, (8, channels, 1, 1), requantized, rng), [1, 1], [0, 0], [0, 0], [1, 1])
    return ov.Model([x], [image])


def _profile(model, runs: int) -> dict:
    """Per inference: wall time, the 3x3 conv's kernel and time, and the nodes between the two convs."""
    ov = require("openvino")

    compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).random(tuple(model.input(0).shape), dtype=np.float32)
    for _ in range(max(runs // 10, 3)):
        request.infer({0: x})
    started = time.perf_counter()
    for _ in range(runs):
        request.infer({0: x})
    wall_us = (time.perf_counter() - started) / runs * 1e6
    executed = [p for p in request.profiling_info if p.status.name == "EXECUTED"]
    convs = [i for i, p in enumerate(executed) if p.node_type == "Convolution"]
    first, second = convs[0], convs[-1]
    return {"wall_us": round(wall_us, 1), "conv_kernel": executed[first].exec_type,
            "conv_us": round(executed[first].real_time.total_seconds() * 1e6, 1),
            "between_us": round(sum(p.real_time.total_seconds() for p in executed[first + 1:second]) * 1e6, 1)}


def silu_fusion_report(out_dir: Path, runs: int = 2000, channels: int = 32, size: int = 40) -> dict:
    rows = [{"variant": label, **_profile(head_conv_model(int8, activation, requantized, channels, size), runs)}
            for label, int8, activation, requantized in VARIANTS]
    report = {"machine": describe_machine(), "channels": channels, "size": size, "runs": runs, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "silu_fusion.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "silu_fusion.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [f"# One head conv ({report['channels']} channels, {report['size']}x{report['size']}, 3x3) in "
             f"OpenVINO, by activation form (us per inference, {report['runs']} inferences)", "",
             *machine_header(report),
             "| variant | 3x3 conv kernel | conv (with what it fused) | nodes before the 1x1 conv | whole graph |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['conv_kernel']} | {r['conv_us']} | {r['between_us']} | {r['wall_us']} |"
              for r in report["rows"]]
    return "\n".join(lines) + "\n"
