"""Numpy-only geometry shared by every stage: letterbox and its inverse, box formats, NMS.

The DALI pipelines, the accuracy harness, the NMS backend and the clients all import this module,
so a box means the same thing everywhere. Sizes are (height, width); boxes carry their format in
their name (``boxes_xyxy``) and are float32 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114  # grey border, as upstream


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``src_hw`` was resized to ``new_hw`` and padded into ``dst_hw``."""

    src_hw: tuple[int, int]
    new_hw: tuple[int, int]
    pad_top: int
    pad_left: int

    @property
    def scale_yx(self) -> tuple[float, float]:
        return self.new_hw[0] / self.src_hw[0], self.new_hw[1] / self.src_hw[1]

    def as_array(self) -> np.ndarray:
        """float32 [6]: src_h, src_w, new_h, new_w, pad_top, pad_left (what crosses to the NMS step)."""
        return np.array([*self.src_hw, *self.new_hw, self.pad_top, self.pad_left], dtype=np.float32)

    @classmethod
    def from_array(cls, values) -> "Letterbox":
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape != (6,) or not np.isfinite(values).all() or (values[:4] < 1).any() or (values[4:] < 0).any():
            raise ValueError(f"invalid letterbox geometry {values.tolist()}: expected src_h, src_w, new_h, new_w >= 1 "
                             "and pad_top, pad_left >= 0")
        v = [int(round(x)) for x in values]
        return cls((v[0], v[1]), (v[2], v[3]), v[4], v[5])


def letterbox_params(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Letterbox:
    """Largest aspect-preserving resize of ``src_hw`` that fits ``dst_hw``, centred (extra pixel right/bottom)."""
    src_h, src_w = src_hw
    if src_h < 1 or src_w < 1:
        raise ValueError(f"image size must be positive, got {src_hw}")
    # float32 arithmetic, op for op as in the DALI pipelines, so both round identically
    f32 = np.float32
    scale = min(f32(dst_hw[0]) / f32(src_h), f32(dst_hw[1]) / f32(src_w))
    new_h = int(min(max(np.floor(f32(src_h) * scale + f32(0.5)), 1), dst_hw[0]))
    new_w = int(min(max(np.floor(f32(src_w) * scale + f32(0.5)), 1), dst_hw[1]))
    return Letterbox((src_h, src_w), (new_h, new_w), (dst_hw[0] - new_h) // 2, (dst_hw[1] - new_w) // 2)


def letterbox_pixels(image_rgb: np.ndarray, dst_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Reference letterbox: uint8 HWC RGB -> uint8 CHW, bilinear resize, pad 114.

    Numpy + OpenCV; the DALI pipelines implement the same geometry and are tested against this.
    """
    import cv2

    if image_rgb.ndim == 2:
        image_rgb = np.repeat(image_rgb[:, :, None], 3, axis=2)
    box = letterbox_params(image_rgb.shape[:2], dst_hw)
    resized = cv2.resize(image_rgb, (box.new_hw[1], box.new_hw[0]), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((*dst_hw, 3), PAD_VALUE, dtype=np.uint8)
    canvas[box.pad_top:box.pad_top + box.new_hw[0], box.pad_left:box.pad_left + box.new_hw[1]] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)), box


def letterbox_image(image_rgb: np.ndarray, dst_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """``letterbox_pixels`` as float32 CHW in [0, 1] (pixels / 255: the detector's float input)."""
    pixels, box = letterbox_pixels(image_rgb, dst_hw)
    return pixels.astype(np.float32) / np.float32(255), box


def unletterbox_boxes(boxes_xyxy: np.ndarray, box: Letterbox) -> np.ndarray:
    """Map [N, 4] x1,y1,x2,y2 from network-input pixels back to the original image, clipped to it."""
    scale_y, scale_x = box.scale_yx
    out = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - box.pad_left) / scale_x
    out[:, [1, 3]] = (out[:, [1, 3]] - box.pad_top) / scale_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, box.src_hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, box.src_hw[0])
    return out


def letterbox_boxes(boxes_xyxy: np.ndarray, box: Letterbox) -> np.ndarray:
    """Inverse of ``unletterbox_boxes`` (without clipping): original pixels -> network-input pixels."""
    scale_y, scale_x = box.scale_yx
    out = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * scale_x + box.pad_left
    out[:, [1, 3]] = out[:, [1, 3]] * scale_y + box.pad_top
    return out


def xywh_to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """[N, 4] centre x, centre y, width, height -> x1, y1, x2, y2."""
    boxes_xywh = np.asarray(boxes_xywh, dtype=np.float32)
    half = boxes_xywh[:, 2:4] / 2
    return np.concatenate([boxes_xywh[:, :2] - half, boxes_xywh[:, :2] + half], axis=1)


def box_iou(boxes_a_xyxy: np.ndarray, boxes_b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU, [N, 4] x [M, 4] -> [N, M]."""
    area_a = (boxes_a_xyxy[:, 2] - boxes_a_xyxy[:, 0]) * (boxes_a_xyxy[:, 3] - boxes_a_xyxy[:, 1])
    area_b = (boxes_b_xyxy[:, 2] - boxes_b_xyxy[:, 0]) * (boxes_b_xyxy[:, 3] - boxes_b_xyxy[:, 1])
    lt = np.maximum(boxes_a_xyxy[:, None, :2], boxes_b_xyxy[None, :, :2])
    rb = np.minimum(boxes_a_xyxy[:, None, 2:], boxes_b_xyxy[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS. Returns int64 indices of kept boxes by descending score (ties: lower index first).

    A box is suppressed when its IoU with a kept, higher-scored box is strictly greater than the
    threshold (torchvision's rule). ``max_keep`` stops after that many kept boxes (same prefix).
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = np.asarray(boxes_xyxy, dtype=np.float32).T
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size and (max_keep is None or len(keep) < max_keep):  # one iteration per kept box
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
                max_keep: int | None = None) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other (coordinate-offset trick)."""
    if len(boxes_xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    offset = float(np.abs(boxes_xyxy).max()) + 1.0
    shifted = boxes_xyxy + (class_ids.astype(np.float32) * offset)[:, None]
    return nms(shifted, scores, iou_threshold, max_keep)


@dataclass(frozen=True)
class Detections:
    """Final detections of one image: boxes_xyxy float32 [K, 4], scores float32 [K], class_ids int32 [K]."""

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def select_detections(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, conf_threshold: float,
                      iou_threshold: float, max_detections: int) -> Detections:
    """Score threshold, class-aware NMS, cap. Inputs are per-anchor candidates of one image."""
    mask = scores > conf_threshold
    boxes_xyxy, scores, class_ids = boxes_xyxy[mask], scores[mask], class_ids[mask]
    keep = batched_nms(boxes_xyxy, scores, class_ids, iou_threshold, max_detections)
    return Detections(boxes_xyxy[keep].astype(np.float32), scores[keep].astype(np.float32),
                      class_ids[keep].astype(np.int32))


def candidates_from_raw(prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upstream-format rows [N, 5+nc] (cx, cy, w, h, obj, scores) -> (boxes_xyxy, best score, best class)."""
    class_scores = prediction[:, 5:] * prediction[:, 4:5]
    class_ids = class_scores.argmax(axis=1)
    return xywh_to_xyxy(prediction[:, :4]), class_scores[np.arange(len(class_ids)), class_ids], class_ids
