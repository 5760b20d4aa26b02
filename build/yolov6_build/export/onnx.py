"""Export a deploy YOLOv6 to ONNX with contract tensor names and a dynamic batch axis."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..contract import (CANDIDATE_BOXES, CANDIDATE_CLASSES, CANDIDATE_SCORES, DETECTOR_INPUT, DETECTOR_OUTPUT,
                        ONNX_OPSET)
from ..deps import require

log = logging.getLogger(__name__)


def export_onnx(model, path: str | Path, input_hw: tuple[int, int], opset: int = ONNX_OPSET,
                dynamic_batch: bool = True, topk: int | None = None) -> Path:
    """Write ``model`` (already fused for deploy) to ``path``; returns the path.

    Graph input ``images`` float32 [B, 3, H, W]. Output: with ``topk=None`` upstream's ``outputs``
    float32 [B, N, 5+nc]; with ``topk=K`` the candidates ``candidate_boxes`` [B, K, 4] (xyxy),
    ``candidate_scores`` [B, K] and ``candidate_classes`` int32 [B, K] (see model.deploy).
    """
    torch = require("torch")
    onnx = require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if topk is not None:
        from ..model.deploy import CandidateDetector

        model = CandidateDetector(model, topk).eval()
        output_names = [CANDIDATE_BOXES, CANDIDATE_SCORES, CANDIDATE_CLASSES]
    else:
        output_names = [DETECTOR_OUTPUT]
    dummy = torch.zeros(1, 3, *input_hw)
    names = [DETECTOR_INPUT, *output_names]
    dynamic_axes = {name: {0: "batch"} for name in names} if dynamic_batch else None
    # The legacy TorchScript exporter is deliberate: it is the one that emits explicit Q/DQ for TensorRT.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # top-k size is static per input size
        torch.onnx.export(model, (dummy,), str(path), input_names=[DETECTOR_INPUT], output_names=output_names,
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    model_proto = onnx.load(str(path))
    if inline_initializer_identities(model_proto):
        onnx.save(model_proto, str(path))
    onnx.checker.check_model(str(path))
    log.debug("exported %s (%.1f MB, opset %d, input %dx%d)", path, path.stat().st_size / 1e6, opset, *input_hw)
    return path


def inline_initializer_identities(model_proto) -> int:
    """Replace ``Identity(initializer)`` nodes by the initializer itself; returns how many were removed.

    The legacy exporter routes many conv biases through Identity nodes. ONNX Runtime's quantizer
    then cannot turn those biases into int32 initializers, so no Conv fuses into QLinearConv and
    the INT8 graph runs float convs between Q/DQ pairs (slower than FP32).
    """
    graph = model_proto.graph
    initializers = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs}
    if not alias:
        return 0
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)
    return len(alias)
