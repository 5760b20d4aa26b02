"""The real Triton server (embedded binary) serving the CPU repository: parity and isolation."""

import numpy as np
import pytest

from tests.conftest import detect_concurrently, served_settings
from yolov6_build import contract as c
from yolov6_build.pipeline import InProcessPipeline
from yolov6_client import ServerError, TritonDetector

pytestmark = pytest.mark.triton
LOW_CONF = 0.001  # random weights score ~0.01: a low threshold still yields many detections to compare


def _assert_same(a, b):
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-2)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_detections_equal_in_process_pipeline(server, repository, images, protocol):
    pipeline = InProcessPipeline(repository / c.DETECTOR_MODEL / "1" / "model.onnx", (320, 320),
                                 conf_threshold=LOW_CONF, max_detections=c.SERVE_MAX_DETECTIONS,
                                 runtime=served_settings(repository)["detector_runtime"],
                                 preprocess=served_settings(repository)["cpu_preprocess"])
    expected = pipeline([p.read_bytes() for p in images])
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with TritonDetector(url, protocol) as detector:
        assert len(detector.class_names) == 8
        for path, want in zip(images, expected):
            _assert_same(detector.detect(path, conf_threshold=LOW_CONF), want)


def test_request_parameters_override_thresholds(server, images):
    with TritonDetector(server.grpc_url) as detector:
        many = detector.detect(images[0], conf_threshold=LOW_CONF)
        few = detector.detect(images[0], conf_threshold=LOW_CONF, max_detections=3)
        assert len(few) == min(3, len(many))
        np.testing.assert_allclose(few.scores, many.scores[:len(few)])
        with pytest.raises(ServerError, match="max_detections"):
            detector.detect(images[0], max_detections=10_000)


def test_bad_image_fails_only_its_own_request(server, images):
    good = images[0].read_bytes()
    payloads = [good, b"garbage bytes", good[: len(good) // 2], good] * 3
    results = detect_concurrently(server, payloads, conf_threshold=LOW_CONF)
    reference = results[0]
    for data, result in zip(payloads, results):
        if data is good:
            _assert_same(result, reference)
        else:
            assert isinstance(result, ServerError)
            assert "decod" in str(result) or "image" in str(result)
    with TritonDetector(server.grpc_url) as detector:
        detector.wait_ready(timeout_s=5)  # still up
