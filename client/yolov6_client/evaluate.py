"""COCO mAP of the live server: a COCO-format set through the ensemble, scored by the offline evaluator.

The same faster-coco-eval code (``yolov6_build.evaluate.coco_map``) scores the offline harness, so a
difference between the two numbers is the serving path (DALI letterbox, batching, transport), not
the scorer. The served ensemble's outputs hold ``contract.SERVE_MAX_DETECTIONS`` boxes, so that is
the detection cap here; compare with an offline run at the same cap.
"""

from __future__ import annotations

from typing import Callable

from yolov6_build import contract as c
from yolov6_build.data import CocoDataset
from yolov6_build.evaluate import EvalSettings, coco_map

from .concurrent import detect_all
from .detector import ServerError, TritonDetector

# Eval thresholds, capped at what one served response can hold.
SERVER_EVAL_SETTINGS = EvalSettings(max_detections=min(c.EVAL_MAX_DETECTIONS, c.SERVE_MAX_DETECTIONS))


def evaluate_server(connect: Callable[[], TritonDetector], dataset: CocoDataset, limit: int | None = None,
                    concurrency: int = 8, progress: bool = True) -> dict:
    """{'map50_95', 'map50', 'images', 'failed'}; raises ServerError if any image failed."""
    samples = dataset.samples[:limit] if limit else dataset.samples
    s = SERVER_EVAL_SETTINGS
    results = detect_all(connect, [sample.path for sample in samples], concurrency, progress, desc="eval",
                         conf_threshold=s.conf_threshold, iou_threshold=s.iou_threshold,
                         max_detections=s.max_detections)
    failed = [(sample.path, r) for sample, r in zip(samples, results) if isinstance(r, ServerError)]
    if failed:
        path, error = failed[0]
        raise ServerError(f"{len(failed)} of {len(samples)} images failed; first: {path}: {error}")
    metrics = coco_map(dataset, {sample.image_id: r for sample, r in zip(samples, results)})
    return {**metrics, "failed": 0, "settings": {"conf_threshold": s.conf_threshold,
                                                 "iou_threshold": s.iou_threshold,
                                                 "max_detections": s.max_detections}}

