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
              "engines": {"input_hw": [320, 320], "engines": {}},
              "versions": {"engine": {"tensorrt": "11.1.0.8", "cuda": "13.3.0", "dali": None, "python": "3.12.3",
                                      "numpy": "1.26.4"},
                           "triton": {"tensorrt": "11.1.0", "cuda": "13.3.0", "dali": "2.1.1", "python": "3.12.3",
                                      "numpy": "1.26.4"}},
              "corrupt_image_in_a_batch": {"requests": 4, "corrupt_failed_alone": True, "others_as_alone": True}}
    report["checks"] = acceptance(report)
    assert report["checks"] == {"detections_match": True, "map_drop_points": 0.95, "map_within_tolerance": True,
                                "corrupt_image_isolated": True}
    text = markdown(report)
    assert "PASSED" in text and "| 32 | 1100.0 | 550.0 | 2.00x |" in text
    assert "triton image: TensorRT 11.1.0, CUDA 13.3.0, DALI 2.1.1" in text and "failed alone" in text
    report["corrupt_image_in_a_batch"]["others_as_alone"] = False
    report["checks"] = acceptance(report)
    assert "FAILED" in markdown(report)
    report["corrupt_image_in_a_batch"]["others_as_alone"] = True
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


def test_image_versions_are_read_from_the_image_files(tmp_path, monkeypatch):
    """The libnvinfer the image loads plans with, the DALI package of Triton's DALI backend, CUDA's version file."""
    from yolov6_build.image_versions import read_versions

    libs = tmp_path / "usr/lib/x86_64-linux-gnu"
    libs.mkdir(parents=True)
    for name in ("libnvinfer.so", "libnvinfer.so.11", "libnvinfer.so.11.1.0"):
        (libs / name).touch()
    dali = tmp_path / "opt/tritonserver/backends/dali/wheel/nvidia/dali"
    dali.mkdir(parents=True)
    (dali / "__init__.py").write_text("import sys\n__version__ = '2.1.1'\n")
    (tmp_path / "usr/local/cuda").mkdir(parents=True)
    (tmp_path / "usr/local/cuda/version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "13.3.0"}}')
    monkeypatch.delenv("CUDA_VERSION", raising=False)
    versions = read_versions(tmp_path)
    assert (versions["tensorrt"], versions["dali"], versions["cuda"]) == ("11.1.0", "2.1.1", "13.3.0")
    assert versions["sources"]["tensorrt"].endswith("libnvinfer.so.11.1.0")


def test_images_that_do_not_fit_together_are_named_with_both_numbers():
    from yolov6_build.image_versions import problems

    engine = {"tensorrt": "11.1.0.8", "python": "3.12.3"}
    triton = {"tensorrt": "11.1.0", "dali": "2.1.1", "python": "3.12.3"}
    assert problems(engine, triton, "2.1.1", "3.12") == []
    found = problems({**engine, "tensorrt": "10.14.1.48"}, {**triton, "dali": "2.2.0"}, "2.1.1", "3.12")
    assert "TensorRT 10.14.1.48 (tensorrt image)" in found[0] and "TensorRT 11.1.0 (tritonserver image)" in found[0]
    assert "DALI 2.1.1" in found[1] and "2.2.0" in found[1]
    assert problems(engine, {**triton, "tensorrt": None}, "2.1.1", "3.12")  # unknown is not a match


def test_image_versions_runs_on_the_standard_library_alone():
    """It runs inside the TensorRT and Triton images as they are: nothing but the standard library."""
    import json
    import subprocess
    import sys

    script = """
import sys
for name in ("numpy", "torch", "onnx", "nvidia.dali", "cv2", "PIL", "tensorrt"):
    sys.modules[name] = None
from yolov6_build.image_versions import main
main()
third_party = {n.split(".")[0] for n, m in sys.modules.items() if m is not None}
third_party -= set(sys.stdlib_module_names) | {"yolov6_build", "__main__", "_distutils_hack"}
print(sorted(n for n in third_party if not n.startswith("_")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text, _, imported = result.stdout.rpartition("\n[")
    assert json.loads(text)["python"] == ".".join(map(str, sys.version_info[:3]))
    assert imported.strip() == "]"


def test_driver_below_the_floor_is_named_with_the_forward_compatibility_path():
    from yolov6_build.reports.gpu_check import driver_note

    assert "runs CUDA" in driver_note("610.43.02") and "runs CUDA" in driver_note("580.65.06")
    note = driver_note("535.183.01")
    assert "R535 is older than R580" in note and "forward compatibility" in note
