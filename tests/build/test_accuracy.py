"""Synthetic data, COCO evaluation and a few training steps."""

import json

import numpy as np
import pytest
import torch

from yolov6_build.data import CocoDataset, TrainDataset, collate
from yolov6_build.evaluate import coco_map
from yolov6_build.geometry import Detections
from yolov6_build.synthetic import CLASS_NAMES, generate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=3, counts={"train": 12, "val": 6})
    return root


def test_generator_is_deterministic_and_varied(tiny, tmp_path):
    generate(tmp_path, seed=3, counts={"val": 6})
    assert (tmp_path / "annotations/instances_val.json").read_bytes() == (tiny / "annotations/instances_val.json").read_bytes()
    assert (tmp_path / "val/val_000003.jpg").read_bytes() == (tiny / "val/val_000003.jpg").read_bytes()
    data = json.loads((tiny / "annotations/instances_train.json").read_text())
    assert len(data["categories"]) == len(CLASS_NAMES) >= 8
    sizes = {(i["width"], i["height"]) for i in data["images"]}
    assert len(sizes) > 6 and any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    for ann in data["annotations"]:
        image = data["images"][ann["image_id"] - 1]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01


def _ground_truth_detections(dataset, shift=0.0):
    dets = {}
    for s in dataset.samples:
        boxes = s.boxes_xyxy.copy()
        boxes[:, [0, 2]] += shift * (boxes[:, 2:3] - boxes[:, 0:1])
        dets[s.image_id] = Detections(boxes, np.ones(len(boxes), np.float32), s.labels.astype(np.int32))
    return dets


def test_coco_map_is_one_for_ground_truth_and_drops_when_boxes_move(tiny):
    dataset = CocoDataset(tiny / "annotations/instances_val.json")
    perfect = coco_map(dataset, _ground_truth_detections(dataset))
    assert perfect["map50_95"] == pytest.approx(1.0) and perfect["map50"] == pytest.approx(1.0)
    moved = coco_map(dataset, _ground_truth_detections(dataset, shift=0.2))
    assert moved["map50_95"] < 0.8 and moved["map50"] == pytest.approx(1.0)  # IoU 0.67 still counts at 0.5
    far = coco_map(dataset, _ground_truth_detections(dataset, shift=0.6))
    assert far["map50"] < 0.1


def test_train_dataset_targets_follow_the_letterbox(tiny):
    dataset = TrainDataset(CocoDataset(tiny / "annotations/instances_train.json"), (320, 320), augment=True)
    images, targets, mask = collate([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 320, 320) and images.dtype == torch.float32
    boxes = targets[mask][:, 1:]
    assert (boxes >= -1).all() and (boxes <= 321).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_a_few_training_steps_lower_the_loss(tiny):
    from yolov6_build.model.yolo import ModelSpec, build_model
    from yolov6_build.train.loss import DetectionLoss

    torch.manual_seed(0)
    dataset = TrainDataset(CocoDataset(tiny / "annotations/instances_train.json"), (160, 160), augment=False)
    images, targets, mask = collate([dataset[i] for i in range(8)])
    model = build_model(ModelSpec("n", len(CLASS_NAMES))).train()
    criterion = DetectionLoss(model.detect)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, parts = criterion(model(images), targets, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(parts) == {"cls", "iou"}
    assert losses[-1] < 0.8 * losses[0]


def test_dfl_head_loss_runs_and_has_gradients(tiny):
    from yolov6_build.model.yolo import ModelSpec, build_model
    from yolov6_build.train.loss import DetectionLoss

    dataset = TrainDataset(CocoDataset(tiny / "annotations/instances_train.json"), (128, 128), augment=False)
    images, targets, mask = collate([dataset[i] for i in range(2)])
    model = build_model(ModelSpec("m", len(CLASS_NAMES))).train()
    loss, parts = DetectionLoss(model.detect)(model(images), targets, mask)
    loss.backward()
    assert "dfl" in parts and torch.isfinite(loss)
    assert model.detect.reg_preds[0].weight.grad.abs().sum() > 0


def test_training_writes_checkpoints_and_resumes(tiny, tmp_path):
    from yolov6_build.model.checkpoint import load_checkpoint
    from yolov6_build.train.loop import TrainConfig, train

    ann = tiny / "annotations"
    cfg = dict(train_annotations=str(ann / "instances_train.json"), val_annotations=str(ann / "instances_val.json"),
               out_dir=str(tmp_path), input_hw=(96, 96), batch_size=6, eval_every=1, workers=0,
               optimizer="adamw", lr=1e-3)
    train(TrainConfig(epochs=1, **cfg))
    first = json.loads((tmp_path / "history.json").read_text())
    assert len(first) == 1 and "val_map50_95" in first[0]
    final = train(TrainConfig(epochs=2, **cfg))  # resumes from last.pt at epoch 2
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[0] == first[0]
    model, info = load_checkpoint(final)
    assert info.class_names == list(CLASS_NAMES) and info.input_hw == (96, 96) and info.extra["history"] == history
