"""A fleet on one machine: N embedded Triton replicas behind HAProxy, loaded by Locust through it.

Two measurements, one run (`make fleet`):
- scaling: throughput and p50/p95/p99 through the balancer for 1..N replicas, per protocol;
- disruption: one replica stopped mid-run (graceful: drained in the balancer, then the server's own
  drain and SIGTERM; or SIGKILL), then restarted, while Locust users retry transient errors: requests
  lost (failures), retries, and how long the balancer took to take the replica out and put it back.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import BuildError
from ..progress import progress as progress_bar
from ..reports.loadtest import StepResult, run_step
from ..server import ServerOptions, TritonServer
from .haproxy import Backend, HAProxy

log = logging.getLogger(__name__)
STOP_MODES = ("graceful", "sigkill")


@dataclass(frozen=True)
class FleetSettings:
    replicas: int = 3
    users: int = 16
    step_seconds: float = 20.0
    protocols: tuple[str, ...] = ("grpc", "http")
    disruption_seconds: float = 40.0  # long enough for a replica to stop, restart and load again
    retries: int = 5  # per request, by the Locust users


class Fleet:
    """``count`` replicas of one repository, each on its own free loopback ports and work dir."""

    def __init__(self, repository: Path, work_dir: Path, count: int):
        self.repository, self.work_dir = Path(repository), Path(work_dir)
        self.options = [ServerOptions.on_free_ports() for _ in range(count)]
        self.servers: list[TritonServer | None] = [None] * count

    def start(self) -> "Fleet":
        for index in range(len(self.servers)):
            self.restart(index)
        return self

    def restart(self, index: int) -> None:
        """Start replica ``index`` on its own ports again (a fresh process, models loaded anew)."""
        self.servers[index] = TritonServer(self.repository, self.work_dir / f"replica-{index}",
                                           self.options[index]).start()

    def stop_replica(self, index: int, mode: str, balancer: HAProxy | None = None) -> None:
        """graceful: out of ``balancer`` first (no new requests, in-flight ones finish), then the server's own
        drain and SIGTERM; sigkill: the whole process group (server and its stubs), no warning."""
        server = self.servers[index]
        if mode == "sigkill":
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
        elif balancer is not None:
            balancer.drain(f"replica-{index}")
        server.stop()  # after a kill it only cleans up
        self.servers[index] = None

    def backends(self, count: int | None = None) -> list[Backend]:
        return [Backend(f"replica-{i}", o.host, o.http_port, o.grpc_port)
                for i, o in enumerate(self.options[:count])]

    def stop(self) -> None:
        for index, server in enumerate(self.servers):
            if server is not None:
                server.stop()
                self.servers[index] = None

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def balancer_url(balancer: HAProxy, protocol: str) -> str:
    return f"grpc://{balancer.grpc_url}" if protocol == "grpc" else f"http://{balancer.http_url}"


def scaling_run(fleet: Fleet, out_dir: Path, settings: FleetSettings) -> list[dict]:
    """Locust through HAProxy in front of the first n replicas, for n = 1..N and each protocol."""
    rows = []
    bar = progress_bar(total=len(fleet.servers) * len(settings.protocols), desc="fleet scaling", unit="step")
    for n in range(1, len(fleet.servers) + 1):
        with HAProxy(out_dir / f"haproxy_{n}", fleet.backends(n)) as balancer:
            for protocol in settings.protocols:
                step = run_step(balancer_url(balancer, protocol), protocol, settings.users, out_dir, settings.step_seconds,
                                max_requests=1_000_000, name=f"scale_{protocol}_n{n}")
                log.info("%d replica(s), %s: %s", n, protocol, step)
                rows.append({"replicas": n, **asdict(step)})
                bar.update()
    return rows


@dataclass
class Disruption:
    mode: str
    protocol: str
    step: StepResult
    answered_before_stop: int  # requests the stopped replica answered in this run before the stop (HAProxy's count)
    out_after_s: float  # from the stop order until the balancer had the replica DOWN
    back_after_s: float  # from the restart order until the balancer had it UP again


def disruption_run(fleet: Fleet, balancer: HAProxy, mode: str, protocol: str, users: int, seconds: float,
                   retries: int, out_dir: Path) -> Disruption:
    """Load through ``balancer`` while the last replica is stopped (``mode``) a quarter in, then restarted."""
    victim = len(fleet.servers) - 1
    name = f"replica-{victim}"
    timings: dict[str, float] = {}
    errors: list[BaseException] = []
    answered_at_start = balancer.answered(name)

    def disrupt():
        try:
            time.sleep(seconds / 4)
            timings["answered"] = balancer.answered(name) - answered_at_start
            started = time.monotonic()
            stopping = threading.Thread(target=fleet.stop_replica, args=(victim, mode, balancer))  # drains take a while
            stopping.start()
            balancer.wait_for(balancer.replica_is(name, "DOWN"), 60, f"{name} DOWN")
            timings["out"] = time.monotonic() - started
            stopping.join()
            restarted = time.monotonic()
            fleet.restart(victim)
            balancer.set_state(name, "ready")  # out of drain; the health check puts it UP once it answers
            balancer.wait_for(balancer.replica_is(name, "UP"), 60, f"{name} UP")
            timings["back"] = time.monotonic() - restarted
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=disrupt, name=f"disrupt-{mode}", daemon=True)
    thread.start()
    step = run_step(balancer_url(balancer, protocol), protocol, users, out_dir, seconds, max_requests=1_000_000,
                    name=f"disrupt_{mode}_{protocol}", retries=retries)
    thread.join(150)  # the restarted replica may still be loading when the load ends
    if errors:
        raise errors[0]
    if thread.is_alive():
        raise BuildError(f"{name} was not back in the balancer 150 s after the load ended")
    return Disruption(mode, protocol, step, timings["answered"], round(timings["out"], 2),
                      round(timings["back"], 2))


def run_fleet(repository: Path, out_dir: Path, settings: FleetSettings = FleetSettings()) -> dict:
    out_dir = Path(out_dir)
    with Fleet(repository, out_dir / "servers", settings.replicas) as fleet:
        scaling = scaling_run(fleet, out_dir, settings)
        disruptions = []
        with HAProxy(out_dir / "haproxy_disruption", fleet.backends()) as balancer:
            runs = [(mode, protocol) for mode in STOP_MODES for protocol in settings.protocols]
            for mode, protocol in progress_bar(runs, desc="fleet: a replica stopped", unit="run"):
                disruptions.append(disruption_run(fleet, balancer, mode, protocol, settings.users,
                                                  settings.disruption_seconds, settings.retries, out_dir))
    report = {"settings": asdict(settings), "cpu_count": os.cpu_count(), "scaling": scaling,
              "disruptions": [asdict(d) for d in disruptions]}  # asdict recurses into the step
    write_report(report, out_dir)
    return report


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    paths = {"json": out_dir / "fleet.json", "md": out_dir / "fleet.md", "png": out_dir / "fleet.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    s = report["settings"]
    lines = [f"# Fleet on one machine ({report['cpu_count']} CPU cores): Triton replicas behind HAProxy", "",
             f"Locust, {s['users']} users, {s['step_seconds']:g} s per step, through the balancer.", "",
             "| replicas | protocol | requests | failures | req/s | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['replicas']} | {r['protocol']} | {r['requests']} | {r['failures']} | {r['rps']} | {r['p50_ms']:g} "
              f"| {r['p95_ms']:g} | {r['p99_ms']:g} |" for r in report["scaling"]]
    lines += ["", f"One replica of {s['replicas']} stopped {s['disruption_seconds'] / 4:g} s into a "
              f"{s['disruption_seconds']:g} s run, then restarted; users retry transient errors up to {s['retries']} times.",
              "", "| stop | protocol | requests | answered by it before the stop | lost (failures) | retries | req/s "
              "| p99 ms | out of the balancer after s "
              "| back in after restart s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {d['mode']} | {d['protocol']} | {d['step']['requests']} | {d['answered_before_stop']} "
              f"| {d['step']['failures']} | {d['step']['retries']} "
              f"| {d['step']['rps']} | {d['step']['p99_ms']:g} | {d['out_after_s']} | {d['back_after_s']} |"
              for d in report["disruptions"]]
    paths["md"].write_text("\n".join(lines) + "\n")
    plot_scaling(report["scaling"], paths["png"])
    return paths


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        rs = [r for r in rows if r["protocol"] == protocol]
        replicas = [r["replicas"] for r in rs]
        ax_rps.plot(replicas, [r["rps"] for r in rs], marker="o", label=protocol)
        for key, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            ax_lat.plot(replicas, [r[key] for r in rs], style, marker=".", label=f"{protocol} {key[:3]}")
    for ax, label in ((ax_rps, "requests / s"), (ax_lat, "latency, ms")):
        ax.set_xlabel("replicas behind HAProxy")
        ax.set_xticks(sorted({r["replicas"] for r in rows}))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fleet on one machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
