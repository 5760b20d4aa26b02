"""The rendered cpu Deployment played with ``podman kube play``, changed only where podman 4.3 lacks what
Kubernetes does (each change names the Kubernetes behaviour it stands for; the manifests stay as shipped).
"""

from __future__ import annotations

import copy
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

SERVED_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # the cpu overlay's containerPorts


def deployment_of(rendered: str) -> dict:
    return next(doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment")


def emulate_kubernetes(deployment: dict, scratch: Path) -> tuple[dict, list[Path]]:
    """A copy of ``deployment`` that podman 4.3's ``kube play`` runs the way a kubelet would run the original,
    and the folders made for its volumes (the caller removes them)."""
    folders = []
    played = copy.deepcopy(deployment)
    played["spec"]["replicas"] = 1  # one pod on one machine
    spec = played["spec"]["template"]["spec"]
    for container in spec["containers"]:
        # Host network (no CNI here): podman refuses containerPorts there. The pod still listens on them; the
        # probes name them, and Kubernetes resolves the names to these numbers.
        ports = {p["name"]: p["containerPort"] for p in container.pop("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get and get["port"] in ports:
                get["port"] = ports[get["port"]]
    for volume in spec["volumes"]:
        if "emptyDir" in volume:
            # Kubernetes makes an emptyDir 0777 (medium Memory: a tmpfs); podman makes it root-owned 0755,
            # which the non-root server cannot write.
            memory = volume.pop("emptyDir").get("medium") == "Memory"
            folder = Path(tempfile.mkdtemp(prefix=f"pod-{volume['name']}-", dir="/dev/shm" if memory else scratch))
            folder.chmod(0o777)
            folders.append(folder)
            volume["hostPath"] = {"path": str(folder), "type": "Directory"}
        if "secret" in volume:
            volume["secret"]["optional"] = False  # podman dereferences the field Kubernetes defaults
    return played, folders


def podman_secret(podman, name: str, items: dict[str, str], scratch: Path) -> None:
    """The Secret a user creates with kubectl, as podman's secret store holds it. podman 4.3 writes a
    Secret's ``data`` values to the volume's files as they are, where Kubernetes base64-decodes them, so
    the values go in undecoded."""
    secret = scratch / f"{name}.yaml"
    secret.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                                      "data": items}))
    secret.chmod(0o600)
    podman("secret", "rm", name, check=False)
    podman("secret", "create", name, str(secret))
    secret.unlink()


def ports_in_use(ports) -> list[int]:
    busy = []
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def is_ready(http_port: int = SERVED_PORTS["http"]) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class PlayedPod:
    """``podman kube play`` of one Deployment (host network); ``container`` is its served container."""

    def __init__(self, podman, manifest: Path, deployment: dict):
        self.podman, self.manifest = podman, manifest
        self.pod = f"{deployment['metadata']['name']}-pod-0"
        self.container = f"{self.pod}-{deployment['spec']['template']['spec']['containers'][0]['name']}"
        self.grace_s = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        self.played_at = self.ready_at = None

    def play(self) -> "PlayedPod":
        self.down()  # a pod of the same name left by an interrupted run
        busy = ports_in_use(SERVED_PORTS.values())
        assert not busy, f"ports {busy} are taken on this machine: the pod listens on them (host network)"
        self.played_at = time.monotonic()
        self.podman("kube", "play", "--network", "host", str(self.manifest))
        return self

    def wait_ready(self, budget_s: float) -> float:
        """Seconds from play to ready; AssertionError past ``budget_s`` or when the container exits."""
        while time.monotonic() - self.played_at < budget_s:
            if is_ready():
                self.ready_at = time.monotonic()
                return self.ready_at - self.played_at
            assert self.state()["Status"] == "running", f"the container stopped:\n{self.logs()}"
            time.sleep(0.5)
        raise AssertionError(f"not ready within the startup probe's {budget_s:.0f} s:\n{self.logs()}")

    def inspect(self, template: str) -> str:
        return self.podman("inspect", self.container, "--format", template).stdout.strip()

    def state(self) -> dict:
        status, exit_code, restarts = self.inspect("{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}").split()
        return {"Status": status, "ExitCode": int(exit_code), "RestartCount": int(restarts)}

    def memory_mb(self) -> float:
        usage = self.podman("stats", "--no-stream", "--format", "{{.MemUsage}}", self.container).stdout
        amount = usage.split("/")[0].strip()
        units = {"kB": 1e-3, "MB": 1, "GB": 1e3}
        number, unit = float(amount[:-2]), amount[-2:]
        return number * units[unit]

    def logs(self) -> str:
        result = self.podman("logs", self.container, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def stop(self) -> float:
        """SIGTERM with the pod's grace period, as the kubelet stops it; seconds taken."""
        started = time.monotonic()
        self.podman("pod", "stop", "--time", str(self.grace_s), self.pod, timeout_s=self.grace_s + 30)
        return time.monotonic() - started

    def down(self) -> None:
        self.podman("kube", "down", str(self.manifest), check=False)
