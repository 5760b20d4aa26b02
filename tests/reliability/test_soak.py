"""A short soak through the real tool: report, criteria and plot (`make soak` runs it for 10 min)."""

import json

import pytest

from yolov6_build.reports.soak import SoakConfig, soak, verdict
from yolov6_build.reports.loadtest import StepResult

pytestmark = pytest.mark.triton


def test_short_soak_reports_memory_latency_and_passes(repository, tmp_path):
    config = SoakConfig(minutes=0.5, max_rps=40, users=4, warmup_s=5)
    report = soak(repository, tmp_path, config)
    assert report["result"]["failures"] == 0 and report["result"]["requests"] > 300
    assert 20 <= report["result"]["rps"] <= 40  # paced at 80% of 40, not flat out
    assert len(report["memory"]) >= 20 and report["memory_start_mib"] > 50
    assert report["passed"], report["checks"]
    assert json.loads((tmp_path / "soak.json").read_text())["passed"]
    assert (tmp_path / "soak.png").stat().st_size > 10_000 and "| requests / failures |" in (tmp_path / "soak.md").read_text()


def test_verdict_flags_leaks_failures_and_drift():
    config = SoakConfig(warmup_s=0, memory_bound_mib=100)
    result = StepResult("grpc", 4, 1000, 3, 30.0, 20, 40, 60, 22)
    memory = [(t, 500 + 2 * t) for t in range(300)]  # +600 MiB over the run
    history = [{"t": t, "p95": 40 if t < 100 else 90} for t in range(300)]
    checks = verdict(config, result, memory, history)["checks"]
    assert checks == {"no_failures": False, "memory_growth_within_bound": False, "latency_steady": False}
