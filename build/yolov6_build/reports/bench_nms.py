"""NMS step cost per image: on real detector candidates and on a random worst case."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import contract as c
from ..postprocess import detections_for_image, pad_detections


def _time_per_image(candidates, letterbox, repeats: int, **thresholds) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for boxes, scores, classes in candidates:
            pad_detections(detections_for_image(boxes, scores, classes, letterbox, **thresholds),
                           thresholds["max_detections"])
    return (time.perf_counter() - started) / (repeats * len(candidates)) * 1000


def bench_nms(out_dir: Path, detector_onnx: Path | None = None, images: list[Path] | None = None,
              input_hw=(320, 320), repeats: int = 20) -> dict:
    """Milliseconds per image of threshold + class-aware NMS + mapping back, serving and eval settings."""
    letterbox = np.array([*input_hw, *input_hw, 0, 0], np.float32)
    rng = np.random.default_rng(0)
    cases = {}
    for n in (1000, 8400):  # random boxes/scores: almost nothing suppresses, the worst case
        xy = rng.uniform(0, input_hw[1], (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 120, (n, 2))], 1).astype(np.float32)
        cases[f"random {n} candidates, 80 classes"] = [(boxes, rng.random(n).astype(np.float32),
                                                        rng.integers(0, 80, n).astype(np.int32))]
    if detector_onnx and images:
        from ..data import load_rgb
        from ..evaluate import onnx_runner
        from ..geometry import letterbox_image

        run = onnx_runner(detector_onnx)
        batch = np.stack([letterbox_image(load_rgb(p), input_hw)[0] for p in images])
        boxes, scores, classes = run(batch)
        cases[f"demo model, {boxes.shape[1]} candidates/image"] = list(zip(boxes, scores, classes))
    settings = {"serve (conf 0.25, iou 0.45, max 100)": dict(conf_threshold=c.SERVE_CONF_THRESHOLD,
                                                             iou_threshold=c.SERVE_IOU_THRESHOLD,
                                                             max_detections=c.SERVE_MAX_DETECTIONS),
                "eval (conf 0.03, iou 0.65, max 300)": dict(conf_threshold=c.EVAL_CONF_THRESHOLD,
                                                            iou_threshold=c.EVAL_IOU_THRESHOLD,
                                                            max_detections=c.EVAL_MAX_DETECTIONS)}
    rows = [{"case": case, "settings": name, "ms_per_image": round(_time_per_image(cands, letterbox, repeats, **kw), 3)}
            for case, cands in cases.items() for name, kw in settings.items()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_nms.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# NMS step per image (numpy, one core)", "", "| candidates | settings | ms / image |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['settings']} | {r['ms_per_image']} |" for r in rows]
    (out / "bench_nms.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows}
