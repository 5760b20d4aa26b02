"""Beyond one server: a local Prometheus with the deployment's rules, an HAProxy balancer, the fleet run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import DependencyError

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"  # the checkout's deploy/ (manifests, rules, dashboard)


def service_binary(name: str) -> str:
    """The path of a Debian-packaged service (prometheus, haproxy) that `make setup-services` installs."""
    found = shutil.which(name)
    if not found:
        raise DependencyError(f"{name} is not installed: `make setup-services` installs Debian's {name}")
    return found


class ServiceProcess:
    """A local service run in the foreground, its output in ``log_path``; ``stop`` ends it."""

    def __init__(self, command: list[str], log_path: Path):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def exited(self) -> int | None:
        """The exit code once the service has ended, else None."""
        return self.process.poll()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
