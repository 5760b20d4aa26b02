"""Where a served request's time goes, from Triton's own per-model statistics (``/v2/models/stats``).

Triton counts, per model and per request: time queued (waiting for an instance or for a batch to
form), compute input (tensors handed to the model, for the Python backend: shared-memory copies),
compute infer (the model's own work) and compute output, and each request's whole time in the model.
Snapshots before and after a load step give the split of that step; the ensemble's whole request time
is the pipeline inside the server.
"""

from __future__ import annotations

import json
import urllib.request

from ..server import ADMIN_HEADER

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def model_statistics(server) -> dict[str, dict]:
    """{model name: Triton's inference statistics of its (single) version} of a running TritonServer
    (the statistics API is locked behind its admin key)."""
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/stats",
                                     headers={ADMIN_HEADER: server.admin_key} if server.admin_key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        stats = json.load(response)["model_stats"]
    return {s["name"]: s for s in stats}


def time_split(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per model, over the interval between two snapshots: requests, executions (batches), the mean
    batch, milliseconds per request from arrival to response (``request_ms``; for the ensemble, the
    whole pipeline inside the server) and in each phase."""
    split = {}
    for name, now in after.items():
        then = before.get(name, {})

        def delta(path: tuple[str, ...]) -> float:
            a, b = now, then
            for key in path:
                a, b = a.get(key, {}), b.get(key, {}) if isinstance(b, dict) else {}
            return float(a or 0) - float(b or 0)

        requests = delta(("inference_stats", "success", "count"))
        executions = delta(("execution_count",))
        if requests <= 0:
            continue
        split[name] = {"requests": int(requests), "executions": int(executions),
                       "mean_batch": round(delta(("inference_count",)) / executions, 2) if executions else 0.0,
                       "request_ms": round(delta(("inference_stats", "success", "ns")) / requests / 1e6, 3),
                       **{f"{phase}_ms": round(delta(("inference_stats", phase, "ns")) / requests / 1e6, 3)
                          for phase in PHASES}}
    return split
