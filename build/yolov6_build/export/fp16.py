"""The detector graph typed for TensorRT's strongly typed networks: the network body in FP16.

TensorRT 11 builds only strongly typed networks (10.x offers them too): every layer runs in the type
its ONNX graph gives it, with no FP16 or INT8 builder flags to choose precisions. The graph itself
must then say FP16 where the weakly typed build was allowed to pick it. This pass does what
ModelOpt's AutoCast does for this graph (its ONNX extra needs onnxruntime-gpu and an older onnx, so
it cannot share this environment):

* every convolution, and every node whose output reaches one (the backbone, neck and head, with
  their Q/DQ pairs), computes in FP16: their float weights and Q/DQ scales become FP16 copies, so a
  DequantizeLinear yields FP16 and an INT8 convolution's fallback neighbours run in FP16;
* the tail after the last convolutions (sigmoid, anchors, top-k, box decode) stays FP32, as do the
  graph's inputs and outputs: Casts at the borders, so Triton's config does not change.

Q/DQ nodes with FP16 inputs need opset 19: such graphs are converted to it first (ONNX's version converter).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..deps import require

COMPUTE_OPS = ("Conv", "ConvTranspose")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_OPSET = 19
# read only their input's shape: they take FP16 as it is (no Cast back to FP32 for anchor arithmetic)
SHAPE_OPS = ("Shape", "Size")
# inputs that stay FP32 whatever their node computes in (by position): ONNX fixes their type
FLOAT32_ONLY_INPUTS = {"Resize": (1, 2)}


def fp16_compute_nodes(model, float_tensors: set[str] | None = None) -> set[int]:
    """Indices of the nodes that compute in FP16: the convolutions and every node upstream of one,
    except nodes that produce no float tensor (shape arithmetic) and Constants (their values are copied).
    ``float_tensors``: ``_float_tensors(model)`` when the caller has it already (it runs shape inference)."""
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    region: set[int] = set()
    pending = [i for i, node in enumerate(graph.node) if node.op_type in COMPUTE_OPS]
    while pending:
        index = pending.pop()
        if index in region:
            continue
        region.add(index)
        pending.extend(producer[name] for name in graph.node[index].input
                       if name in producer and graph.node[producer[name]].op_type != "Constant")
    float_tensors = _float_tensors(model) if float_tensors is None else float_tensors
    return {i for i in region if graph.node[i].op_type in QDQ_OPS
            or any(out in float_tensors for out in graph.node[i].output)}


def _float_tensors(model) -> set[str]:
    """Names of the FP32 tensors (shape inference's types; the graph must be inferable)."""
    onnx = require("onnx")
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    typed = [*inferred.input, *inferred.value_info, *inferred.output]
    names = {v.name for v in typed if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    names |= {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type == onnx.TensorProto.FLOAT:
            names.add(node.output[0])
    return names


def to_fp16_compute(model):
    """A copy of ``model`` (ONNX ModelProto, FP32 or Q/DQ) with its body in FP16, I/O types unchanged."""
    onnx = require("onnx")

    if any(node.op_type in QDQ_OPS for node in model.graph.node) and _opset(model) < QDQ_OPSET:
        model = onnx.version_converter.convert_version(model, QDQ_OPSET)  # also rewrites e.g. ReduceMax's axes
    else:
        model = _clone(model)
    graph = model.graph
    floats = _float_tensors(model)
    region = fp16_compute_nodes(model, floats)
    borders = _Borders(graph, {out for i in region for out in graph.node[i].output if out in floats})
    for index in region:
        _cast_to_half(graph.node[index])
    for index, node in enumerate(graph.node):
        keep = FLOAT32_ONLY_INPUTS.get(node.op_type, ())
        for position, name in enumerate(node.input):
            if index in region and name in floats and name not in borders.half and position not in keep:
                node.input[position] = borders.to_half(name)
            elif index not in region and name in borders.half and node.op_type not in SHAPE_OPS:
                node.input[position] = borders.to_float(name)
    for output in graph.output:  # a graph output computed in FP16 is handed out as FP32 under its own name
        if output.name in borders.half:
            borders.rename_output(output.name)
    borders.apply()
    del graph.value_info[:]  # stale FP32 types; shape inference recomputes them
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


class _Borders:
    """Where FP32 and FP16 meet: FP16 copies of constants, Casts into the FP16 region and out of it."""

    def __init__(self, graph, half: set[str]):
        from onnx import numpy_helper

        self.graph, self.half = graph, half
        self.constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                               if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
        self.twins: dict[str, str] = {}  # tensor -> its twin in the other precision
        self.initializers, self.casts_after = [], defaultdict(list)  # source tensor -> Casts reading it

    def to_half(self, name: str) -> str:
        from onnx import TensorProto, numpy_helper

        if name not in self.twins:
            self.twins[name] = f"{name}__fp16"
            if name in self.constants:
                self.initializers.append(numpy_helper.from_array(self.constants[name].astype("float16"),
                                                                 self.twins[name]))
            else:
                self._cast(name, self.twins[name], TensorProto.FLOAT16)
        return self.twins[name]

    def to_float(self, name: str) -> str:
        from onnx import TensorProto

        if name not in self.twins:
            self.twins[name] = f"{name}__fp32"
            self._cast(name, self.twins[name], TensorProto.FLOAT)
        return self.twins[name]

    def rename_output(self, name: str) -> None:
        """The FP16 producer of graph output ``name`` writes ``<name>__fp16_out``; a Cast writes ``name``."""
        from onnx import TensorProto, helper

        inner = f"{name}__fp16_out"
        for node in self.graph.node:
            node.output[:] = [inner if out == name else out for out in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        self.graph.node.append(helper.make_node("Cast", [inner], [name], to=TensorProto.FLOAT, name=f"{name}__to_fp32"))

    def _cast(self, source: str, target: str, to: int) -> None:
        from onnx import helper

        suffix = "fp16" if target.endswith("fp16") else "fp32"
        self.casts_after[source].append(helper.make_node("Cast", [source], [target], to=to,
                                                         name=f"{source}__to_{suffix}"))

    def apply(self) -> None:
        """Each Cast right after its source's producer (graph inputs: first), so the order stays topological;
        the FP16 constants added and the FP32 originals no node reads any more dropped."""
        after = dict(self.casts_after)
        ordered = [cast for i in self.graph.input for cast in after.pop(i.name, [])]
        for node in list(self.graph.node):
            ordered.append(node)
            for out in node.output:
                ordered.extend(after.pop(out, []))
        ordered = [cast for casts in after.values() for cast in casts] + ordered  # sources with no producer
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        self.graph.initializer.extend(self.initializers)
        used = {name for node in self.graph.node for name in node.input}
        kept = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def _cast_to_half(node) -> None:
    """A Cast to FP32 inside the FP16 region (the quantizers export some) casts to FP16 instead."""
    from onnx import TensorProto

    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
            attribute.i = TensorProto.FLOAT16


def _clone(model):
    copy = type(model)()
    copy.CopyFrom(model)
    return copy


def _opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def write_fp16_compute(source: str | Path, target: str | Path) -> Path:
    """Read an FP32 or Q/DQ graph, write its FP16-compute form (``to_fp16_compute``)."""
    onnx = require("onnx")
    target = Path(target)
    onnx.save(to_fp16_compute(onnx.load(str(source))), str(target))
    return target
