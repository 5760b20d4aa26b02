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
    onnx.checker.check_model(str(path))
    log.info("exported %s (%.1f MB, opset %d, input %dx%d)", path, path.stat().st_size / 1e6, opset, *input_hw)
    return path
