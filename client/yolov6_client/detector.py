"""Send encoded images to the ``yolov6`` ensemble and get Detections back (original-image pixels)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from yolov6_build import contract as c
from yolov6_build.geometry import Detections
from yolov6_build.postprocess import unpad_detections

log = logging.getLogger(__name__)

OUTPUTS = (c.NUM_DETECTIONS, c.DET_BOXES, c.DET_SCORES, c.DET_CLASSES)


class ServerError(RuntimeError):
    """The server is unreachable, not ready, or rejected the request (message says which).

    ``status`` is the server's status for the failed request (gRPC code name such as
    ``StatusCode.INVALID_ARGUMENT``, or the HTTP status), None when the server was not reached.
    """

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


class TritonDetector:
    """A connection to one server. ``protocol`` 'grpc' (default) or 'http'; ``url`` host:port."""

    def __init__(self, url: str = "127.0.0.1:8001", protocol: str = "grpc", model: str = c.ENSEMBLE_MODEL,
                 timeout_s: float = 30.0, retries: int = 2, backoff_s: float = 0.5):
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self.url, self.protocol, self.model = url, protocol, model
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self._module = module
        self._client = module.InferenceServerClient(url) if protocol == "grpc" else module.InferenceServerClient(
            url, connection_timeout=timeout_s, network_timeout=timeout_s)
        self._params: dict[str, str] | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the ensemble is ready, or raise ServerError."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if self._client.is_server_ready() and self._client.is_model_ready(self.model):
                    return
                last = f"model {self.model!r} not ready"
            except Exception as exc:  # connection refused and friends, per protocol
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise ServerError(f"Triton at {self.url} ({self.protocol}) not ready after {timeout_s:.0f}s: {last}")

    def _parameters(self) -> dict[str, str]:
        """The ensemble's config parameters (class names, input size), read once."""
        if self._params is None:
            config = self._client.get_model_config(self.model)
            if self.protocol == "grpc":
                self._params = {k: v.string_value for k, v in config.config.parameters.items()}
            else:
                self._params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        return self._params

    @property
    def class_names(self) -> list[str]:
        return json.loads(self._parameters().get("class_names", "[]"))

    @property
    def input_hw(self) -> tuple[int, int]:
        """The detector's network input (height, width), from the ensemble's ``input_size`` parameter."""
        height, width = self._parameters()["input_size"].split("x")
        return int(height), int(width)

    def _inputs(self, encoded: bytes):
        data = np.frombuffer(encoded, dtype=np.uint8)[None]
        tensor = self._module.InferInput(c.PREPROCESS_INPUT, list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        return [tensor], [self._module.InferRequestedOutput(name) for name in OUTPUTS]

    def detect(self, encoded: bytes | str | Path, conf_threshold: float | None = None,
               iou_threshold: float | None = None, max_detections: int | None = None) -> Detections:
        """Detections for one encoded image (bytes or a file path). Thresholds override the server's."""
        if isinstance(encoded, (str, Path)):
            encoded = Path(encoded).read_bytes()
        params = {k: v for k, v in (("conf_threshold", conf_threshold), ("iou_threshold", iou_threshold),
                                    ("max_detections", max_detections)) if v is not None}
        inputs, outputs = self._inputs(encoded)
        result = self._infer_with_retry(inputs, outputs, params)
        return unpad_detections(*(result.as_numpy(name)[0] for name in OUTPUTS))

    def _infer_with_retry(self, inputs, outputs, params):
        from tritonclient.utils import InferenceServerException

        for attempt in range(self.retries + 1):
            try:
                kwargs = {"parameters": params} if params else {}
                if self.protocol == "grpc":
                    kwargs["client_timeout"] = self.timeout_s
                return self._client.infer(self.model, inputs, outputs=outputs, **kwargs)
            except InferenceServerException as exc:
                if not _retryable(exc) or attempt == self.retries:
                    raise ServerError(_describe(exc, self.url), str(exc.status() or "")) from None
            except (ConnectionError, OSError) as exc:
                if attempt == self.retries:
                    raise ServerError(f"cannot reach Triton at {self.url}: {exc}") from None
            time.sleep(self.backoff_s * 2 ** attempt)
            log.warning("retrying request to %s (attempt %d)", self.url, attempt + 2)


# Transient server states, not bad requests: worth a retry after a pause. Triton answers these while
# it starts, stops or reloads a model (the supervisor reloads one whose backend stub died).
TRANSIENT_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "503", "502", "504")
TRANSIENT_MESSAGES = ("has no available versions", "is not ready", "server is stopping", "is not healthy",
                      "connect")


def _retryable(exc) -> bool:
    status, message = str(exc.status() or ""), str(exc).lower()
    return any(s in status for s in TRANSIENT_STATUS) or any(m in message for m in TRANSIENT_MESSAGES)


def _describe(exc, url: str) -> str:
    message = exc.message() if hasattr(exc, "message") else str(exc)
    return f"Triton at {url} rejected the request: {message}"


def detect_concurrently(url: str, payloads: list, **detect_options) -> list:
    """Every payload (bytes or path) in flight at once over gRPC, so the server can batch them: for each, its
    Detections or the ServerError it got (no retries: an error is the answer under test)."""
    from concurrent.futures import ThreadPoolExecutor

    def send(data):
        with TritonDetector(url, retries=0) as detector:
            try:
                return detector.detect(data, **detect_options)
            except ServerError as exc:
                return exc

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(send, payloads))
