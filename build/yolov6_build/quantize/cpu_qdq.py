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
- The image input holds pixels / 255: its quantizer gets scale 1/255 and zero point 0, which
  represents every pixel value exactly (the int8 grid at amax 1 keeps every other grey level).
  That quantizer's output is then the letterboxed uint8 pixels themselves, so it is dropped and the
  graph reads uint8 pixels (``pixels_as_uint8``): served, the detector receives a quarter of the
  bytes and nobody converts them to float and back.
- ``place_for_ort`` then moves Q/DQ pairs, value for value, to where ONNX Runtime fuses them into
  integer kernels, so both runtimes serve this one file.
- ``silu_as_tanh`` writes each quantized SiLU in a form OpenVINO keeps out of its INT8
  convolutions' post-ops (same function; on AMX those post-ops ran the head's convs 2-4x slower).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..contract import DETECTOR_INPUT
from ..deps import require

log = logging.getLogger(__name__)

UINT8_ZERO_POINT = 128  # for tensors that can be negative
NON_NEGATIVE_SOURCES = ("Relu", "Sigmoid")
PIXEL_SCALE = np.float32(1 / 255)  # the detector input's grid (contract: RGB / 255)
# ops whose output is non-negative when every data input is (their first inputs; shapes/scales aside)
SIGN_PRESERVING = {"MaxPool": 1, "Concat": None, "Cast": 1, "Resize": 1, "Reshape": 1, "Identity": 1,
                   "Transpose": 1, "Slice": 1, "DequantizeLinear": 1, "QuantizeLinear": 1}


def uint8_activations(qdq_onnx: str | Path, out_path: str | Path, placed_for_ort: bool = True,
                      uint8_pixels: bool = True, tanh_silu: bool = True) -> Path:
    """Write ``qdq_onnx`` with every activation Q/DQ pair moved to uint8 (zero point 0 where the tensor
    cannot be negative, else 128), unless told not to placed where ORT fuses, reading uint8 pixels
    (``pixels_as_uint8``) and with quantized SiLUs in tanh form (``silu_as_tanh``); returns the path."""
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
    graph.node.insert(0, helper.make_node("Constant", [], ["pixel_scale"], value=numpy_helper.from_array(
        PIXEL_SCALE, "pixel_scale")))
    non_negative = _non_negative(producers)
    activation_qs = {q.output[0]: q for q in graph.node if q.op_type == "QuantizeLinear" and not is_constant(q.input[0])}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        quantized = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
        if quantized in activation_qs:
            _check_symmetric(node, producers, initializers)
            source = activation_qs[quantized].input[0]
            node.input[2] = zero_points[0 if non_negative(source) else UINT8_ZERO_POINT]
            if source == DETECTOR_INPUT:
                node.input[1] = "pixel_scale"
    if placed_for_ort:
        place_for_ort(graph)
    if uint8_pixels:
        pixels_as_uint8(graph, zero_points[0])
    if tanh_silu:
        silu_as_tanh(graph)
    out_path = Path(out_path)
    onnx.save(model, str(out_path))
    return out_path


def pixels_as_uint8(graph, uint8_zero: str) -> bool:
    """Make the graph read uint8 pixels where every reader of its image input quantizes it onto the pixel
    grid (scale 1/255, uint8 zero point ``uint8_zero``): those quantizers output the pixels exactly, so
    they go and their readers take the input. A graph whose stem reads float (partial PTQ) keeps float
    input. Returns whether it changed."""
    from onnx import TensorProto

    readers = _consumers(graph).get(DETECTOR_INPUT, [])
    if not readers or any(r.op_type != "QuantizeLinear" or r.input[1:] != ["pixel_scale", uint8_zero]
                          for r in readers):
        log.info("the image input is read by %s, not only by its pixel quantizer: the graph keeps float input "
                 "(served uint8 pixels are converted per batch)", sorted({r.op_type for r in readers}))
        return False
    dropped = {r.output[0] for r in readers}
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in dropped:
                node.input[position] = DETECTOR_INPUT
    for reader in readers:
        graph.node.remove(reader)
    (image_input,) = [i for i in graph.input if i.name == DETECTOR_INPUT]
    image_input.type.tensor_type.elem_type = TensorProto.UINT8
    return True


