"""gpu-check's report logic on made-up measurements (the run itself needs a GPU host with docker)."""

import numpy as np

from yolov6_build.geometry import Detections
from yolov6_build.reports.gpu_check import acceptance, compare_detections, cpu_preprocess_variant, markdown
from yolov6_build.repository import check_ensemble_wiring, parse_config


def _detections(boxes, classes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes, np.full(len(boxes), 0.9, np.float32), np.asarray(classes, np.int32))


def test_gpu_check_matches_boxes_by_class_and_iou():
    reference = [_detections([[0, 0, 100, 100], [200, 200, 300, 300]], [1, 2])]
    served = [_detections([[1, 1, 100, 100], [200, 200, 300, 300]], [1, 3])]  # second: wrong class
    result = compare_detections(served, reference)
    assert result["matched"] == 1 and result["reference_boxes"] == 2 and result["fraction"] == 0.5
    shifted = [_detections([[30, 0, 130, 100], [200, 200, 300, 300]], [1, 2])]  # IoU 0.54 for the first
    assert compare_detections(shifted, reference)["matched"] == 1


def test_gpu_check_report_states_the_verdict_and_ratios():
    report = {"gpu": "Tesla T4, 535.183.01",
              "detections_vs_cpu_flavour": {"matched": 95, "reference_boxes": 100, "fraction": 0.95,
                                            "iou_tolerance": 0.9},
              "map_server": {"map50_95": 0.795}, "map_offline_fp32": {"map50_95": 0.8045},
              "gpu_memory_mib": {"server": 300.0, "yolov6_dali": 250.0},
              "qps": {"dali_gpu": {1: 100.0, 32: 1100.0}, "cpu_preprocess": {1: 80.0, 32: 550.0}},
              "engines": {"input_hw": [320, 320], "engines": {}}}
    report["checks"] = acceptance(report)
    assert report["checks"] == {"detections_match": True, "map_drop_points": 0.95, "map_within_tolerance": True}
    text = markdown(report)
    assert "PASSED" in text and "| 32 | 1100.0 | 550.0 | 2.00x |" in text
    report["map_server"]["map50_95"] = 0.78
    report["checks"] = acceptance(report)
    assert not report["checks"]["map_within_tolerance"] and "FAILED" in markdown(report)


def test_gpu_check_cpu_preprocess_baseline_differs_only_in_the_preprocess(checkpoint, tmp_path):
    from yolov6_build.build_repo import build_repository

    build_repository(checkpoint, tmp_path / "gpu", "gpu")
    variant = cpu_preprocess_variant(tmp_path / "gpu", tmp_path / "gpu_cpu_preprocess")
    assert not (variant / "yolov6_dali").exists()
    config = (variant / "yolov6_preprocess" / "config.pbtxt").read_text()
    assert 'executor" value: { string_value: "dali" }' in config and "model_warmup" not in config
    for model in ("yolov6", "yolov6_detector", "yolov6_nms"):
        assert (variant / model / "config.pbtxt").read_text() == (tmp_path / "gpu" / model / "config.pbtxt").read_text()
    configs = {path.parent.name: parse_config(path.read_text()) for path in variant.glob("*/config.pbtxt")}
    assert check_ensemble_wiring(configs) == []  # float32 images, as the TensorRT detector reads
