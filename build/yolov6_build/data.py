"""COCO-format datasets: loading, training augmentation and batching (the serving letterbox for eval)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .geometry import PAD_VALUE, letterbox_boxes, letterbox_params
from .inputs import admit_encoded_image


@dataclass(frozen=True)
class CocoSample:
    image_id: int
    path: Path
    boxes_xyxy: np.ndarray  # float32 [M, 4], original pixels
    labels: np.ndarray  # int64 [M], contiguous 0..nc-1


class CocoDataset:
    """A COCO-format detection set: ``instances_*.json`` plus an image folder.

    Category ids are mapped to contiguous class indices in ascending id order (COCO's 80 of 91 too).
    """

    def __init__(self, annotations: str | Path, images_dir: str | Path | None = None):
        self.annotations = Path(annotations)
        if not self.annotations.is_file():
            raise ConfigError(f"annotation file not found: {self.annotations}")
        data = json.loads(self.annotations.read_text())
        self.images_dir = Path(images_dir) if images_dir else self._guess_images_dir()
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in categories]
        self.class_names = [c["name"] for c in categories]
        index_of = {cid: i for i, cid in enumerate(self.category_ids)}
        per_image: dict[int, list] = {img["id"]: [] for img in data["images"]}
        for ann in data.get("annotations", []):
            if not ann.get("iscrowd", 0) and ann["bbox"][2] > 0 and ann["bbox"][3] > 0:
                per_image[ann["image_id"]].append(ann)
        self.samples = []
        for img in data["images"]:
            anns = per_image[img["id"]]
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=np.float32).reshape(-1, 4)
            labels = np.array([index_of[a["category_id"]] for a in anns], dtype=np.int64)
            self.samples.append(CocoSample(img["id"], self.images_dir / img["file_name"], boxes, labels))

    def _guess_images_dir(self) -> Path:
        # <root>/annotations/instances_<split>.json -> <root>/<split> (COCO's own layout)
        split = self.annotations.stem.replace("instances_", "")
        return self.annotations.parent.parent / split

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)


def decode_rgb(encoded: bytes) -> np.ndarray:
    """The one offline image decoder: uint8 HWC RGB, grayscale expanded to 3 channels, EXIF orientation
    applied as the served DALI decoder applies it (tested pixel for pixel). Calibration, training and
    annotation decode with it. Admits the bytes first (``inputs.admit_encoded_image``), so OpenCV sees
    only what the fuzzed routes see. ValueError for bytes that are no image or are not admitted."""
    admitted = admit_encoded_image(encoded)
    if isinstance(admitted, ValueError):
        raise admitted
    return decode_admitted(admitted)


def decode_admitted(admitted: bytes | np.ndarray) -> np.ndarray:
    """``decode_rgb`` of bytes ``admit_encoded_image`` returned (the served OpenCV letterbox, after
    ``inputs.letterbox_admitted``): the decode without admitting a second time."""
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(admitted, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header whose sizes OpenCV refuses
        raise ValueError(f"cannot decode image: {str(exc).strip().splitlines()[-1][:200]}") from None
    if image is None:
        raise ValueError("cannot decode image: not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_rgb(path: str | Path) -> np.ndarray:
    """``decode_rgb`` of a file; ConfigError naming the file when it cannot be read."""
    try:
        return decode_rgb(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read image {path}: {exc}") from None


class TrainDataset:
    """Random scale, placement, flip and colour jitter into the network input, plus box targets.

    Item: (image float32 [3,H,W] in [0,1], targets float32 [M,5] = class, x1, y1, x2, y2 input pixels).
    """

    def __init__(self, dataset: CocoDataset, input_hw: tuple[int, int], augment: bool = True, seed: int = 0):
        self.dataset = dataset
        self.input_hw = tuple(input_hw)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        import cv2

        sample = self.dataset.samples[index]
        image = load_rgb(sample.path)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        box = letterbox_params(image.shape[:2], self.input_hw)
        boxes = sample.boxes_xyxy.copy()
        if self.augment:
            scale = float(rng.uniform(0.55, 1.0))
            new_h, new_w = max(8, int(box.new_hw[0] * scale)), max(8, int(box.new_hw[1] * scale))
            top = int(rng.integers(0, self.input_hw[0] - new_h + 1))
            left = int(rng.integers(0, self.input_hw[1] - new_w + 1))
            box = type(box)(box.src_hw, (new_h, new_w), top, left)
        resized = cv2.resize(image, (box.new_hw[1], box.new_hw[0]), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((*self.input_hw, 3), PAD_VALUE, dtype=np.uint8)
        canvas[box.pad_top:box.pad_top + box.new_hw[0], box.pad_left:box.pad_left + box.new_hw[1]] = resized
        boxes = letterbox_boxes(boxes, box)
        if self.augment:
            canvas = _jitter_colour(canvas, rng)
            if rng.random() < 0.5:
                canvas = canvas[:, ::-1]
                boxes[:, [0, 2]] = self.input_hw[1] - boxes[:, [2, 0]]
        targets = np.concatenate([sample.labels[:, None].astype(np.float32), boxes], axis=1)
        keep = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
        return np.ascontiguousarray(canvas.transpose(2, 0, 1)).astype(np.float32) / 255.0, targets[keep]


def _jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/saturation jitter (mild: colour is a class cue)."""
    out = image.astype(np.float32)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.75, 1.25)  # saturation
    out = (out - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-20, 20)  # contrast, brightness
    return np.clip(out, 0, 255).astype(np.uint8)


def collate(batch):
    """-> images Tensor[B,3,H,W], targets Tensor[B,Mmax,5] (class, xyxy), mask Tensor[B,Mmax] bool."""
    import torch

    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    most = max(1, max(len(b[1]) for b in batch))
    targets = torch.zeros(len(batch), most, 5)
    mask = torch.zeros(len(batch), most, dtype=torch.bool)
    for i, (_, t) in enumerate(batch):
        targets[i, :len(t)] = torch.from_numpy(t)
        mask[i, :len(t)] = True
    return images, targets, mask
