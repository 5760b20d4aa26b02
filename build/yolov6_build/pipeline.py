"""The served pipeline run in-process: DALI CPU letterbox -> ONNX Runtime detector -> numpy NMS.

Same code as the Triton models (CpuLetterbox, the detector graph, postprocess), without the
server; the reference for server parity tests and the baseline of the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import contract as c
from .geometry import Detections
from .postprocess import detections_for_image


class InProcessPipeline:
    def __init__(self, detector_onnx: str | Path, input_hw: tuple[int, int], conf_threshold: float = c.SERVE_CONF_THRESHOLD,
                 iou_threshold: float = c.SERVE_IOU_THRESHOLD, max_detections: int = c.SERVE_MAX_DETECTIONS,
                 max_batch_size: int = 8, threads: int = 0):
        from .dali.pipeline import CpuLetterbox
        from .evaluate import onnx_runner

        self.letterbox = CpuLetterbox(input_hw, max_batch_size)
        self.runner = onnx_runner(detector_onnx, threads)
        self.thresholds = (conf_threshold, iou_threshold, max_detections)

    def __call__(self, encoded_images: list[bytes]) -> list[Detections | Exception]:
        prepared = self.letterbox(encoded_images)
        good = [p for p in prepared if not isinstance(p, Exception)]
        outputs = iter([])
        if good:
            boxes, scores, classes = self.runner(np.stack([p[0] for p in good]))
            outputs = iter(detections_for_image(boxes[i], scores[i], classes[i], good[i][1], *self.thresholds)
                           for i in range(len(good)))
        return [p if isinstance(p, Exception) else next(outputs) for p in prepared]
