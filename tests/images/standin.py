"""A stand-in for ``python:3.11-slim-bookworm``, which cannot be pulled here.

Debian bookworm from Debian's own packages (debootstrap, minbase) with Python 3.11 (python3, pip,
libpython3.11): the same Debian and the same Python minor as the public image. It is imported under the
public image's name, so the shipped Dockerfiles build unchanged with ``--pull=never``. What differs: the
public image builds its own CPython into /usr/local; here Debian's is in /usr, with the ``python``/``pip``
names the public image has and without Debian's EXTERNALLY-MANAGED marker (the public image has none).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

STANDIN_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "python3-venv", "libpython3.11", "ca-certificates")


def ensure_standin(podman, work_dir: Path) -> float:
    """Import the stand-in unless this machine has it already; returns the seconds spent."""
    if podman.image_exists(STANDIN_IMAGE):
        return 0.0
    started = time.monotonic()
    rootfs = Path(work_dir) / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs),
                    MIRROR], check=True, capture_output=True, timeout=900)
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    for name, target in (("python", "python3"), ("pip", "pip3")):
        (rootfs / "usr/bin" / name).unlink(missing_ok=True)
        (rootfs / "usr/bin" / name).symlink_to(target)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--exclude=./var/cache/apt/archives/*.deb",
                            "--exclude=./var/lib/apt/lists/*", "-c", "."], stdout=subprocess.PIPE)
    podman("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', "-", STANDIN_IMAGE,
           stdin=tar.stdout)
    tar.wait()
    subprocess.run(["rm", "-rf", str(rootfs)], check=True)
    return time.monotonic() - started
