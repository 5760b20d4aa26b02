"""Faults with a server of their own: a killed backend stub, a restart under load, graceful shutdown."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from yolov6_build.supervisor import live_stubs
from yolov6_client import ServerError, TritonDetector
from yolov6_client.concurrent import detect_all

pytestmark = pytest.mark.triton


@pytest.fixture()
def own_server(repository, tmp_path, launch_server):
    server = launch_server(repository, tmp_path / "server")
    yield server
    server.stop()


def test_killed_backend_stub_is_restarted_and_later_requests_succeed(own_server, images):
    """Triton 2.51 leaves a dead stub dead; the server's supervisor reloads its model."""
    [stub] = [p for p in psutil.Process(own_server.process.pid).children()
              if "yolov6_nms/1/model.py" in " ".join(p.cmdline())]
    stub.kill()
    outcomes, deadline = [], time.monotonic() + 90
    with TritonDetector(own_server.grpc_url, retries=0) as detector:
        while time.monotonic() < deadline:
            try:
                outcomes.append(detector.detect(images[0]))
                break
            except ServerError as exc:
                outcomes.append(exc)
                time.sleep(0.5)
    assert not isinstance(outcomes[-1], ServerError), f"no success after the stub died: {outcomes[-3:]}"
    assert own_server.supervisor.restarts["yolov6_nms"] == 1
    assert live_stubs(own_server.process.pid) == own_server.supervisor.expected
    assert own_server.process.poll() is None


def test_restart_under_load_loses_no_request(own_server, images):
    """Clients with enough retry budget ride out a restart: every image gets its detections."""
    payloads = [p.read_bytes() for p in images] * 100
    results: list = []
    worker = threading.Thread(target=lambda: results.extend(detect_all(
        lambda: TritonDetector(own_server.grpc_url, retries=7, backoff_s=0.25, timeout_s=20), payloads,
        concurrency=4, progress=False)))
    started = time.monotonic()
    worker.start()
    time.sleep(1.5)
    own_server.stop()
    own_server.start()  # same ports
    worker.join(timeout=180)
    assert not worker.is_alive(), "client hung across the restart"
    failed = [r for r in results if isinstance(r, ServerError)]
    assert len(results) == len(payloads) and not failed, f"{len(failed)} failed, first: {failed[:1]}"
    assert time.monotonic() - started < 180


def _photo_sized_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """A 12-megapixel JPEG of smooth gradients (about 0.2 MB, quick to send): decoding and letterboxing it
    takes about 40 ms here, so 48 of them keep the server busy for about 2 s. The small test images were
    served so fast that all 48 could finish before SIGTERM, and the test proved nothing."""
    import cv2
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()


def test_graceful_shutdown_finishes_requests_in_flight(own_server):
    payloads = [_photo_sized_jpeg()] * 48
    barrier = threading.Barrier(len(payloads) + 1)

    def send(data):
        with TritonDetector(own_server.grpc_url, retries=0, timeout_s=60) as detector:
            detector.wait_ready(10)
            barrier.wait()
            try:
                detector.detect(data)
                return time.monotonic()
            except ServerError as exc:
                return exc

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        futures = [pool.submit(send, data) for data in payloads]
        barrier.wait()
        time.sleep(0.5)  # every request has reached the server; 48 take it about 2 s
        stopping = time.monotonic()
        own_server.stop()
        results = [f.result(timeout=60) for f in futures]
    failed = [r for r in results if isinstance(r, ServerError)]
    assert not failed, f"{len(failed)} of {len(results)} in-flight requests lost: {failed[:1]}"
    finished_after_sigterm = sum(done > stopping for done in results)
    assert finished_after_sigterm > 0, "nothing was in flight at SIGTERM: the test proved nothing"
