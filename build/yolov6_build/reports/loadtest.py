"""Headless Locust sweep over concurrency: one bounded step per user count, then CSV, Markdown and PNG.

Each step runs ``locust --headless`` (loadtest/locustfile.py) as a subprocess for ``step_seconds``
or ``max_requests``, whichever comes first, and reads back Locust's own aggregated statistics. Only
loopback targets are allowed unless ``allow_remote``: a sweep is a deliberate overload.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ConfigError

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).resolve().parents[3] / "loadtest" / "locustfile.py"
USER_CLASS = {"grpc": "GrpcDetectUser", "http": "HttpDetectUser"}
DEFAULT_USERS = (1, 2, 4, 8, 16, 32)
RETRY_NAME = "retry"  # the locustfile reports retried attempts under this name


@dataclass(frozen=True)
class StepResult:
    protocol: str
    users: int
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    retries: int = 0  # transient errors retried by the users (LOADTEST_RETRIES), not counted as requests


def check_loopback(host_url: str) -> None:
    """Raise ConfigError unless every address ``host_url`` resolves to is a loopback address."""
    host = urlparse(host_url).hostname
    if not host:
        raise ConfigError(f"not a URL with a host: {host_url!r} (e.g. grpc://127.0.0.1:8001)")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}") from None
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise ConfigError(f"{host_url} resolves to non-loopback {', '.join(remote)}: load tests stay on "
                          "this machine unless --allow-remote is given")


def summarise(entries: list[dict]) -> dict:
    """Aggregate Locust's ``--json-file`` entries: requests, failures, rps, percentiles (ms), mean.

    Locust keeps response times as a histogram {rounded ms: count}; percentiles are read off it the
    way Locust does (the smallest bucket whose cumulative count reaches the fraction). Locust itself
    is not imported here: importing it monkey-patches the whole process for gevent. Entries named
    "retry" (the locustfile's retried attempts) are counted apart, not as requests.
    """
    retries = sum(e["num_requests"] for e in entries if e["name"] == RETRY_NAME)
    entries = [e for e in entries if e["name"] != RETRY_NAME]
    histogram: dict[int, int] = {}
    for entry in entries:
        for ms, count in entry["response_times"].items():
            histogram[int(float(ms))] = histogram.get(int(float(ms)), 0) + count
    requests = sum(e["num_requests"] for e in entries)
    timed = sum(histogram.values())
    started = min((e["start_time"] for e in entries), default=0.0)
    last = max((e["last_request_timestamp"] or 0.0 for e in entries), default=0.0)

    def percentile(fraction: float) -> float:
        cumulative = 0
        for ms in sorted(histogram):
            cumulative += histogram[ms]
            if cumulative >= fraction * timed:
                return float(ms)
        return float("nan")

    return {"requests": requests, "failures": sum(e["num_failures"] for e in entries),
            "rps": round(requests / (last - started), 2) if last > started else 0.0,
            "p50_ms": percentile(0.50), "p95_ms": percentile(0.95), "p99_ms": percentile(0.99),
            "mean_ms": round(sum(e["total_response_time"] for e in entries) / timed, 2) if timed else float("nan"),
            "retries": retries}


def run_step(host_url: str, protocol: str, users: int, out_dir: Path, step_seconds: float,
             max_requests: int, images: Path | None = None, locustfile: Path = LOCUSTFILE,
             user_rps: float | None = None, monitor=None, name: str | None = None, retries: int = 0) -> StepResult:
    """One Locust run at ``users`` concurrent users, each keeping one request in flight (or pacing
    itself to ``user_rps``). ``monitor()`` is called about once a second while it runs."""
    prefix = out_dir / "steps" / (name or f"{protocol}_u{users}")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--only-summary",
               "-u", str(users), "-r", str(users), "-t", f"{max(1, round(step_seconds))}s", "--stop-timeout", "5",
               "--host", host_url, "--json-file", str(prefix), "--csv", str(prefix), "--loglevel", "WARNING",
               USER_CLASS[protocol]]
    env = dict(os.environ, LOADTEST_MAX_REQUESTS=str(max_requests))
    if images:
        env["LOADTEST_IMAGES"] = str(images)
    if user_rps:
        env["LOADTEST_USER_RPS"] = str(user_rps)
    if retries:
        env["LOADTEST_RETRIES"] = str(retries)
    log_path = prefix.with_suffix(".log")
    deadline = time.monotonic() + step_seconds + 60
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if time.monotonic() > deadline:
                log.warning("locust step %s u=%d overran; using the statistics it wrote", protocol, users)
                process.kill()
                break
            if monitor is not None:
                monitor()
            time.sleep(1.0)
        process.wait()
    stats = Path(f"{prefix}.json")  # written once, at shutdown, from the final statistics
    if not stats.is_file():
        raise ConfigError(f"locust wrote no statistics for {protocol} u={users}; see {log_path}")
    return StepResult(protocol, users, **summarise(json.loads(stats.read_text())))


def sweep(host_urls: dict[str, str], out_dir: Path, users=DEFAULT_USERS, step_seconds: float = 15.0,
          max_requests: int = 5000, images: Path | None = None, allow_remote: bool = False) -> list[StepResult]:
    """Every protocol in ``host_urls`` ({'grpc': 'grpc://127.0.0.1:8001', ...}) at every user count."""
    from ..progress import progress as progress_bar

    for url in host_urls.values():
        if not allow_remote:
            check_loopback(url)
    plan = [(protocol, n) for protocol in host_urls for n in users]
    results = []
    for protocol, n in progress_bar(plan, desc="load test", unit="step"):
        result = run_step(host_urls[protocol], protocol, n, out_dir, step_seconds, max_requests, images)
        log.info("%s", result)
        results.append(result)
    return results


def write_report(results: list[StepResult], out_dir: Path, title: str = "Load test") -> dict[str, Path]:
    """sweep.csv, sweep.json, sweep.md and sweep.png (throughput and latency vs concurrency)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in results]
    paths = {"csv": out_dir / "sweep.csv", "json": out_dir / "sweep.json", "md": out_dir / "sweep.md",
             "png": out_dir / "sweep.png"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# {title}", "", "| protocol | concurrency | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.protocol} | {r.users} | {r.requests} | {r.failures} | {r.rps} | {r.p50_ms:g} | {r.p95_ms:g} "
              f"| {r.p99_ms:g} |" for r in results]
    paths["md"].write_text("\n".join(lines) + "\n")
    plot_sweep(results, paths["png"], title)
    return paths


def plot_sweep(results: list[StepResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    for protocol in dict.fromkeys(r.protocol for r in results):
        rs = [r for r in results if r.protocol == protocol]
        users = [r.users for r in rs]
        ax_rps.plot(users, [r.rps for r in rs], marker="o", label=protocol)
        for r in rs:
            if r.failures:
                ax_rps.annotate(f"{r.failures} failed", (r.users, r.rps), color="red", fontsize=8)
        for key, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            ax_lat.plot(users, [getattr(r, key) for r in rs], style, marker=".", label=f"{protocol} {key[:3]}")
    all_users = sorted({r.users for r in results})
    for ax, label in ((ax_rps, "requests / s"), (ax_lat, "latency, ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_users, [str(u) for u in all_users])
        ax.set_xlabel("concurrent requests (Locust users)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
