"""``make soak``: sustained load at a fraction of the measured maximum, watching errors, server
memory and latency over time. Bounded in time, loopback only (the server is started here).

Pass criteria (stated up front, checked at the end): no failed request; server memory (RSS of
tritonserver and its backend stubs) grows by at most ``memory_bound_mib`` between the first and
the last tenth of the run (after warm-up); p95 latency of the last third at most
``latency_drift`` times that of the first third.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..progress import progress as progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    fraction: float = 0.8  # of the maximum QPS
    max_rps: float | None = None  # None: measure it first (short sweep at 8, 16, 32 users)
    users: int = 16
    warmup_s: float = 30.0
    memory_bound_mib: float = 100.0
    latency_drift: float = 1.5


def server_rss_mib(pid: int) -> float:
    """RSS of the server process and all its children (backend stubs), MiB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def _history(history_csv: Path) -> list[dict]:
    """Locust's per-second history (Aggregated rows): time, rps, failures and window percentiles."""
    rows = []
    with open(history_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] != "Aggregated" or row["50%"] in ("N/A", ""):
                continue
            rows.append({"t": float(row["Timestamp"]), "rps": float(row["Requests/s"]),
                         "failures": int(row["Total Failure Count"]), "p50": float(row["50%"]),
                         "p95": float(row["95%"]), "p99": float(row["99%"])})
    start = rows[0]["t"] if rows else 0.0
    return [{**r, "t": r["t"] - start} for r in rows]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def verdict(config: SoakConfig, result, memory: list[tuple[float, float]], history: list[dict]) -> dict:
    steady_memory = [m for t, m in memory if t >= config.warmup_s] or [m for _, m in memory]
    tenth = max(1, len(steady_memory) // 10)
    growth = _median(steady_memory[-tenth:]) - _median(steady_memory[:tenth])
    steady = [h for h in history if h["t"] >= config.warmup_s] or history
    third = max(1, len(steady) // 3)
    p95_first, p95_last = _median([h["p95"] for h in steady[:third]]), _median([h["p95"] for h in steady[-third:]])
    checks = {"no_failures": result.failures == 0,
              "memory_growth_within_bound": growth <= config.memory_bound_mib,
              "latency_steady": p95_last <= config.latency_drift * p95_first}
    return {"memory_growth_mib": round(growth, 1), "memory_start_mib": round(steady_memory[0], 1),
            "memory_end_mib": round(steady_memory[-1], 1), "p95_first_third_ms": p95_first,
            "p95_last_third_ms": p95_last, "checks": checks, "passed": all(checks.values())}


def soak(repository: Path, out_dir: Path, config: SoakConfig = SoakConfig()) -> dict:
    from ..server import ServerOptions, TritonServer
    from .loadtest import run_step, sweep

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with TritonServer(repository, out / "server", ServerOptions.on_free_ports()) as server:
        url = f"grpc://{server.grpc_url}"
        max_rps = config.max_rps or max(s.rps for s in sweep({"grpc": url}, out / "max_qps", (8, 16, 32), 8.0,
                                                              100_000))
        target = config.fraction * max_rps
        log.info("soak: %.1f min at %.1f req/s (%.0f%% of %.1f)", config.minutes, target, 100 * config.fraction,
                 max_rps)
        started, memory = time.monotonic(), []
        bar = progress_bar(total=round(config.minutes * 60), desc="soak", unit="s")

        def monitor():
            elapsed = time.monotonic() - started
            memory.append((elapsed, server_rss_mib(server.process.pid)))
            bar.update(max(0, min(bar.total, int(elapsed)) - bar.n))

        result = run_step(url, "grpc", config.users, out, config.minutes * 60, 10**9, user_rps=target / config.users,
                          monitor=monitor, name="soak")
        bar.close()
    history = _history(out / "steps" / "soak_stats_history.csv")
    report = {"config": asdict(config), "max_rps": max_rps, "target_rps": round(target, 2), "result": asdict(result),
              **verdict(config, result, memory, history), "memory": memory, "history": history}
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "soak.md").write_text(markdown(report))
    plot(report, out / "soak.png")
    return report


def markdown(report: dict) -> str:
    r, c = report["result"], report["config"]
    mark = lambda ok: "pass" if ok else "FAIL"  # noqa: E731
    checks = report["checks"]
    return "\n".join([
        f"# Soak: {c['minutes']} min at {report['target_rps']} req/s ({c['fraction']:.0%} of the measured "
        f"{report['max_rps']} req/s), {c['users']} gRPC users", "",
        "| measure | value | criterion | result |", "|---|---|---|---|",
        f"| requests / failures | {r['requests']} / {r['failures']} | 0 failures | {mark(checks['no_failures'])} |",
        f"| achieved req/s | {r['rps']} | | |",
        f"| latency p50 / p95 / p99, ms | {r['p50_ms']:g} / {r['p95_ms']:g} / {r['p99_ms']:g} | | |",
        f"| server RSS after warm-up -> end, MiB | {report['memory_start_mib']} -> {report['memory_end_mib']} "
        f"(growth {report['memory_growth_mib']}) | growth <= {c['memory_bound_mib']} | "
        f"{mark(checks['memory_growth_within_bound'])} |",
        f"| p95 first third -> last third, ms | {report['p95_first_third_ms']:g} -> {report['p95_last_third_ms']:g}"
        f" | <= {c['latency_drift']}x | {mark(checks['latency_steady'])} |", ""])


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, memory = report["history"], report["memory"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([h["t"] for h in history], [h["rps"] for h in history])
    axes[0].axhline(report["target_rps"], color="grey", linestyle="--", label="target")
    axes[0].set_ylabel("requests / s")
    for key in ("p50", "p95", "p99"):
        axes[1].plot([h["t"] for h in history], [h[key] for h in history], label=key)
    axes[1].set_ylabel("latency, ms (10 s window)")
    axes[2].plot([t for t, _ in memory], [m for _, m in memory])
    axes[2].set_ylabel("server RSS incl. stubs, MiB")
    for ax in axes:
        ax.set_xlabel("seconds")
        ax.axvline(report["config"]["warmup_s"], color="grey", linestyle=":")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.suptitle(f"Soak: {'passed' if report['passed'] else 'FAILED'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
