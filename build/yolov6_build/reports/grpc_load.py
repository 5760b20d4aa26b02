"""Closed-loop gRPC load for bench-serving: ``users`` threads, each keeping one ensemble request in flight.

bench-serving measures what the server does with a request, and on one box its load generator shares
the cores with the server: CPU the generator burns is CPU the server does not get. Locust (``make
loadtest``, the user-facing load test) builds every request anew through tritonclient on gevent. Here
each image's ``ModelInferRequest`` is serialised once and sent as bytes over one raw gRPC channel, the
way perf_analyzer reuses its inputs. Every response is still parsed and checked (its outputs present);
a gRPC error or an incomplete response is a failure.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from .. import contract as c
from .loadtest import StepResult

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
OUTPUTS = (c.NUM_DETECTIONS, c.DET_BOXES, c.DET_SCORES, c.DET_CLASSES)
TIMEOUT_S = 30.0


def serialised_request(encoded: bytes, model: str = c.ENSEMBLE_MODEL) -> bytes:
    """The ensemble's inference request for one encoded image, as gRPC sends it."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=c.PREPROCESS_INPUT, datatype="UINT8", shape=[1, len(encoded)])
    request.raw_input_contents.append(encoded)
    for name in OUTPUTS:
        request.outputs.add(name=name)
    return request.SerializeToString()


def complete(response: bytes) -> bool:
    """Whether a serialised ModelInferResponse carries every output the request asked for."""
    from tritonclient.grpc import service_pb2

    parsed = service_pb2.ModelInferResponse.FromString(response)
    return {o.name for o in parsed.outputs} == set(OUTPUTS) and len(parsed.raw_output_contents) == len(OUTPUTS)


class _User(threading.Thread):
    """Sends the requests in turn, starting at its own offset, until ``deadline``; keeps latencies and failures."""

    def __init__(self, infer, requests: list[bytes], offset: int, start: threading.Barrier, deadline: list[float]):
        super().__init__(daemon=True)
        self.infer, self.requests, self.offset = infer, requests, offset
        self.start_together, self.deadline = start, deadline
        self.latencies_ms: list[float] = []
        self.failures = 0

    def run(self) -> None:
        self.start_together.wait()
        sent = self.offset
        while time.perf_counter() < self.deadline[0]:
            started = time.perf_counter()
            try:
                ok = complete(self.infer(self.requests[sent % len(self.requests)], timeout=TIMEOUT_S))
            except Exception:  # a gRPC error, or a response that does not parse: a failed request, never a dead user
                ok = False
            self.latencies_ms.append((time.perf_counter() - started) * 1e3)
            self.failures += not ok
            sent += 1


def closed_loop(grpc_url: str, encoded_images: list[bytes], users: int, seconds: float) -> StepResult:
    """``users`` requests in flight for ``seconds`` against the ensemble at ``grpc_url`` (host:port). Failed
    requests count in ``requests``, ``rps`` and the latencies, as Locust counts them, and in ``failures``."""
    import grpc

    requests = [serialised_request(e) for e in encoded_images]
    with grpc.insecure_channel(grpc_url, options=[("grpc.max_receive_message_length", -1)]) as channel:
        infer = channel.unary_unary(MODEL_INFER)  # bytes in, bytes out: no (de)serialiser
        if not complete(infer(requests[0], timeout=TIMEOUT_S)):  # connects; a broken server fails here
            raise RuntimeError(f"{grpc_url}: the ensemble's response lacks outputs {OUTPUTS}")
        deadline = [0.0]
        start = threading.Barrier(users + 1, action=lambda: deadline.__setitem__(0, time.perf_counter() + seconds))
        threads = [_User(infer, requests, i * len(requests) // users, start, deadline) for i in range(users)]
        for thread in threads:
            thread.start()
        start.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - (deadline[0] - seconds)  # from the moment the users were released
    latencies = np.array([ms for t in threads for ms in t.latencies_ms])
    if not len(latencies):
        raise RuntimeError(f"no request completed in {seconds} s against {grpc_url}")
    failures = sum(t.failures for t in threads)
    p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
    return StepResult("grpc", users, len(latencies), failures, round(len(latencies) / elapsed, 2), round(p50, 1),
                      round(p95, 1), round(p99, 1), round(float(latencies.mean()), 1))
