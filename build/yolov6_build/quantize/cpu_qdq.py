"""The CPU form of the bundle's explicit Q/DQ graph: the same scales, activations as uint8.

modelopt exports symmetric int8 activations (zero point 0). Each activation quantizer becomes uint8
with the same scale, so the CPU flavour serves modelopt's own calibrated, merged/tied, partial and
QAT scales, not a re-calibration. Weights keep their per-channel int8 Q/DQ.
- A tensor that can be negative gets zero point 128: exact (q_u8 = q_i8 + 128 over the same grid).
  OpenVINO runs this form faithfully: on the demo model it scored the int8 form 0.6 mAP points below
  its fake-quant accuracy and this form within 0.03.
- A tensor that cannot be negative (a ReLU output, and MaxPool/Concat/Cast/Resize of such tensors)
  gets zero point 0: the same grid on [0, 127 s], and the clip moves from 127 s up to 255 s (values
  past the calibrated range are clipped later, never sooner). OpenVINO's int8 convolutions take
  such inputs without the zero-point compensation that 128 costs, and quantize its transposed
  convolutions (with 128 they fall back to bf16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..deps import require

UINT8_ZERO_POINT = 128  # for tensors that can be negative
NON_NEGATIVE_SOURCES = ("Relu", "Sigmoid")
# ops whose output is non-negative when every data input is (their first inputs; shapes/scales aside)
SIGN_PRESERVING = {"MaxPool": 1, "Concat": None, "Cast": 1, "Resize": 1, "Reshape": 1, "Identity": 1,
                   "Transpose": 1, "Slice": 1, "DequantizeLinear": 1, "QuantizeLinear": 1}


def uint8_activations(qdq_onnx: str | Path, out_path: str | Path) -> Path:
    """Write ``qdq_onnx`` with every activation Q/DQ pair moved to uint8 (zero point 0 where the tensor
    cannot be negative, else 128); returns the path."""
    onnx = require("onnx")
    from onnx import helper, numpy_helper

    model = onnx.load(str(qdq_onnx))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {i.name for i in graph.initializer}

    def is_constant(tensor: str) -> bool:
        node = producers.get(tensor)
        return tensor in initializers or (node is not None and node.op_type == "Constant")

    zero_points = {}
    for value in (UINT8_ZERO_POINT, 0):
        zero_points[value] = f"uint8_zero_point_{value}"
        graph.node.insert(0, helper.make_node("Constant", [], [zero_points[value]], value=numpy_helper.from_array(
            np.array(value, dtype=np.uint8), zero_points[value])))
    non_negative = _non_negative(producers)
    activation_qs = {q.output[0]: q for q in graph.node if q.op_type == "QuantizeLinear" and not is_constant(q.input[0])}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        quantized = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
        if quantized in activation_qs:
            _check_symmetric(node, producers, initializers)
            unsigned = non_negative(activation_qs[quantized].input[0])
            node.input[2] = zero_points[0 if unsigned else UINT8_ZERO_POINT]
    out_path = Path(out_path)
    onnx.save(model, str(out_path))
    return out_path


def _non_negative(producers):
    """``non_negative(tensor)``: True when the graph guarantees it (memoised walk towards the inputs)."""
    seen: dict[str, bool] = {}

    def non_negative(tensor: str) -> bool:
        if tensor not in seen:
            seen[tensor] = False  # cycles cannot occur in ONNX; this only guards the recursion
            node = producers.get(tensor)
            if node is None:
                seen[tensor] = False
            elif node.op_type in NON_NEGATIVE_SOURCES:
                seen[tensor] = True
            elif node.op_type in SIGN_PRESERVING:
                data = node.input[:SIGN_PRESERVING[node.op_type]] if SIGN_PRESERVING[node.op_type] else node.input
                seen[tensor] = all(non_negative(i) for i in data if i)
        return seen[tensor]

    return non_negative


def _check_symmetric(node, producers, initializers) -> None:
    """Only a zero point of 0 maps exactly; anything else is not modelopt's symmetric quantizer."""
    from onnx import numpy_helper

    if len(node.input) < 3:
        return
    source = producers.get(node.input[2])
    if source is not None and source.op_type == "Constant":
        value = numpy_helper.to_array(source.attribute[0].t)
        if np.any(value != 0):
            raise ValueError(f"{node.name}: activation zero point {value} is not symmetric int8")
