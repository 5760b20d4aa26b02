"""How many CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota.

``os.cpu_count()`` counts the node's cores. In a pod limited to 2 CPUs on a 64-core node, a runtime
sized by it starts 64 threads that share 2 CPUs of quota and are throttled in turn; the affinity mask
(cpusets, ``taskset``) and the CFS quota (a Kubernetes CPU limit) are what the process really has.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """CPUs in the affinity mask, capped by the cgroup quota rounded down (at least 1): whole CPUs only,
    since a thread more than the quota holds is throttled."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(Path(cgroup_root), Path(proc_self_cgroup))
    return max(1, min(affinity, math.floor(quota))) if quota is not None else max(1, affinity)


def cgroup_cpu_quota(cgroup_root: Path, proc_self_cgroup: Path) -> float | None:
    """CPUs of CFS quota of this process's cgroup and its ancestors (the tightest), None without a limit.

    cgroup v2 keeps ``cpu.max`` ("200000 100000" or "max 100000"); v1 keeps ``cpu.cfs_quota_us`` (-1: none)
    and ``cpu.cfs_period_us`` under the cpu controller's mount."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 unified hierarchy
            quotas += [_v2_quota(d) for d in _cgroup_dirs(cgroup_root, path)]
        elif "cpu" in controllers.split(","):
            mount = next((cgroup_root / name for name in (controllers, "cpu,cpuacct", "cpu")
                          if (cgroup_root / name).is_dir()), None)
            quotas += [_v1_quota(d) for d in _cgroup_dirs(mount, path)] if mount else []
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def _cgroup_dirs(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and its ancestors under ``mount``. Inside a container without a cgroup
    namespace the path names the host's hierarchy and only the mount itself (the container's) exists."""
    own = mount / path.lstrip("/")
    dirs = [own, *own.parents]
    return [d for d in dirs if d.is_dir() and (d == mount or mount in d.parents)]


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
