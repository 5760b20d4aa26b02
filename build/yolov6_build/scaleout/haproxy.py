"""A real HAProxy in front of local Triton replicas: HTTP and gRPC (HTTP/2 cleartext), health-checked.

A replica takes requests while its ensemble is ready (``/v2/models/yolov6/ready``): a replica that is
gone, or whose ensemble is unloaded, is taken out within about a second, and put back once it answers
ready twice. A graceful stop drains the replica here first (runtime API: no new requests, those in flight
finish), so clients never see it go. Connection failures are redispatched to another replica by HAProxy
itself; errors of requests already sent go back to the client, which retries.
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..contract import ENSEMBLE_MODEL
from ..errors import BuildError
from ..server import free_ports
from . import ServiceProcess, service_binary

CHECK_INTERVAL_MS = 300


@dataclass(frozen=True)
class Backend:
    """One Triton replica as the balancer sees it."""

    name: str
    host: str
    http_port: int
    grpc_port: int


HTTP_BACKEND, GRPC_BACKEND = BACKENDS = ("triton_http", "triton_grpc")  # the config's names, the runtime API's


def haproxy_config(backends: list[Backend], http_port: int, grpc_port: int, stats_port: int,
                   admin_socket: Path) -> str:
    http_servers = "\n".join(f"    server {b.name} {b.host}:{b.http_port} check" for b in backends)
    # gRPC goes to the replica's gRPC port over HTTP/2; its health check asks the same replica's HTTP port
    grpc_servers = "\n".join(f"    server {b.name} {b.host}:{b.grpc_port} proto h2 check port {b.http_port} "
                             "check-proto h1" for b in backends)
    return f"""# written by yolov6_build.scaleout.haproxy
global
    maxconn 4096
    stats socket {admin_socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
    default-server inter {CHECK_INTERVAL_MS}ms fall 2 rise 2

frontend {HTTP_BACKEND}
    bind 127.0.0.1:{http_port}
    default_backend {HTTP_BACKEND}

frontend {GRPC_BACKEND}
    bind 127.0.0.1:{grpc_port} proto h2
    default_backend {GRPC_BACKEND}

backend {HTTP_BACKEND}
    balance leastconn
    option httpchk
    http-check send meth GET uri /v2/models/{ENSEMBLE_MODEL}/ready
    http-check expect status 200
{http_servers}

backend {GRPC_BACKEND}
    balance leastconn
    option httpchk
    http-check send meth GET uri /v2/models/{ENSEMBLE_MODEL}/ready
    http-check expect status 200
{grpc_servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


class HAProxy:
    """``with HAProxy(work_dir, backends) as lb: lb.http_url, lb.grpc_url, lb.states()``."""

    def __init__(self, work_dir: Path, backends: list[Backend]):
        self.work_dir = Path(work_dir)
        self.backends = backends
        self.http_port, self.grpc_port, self.stats_port = free_ports(3)
        self.service: ServiceProcess | None = None

    @property
    def admin_socket(self) -> Path:
        return self.work_dir.resolve() / "admin.sock"  # haproxy reads a relative path as host:port

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 30.0) -> "HAProxy":
        binary = service_binary("haproxy")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "haproxy.cfg"
        config.write_text(haproxy_config(self.backends, self.http_port, self.grpc_port, self.stats_port,
                                         self.admin_socket))
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise BuildError(f"haproxy rejected {config}: {check.stderr.strip() or check.stdout.strip()}")
        self.service = ServiceProcess([binary, "-db", "-f", str(config)], self.work_dir / "haproxy.log")
        self.wait_for(lambda states: all(state == "UP" for state in states.values()), timeout_s, "every replica UP")
        return self

    def _server_rows(self) -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5) as response:
            rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
            return [row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")]

    def states(self) -> dict[tuple[str, str], str]:
        """{(backend, server): 'UP' | 'DOWN' | 'DRAIN' | 'MAINT' | ...} from HAProxy's own statistics."""
        return {(row["pxname"], row["svname"]): row["status"].split()[0] for row in self._server_rows()}

    def answered(self, name: str) -> int:
        """Requests replica ``name`` answered with 2xx, both protocols (HAProxy's counters since it started)."""
        return sum(int(row["hrsp_2xx"] or 0) for row in self._server_rows() if row["svname"] == name)

    def in_flight(self, name: str) -> int:
        """Sessions HAProxy has open to replica ``name`` now, both protocols."""
        return sum(int(row["scur"] or 0) for row in self._server_rows() if row["svname"] == name)

    def _admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.admin_socket))
            s.sendall(command.encode() + b"\n")
            return s.makefile().read()

    def set_state(self, name: str, state: str) -> None:
        """Runtime API: ``drain`` (no new requests; those in flight finish) or ``ready``, in both backends."""
        for backend in BACKENDS:
            answer = self._admin(f"set server {backend}/{name} state {state}").strip()
            if answer:
                raise BuildError(f"haproxy refused to set {backend}/{name} {state}: {answer}")

    def drain(self, name: str, timeout_s: float = 30.0) -> float:
        """Stop sending requests to ``name`` and wait until none is open there; seconds it took."""
        self.set_state(name, "drain")
        return self.wait_for(lambda _: self.in_flight(name) == 0, timeout_s, f"{name} drained")

    def wait_for(self, condition, timeout_s: float, what: str) -> float:
        """Seconds until ``condition(states())`` held; BuildError after ``timeout_s``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.service is not None and self.service.exited() is not None:
                raise BuildError(f"haproxy exited with code {self.service.exited()}; see {self.service.log_path}")
            try:
                if condition(self.states()):
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise BuildError(f"haproxy: not {what} after {timeout_s:.0f}s: {self.states()}")

    def replica_is(self, name: str, state: str):
        """A ``wait_for`` condition: replica ``name`` is in ``state`` in every backend."""
        return lambda states: all(s == state for (_, server), s in states.items() if server == name)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.service = None

    def __enter__(self) -> "HAProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
