"""docker/: the compose file and images agree with the pinned release (no Docker engine runs here)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from yolov6_build.engine.trt import TRITON_RELEASE

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _compose_plugin() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_services_gpu_ports_and_health(compose):
    services = compose["services"]
    assert {"build", "triton"} <= set(services)
    for name in ("build", "triton"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    triton = services["triton"]
    assert all(p.startswith("127.0.0.1:") for p in triton["ports"])  # loopback unless the user changes it
    assert "--model-control-mode=none" in triton["command"]
    from yolov6_build.server import ADMIN_HEADER, ServerOptions

    apis = ",".join(ServerOptions().restricted_apis)  # the same lock as the embedded server
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        assert f"{flag}={apis}:{ADMIN_HEADER}=${{TRITON_ADMIN_KEY:?export TRITON_ADMIN_KEY}}" in triton["command"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert any(v.endswith(":/models:ro") for v in triton["volumes"])


def test_locust_service_waits_for_a_healthy_server(compose):
    locust = compose["services"]["locust"]
    assert locust["depends_on"]["triton"]["condition"] == "service_healthy"
    assert locust["command"][:2] == ["--host", "grpc://triton:8001"]
    assert all(p.startswith("127.0.0.1:") for p in locust["ports"])
    version = locust["build"]["args"]["LOCUST_VERSION"]
    assert f"ARG LOCUST_VERSION={version}" in (DOCKER / "Dockerfile.locust").read_text()
    requirements = (DOCKER.parent / "requirements.txt").read_text()
    assert f"locust=={version}" in requirements  # the container runs the locustfile tested here
    user_class = locust["command"][-1]
    assert f"class {user_class}(" in (DOCKER.parent / "loadtest" / "locustfile.py").read_text()


def test_one_pinned_release_everywhere(compose):
    for name in ("build", "triton"):
        assert compose["services"][name]["build"]["args"]["TRITON_RELEASE"] == TRITON_RELEASE
    for dockerfile in ("Dockerfile.triton", "Dockerfile.build"):
        assert f"ARG TRITON_RELEASE={TRITON_RELEASE}" in (DOCKER / dockerfile).read_text()


@pytest.mark.skipif(not _compose_plugin(), reason="docker compose plugin not installed (only the file is validated)")
def test_docker_compose_config():
    result = subprocess.run(["docker", "compose", "-f", str(DOCKER / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
