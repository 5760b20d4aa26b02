"""Letterbox geometry and NMS against slow references and threshold edges."""

import numpy as np
import pytest

from yolov6_build.geometry import (Letterbox, batched_nms, box_iou, letterbox_boxes, letterbox_params, nms,
                                   select_detections, unletterbox_boxes, xywh_to_xyxy)


def slow_nms(boxes, scores, thr):
    """torchvision.ops.nms semantics, written out pair by pair."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= thr for j in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def slow_batched_nms(boxes, scores, classes, thr):
    keep = []
    for cls in np.unique(classes):
        idx = np.nonzero(classes == cls)[0]
        keep.extend(idx[slow_nms(boxes[idx], scores[idx], thr)])
    return np.array(sorted(keep, key=lambda i: (-scores[i], i)), dtype=np.int64)


def random_boxes(rng, n, extent=200.0):
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(1, extent / 3, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_reference_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, 150), rng.random(150).astype(np.float32)
    classes = rng.integers(0, 4, 150)
    for thr in (0.3, 0.5, 0.7):
        assert np.array_equal(nms(boxes, scores, thr), slow_nms(boxes, scores, thr))
        assert np.array_equal(batched_nms(boxes, scores, classes, thr), slow_batched_nms(boxes, scores, classes, thr))


def test_nms_iou_exactly_at_threshold_is_kept():
    # IoU of these two boxes is exactly 0.5: suppression needs IoU strictly above the threshold
    boxes = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], dtype=np.float32)
    assert box_iou(boxes[:1], boxes[1:])[0, 0] == pytest.approx(0.5)
    assert list(nms(boxes, np.array([0.9, 0.8], np.float32), 0.5)) == [0, 1]
    assert list(nms(boxes, np.array([0.9, 0.8], np.float32), 0.49)) == [0]


def test_classes_never_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10]] * 3, dtype=np.float32)
    keep = batched_nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 0]), 0.5)
    assert list(keep) == [0, 1]


def test_select_detections_threshold_and_cap():
    rng = np.random.default_rng(0)
    boxes, scores = random_boxes(rng, 300), rng.random(300).astype(np.float32)
    classes = rng.integers(0, 3, 300)
    dets = select_detections(boxes, scores, classes, 0.2, 0.5, 10)
    assert len(dets) == 10 and (dets.scores > 0.2).all() and (np.diff(dets.scores) <= 0).all()
    full = select_detections(boxes, scores, classes, 0.2, 0.5, 1000)
    np.testing.assert_array_equal(full.scores[:10], dets.scores)  # the cap keeps the same prefix


@pytest.mark.parametrize("src_hw", [(480, 640), (640, 480), (1, 500), (500, 1), (333, 333), (4000, 3000), (7, 9)])
@pytest.mark.parametrize("dst_hw", [(320, 320), (384, 640)])
def test_letterbox_params_fit_and_centre(src_hw, dst_hw):
    box = letterbox_params(src_hw, dst_hw)
    assert 1 <= box.new_hw[0] <= dst_hw[0] and 1 <= box.new_hw[1] <= dst_hw[1]
    assert box.new_hw[0] == dst_hw[0] or box.new_hw[1] == dst_hw[1]  # one side touches
    assert abs(box.new_hw[0] / src_hw[0] - box.new_hw[1] / src_hw[1]) <= 1 / min(src_hw) + 1 / min(box.new_hw)
    assert box.pad_top == (dst_hw[0] - box.new_hw[0]) // 2 and box.pad_left == (dst_hw[1] - box.new_hw[1]) // 2
    assert Letterbox.from_array(box.as_array()) == box


def test_unletterbox_inverts_letterbox_and_clips():
    box = letterbox_params((480, 640), (320, 320))
    original = np.array([[10, 20, 200, 300], [600, 400, 640, 480]], dtype=np.float32)
    np.testing.assert_allclose(unletterbox_boxes(letterbox_boxes(original, box), box), original, atol=1e-3)
    outside = unletterbox_boxes(np.array([[-50, -50, 400, 400]], np.float32), box)
    assert outside.min() >= 0 and outside[0, 2] <= 640 and outside[0, 3] <= 480


def test_invalid_letterbox_geometry_is_rejected():
    with pytest.raises(ValueError, match="invalid letterbox"):
        Letterbox.from_array(np.zeros(6))
    with pytest.raises(ValueError, match="invalid letterbox"):
        Letterbox.from_array([1, 2, 3])


def test_xywh_to_xyxy():
    np.testing.assert_allclose(xywh_to_xyxy(np.array([[10, 20, 4, 6]], np.float32)), [[8, 17, 12, 23]])
