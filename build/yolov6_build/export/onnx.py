"""Export a deploy YOLOv6 to ONNX with contract tensor names and a dynamic batch axis."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..contract import DETECTOR_INPUT, DETECTOR_OUTPUT, ONNX_OPSET
from ..deps import require

log = logging.getLogger(__name__)


def export_onnx(model, path: str | Path, input_hw: tuple[int, int], opset: int = ONNX_OPSET,
                dynamic_batch: bool = True) -> Path:
    """Write ``model`` (already fused for deploy) to ``path``; returns the path.

    Graph: input ``images`` float32 [B, 3, H, W] -> output ``outputs`` float32 [B, N, 5+nc].
    """
    torch = require("torch")
    onnx = require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(1, 3, *input_hw)
    dynamic_axes = {DETECTOR_INPUT: {0: "batch"}, DETECTOR_OUTPUT: {0: "batch"}} if dynamic_batch else None
    # The legacy TorchScript exporter is deliberate: it is the one that emits explicit Q/DQ for TensorRT.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), input_names=[DETECTOR_INPUT], output_names=[DETECTOR_OUTPUT],
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(str(path))
    log.info("exported %s (%.1f MB, opset %d, input %dx%d)", path, path.stat().st_size / 1e6, opset, *input_hw)
    return path
