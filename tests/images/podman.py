"""Podman as this machine can run it: root, runc, cgroupfs, host network (no CNI), no default ulimits.

Builds reach the package index through this machine's TLS-intercepting proxy, so every build mounts the
host's CA bundle and a pip.conf naming it; the images themselves stay as the Dockerfiles make them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ENGINE = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_CA_PATH = "/etc/yolov6-build-ca.crt"  # where a build sees the host's bundle


class Podman:
    def __init__(self, work_dir: Path):
        missing = [tool for tool in ("podman", "runc", "catatonit") if not shutil.which(tool)]
        if missing:
            pytest.fail(f"{', '.join(missing)} not installed: run `make setup-containers`")
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")  # the host's nofile limit is below podman's default
        self.pip_conf = self.work_dir / "pip.conf"
        self.pip_conf.write_text(f"[global]\ncert = {BUILD_CA_PATH}\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, timeout_s: float = 900, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([*ENGINE, *args], capture_output=True, text=True, env=self.env, timeout=timeout_s,
                                **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    @property
    def build_options(self) -> list[str]:
        """What every build here needs: local base images only, host network, the proxy's CA for pip."""
        return ["--pull=never", "--network", "host", "-v", f"{HOST_CA_BUNDLE}:{BUILD_CA_PATH}:ro",
                "-v", f"{self.pip_conf}:/etc/pip.conf:ro"]

    def image_exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def digest_reference(self, image: str) -> str:
        """``name@sha256:...`` of a local image: what a cluster overlay pins."""
        digest = self("image", "inspect", image, "--format", "{{.Digest}}").stdout.strip()
        return f"{image.rsplit(':', 1)[0]}@{digest}"

    def image_size_mb(self, image: str) -> float:
        return int(self("image", "inspect", image, "--format", "{{.Size}}").stdout.strip()) / 1e6
