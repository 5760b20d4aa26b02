"""COCO mAP for any detector runner, with the serving letterbox, NMS and box mapping.

A runner maps a batch of letterboxed images [B,3,H,W] (float32 / 255, or uint8 pixels for a CPU
detector whose graph reads them: its ``pixels``) to candidates
(boxes_xyxy [B,K,4] input pixels, scores [B,K], class_ids [B,K]); torch models and ONNX graphs
(raw or top-k outputs) are wrapped here, so every variant is measured the same way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import contract as c
from .data import CocoDataset
from .errors import ConfigError
from .geometry import Detections
from .postprocess import detections_for_image
from .runtime import split_raw

log = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class EvalSettings:
    conf_threshold: float = c.EVAL_CONF_THRESHOLD
    iou_threshold: float = c.EVAL_IOU_THRESHOLD
    max_detections: int = c.EVAL_MAX_DETECTIONS
    batch_size: int = 8
    limit: int | None = None  # evaluate the first N images only
    # pipeline.PREPROCESSORS: 'opencv' (the offline decoder + OpenCV letterbox, the cpu flavour's default) or
    # 'dali'; server-vs-offline checks of INT8 graphs use the served one (one grey level of resize moves mAP)
    preprocess: str = "opencv"


def torch_runner(model) -> Runner:
    import torch

    model.eval()

    def run(images: np.ndarray):
        with torch.no_grad():
            raw = model(torch.from_numpy(images)).numpy()
        return split_raw(raw)

    return run


def onnx_runner(path: str | Path, threads: int = 0) -> Runner:
    """ONNX Runtime on CPU; accepts graphs with raw ``outputs`` or the top-k candidate outputs."""
    return detector_runner(path, "ort", threads)


def detector_runner(path: str | Path, runtime: str, threads: int = 0) -> Runner:
    """A top-k candidate graph on a CPU runtime (``runtime.RUNTIMES``); Q/DQ graphs run INT8 kernels."""
    from .runtime import load_detector

    return load_detector(path, runtime, threads)


def predict_dataset(runner: Runner, dataset: CocoDataset, input_hw: tuple[int, int],
                    settings: EvalSettings = EvalSettings(), progress: bool = True) -> dict[int, Detections]:
    """Detections (original pixels) per image id, with the reference letterbox."""
    from .progress import progress as progress_bar

    samples = dataset.samples[: settings.limit] if settings.limit else dataset.samples
    letterbox = _letterbox(settings, input_hw, str(np.dtype(getattr(runner, "pixels", np.float32))))
    results: dict[int, Detections] = {}
    for start in progress_bar(range(0, len(samples), settings.batch_size), desc="evaluate", unit="batch",
                              enabled=progress):
        chunk = samples[start:start + settings.batch_size]
        prepared = letterbox([s.path for s in chunk])
        boxes, scores, classes = runner(np.stack([p[0] for p in prepared]))
        for i, sample in enumerate(chunk):
            results[sample.image_id] = detections_for_image(
                boxes[i], scores[i], classes[i], prepared[i][1], settings.conf_threshold,
                settings.iou_threshold, settings.max_detections)
    return results


def _letterbox(settings: EvalSettings, input_hw: tuple[int, int], pixels: str = "float32"):
    """paths -> [(image [3,H,W] as ``pixels``, geometry float32 [6])] with the settings' preprocessing."""
    from .inputs import letterbox_admitted
    from .pipeline import make_preprocessor

    preprocess = make_preprocessor(settings.preprocess, input_hw, settings.batch_size, pixels=pixels)

    def letterbox(paths):  # admitted as the served preprocess admits
        results = letterbox_admitted(preprocess, [Path(p).read_bytes() for p in paths])
        failed = next((i for i, r in enumerate(results) if isinstance(r, Exception)), None)
        if failed is not None:
            raise ConfigError(f"cannot read image {paths[failed]}: {results[failed]}")
        return results

    return letterbox


def coco_results(dataset: CocoDataset, detections: dict[int, Detections]) -> list[dict]:
    """COCO results list: bbox as x, y, w, h in original pixels, dataset category ids."""
    rows = []
    for image_id, dets in detections.items():
        for box, score, cls in zip(dets.boxes_xyxy, dets.scores, dets.class_ids):
            rows.append({"image_id": int(image_id), "category_id": int(dataset.category_ids[int(cls)]),
                         "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                         "score": float(score)})
    return rows


def coco_map(dataset: CocoDataset, detections: dict[int, Detections]) -> dict[str, float]:
    """{'map50_95', 'map50', 'images'} from faster-coco-eval's COCOeval over the evaluated images."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(dataset.annotations))
    rows = coco_results(dataset, detections)
    if not rows:
        return {"map50_95": 0.0, "map50": 0.0, "images": len(detections)}
    dt = gt.loadRes(rows)
    evaluator = COCOeval_faster(gt, dt, "bbox", print_function=log.debug)
    evaluator.params.imgIds = sorted(detections)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {"map50_95": float(evaluator.stats[0]), "map50": float(evaluator.stats[1]), "images": len(detections)}


def evaluate(runner: Runner, dataset: CocoDataset, input_hw: tuple[int, int],
             settings: EvalSettings = EvalSettings(), progress: bool = True) -> dict[str, float]:
    return coco_map(dataset, predict_dataset(runner, dataset, input_hw, settings, progress))


def map_evaluator(dataset: CocoDataset, input_hw: tuple[int, int], limit: int | None = None):
    """A function model -> mAP@0.5:0.95 (PyTorch, eval thresholds) on ``dataset``; for searches over variants."""
    settings = EvalSettings(limit=limit)
    return lambda model: evaluate(torch_runner(model), dataset, input_hw, settings, progress=False)["map50_95"]


def write_result(path: str | Path, name: str, metrics: dict, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": name, **metrics, **(extra or {})}, indent=2) + "\n")
    return path
