"""A real Prometheus (Debian's) scrapes the embedded Triton while Locust overloads it, then idles.

The autoscaling metric, read the way the HPA reads it (the prometheus-adapter query over the recording
rule), must stay above the cpu overlay's HPA target under overload for a sustained window (what an HPA
acts on, not one spike) and fall below it at idle; every
PromQL expression of the shipped Grafana dashboard must return data from that Prometheus.
"""

import time
from pathlib import Path

import pytest
import yaml

from yolov6_build.reports.loadtest import run_step
from yolov6_build.scaleout.prometheus import DEPLOY, LocalPrometheus, adapter_query, dashboard_queries

pytestmark = pytest.mark.slow
GPU_ONLY_METRICS = ("nv_gpu_utilization", "nv_gpu_memory_used_bytes")  # Triton exports them only with a GPU
SUSTAINED_S = 5  # consecutive seconds above the target (the rule's window is 30 s, the adapter's reads ~1/s)


def hpa_target(overlay: str) -> float:
    hpa = yaml.safe_load((DEPLOY / "k8s" / "overlays" / overlay / "hpa.yaml").read_text())
    return float(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"])


@pytest.fixture(scope="module")
def monitored(repository, launch_server, tmp_path_factory):
    """The default INT8 repository served on free ports, scraped every second as pod replica-0."""
    root = tmp_path_factory.mktemp("monitoring")
    server = launch_server(repository, root / "server")
    prometheus = LocalPrometheus(root / "prometheus", {"replica-0": f"127.0.0.1:{server.options.metrics_port}"})
    try:
        yield server, prometheus.start()
    finally:
        prometheus.stop()
        server.stop()


def _hpa_metric(prometheus) -> float | None:
    result = prometheus.query(adapter_query(DEPLOY / "k8s" / "prometheus-adapter-values.yaml", ["replica-0"]))
    return result[0]["value"] if result else None


def test_autoscaling_metric_crosses_the_hpa_target_under_overload_and_back_at_idle(monitored, tmp_path):
    server, prometheus = monitored
    target = hpa_target("cpu")
    seen: list[tuple[float, float | None]] = []
    step = run_step(f"grpc://{server.grpc_url}", "grpc", 8, tmp_path, step_seconds=20, max_requests=100_000,
                    monitor=lambda: seen.append((time.monotonic(), _hpa_metric(prometheus))))
    assert step.requests > 50 and step.failures == 0
    longest, above_since = 0.0, None
    for at, value in seen:
        if value is not None and value > target:
            above_since = at if above_since is None else above_since
            longest = max(longest, at - above_since)
        else:
            above_since = None
    assert longest >= SUSTAINED_S, f"above {target} us for {longest:.1f} s at most: {[v for _, v in seen]}"

    empty = [name for name, expr in dashboard_queries().items()
             if not prometheus.query(expr) and not any(m in expr for m in GPU_ONLY_METRICS)]
    assert not empty, f"dashboard queries without data: {empty}"

    deadline = time.monotonic() + 60  # the rule's 30 s window empties, plus scrape and evaluation
    idle = _hpa_metric(prometheus)
    while idle is None or idle >= target:
        assert time.monotonic() < deadline, f"still {idle} us per request 60 s after the load stopped"
        time.sleep(2)
        idle = _hpa_metric(prometheus)


def test_only_gpu_metrics_are_exempt_from_returning_data():
    """The exemption above covers the GPU panels and nothing else."""
    exempt = {name for name, expr in dashboard_queries().items() if any(m in expr for m in GPU_ONLY_METRICS)}
    assert exempt and all("GPU" in name for name in exempt)


def test_dashboard_covers_what_operators_ask_for():
    titles = " ".join(dashboard_queries()).lower()
    for topic in ("requests/s", "latency", "queue time", "batch size", "failed", "cpu utilisation",
                  "gpu utilisation"):
        assert topic in titles, topic
