"""What users deploy, run as shipped: the cpu and Locust images built from their Dockerfiles (on a stand-in
for the public base image), the cpu repository image made by `make images`, and the cpu Deployment that
`k8s-overlay` renders, played with podman: ready within the startup probe's budget, the same detections
as the embedded server, Locust's image headless against it, no restart a minute later, and a SIGTERM
that loses no request in flight. `make image-check` runs this module alone; the report lands in
artifacts/reports/image_check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from yolov6_build.server import ADMIN_HEADER

from tests.images.pod import PlayedPod, deployment_of, emulate_kubernetes, podman_secret, SERVED_PORTS
from tests.images.podman import ENGINE, Podman
from tests.images.standin import STANDIN_IMAGE, ensure_standin

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
REPORT_DIR = REPO / "artifacts" / "reports" / "image_check"
REGISTRY = "localhost/image-check"
TAG = "test"
STAYS_UP_S = 60  # the pod still runs, never restarted, this long after it became ready


def _image(name: str) -> str:
    return f"{REGISTRY}/yolov6-int8/{name}:{TAG}"


@pytest.fixture(scope="module")
def report():
    facts: dict = {}
    yield facts
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "image_check.json").write_text(json.dumps(facts, indent=2) + "\n")
    lines = ["# Image check: what users deploy, built and run here", "",
             f"Base image: a stand-in for `{STANDIN_IMAGE}` (Debian bookworm, Python 3.11, debootstrap).", "",
             "| what | result |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    (REPORT_DIR / "image_check.md").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    return Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def standin(podman, tmp_path_factory, report):
    spent = ensure_standin(podman, tmp_path_factory.mktemp("standin"))
    report["stand-in base image (debootstrap, import)"] = f"{spent:.0f} s" if spent else "already on this machine"
    return STANDIN_IMAGE


@pytest.fixture(scope="module")
def cpu_images(podman, standin, repository, report) -> dict[str, str]:
    """`make images FLAVOUR=cpu` over the test repository, with podman: the server and repository images."""
    started = time.monotonic()
    make = subprocess.run(["make", "images", "FLAVOUR=cpu", f"REPOSITORY={repository}", f"REGISTRY={REGISTRY}",
                           f"IMAGE_TAG={TAG}", f"CONTAINER_ENGINE={' '.join(ENGINE)}",
                           f"BUILD_OPTS={' '.join(podman.build_options)}"],
                          cwd=REPO, capture_output=True, text=True, env=podman.env, timeout=1800)
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    images = {name: _image(name) for name in ("cpu", "cpu-repository")}
    sizes = ", ".join(f"{name} {podman.image_size_mb(image):.0f} MB" for name, image in images.items())
    report["`make images FLAVOUR=cpu` (podman reuses cached layers)"] = f"{time.monotonic() - started:.0f} s ({sizes})"
    return images


@pytest.fixture(scope="module")
def locust_image(podman, standin, report) -> str:
    started = time.monotonic()
    image = _image("locust")
    podman("build", *podman.build_options, "-f", "docker/Dockerfile.locust", "-t", image, ".", cwd=REPO,
           timeout_s=1800)
    report["Locust image build (podman reuses cached layers)"] = (f"{time.monotonic() - started:.0f} s "
                                                          f"({podman.image_size_mb(image):.0f} MB)")
    return image


@pytest.fixture(scope="module")
def rendered_deployment(podman, cpu_images, tmp_path_factory) -> dict:
    """The cpu Deployment as a user deploys it: k8s-overlay pins the repository image by digest."""
    out = tmp_path_factory.mktemp("overlay")
    reference = podman.digest_reference(cpu_images["cpu-repository"])
    subprocess.run([sys.executable, "-m", "yolov6_build", "k8s-overlay", "--flavour", "cpu",
                    "--image", f"yolov6-int8/cpu-repository={reference}", "-o", str(out)], check=True,
                   capture_output=True)
    rendered = subprocess.run(["kubectl", "kustomize", str(out)], check=True, capture_output=True, text=True)
    deployment = deployment_of(rendered.stdout)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == reference
    return deployment


@pytest.fixture(scope="module")
def pod(podman, rendered_deployment, tmp_path_factory, report):
    import secrets

    scratch = tmp_path_factory.mktemp("pod")
    played, folders = emulate_kubernetes(rendered_deployment, scratch)
    manifest = scratch / "deployment.yaml"
    manifest.write_text(json.dumps(played))
    key = secrets.token_hex(16)
    spec = rendered_deployment["spec"]["template"]["spec"]
    secret = next(v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v)
    podman_secret(podman, secret, {"admin-key": key}, scratch)
    started = PlayedPod(podman, manifest, rendered_deployment).play()
    started.admin_key = key
    try:
        probe = spec["containers"][0]["startupProbe"]
        budget = probe["periodSeconds"] * probe["failureThreshold"]
        ready_s = started.wait_ready(budget)
        report["cpu pod ready after `kube play`"] = f"{ready_s:.1f} s (startup probe budget {budget} s)"
        yield started
    finally:
        started.down()
        podman("secret", "rm", secret, check=False)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def test_the_cpu_image_holds_everything_the_served_models_import(podman, cpu_images):
    """The entrypoint's package and every module the repository's Python models and the supervisor import."""
    modules = "yolov6_build.server, yolov6_build.supervisor, psutil, numpy, cv2, openvino, onnxruntime, nvidia.dali"
    result = podman("run", "--rm", "--network", "host", "--entrypoint", "python", cpu_images["cpu"], "-c",
                    f"import {modules}, sys; print(sys.version_info[:2])")
    assert result.stdout.strip() == "(3, 11)", result.stdout


def test_the_pod_serves_the_embedded_servers_detections(pod, server, images):
    from yolov6_client import TritonDetector

    served = f"127.0.0.1:{SERVED_PORTS['grpc']}"
    for path in images:
        with TritonDetector(server.grpc_url) as reference, TritonDetector(served) as played:
            want, got = reference.detect(path), played.detect(path)
        assert len(got) == len(want)
        np.testing.assert_array_equal(got.class_ids, want.class_ids)
        np.testing.assert_allclose(got.boxes_xyxy, want.boxes_xyxy, atol=1e-3)


def test_the_admin_key_comes_from_the_secret_and_statistics_need_it(pod):
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{SERVED_PORTS['http']}/v2/models/stats"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 403
    request = urllib.request.Request(url, headers={ADMIN_HEADER: pod.admin_key})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_the_locust_image_runs_headless_against_the_pod(podman, locust_image, pod, report):
    result = podman("run", "--rm", "--network", "host", locust_image, "--headless", "-u", "4", "-r", "4",
                    "--run-time", "8s", "--host", f"grpc://127.0.0.1:{SERVED_PORTS['grpc']}", "--only-summary",
                    "--json", "GrpcDetectUser", check=False, timeout_s=120)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads(result.stdout)
    requests, failures = sum(s["num_requests"] for s in stats), sum(s["num_failures"] for s in stats)
    report["Locust image, 4 gRPC users for 8 s"] = f"{requests} requests, {failures} failed"
    assert requests > 20 and failures == 0, stats


def test_the_pod_still_runs_a_minute_later_never_restarted(pod, report):
    time.sleep(max(0.0, pod.ready_at + STAYS_UP_S - time.monotonic()))
    state = pod.state()
    memory = pod.memory_mb()
    report[f"{STAYS_UP_S} s after ready"] = (f"{state['Status']}, {state['RestartCount']} restarts, "
                                             f"{memory:.0f} MB of memory (limit 4096)")
    assert state == {"Status": "running", "ExitCode": 0, "RestartCount": 0}, pod.logs()
    assert memory < 4096


def test_a_stop_loses_no_request_in_flight(pod, images, report):
    """Requests sent before the SIGTERM all answer with detections; later ones are refused, not hung."""
    from yolov6_client import ServerError, TritonDetector

    payloads = [Path(p).read_bytes() for p in images]
    outcomes: list[tuple[float, float, bool]] = []  # (sent, answered, detections came back)
    done = threading.Event()

    def user(index: int):
        with TritonDetector(f"127.0.0.1:{SERVED_PORTS['grpc']}", retries=0, timeout_s=60) as detector:
            while not done.is_set():
                sent = time.monotonic()
                try:
                    detector.detect(payloads[index % len(payloads)])
                    outcomes.append((sent, time.monotonic(), True))
                except ServerError:
                    outcomes.append((sent, time.monotonic(), False))
                    time.sleep(0.05)

    users = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(4)]
    for thread in users:
        thread.start()
    time.sleep(3)
    stop_at = time.monotonic()
    stop_s = pod.stop()
    done.set()
    for thread in users:
        thread.join(90)
    before = [o for o in outcomes if o[0] < stop_at]
    in_flight = [o for o in before if o[1] > stop_at]
    state = pod.state()
    answered = sum(ok for _, _, ok in before)
    report["SIGTERM (`pod stop`, the pod's grace period) under 4 gRPC users"] = (
        f"stopped in {stop_s:.1f} s, exit code {state['ExitCode']}; {answered} of {len(before)} requests sent "
        f"before it answered ({len(in_flight)} in flight at the stop); {len(outcomes) - len(before)} refused after")
    assert before and in_flight, "no request was in flight when the stop came"
    assert all(ok for _, _, ok in before), [o for o in before if not o[2]]
    assert state["ExitCode"] == 0 and stop_s < pod.grace_s, pod.logs()
