"""The server process a pod runs: a SIGTERM while the models load stops it at once (as PID 1 too), and
the gpu init container's copy of the repository image into the pod's volume."""

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

from yolov6_build.engine.cli import TIMING_CACHES, copy_repository
from yolov6_build.errors import ConfigError
from yolov6_build.server import free_ports


@pytest.mark.slow
@pytest.mark.triton
def test_sigterm_while_the_models_load_stops_the_server_and_its_children(repository, tmp_path):
    http, grpc, metrics = free_ports(3)
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen([sys.executable, "-m", "yolov6_build", "serve", str(repository), "--work-dir",
                              str(tmp_path / "work"), "--http-port", str(http), "--grpc-port", str(grpc),
                              "--metrics-port", str(metrics)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (tmp_path / "work" / "tritonserver.log").exists():  # tritonserver started: models loading
        assert time.monotonic() < deadline and serve.poll() is None, (tmp_path / "serve.log").read_text()
        time.sleep(0.05)
    time.sleep(1)  # the server starts its backend stubs
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0, (tmp_path / "serve.log").read_text()
    assert "stop requested while the models load" in (tmp_path / "serve.log").read_text()
    deadline = time.monotonic() + 10
    while left := _processes_mentioning(tmp_path):
        assert time.monotonic() < deadline, f"server processes left running: {left}"
        time.sleep(0.2)


def _processes_mentioning(path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if str(path) in " ".join(p.info["cmdline"] or [])]


def _gpu_repository(root):
    (root / "yolov6_detector" / "1").mkdir(parents=True)
    (root / "yolov6_detector" / "1" / "model.onnx").write_bytes(b"onnx")
    (root / "manifest.json").write_text(json.dumps({"flavour": "gpu"}))
    (root / TIMING_CACHES).mkdir()
    (root / TIMING_CACHES / "timing-trt10.14-Tesla-T4.cache").write_bytes(b"cache")
    return root


def test_the_init_container_copies_the_repository_and_seeds_the_timing_cache(tmp_path):
    source = _gpu_repository(tmp_path / "image" / "repository")
    volume, caches = tmp_path / "models", tmp_path / "engines"
    volume.mkdir()  # an emptyDir exists before the init container runs
    copy_repository(source, volume, caches)
    assert (volume / "yolov6_detector" / "1" / "model.onnx").read_bytes() == b"onnx"
    assert not (volume / TIMING_CACHES).exists()  # Triton would take the folder for a model
    assert (caches / "timing-trt10.14-Tesla-T4.cache").read_bytes() == b"cache"


def test_a_newer_cache_in_the_pod_is_kept_and_a_non_repository_refused(tmp_path):
    source = _gpu_repository(tmp_path / "repository")
    caches = tmp_path / "engines"
    caches.mkdir()
    (caches / "timing-trt10.14-Tesla-T4.cache").write_bytes(b"newer")
    copy_repository(source, tmp_path / "models", caches)
    assert (caches / "timing-trt10.14-Tesla-T4.cache").read_bytes() == b"newer"
    with pytest.raises(ConfigError, match="manifest.json"):
        copy_repository(tmp_path / "engines", tmp_path / "elsewhere", caches)


def test_a_deployed_server_reconnects_grpc_clients_and_refuses_object_storage(tmp_path):
    from yolov6_build.cli import build_parser
    from yolov6_build.cli.common import server_from_args
    from yolov6_build.server import TritonServer

    server = server_from_args(build_parser().parse_args(["serve", str(tmp_path)]))
    assert server._grpc_age_args() == ["--grpc-max-connection-age=60000", "--grpc-max-connection-age-grace=30000"]
    never = server_from_args(build_parser().parse_args(["serve", str(tmp_path), "--grpc-max-connection-age", "0"]))
    assert never._grpc_age_args() == []
    with pytest.raises(ConfigError, match="local folder"):
        TritonServer("s3://bucket/repository", tmp_path)
