"""The real Triton server (embedded binary) serving the CPU repository: parity and isolation."""

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from yolov6_build import contract as c
from yolov6_build.build_repo import build_repository
from yolov6_build.demo import sample_images
from yolov6_build.pipeline import InProcessPipeline
from yolov6_build.server import ServerOptions, TritonServer
from yolov6_client import ServerError, TritonDetector

pytestmark = pytest.mark.triton
REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = REPO_ROOT / "models" / "yolov6n_synthetic_320.pt"
LOW_CONF = 0.001  # random weights score ~0.01: a low threshold still yields many detections to compare


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    if DEMO_CHECKPOINT.is_file():
        return DEMO_CHECKPOINT
    import torch

    from yolov6_build.model.checkpoint import save_checkpoint
    from yolov6_build.model.yolo import ModelSpec, build_model
    from yolov6_build.synthetic import CLASS_NAMES

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_n.pt"
    return save_checkpoint(build_model(ModelSpec("n", len(CLASS_NAMES))), path, list(CLASS_NAMES), (320, 320))


@pytest.fixture(scope="session")
def repository(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("repo") / "cpu"
    build_repository(checkpoint, out, "cpu", max_batch_size=4)
    return out


@pytest.fixture(scope="session")
def server(repository, tmp_path_factory):
    http, grpc, metrics = _free_ports(3)
    triton = TritonServer(repository, tmp_path_factory.mktemp("server"),
                          ServerOptions(http_port=http, grpc_port=grpc, metrics_port=metrics))
    with triton:
        yield triton


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    return sample_images(tmp_path_factory.mktemp("images"), count=4)


def _assert_same(a, b):
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-2)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_detections_equal_in_process_pipeline(server, repository, images, protocol):
    pipeline = InProcessPipeline(repository / c.DETECTOR_MODEL / "1" / "model.onnx", (320, 320),
                                 conf_threshold=LOW_CONF, max_detections=c.SERVE_MAX_DETECTIONS)
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

    def send(data):
        with TritonDetector(server.grpc_url, retries=0) as detector:
            try:
                return detector.detect(data, conf_threshold=LOW_CONF)
            except ServerError as exc:
                return exc

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:  # concurrent: batched together
        results = list(pool.map(send, payloads))
    reference = results[0]
    for data, result in zip(payloads, results):
        if data is good:
            _assert_same(result, reference)
        else:
            assert isinstance(result, ServerError)
            assert "decod" in str(result) or "image" in str(result)
    with TritonDetector(server.grpc_url) as detector:
        detector.wait_ready(timeout_s=5)  # still up
