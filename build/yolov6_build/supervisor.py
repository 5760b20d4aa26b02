"""Restart dead Python backend stubs of the embedded server.

Triton 2.51's Python backend does not restart a stub process that died (killed, OOM): every later
request to that model fails with "Stub process ... is not healthy" while the health endpoints
still answer ready (triton-inference-server/server#7862, #8604). The supervisor watches the
stubs the server started and, when one disappears, reloads its model through the repository
API (unload + load; the API is restricted to the admin key) so a fresh stub takes over.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

STUB_BINARY = "triton_python_backend_stub"


def live_stubs(server_pid: int) -> Counter:
    """Running (not zombie) stub processes of the server, counted per model name."""
    import psutil

    counts: Counter = Counter()
    for child in psutil.Process(server_pid).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = child.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if cmdline and cmdline[0].endswith(STUB_BINARY) and len(cmdline) > 1:
            counts[Path(cmdline[1]).parent.parent.name] += 1  # <repo>/<model>/<version>/model.py
    return counts


class RepositoryApi:
    """Triton's model-repository API (load, unload, index), with the admin key it is locked behind."""

    def __init__(self, http_url: str, admin_header: str, admin_key: str):
        self.http_url = http_url
        self.headers = {admin_header: admin_key, "Content-Type": "application/json"}

    def _post(self, path: str, timeout_s: float = 120):
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/{path}", data=b"{}",
                                         headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
        return json.loads(body) if body else None

    def load(self, model: str) -> None:
        self._post(f"models/{model}/load")

    def unload(self, model: str) -> None:
        self._post(f"models/{model}/unload")

    def index(self) -> list[dict]:
        """[{'name', 'version', 'state'}, ...] for every model in the repository."""
        return self._post("index", timeout_s=10)

    def ensembles(self) -> list[str]:
        names = []
        for entry in self.index():
            if entry.get("state") == "READY":
                with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{entry['name']}/config",
                                            timeout=10) as response:
                    if json.loads(response.read()).get("platform") == "ensemble":
                        names.append(entry["name"])
        return names


class StubSupervisor:
    def __init__(self, server_pid: int, api: RepositoryApi, interval_s: float = 2.0):
        self.server_pid, self.api = server_pid, api
        self.interval_s = interval_s
        self.expected = live_stubs(server_pid)
        self.restarts: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stub-supervisor", daemon=True)

    def start(self) -> "StubSupervisor":
        log.info("supervising Python backend stubs: %s", dict(self.expected))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception as exc:  # the supervisor must outlive any one failed check
                log.warning("stub check failed: %s", exc)

    def check_once(self) -> list[str]:
        """Reload every model with fewer live stubs than it started with; returns their names."""
        live = live_stubs(self.server_pid)
        dead = [model for model, count in self.expected.items() if live[model] < count]
        for model in dead:
            if self._stop.is_set():
                break
            log.warning("stub of %s died: reloading the model", model)
            self.api.unload(model)
            self.api.load(model)
            self.restarts[model] += 1
            log.warning("%s reloaded (restart %d)", model, self.restarts[model])
        return dead
