"""The client library and CLI against the live server: folders, JSON, failures, server eval vs offline."""

import json
from dataclasses import replace

import numpy as np
import pytest

from yolov6_build import contract as c
from yolov6_build.data import CocoDataset
from yolov6_build.evaluate import detector_runner, evaluate
from yolov6_client import ServerError, TritonDetector
from yolov6_client.cli import main
from yolov6_client.concurrent import detect_all
from yolov6_client.evaluate import SERVER_EVAL_SETTINGS, evaluate_server

pytestmark = pytest.mark.triton


def test_detect_all_keeps_order_and_isolates_failures(server, images, tmp_path):
    missing = tmp_path / "missing.jpg"
    items = [images[0], b"not an image", missing, images[1], images[0]]
    results = detect_all(lambda: TritonDetector(server.grpc_url, retries=0), items, concurrency=3, progress=False,
                         conf_threshold=0.001)
    assert [isinstance(r, ServerError) for r in results] == [False, True, True, False, False]
    assert "cannot read" in str(results[2])
    np.testing.assert_allclose(results[0].scores, results[4].scores)
    assert len(results[0]) > 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_cli_detects_a_folder_as_json(server, images, protocol, capsys, tmp_path):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    code = main([str(images[0].parent), "--url", url, "--protocol", protocol, "--json", "--conf", "0.001",
                 "-j", "2", "--no-progress", "--annotate", str(tmp_path / "out")])
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in images]
    assert all(r["detections"] and {"class", "score", "box_xyxy"} <= set(r["detections"][0]) for r in records)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in images)


def test_cli_reports_a_bad_file_and_exits_nonzero(server, images, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(images[0].read_bytes()[:100])
    assert main([str(images[0]), str(bad), "--url", server.grpc_url, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "1 of 2 images failed" in err


def test_cli_says_when_the_server_is_down(capsys, tmp_path):
    image = tmp_path / "x.jpg"
    image.write_bytes(b"\xff\xd8")
    assert main([str(image), "--url", "127.0.0.1:9", "--timeout", "2", "--no-progress"]) == 1
    assert "not ready" in capsys.readouterr().err


@pytest.fixture(scope="module")
def val_set(tmp_path_factory):
    from yolov6_build.synthetic import write_split

    return CocoDataset(write_split(tmp_path_factory.mktemp("val"), "val", 40, seed=7))


@pytest.fixture(scope="module", params=[("openvino", "opencv"), ("ort", "dali")], ids="-".join)
def int8_server_per_runtime(request, server, repository, checkpoint, quantized, tmp_path_factory, launch_server):
    """(server, repository) of the INT8 CPU repository on each detector runtime, and each letterbox the
    preprocess step can run (the shared repository, the default, is reused)."""
    from tests.conftest import build_int8_repository, served_settings

    runtime, preprocess = request.param
    if (served_settings(repository)["detector_runtime"], served_settings(repository)["cpu_preprocess"]) == request.param:
        yield server, repository
        return
    root = tmp_path_factory.mktemp(f"int8_{runtime}")
    other = build_int8_repository(checkpoint, quantized, root / "cpu", runtime, cpu_preprocess=preprocess)
    triton = launch_server(other, root / "server")
    yield triton, other
    triton.stop()


def test_server_map_equals_offline_map(int8_server_per_runtime, val_set):
    """The server's INT8 mAP equals the offline harness's on the same graph, runtime and letterbox, for each
    runtime and letterbox."""
    from tests.conftest import served_settings

    server, repository = int8_server_per_runtime
    with TritonDetector(server.grpc_url) as probe:
        input_hw = probe.input_hw
    served = evaluate_server(lambda: TritonDetector(server.grpc_url), val_set, concurrency=4, progress=False)
    # offline with the served letterbox: INT8 graphs move by tenths of a point for one grey level of resize
    settings = served_settings(repository)
    offline = evaluate(detector_runner(repository / c.DETECTOR_MODEL / "1" / "model.onnx", settings["detector_runtime"]),
                       val_set, input_hw, replace(SERVER_EVAL_SETTINGS, preprocess=settings["cpu_preprocess"]),
                       progress=False)
    assert served["images"] == offline["images"] == 40
    assert offline["map50_95"] > 0.3  # the demo model (a random one would make this comparison empty)
    assert abs(served["map50_95"] - offline["map50_95"]) <= 0.002
