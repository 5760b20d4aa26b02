"""Merge quantization scales across branches so TensorRT can fuse Concat/Add/MaxPool in INT8.

Groups come from the exported graph (``export.lint.QdqGraph.merge_groups``), not from layer
names: quantizers that read the same tensor (a stem feeding cls and reg branches), everything
around a Concat (SPPF pools, upsample paths, PAN concats) or Add, and max-pool inputs/outputs.
Each group gets the largest amax of its members (merge-to-max after calibration).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def scale_groups(quant_model, input_hw=(64, 64)) -> list[list[str]]:
    """Names of activation quantizers that must share one scale, one list per group."""
    from ..deps import require
    from ..export.lint import QdqGraph
    from ..export.onnx import export_onnx
    from .ort_int8 import node_module

    onnx = require("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(quant_model, Path(tmp) / "probe.onnx", input_hw, dynamic_batch=False)
        graph = QdqGraph(onnx.load(str(path)))
    groups = []
    for nodes in graph.merge_groups():
        # a module called several times (SPPF's pool) exports 'input_quantizer_1', '_2', ...
        names = sorted({re.sub(r"_quantizer_\d+$", "_quantizer", node_module(n.name)) for n in nodes})
        if len(names) > 1:
            groups.append(names)
    return groups


def merge_scales(quant_model, input_hw=(64, 64)) -> list[list[str]]:
    """Set every group's amax to the group maximum, in place. Returns the groups."""
    import torch

    modules = dict(quant_model.named_modules())
    groups = scale_groups(quant_model, input_hw)
    for names in groups:
        quantizers = [modules[n] for n in names]
        amax = torch.stack([q.amax.detach().reshape(()) for q in quantizers]).max()
        for q in quantizers:
            q.amax = amax.clone()
    log.info("merged scales of %d quantizer group(s) (%d quantizers)", len(groups), sum(map(len, groups)))
    return groups