def silu_as_tanh(graph) -> int:
    """Write each SiLU whose output is quantized, x * sigmoid(x), as h * (1 + tanh(h)) with h = x / 2: the
    same function. Returns how many.

    OpenVINO fuses x * sigmoid(x) and the requantization after it into the INT8 convolution before it
    as post-ops, and on AMX that fused kernel is slow (the demo head's 3x3 conv: 71 us, against 21 us
    for the conv plus 18 for activation and quantizer as one separate elementwise kernel; `make
    bench-silu`). It does not fuse this form. Float SiLUs are left alone: there the fused form is the
    faster one.
    """
    from onnx import helper, numpy_helper

    consumers = _consumers(graph)
    rewritten: dict[int, list] = {}  # id(the Mul) -> the nodes replacing it and its Sigmoid
    removed = set()
    for sigmoid in [n for n in graph.node if n.op_type == "Sigmoid"]:
        x = sigmoid.input[0]
        readers = consumers.get(sigmoid.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "Mul" or set(readers[0].input) != {x, sigmoid.output[0]}:
            continue
        (product,) = readers
        if not any(r.op_type == "QuantizeLinear" for r in consumers.get(product.output[0], [])):
            continue
        name = sigmoid.name.removesuffix("/Sigmoid") or sigmoid.output[0]
        half, tanh, one_plus = (f"{name}/tanh_silu/{part}" for part in ("half", "tanh", "one_plus"))
        rewritten[id(product)] = [
            helper.make_node("Mul", [x, "silu_half"], [half], name=half),
            helper.make_node("Tanh", [half], [tanh], name=tanh),
            helper.make_node("Add", [tanh, "silu_one"], [one_plus], name=one_plus),
            helper.make_node("Mul", [half, one_plus], [product.output[0]], name=product.name)]
        removed.add(id(sigmoid))
    if not rewritten:
        return 0
    graph.initializer.extend([numpy_helper.from_array(np.float32(0.5), "silu_half"),
                              numpy_helper.from_array(np.float32(1), "silu_one")])
    nodes = []
    for node in graph.node:
        if id(node) not in removed:
            nodes.extend(rewritten.get(id(node), [node]))
    _replace_nodes(graph, nodes)
    return len(rewritten)


def _non_negative(producers):
    """``non_negative(tensor)``: True when the graph guarantees it (memoised walk towards the inputs)."""
    seen: dict[str, bool] = {}

    def non_negative(tensor: str) -> bool:
        if tensor not in seen:
            seen[tensor] = False  # cycles cannot occur in ONNX; this only guards the recursion
            node = producers.get(tensor)
            if node is None:
                seen[tensor] = tensor == DETECTOR_INPUT
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


def place_for_ort(graph) -> dict[str, int]:
    """Move the activation Q/DQ pairs to where ONNX Runtime fuses them, without changing a value.

    ORT runs DQ -> Conv -> Q as an integer QLinearConv only when the conv's output (a ReLU between
    them is dropped for a zero point of 0) has that single Q as its one consumer. modelopt's graph
    quantizes conv inputs only, so two shapes of it leave convs in float there:
    - a Concat's quantizer sits after the Concat: it is repeated on each input (Q commutes with
      Concat when every input shares the scale, which merged scales guarantee);
    - a Shape reads the tensor beside its quantizer: it reads the DQ's output instead (same shape).
    Returns counts of each change.
    """
    changes = {"concat_inputs_quantized": _quantize_concat_inputs(graph),
               "shapes_moved": _move_shapes_behind_quantizers(graph)}
    _sort_topologically(graph)
    return changes


def _constant_values(graph) -> dict:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    return values


def _consumers(graph) -> dict[str, list]:
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _quantization_key(node, values) -> tuple | None:
    """(scale bytes, zero point bytes and type) of a per-tensor Q/DQ node; None when not constant."""
    scale, zero_point = values.get(node.input[1]), values.get(node.input[2]) if len(node.input) > 2 else None
    if scale is None or zero_point is None or scale.size != 1:
        return None
    return scale.tobytes(), zero_point.tobytes(), str(zero_point.dtype)


def _quantize_concat_inputs(graph) -> int:
    from onnx import helper

    values, consumers = _constant_values(graph), _consumers(graph)
    added = 0
    for concat in [n for n in graph.node if n.op_type == "Concat"]:
        readers = consumers.get(concat.output[0], [])
        if not readers or any(r.op_type != "QuantizeLinear" for r in readers):
            continue  # a float reader would see quantized values: leave it
        keys = {_quantization_key(r, values) for r in readers}
        if len(keys) != 1 or None in keys:
            continue
        quantizer = readers[0]
        for position, tensor in enumerate(concat.input):
            name = f"{concat.name}/input_{position}"
            graph.node.extend([
                helper.make_node("QuantizeLinear", [tensor, *quantizer.input[1:]], [f"{name}_q"], name=f"{name}/Q"),
                helper.make_node("DequantizeLinear", [f"{name}_q", *quantizer.input[1:]], [f"{name}_dq"],
                                 name=f"{name}/DQ")])
            concat.input[position] = f"{name}_dq"
            added += 1
    return added


def _move_shapes_behind_quantizers(graph) -> int:
    """A Shape reading a tensor that one Q/DQ pair also reads now reads that DQ's output."""
    consumers = _consumers(graph)
    moved = 0
    for tensor, readers in consumers.items():
        quantizers = [q for q in readers if q.op_type == "QuantizeLinear" and q.input[0] == tensor]
        if len(quantizers) != 1:
            continue
        dequantizers = [d for d in consumers.get(quantizers[0].output[0], []) if d.op_type == "DequantizeLinear"]
        for reader in readers:
            if reader.op_type == "Shape" and dequantizers:
                reader.input[0] = dequantizers[0].output[0]
                moved += 1
    return moved


def _sort_topologically(graph) -> None:
    """Kahn's order, ties kept in the current order (new nodes were appended at the end)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or an undefined input")
        ready_ids = {id(n) for n in ready}
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if id(n) not in ready_ids]
    _replace_nodes(graph, ordered)


def _replace_nodes(graph, nodes) -> None:
    from onnx import NodeProto

    copies = []
    for node in nodes:  # copied first: protobuf detaches what it deletes
        copies.append(NodeProto())
        copies[-1].CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
