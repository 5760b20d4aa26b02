"""docker/: the compose file and images agree with the pinned release. The cpu and Locust images are built
and run by tests/images; the NGC-based ones cannot be built here and are checked by their recipes."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from yolov6_build import release

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
# Dockerfile -> (its pip requirements file, the Python of its base image)
IMAGE_REQUIREMENTS = {"Dockerfile.triton": ("requirements-triton.txt", release.CONTAINER_PYTHON),
                      "Dockerfile.locust": ("requirements-locust.txt", "3.11"),
                      "Dockerfile.cpu": ("requirements-cpu.txt", "3.11")}
NGC_BASED = {"Dockerfile.triton", "Dockerfile.engine"}
# what the NGC images ship and a pip install must never replace
NGC_FRAMEWORK = re.compile(r"^(torch.*|tensorrt.*|nvidia-.*|onnxruntime.*|triton|tritonserver.*|cuda-.*|jax.*|tensorflow.*)$")


def _compose_plugin() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_services_gpu_ports_and_health(compose):
    services = compose["services"]
    assert {"engine", "triton", "locust"} <= set(services)
    for name in ("engine", "triton"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    triton = services["triton"]
    assert all(p.startswith("127.0.0.1:") for p in triton["ports"])  # loopback unless the user changes it
    assert "--model-control-mode=${TRITON_MODEL_CONTROL:-none}" in triton["command"]  # none unless gpu-check
    assert any(a.startswith("--cuda-memory-pool-byte-size=0:") for a in triton["command"])  # GPU tensors from BLS
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert any(v.endswith(":/models:ro") for v in triton["volumes"])


def test_no_variable_is_required_to_parse_the_file():
    """`${VAR:?}` aborts every compose command, `run engine` included, when VAR is unset."""
    assert not re.search(r"\$\{[A-Z_]+:?\?", (DOCKER / "docker-compose.yml").read_text())


def test_locust_service_waits_for_a_healthy_server(compose):
    locust = compose["services"]["locust"]
    assert locust["depends_on"]["triton"]["condition"] == "service_healthy"
    assert locust["command"][:2] == ["--host", "grpc://triton:8001"]
    assert all(p.startswith("127.0.0.1:") for p in locust["ports"])
    pins = (DOCKER / "requirements-locust.txt").read_text()
    for name in ("locust", "tritonclient", "numpy", "pillow"):  # the versions the locustfile is tested with here
        pinned = re.search(rf"^{name}(\[[^\]]*\])?==(\S+)", pins, re.M).group(2)
        assert re.search(rf"^{name}(\[[^\]]*\])?=={re.escape(pinned)}$", (REPO / "requirements.txt").read_text(), re.M)
    user_class = locust["command"][-1]
    assert f"class {user_class}(" in (REPO / "loadtest" / "locustfile.py").read_text()


def test_monitoring_profile_uses_the_deployments_rules_and_dashboard(compose):
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
        for volume in services[name]["volumes"]:
            assert (DOCKER / volume.split(":")[0]).exists(), volume
    assert "../deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in services["prometheus"]["volumes"]
    assert "../deploy/grafana:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    target = config["scrape_configs"][0]["static_configs"][0]
    assert target["targets"] == ["triton:8002"] and {"namespace", "pod"} <= set(target["labels"])  # the rules group by them


def test_one_pinned_release_everywhere(compose):
    for name in ("engine", "triton"):
        service = compose["services"][name]
        assert service["build"]["args"]["TRITON_RELEASE"] == release.TRITON_RELEASE
        assert service["image"].endswith(f":{release.TRITON_RELEASE}")
    for dockerfile, image in (("Dockerfile.triton", release.TRITON_IMAGE), ("Dockerfile.engine", release.TENSORRT_IMAGE)):
        text = (DOCKER / dockerfile).read_text()
        assert f"ARG TRITON_RELEASE={release.TRITON_RELEASE}" in text
        assert image.replace(release.TRITON_RELEASE, "${TRITON_RELEASE}") in text
        assert f'ENTRYPOINT ["{release.NGC_ENTRYPOINT}"' in text  # forward compatibility stays on
    assert IMAGE_REQUIREMENTS["Dockerfile.locust"][1] == compose["services"]["locust"]["build"]["args"]["PYTHON_VERSION"]
    requirements = (REPO / "requirements.txt").read_text()
    assert f"{release.DALI_WHEEL}=={release.DALI_VERSION}" in requirements
    assert f"{release.DALI_WHEEL}=={release.DALI_VERSION}" in (REPO / "constraints.txt").read_text()
    gpu_guide = (REPO / "docs" / "gpu.md").read_text()
    for fact in (f"Triton {release.TRITON_RELEASE}", f"DALI {release.DALI_VERSION}", f"CUDA {release.CUDA_VERSION}",
                 *(f"TensorRT {v}" for v in release.TENSORRT_CANDIDATES), f"Python {release.CONTAINER_PYTHON}",
                 f"R{release.MIN_DRIVER}", release.RELEASE_DRIVER):
        assert fact in gpu_guide, f"docs/gpu.md does not state {fact!r}"


def test_engine_image_installs_only_the_package():
    text = (DOCKER / "Dockerfile.engine").read_text()
    installs = re.findall(r"pip install ([^\n]+)", text)
    assert installs == ["--no-cache-dir --no-deps ."]


@pytest.mark.slow
@pytest.mark.parametrize("dockerfile", sorted(IMAGE_REQUIREMENTS))
def test_image_requirements_resolve_for_the_image_python(dockerfile, tmp_path):
    """pip's resolver for the image's Python and platform (dry run): installable, replaces no NGC package."""
    requirements, python = IMAGE_REQUIREMENTS[dockerfile]
    assert f"docker/{requirements}" in (DOCKER / dockerfile).read_text()
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
               *(f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                             "manylinux_2_5_x86_64", "manylinux1_x86_64")),
               "--report", str(report), "-r", str(DOCKER / requirements)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    if result.returncode != 0 and re.search(r"(Network|connection|Max retries|Temporary failure)", result.stderr):
        pytest.skip(f"the package index is unreachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    installed = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    if dockerfile in NGC_BASED:
        assert not {name for name in installed if NGC_FRAMEWORK.match(name)}, installed


def _serve(env, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "tritonserver").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    (fake / "tritonserver").chmod(0o755)
    return subprocess.run(["sh", str(DOCKER / "serve.sh"), "--model-repository=/models"], capture_output=True,
                          text=True, env={"PATH": f"{fake}:/usr/bin:/bin", **env})


def test_triton_refuses_to_start_without_an_admin_key(tmp_path):
    for env in ({}, {"TRITON_ADMIN_KEY": ""}):
        result = _serve(env, tmp_path)
        assert result.returncode == 2 and "TRITON_ADMIN_KEY" in result.stderr and not result.stdout


def test_triton_reads_the_key_from_the_file_a_secret_mounts(tmp_path):
    key_file = tmp_path / "admin-key"
    key_file.write_text("from-secret\n")
    args = _serve({"TRITON_ADMIN_KEY_FILE": str(key_file)}, tmp_path).stdout.splitlines()
    assert args[0].endswith("=from-secret")
    missing = _serve({"TRITON_ADMIN_KEY_FILE": str(tmp_path / "absent")}, tmp_path)
    assert missing.returncode != 0 and not missing.stdout


def test_triton_locks_the_embedded_servers_apis_with_the_key(tmp_path):
    from yolov6_build.server import ADMIN_HEADER, ServerOptions

    args = _serve({"TRITON_ADMIN_KEY": "s3cret"}, tmp_path).stdout.splitlines()
    apis = ",".join(ServerOptions().restricted_apis)  # the same lock as the embedded server
    assert args == [f"--http-restricted-api={apis}:{ADMIN_HEADER}=s3cret",
                    f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}=s3cret", "--model-repository=/models"]


@pytest.mark.skipif(not _compose_plugin(), reason="docker compose plugin not installed (only the file is validated)")
def test_docker_compose_config():
    result = subprocess.run(["docker", "compose", "-f", str(DOCKER / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                 if k != "TRITON_ADMIN_KEY"})
    assert result.returncode == 0, result.stderr
