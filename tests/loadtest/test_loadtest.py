"""loadtest/: the Locust users against the live server, the bounded headless sweep and its report."""

import csv
import time

import pytest

from yolov6_build.errors import ConfigError
from yolov6_build.reports.loadtest import check_loopback, run_step, sweep, write_report


@pytest.mark.parametrize("url", ["grpc://127.0.0.1:8001", "http://localhost:8000", "http://[::1]:8000"])
def test_loopback_targets_are_allowed(url):
    check_loopback(url)


@pytest.mark.parametrize("url", ["grpc://10.1.2.3:8001", "http://192.168.0.7:8000", "127.0.0.1:8001"])
def test_remote_or_malformed_targets_are_refused(url):
    with pytest.raises(ConfigError):
        check_loopback(url)


@pytest.mark.triton
def test_sweep_is_bounded_by_request_count_and_reports(server, tmp_path):
    urls = {"grpc": f"grpc://{server.grpc_url}", "http": f"http://{server.http_url}"}
    started = time.monotonic()
    results = sweep(urls, tmp_path, users=(1, 3), step_seconds=60, max_requests=20)
    assert time.monotonic() - started < 100  # four 60 s steps would take 240 s: the count ended them
    assert [(r.protocol, r.users) for r in results] == [("grpc", 1), ("grpc", 3), ("http", 1), ("http", 3)]
    for r in results:
        assert 20 <= r.requests < 40 and r.failures == 0 and r.rps > 0 and 0 < r.p50_ms <= r.p99_ms
    paths = write_report(results, tmp_path / "report")
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == 4
    assert paths["png"].stat().st_size > 10_000 and "| grpc | 3 |" in paths["md"].read_text()


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_failed_requests_are_counted_not_hidden(server, tmp_path, monkeypatch, protocol):
    monkeypatch.setenv("LOADTEST_MODEL", "no_such_model")
    url = f"grpc://{server.grpc_url}" if protocol == "grpc" else f"http://{server.http_url}"
    result = run_step(url, protocol, 2, tmp_path, step_seconds=30, max_requests=10)
    assert result.requests >= 10 and result.failures == result.requests


def test_retried_attempts_are_counted_apart_from_requests():
    from yolov6_build.reports.loadtest import summarise

    def entry(name, requests, failures=0, ms=10):
        return {"name": name, "num_requests": requests, "num_failures": failures, "response_times": {str(ms): requests},
                "total_response_time": ms * requests, "start_time": 0.0, "last_request_timestamp": 10.0}

    summary = summarise([entry("infer", 100, failures=1), entry("retry", 7, ms=0)])
    assert summary["requests"] == 100 and summary["failures"] == 1 and summary["retries"] == 7
    assert summary["rps"] == 10.0 and summary["p50_ms"] == 10.0
