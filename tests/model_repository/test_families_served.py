"""A checkpoint of each model family beyond v3.0's RepVGG goes through the whole bundle: PTQ, export, a cpu
repository, detections through the embedded server, and the gpu repository from the same INT8 graph."""

import json

import numpy as np
import onnx
import pytest

from tests.upstream.weights import fill
from yolov6_client import TritonDetector

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("size, training_mode", [("n", "qarepvggv2"), ("n6", "repvgg"), ("s_mbla", "repvgg"), ("lite_s", "repvgg")])
def test_family_checkpoint_is_quantized_and_served(size, training_mode, tmp_path, images, launch_server):
    from yolov6_build.build_repo import build_repository
    from yolov6_build.export.lint import lint_qdq
    from yolov6_build.model.checkpoint import save_checkpoint
    from yolov6_build.model.yolo import ModelSpec, build_model
    from yolov6_build.quantize.stage import QuantizeStageConfig
    from yolov6_build.synthetic import CLASS_NAMES, write_split

    model = build_model(ModelSpec(size, len(CLASS_NAMES), training_mode=training_mode))
    fill(model)  # untrained: bounded weights, so the checks are of the plumbing, not of accuracy
    checkpoint = save_checkpoint(model, tmp_path / f"{size}_{training_mode}.pt", list(CLASS_NAMES), (320, 320))
    calib = write_split(tmp_path / "data", "calib", 16, seed=3)
    manifest = build_repository(checkpoint, tmp_path / "cpu", "cpu", calib=calib, max_batch_size=2,
                                quantize_config=QuantizeStageConfig(calib_images=16),
                                quantize_dir=tmp_path / "quantize")
    assert json.loads(manifest.read_text())["config"]["strides"] == list(model.detect.strides)
    findings = lint_qdq(tmp_path / "quantize" / "detector_qdq.onnx")
    assert findings == [], findings  # scales merged wherever TensorRT fuses, in the family's own blocks too
    gpu = json.loads(build_repository(checkpoint, tmp_path / "gpu", "gpu", max_batch_size=2,
                                      detector_onnx=tmp_path / "quantize" / "detector_qdq.onnx").read_text())
    assert gpu["config"]["strides"] == list(model.detect.strides) and gpu["engine"]["precision"] == "int8"
    onnx.checker.check_model(str(tmp_path / "gpu" / gpu["engine"]["onnx"]))  # the typed graph TensorRT builds
    server = launch_server(tmp_path / "cpu", tmp_path / "server")
    try:
        with TritonDetector(server.grpc_url) as detector:
            detections = detector.detect(images[0], conf_threshold=0.0)
        assert len(detections) > 0 and np.isfinite(detections.boxes_xyxy).all()
    finally:
        server.stop()
