"""Locust users for the ``yolov6`` ensemble: one over HTTP, one over gRPC, sending real JPEGs.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 HttpDetectUser
    locust -f loadtest/locustfile.py --host grpc://127.0.0.1:8001 GrpcDetectUser

Self-contained (locust, tritonclient, numpy, pillow) so it runs in the compose ``locust`` service.
Settings come from the environment:
  LOADTEST_IMAGES        folder of JPEG/PNG files to send (default: generated scenes of mixed sizes)
  LOADTEST_MODEL         ensemble name (default yolov6)
  LOADTEST_MAX_REQUESTS  stop the run after this many requests (default: no limit; use --run-time)
  LOADTEST_TIMEOUT_S     seconds per request (default 30)
  LOADTEST_USER_RPS      each user paces itself to this many requests/s (default: back to back)
  LOADTEST_RETRIES       retry a request this many times on a transient error (replica stopping,
                         balancer 502/503, connection reset); each retry is reported under the name
                         "retry", the request itself once under "infer" with its whole time (default 0)
"""

from __future__ import annotations

import io
import os
import random
import time
from pathlib import Path

import gevent
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import FastHttpUser, User, constant, constant_throughput, events, task

grpc_gevent.init_gevent()  # before any channel exists: gRPC's I/O must yield to other greenlets

MODEL = os.environ.get("LOADTEST_MODEL", "yolov6")
TIMEOUT_S = float(os.environ.get("LOADTEST_TIMEOUT_S", "30"))
USER_RPS = float(os.environ.get("LOADTEST_USER_RPS", "0"))
RETRIES = int(os.environ.get("LOADTEST_RETRIES", "0"))
RETRY_PAUSE_S = 0.05  # doubled per attempt: 5 retries span 1.5 s, longer than a balancer needs to react
OUTPUTS = ("num_detections", "boxes", "scores", "classes")
# What a replica that is stopping, restarting or gone answers, directly or through a balancer: worth
# another try (the same rule as yolov6_client.detector; this file must stay self-contained).
TRANSIENT_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "502", "503", "504")
TRANSIENT_MESSAGES = ("has no available versions", "is not ready", "server is stopping", "is not healthy",
                      "connect", "reset", "closed")


def transient(status: str, message: str) -> bool:
    message = message.lower()
    return any(s in status for s in TRANSIENT_STATUS) or any(m in message for m in TRANSIENT_MESSAGES)
# Mixed sizes and orientations, as cameras and uploads send them (width, height).
GENERATED_SIZES = ((320, 240), (640, 480), (480, 640), (1280, 720), (1920, 1080), (1024, 1024))


def _generated_jpegs(count: int = 12, seed: int = 0) -> list[bytes]:
    """Noisy backgrounds with filled shapes: real JPEG decode and letterbox work, no dataset needed."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    payloads = []
    for index in range(count):
        width, height = GENERATED_SIZES[index % len(GENERATED_SIZES)]
        base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((width, height), Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 9))):
            x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            w, h = int(rng.integers(16, max(17, width // 3))), int(rng.integers(16, max(17, height // 3)))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(70, 95)))
        payloads.append(buffer.getvalue())
    return payloads


def load_payloads() -> list[bytes]:
    folder = os.environ.get("LOADTEST_IMAGES")
    if not folder:
        return _generated_jpegs()
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"LOADTEST_IMAGES={folder} holds no .jpg/.jpeg/.png files")
    return [p.read_bytes() for p in files]


PAYLOADS = load_payloads()


def _image_input(module, encoded: bytes):
    data = np.frombuffer(encoded, dtype=np.uint8)[None]
    tensor = module.InferInput("image", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    return [tensor], [module.InferRequestedOutput(name) for name in OUTPUTS]


class HttpDetectUser(FastHttpUser):
    """KServe v2 over HTTP with the binary-tensor extension; geventhttpclient reports to Locust."""

    wait_time = constant_throughput(USER_RPS) if USER_RPS else constant(0)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    def on_start(self):
        import tritonclient.http as httpclient

        self._bodies = []
        for encoded in PAYLOADS:
            inputs, outputs = _image_input(httpclient, encoded)
            body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs)
            headers = {"Content-Type": "application/octet-stream"}
            if json_size is not None:
                headers["Inference-Header-Content-Length"] = str(json_size)
            self._bodies.append((body, headers))

    @task
    def detect(self):
        body, headers = random.choice(self._bodies)
        started = time.perf_counter()
        for attempt in range(RETRIES + 1):
            with self.client.post(f"/v2/models/{MODEL}/infer", data=body, headers=headers, name="infer",
                                  catch_response=True) as response:
                if response.status_code == 200:
                    response.request_meta["response_time"] = (time.perf_counter() - started) * 1e3
                    return
                text = (response.text or "")[:200] if response.status_code else str(response.error)
                if attempt < RETRIES and transient(str(response.status_code), text):
                    response.request_meta["name"] = "retry"  # counted apart; the request goes on
                    response.success()
                else:
                    response.request_meta["response_time"] = (time.perf_counter() - started) * 1e3
                    response.failure(f"HTTP {response.status_code}: {text}")
                    return
            gevent.sleep(RETRY_PAUSE_S * 2**attempt)


class GrpcDetectUser(User):
    """tritonclient.grpc on gevent; each request is reported to Locust with its latency or error."""

    wait_time = constant_throughput(USER_RPS) if USER_RPS else constant(0)

    def on_start(self):
        import tritonclient.grpc as grpcclient

        self._client = grpcclient.InferenceServerClient(self.host.removeprefix("grpc://"))
        self._requests = [_image_input(grpcclient, encoded) for encoded in PAYLOADS]

    def on_stop(self):
        self._client.close()

    @task
    def detect(self):
        inputs, outputs = random.choice(self._requests)
        started = time.perf_counter()
        for attempt in range(RETRIES + 1):
            length, error = 0, None
            try:
                result = self._client.infer(MODEL, inputs, outputs=outputs, client_timeout=TIMEOUT_S)
                length = int(result.as_numpy("num_detections").sum())
            except Exception as exc:  # every failure is a counted Locust failure, never a dead user
                status = exc.status() if hasattr(exc, "status") else type(exc).__name__
                error = RuntimeError(f"{status}: {exc}")  # Locust reports repr(): keep status and message
            if error is None or attempt == RETRIES or not transient(str(error), str(error)):
                break
            events.request.fire(request_type="grpc", name="retry", response_time=0.0, response_length=0,
                                exception=None, context={})
            gevent.sleep(RETRY_PAUSE_S * 2**attempt)
        events.request.fire(request_type="grpc", name="infer", response_time=(time.perf_counter() - started) * 1e3,
                            response_length=length, exception=error, context={})


@events.init.add_listener
def _stop_after_max_requests(environment, **_):
    limit = int(os.environ.get("LOADTEST_MAX_REQUESTS", "0"))
    if not limit:
        return
    seen = {"count": 0}

    def count(**_):
        seen["count"] += 1
        if seen["count"] == limit and environment.runner is not None:
            gevent.spawn(environment.runner.quit)

    environment.events.request.add_listener(count)


@events.quit.add_listener
def _exit_watchdog(exit_code, **_):
    # gRPC's gevent integration can leave interpreter shutdown waiting on its poller threads when a
    # call was cut off mid-flight. Stats and CSVs are written by now; if the process is still here
    # after 10 s, print every thread's stack (for the record) and exit.
    import faulthandler

    faulthandler.dump_traceback_later(10, exit=True)
