"""The embedded Triton server: the ``tritonserver`` binary shipped in the nvidia-pytriton wheel.

The wheel's binary needs a backend directory holding the Python backend plus the stub built for
this interpreter, its bundled shared libraries on LD_LIBRARY_PATH, and this venv's ``bin`` first on
PATH (the stub runs model.py files with this interpreter's packages).
"""

from __future__ import annotations

import filecmp
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError, ConfigError, DependencyError

log = logging.getLogger(__name__)
ADMIN_HEADER = "triton-admin-key"  # header that unlocks ServerOptions.restricted_apis
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"  # the same key as gRPC metadata (Triton's prefix)
# How long a start waits for every model to load: the Kubernetes startup probe's budget
# (deploy/k8s/base/deployment.yaml), so a slow load is never cut short by the wrapper first.
READY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ServerOptions:
    """How to run the server. Binds to loopback unless ``host`` says otherwise."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    # Model control 'explicit', the repository API locked behind the admin key, so that this class
    # can reload a model whose Python backend stub died (supervisor.py) and drain the ensembles
    # before stopping. False: model control 'none' (no repository API at all).
    managed_models: bool = True
    # APIs that need the admin key header: registering shared memory (reads/writes server memory),
    # the repository API, trace/logging settings (they write files) and statistics (load and timing
    # of every model). Open: what a detection client needs, inference, health, metadata and model
    # config (the client reads class names and input size from the ensemble's config).
    restricted_apis: tuple[str, ...] = ("shared-memory", "model-repository", "trace", "logging", "statistics")
    admin_key: str | None = None  # None: a random key per start, saved 0600 in the work dir
    exit_timeout_s: int = 30  # SIGTERM waits this long for in-flight requests
    # gRPC connections older than this get a GOAWAY (after a grace for their calls) and the client reconnects:
    # behind a connection-level balancer (a Kubernetes Service), long-lived clients then reach new replicas too.
    grpc_max_connection_age_s: int | None = None
    log_verbose: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def on_free_ports(cls, **options) -> "ServerOptions":
        """Options with HTTP, gRPC and metrics ports the OS reports free now (benchmarks, tests)."""
        http, grpc, metrics = free_ports(3)
        return cls(http_port=http, grpc_port=grpc, metrics_port=metrics, **options)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports the OS reports free now (all bound at once, so none repeats)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _pytriton_dir() -> Path:
    # Locate the package without importing it: only its files are needed, not its Python deps.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("the embedded Triton server comes from the nvidia-pytriton wheel: "
                              "pip install --no-deps nvidia-pytriton==0.7.0 (or run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0])


def prepare_server_dir(work_dir: Path) -> Path:
    """Lay out binary + backends (python backend with this interpreter's stub) under ``work_dir``."""
    root = _pytriton_dir()
    source = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise DependencyError(f"the Triton wheel has no Python backend stub for Python {version}")
    target = work_dir / "tritonserver"
    if not (target / "bin" / "tritonserver").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
    python_backend = target / "backends" / "python"
    installed = python_backend / "triton_python_backend_stub"
    if not (installed.is_file() and filecmp.cmp(stub, installed, shallow=False)):
        shutil.copy2(stub, installed)  # not over a running one: that fails with 'text file busy'
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        candidate = source / "python_backend_stubs" / name
        if candidate.is_file() and not (python_backend / name).is_file():
            shutil.copy2(candidate, python_backend / name)
    return target


# glibc's defaults gave the preprocess stub fresh pages for its image buffers (0.3-6 MB) on every request:
# 85 page faults and 0.2 ms of kernel time per request at c=4. A fixed mmap threshold above those buffers
# and a trim threshold above the stubs' working sets keep freed pages for the next request. (Setting either
# variable turns off glibc's self-tuning thresholds, so both are set.)
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(16 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}


def server_environment() -> dict[str, str]:
    root = _pytriton_dir()
    libs = root.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")  # models set their own thread counts
    for name, value in MALLOC_SETTINGS.items():
        env.setdefault(name, value)
    return env


class TritonServer:
    """Start/stop the embedded server as a context manager; waits for readiness."""

    def __init__(self, model_repository: Path, work_dir: Path, options: ServerOptions = ServerOptions(),
                 log_path: Path | None = None):
        if "://" in str(model_repository):
            raise ConfigError(f"{model_repository}: this server serves a local folder (the cpu pod serves the one in "
                              "its repository image, docker/Dockerfile.repository), not object storage")
        self.model_repository = Path(model_repository).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.options = options
        self.log_path = log_path or self.work_dir / "tritonserver.log"
        self.process: subprocess.Popen | None = None
        self.supervisor = None  # StubSupervisor while running with managed_models
        self.admin_key: str | None = None
        self.ready = False  # every model loaded (start returned without being interrupted)

    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    def _admin_key(self) -> str:
        if self.options.admin_key:
            return self.options.admin_key
        import secrets

        import tempfile

        key = secrets.token_urlsafe(24)
        # mkstemp creates the file 0600 before a byte is written; the rename makes it appear whole
        fd, tmp = tempfile.mkstemp(dir=self.work_dir, prefix=".admin_key.")
        with os.fdopen(fd, "w") as f:
            f.write(key)
        os.replace(tmp, self.admin_key_path)
        return key

    @property
    def admin_key_path(self) -> Path:
        """Where a generated key is kept while the server runs (removed by ``stop``)."""
        return self.work_dir / "admin_key"

    def command(self) -> list[str]:
        o = self.options
        server_dir = prepare_server_dir(self.work_dir)
        restricted = []
        if o.managed_models and "model-repository" not in o.restricted_apis:
            raise ConfigError("managed_models needs the repository API restricted to the admin key")
        if o.restricted_apis:
            apis = ",".join(o.restricted_apis)
            key = self.admin_key = self._admin_key()
            restricted = [f"--http-restricted-api={apis}:{ADMIN_HEADER}={key}",
                          f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={key}"]
        return [str(server_dir / "bin" / "tritonserver"),
                f"--model-repository={self.model_repository}",
                f"--backend-directory={server_dir / 'backends'}",
                f"--http-address={o.host}", f"--http-port={o.http_port}",
                f"--grpc-address={o.host}", f"--grpc-port={o.grpc_port}",
                f"--metrics-address={o.host}", f"--metrics-port={o.metrics_port}",
                "--metrics-config=summary_latencies=true",  # p50/p95/p99 per model for the dashboard
                *(["--model-control-mode=explicit", "--load-model=*"] if o.managed_models
                  else ["--model-control-mode=none"]),
                f"--log-verbose={o.log_verbose}", "--exit-on-error=true", "--strict-readiness=true",
                f"--exit-timeout-secs={o.exit_timeout_s}", *self._grpc_age_args(), *restricted, *o.extra_args]

    def _grpc_age_args(self) -> list[str]:
        age = self.options.grpc_max_connection_age_s
        if not age:
            return []
        return [f"--grpc-max-connection-age={age * 1000}",
                f"--grpc-max-connection-age-grace={self.options.exit_timeout_s * 1000}"]

    def start(self, timeout_s: float = READY_TIMEOUT_S, interrupted=lambda: False) -> "TritonServer":
        """Start and wait until every model is ready. ``interrupted()`` turning true (a SIGTERM while the
        models load) returns early, not ready: ``ready`` says which; ``stop`` then ends it."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self.command()
        shown = " ".join(command).replace(self.admin_key, "***") if self.admin_key else " ".join(command)
        log.info("starting Triton: %s", shown)  # the admin key stays out of logs
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        env=server_environment(), start_new_session=True)
        self.ready = self.wait_ready(timeout_s, interrupted)
        if self.ready and self.options.managed_models:
            from .supervisor import StubSupervisor

            self.supervisor = StubSupervisor(self.process.pid, self.repository_api()).start()
        return self

    def wait_ready(self, timeout_s: float, interrupted=lambda: False) -> bool:
        """True once ready; False if ``interrupted()`` first; BuildError on exit or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BuildError(f"Triton exited with code {self.process.returncode} while starting; "
                                 f"last log lines:\n{self.log_tail()}")
            if self.is_ready():
                log.info("Triton ready on http %s, grpc %s", self.http_url, self.grpc_url)
                return True
            if interrupted():
                log.info("stop requested while the models load")
                return False
            time.sleep(0.25)
        self.stop()
        raise BuildError(f"Triton not ready after {timeout_s:.0f}s; last log lines:\n{self.log_tail()}")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def repository_api(self):
        from .supervisor import RepositoryApi

        return RepositoryApi(self.http_url, ADMIN_HEADER, self.admin_key)

    def drain(self, timeout_s: float) -> None:
        """Unload the ensembles first: new requests are refused (clients see a retryable 'no available
        versions'), requests inside them finish on the still-loaded steps. SIGTERM alone stops every
        model's scheduler at once and fails ensemble requests between two steps."""
        api = self.repository_api()
        ensembles = api.ensembles()
        for name in ensembles:
            api.unload(name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = {e["name"]: e.get("state") for e in api.index()}
            if all(states.get(name) not in ("READY", "UNLOADING") for name in ensembles):
                return
            time.sleep(0.1)
        log.warning("ensembles %s still busy after %.0fs; stopping anyway", ensembles, timeout_s)

    def stop(self, timeout_s: float | None = None) -> None:
        """Graceful stop: drain the ensembles (when model control allows), then SIGTERM to the server
        alone, which lets remaining in-flight requests finish (up to ``exit_timeout_s``) and stops its
        backend stubs itself. SIGKILL to the group after ``timeout_s``."""
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        if self.process is None:
            return
        if self.process.poll() is None and self.options.managed_models and self.ready:
            try:
                self.drain(self.options.exit_timeout_s)
            except OSError as exc:  # server already going down: nothing left to drain
                log.warning("could not drain before stopping: %s", exc)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s or self.options.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the server's process group: all of it on a timeout, and the stubs a server
        # stopped while its models loaded started but never stopped.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
        self.ready = False
        self._log_file.close()
        self.admin_key_path.unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
