"""From detector candidates to final detections in original-image pixels (numpy only).

Shared by the Triton NMS backend, the in-process pipeline and the accuracy harness.
"""

from __future__ import annotations

import numpy as np

from .geometry import Detections, Letterbox, select_detections, unletterbox_boxes


def detections_for_image(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, letterbox: np.ndarray,
                         conf_threshold: float, iou_threshold: float, max_detections: int) -> Detections:
    """Candidates of one image ([K,4] network-input xyxy, [K], [K]) -> NMS'd detections, original pixels."""
    dets = select_detections(boxes_xyxy, scores, class_ids, conf_threshold, iou_threshold, max_detections)
    boxes = unletterbox_boxes(dets.boxes_xyxy, Letterbox.from_array(letterbox))
    return Detections(boxes, dets.scores, dets.class_ids)


def pad_detections(dets: Detections, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed-size arrays: (num [1] int32, boxes [size,4] f32, scores [size] f32, classes [size] int32)."""
    n = min(len(dets), size)
    boxes = np.zeros((size, 4), np.float32)
    scores = np.zeros(size, np.float32)
    classes = np.zeros(size, np.int32)
    boxes[:n], scores[:n], classes[:n] = dets.boxes_xyxy[:n], dets.scores[:n], dets.class_ids[:n]
    return np.array([n], np.int32), boxes, scores, classes


def unpad_detections(num: np.ndarray, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> Detections:
    n = int(np.asarray(num).reshape(-1)[0])
    return Detections(boxes[:n].astype(np.float32), scores[:n].astype(np.float32), classes[:n].astype(np.int32))
