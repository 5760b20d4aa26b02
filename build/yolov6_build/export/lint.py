"""Lint for explicit-quantization (Q/DQ) ONNX graphs: what makes TensorRT insert reformats or skip fusions.

Findings:
- ``mixed-scales``: a Concat, Add or MaxPool whose inputs and output carry different quantization
  scales (TensorRT must requantize instead of writing every branch straight into one INT8 tensor).
- ``shared-input-scales``: one tensor quantized by several Q nodes with different scales (e.g. a
  head stem feeding the cls and reg branches).
- ``unquantized-layer``: a Conv/ConvTranspose whose input or weight has no Q/DQ (a float island),
  unless listed as an intended float layer.
- ``conv-output-qdq``: Q/DQ between a conv and the activation right after it (blocks conv+act fusion).
- ``requantize``: a DequantizeLinear feeding a QuantizeLinear with another scale.
- ``unquantized-add``: an Add between quantized layers (its output is quantized again) with an input
  that is not dequantized: TensorRT runs it in float and reformats around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..deps import require

MERGE_OPS = ("Concat", "Add", "MaxPool")
PASS_THROUGH = ("Cast", "Identity")
ACTIVATIONS = ("Relu", "Sigmoid", "LeakyRelu", "HardSwish", "Clip")


@dataclass(frozen=True)
class Finding:
    kind: str
    node: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.node}: {self.detail}"


class QdqGraph:
    """Index of a Q/DQ graph: producers, consumers, constant values, activation quantizers per tensor."""

    def __init__(self, model_proto):
        numpy_helper = require("onnx.numpy_helper")
        graph = model_proto.graph
        self.nodes = list(graph.node)
        self.constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def is_activation_q(self, node) -> bool:
        return node.op_type == "QuantizeLinear" and node.input[0] not in self.constants and \
            getattr(self.producer.get(node.input[0]), "op_type", "") != "Constant"

    def scale(self, qdq_node) -> float:
        return float(np.asarray(self.constants[qdq_node.input[1]]).reshape(-1)[0])

    def scale_sources(self, tensor: str) -> list:
        """Q nodes that quantize ``tensor`` (its readers), plus the Q behind it when it is a DQ output.

        Pass-through nodes (Cast/Identity, which exporters insert after DQ) are looked through.
        """
        root, producer = tensor, self.producer.get(tensor)
        while producer is not None and producer.op_type in PASS_THROUGH:
            root = producer.input[0]
            producer = self.producer.get(root)
        sources = self._quantizing_readers(root)
        if producer is not None and producer.op_type == "DequantizeLinear":
            upstream = self.producer.get(producer.input[0])
            if upstream is not None and upstream.op_type == "QuantizeLinear":
                sources.append(upstream)
        return list({n.name: n for n in sources}.values())

    def _quantizing_readers(self, tensor: str) -> list:
        """Activation Q nodes reading ``tensor`` directly or through pass-through nodes."""
        found = []
        for node in self.consumers.get(tensor, []):
            if self.is_activation_q(node):
                found.append(node)
            elif node.op_type in PASS_THROUGH:
                found.extend(self._quantizing_readers(node.output[0]))
        return found

    def merge_op_tensors(self, node) -> list[str]:
        """The activation inputs and the outputs of a Concat/Add/MaxPool (constants left out)."""
        return [t for t in node.input if t not in self.constants] + list(node.output)

    def is_dequantized(self, tensor: str) -> bool:
        """Whether ``tensor`` is a DequantizeLinear output (looking through pass-through nodes)."""
        producer = self.producer.get(tensor)
        while producer is not None and producer.op_type in PASS_THROUGH:
            producer = self.producer.get(producer.input[0])
        return producer is not None and producer.op_type == "DequantizeLinear"

    def feeds_quantizer(self, tensor: str) -> bool:
        """Whether ``tensor`` reaches an activation Q node directly or through Concat/pass-through nodes."""
        return any(self.is_activation_q(node) or
                   (node.op_type in PASS_THROUGH + ("Concat",) and self.feeds_quantizer(node.output[0]))
                   for node in self.consumers.get(tensor, []))

    def merge_groups(self) -> list[list]:
        """Q nodes that must share a scale: readers of one tensor, and all around each Concat/Add/MaxPool."""
        parent: dict[str, str] = {}

        def find(x):
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def union(nodes):
            names = [n.name for n in nodes]
            for name in names[1:]:
                parent[find(name)] = find(names[0])

        by_name = {}
        for node in self.nodes:
            if node.op_type in MERGE_OPS:
                members = [q for t in self.merge_op_tensors(node) for q in self.scale_sources(t)]
            elif self.is_activation_q(node):
                members = self.scale_sources(node.input[0])
            else:
                continue
            by_name.update({m.name: m for m in members})
            union(members)
        groups: dict[str, list] = {}
        for name, node in by_name.items():
            groups.setdefault(find(name), []).append(node)
        return [g for g in groups.values() if len(g) > 1]


def lint_qdq(path_or_proto, float_layers=()) -> list[Finding]:
    """All findings of a Q/DQ graph ([] when TensorRT can fuse everything as intended)."""
    onnx = require("onnx")

    model = onnx.load(str(path_or_proto)) if not hasattr(path_or_proto, "graph") else path_or_proto
    g = QdqGraph(model)
    findings: list[Finding] = []
    for node in g.nodes:
        if node.op_type in MERGE_OPS:
            findings += _merge_op_findings(g, node)
        elif node.op_type in ("Conv", "ConvTranspose"):
            findings += _conv_findings(g, node, float_layers)
        elif node.op_type == "QuantizeLinear":
            findings += _quantize_findings(g, node)
    return findings


def _merge_op_findings(g: QdqGraph, node) -> list[Finding]:
    findings = []
    scales = sorted({round(g.scale(q), 9) for t in g.merge_op_tensors(node) for q in g.scale_sources(t)})
    if len(scales) > 1:
        findings.append(Finding("mixed-scales", node.name, f"scales {scales[:4]}"))
    if node.op_type == "Add" and g.feeds_quantizer(node.output[0]) and \
            not all(g.is_dequantized(t) for t in node.input if t not in g.constants):
        findings.append(Finding("unquantized-add", node.name, "an input without Q/DQ between quantized layers"))
    return findings


def _conv_findings(g: QdqGraph, node, float_layers) -> list[Finding]:
    from ..quantize.ort_int8 import node_module

    if node_module(node.name) in float_layers:
        return []
    quantized = [g.is_dequantized(t) for t in node.input[:2]]
    if all(quantized):
        return []
    return [Finding("unquantized-layer", node.name, "input" if not quantized[0] else "weight" + " without Q/DQ")]


def _quantize_findings(g: QdqGraph, node) -> list[Finding]:
    findings = []
    readers = [q for q in g.scale_sources(node.input[0]) if q.op_type == "QuantizeLinear"]
    first = min((q.name for q in readers), default=None)
    if node.name == first and len({round(g.scale(q), 9) for q in readers}) > 1:
        findings.append(Finding("shared-input-scales", node.input[0], f"{len(readers)} quantizers"))
    source = g.producer.get(node.input[0])
    if source is not None and source.op_type in ("Conv", "ConvTranspose"):
        after = [c for dq in g.consumers.get(node.output[0], []) for c in g.consumers.get(dq.output[0], [])]
        if any(c.op_type in ACTIVATIONS for c in after):
            findings.append(Finding("conv-output-qdq", node.name, f"between {source.name} and its activation"))
    if source is not None and source.op_type == "DequantizeLinear":
        upstream = g.producer.get(source.input[0])
        if upstream is not None and upstream.op_type == "QuantizeLinear" and \
                not np.isclose(g.scale(upstream), g.scale(node)):
            findings.append(Finding("requantize", node.name, "DQ -> Q with a different scale"))
    return findings
