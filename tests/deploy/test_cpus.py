"""The detector's thread count follows the CPUs a pod really has (cgroup quota, affinity), not the node's."""

import os

import pytest

from yolov6_build.cpus import cgroup_cpu_quota, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def _v2(tmp_path, cpu_max: str, path: str = "/kubepods/pod1/c1", at: str | None = None):
    root = tmp_path / "cgroup"
    folder = root / (at if at is not None else path.lstrip("/"))
    folder.mkdir(parents=True)
    (folder / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def _v1(tmp_path, quota: int, period: int = 100000):
    root = tmp_path / "cgroup"
    folder = root / "cpu,cpuacct" / "kubepods" / "pod1"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("4:cpu,cpuacct:/kubepods/pod1\n3:memory:/kubepods/pod1\n0::/\n")
    return root, proc


def test_a_cgroup_v2_limit_of_one_cpu_gives_one_thread(tmp_path):
    root, proc = _v2(tmp_path, "100000 100000")
    assert cgroup_cpu_quota(root, proc) == 1.0 and usable_cpus(root, proc) == 1


def test_a_fractional_quota_rounds_down_to_whole_cpus(tmp_path):
    root, proc = _v2(tmp_path, "150000 100000")
    assert usable_cpus(root, proc) == 1  # a second thread would be throttled half the time
    root, proc = _v2(tmp_path / "b", "50000 100000")
    assert usable_cpus(root, proc) == 1  # never 0


def test_no_quota_leaves_the_affinity_mask(tmp_path):
    root, proc = _v2(tmp_path, "max 100000")
    assert cgroup_cpu_quota(root, proc) is None and usable_cpus(root, proc) == AFFINITY


def test_a_parent_limit_applies_to_its_children(tmp_path):
    root, proc = _v2(tmp_path, "max 100000")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("100000 100000\n")
    assert usable_cpus(root, proc) == 1


def test_inside_a_container_the_mount_is_the_containers_own_cgroup(tmp_path):
    """Without a cgroup namespace /proc/self/cgroup names the host's path; the mount's root holds the limit."""
    root, proc = _v2(tmp_path, "100000 100000", path="/system.slice/docker-abc.scope", at="")
    assert usable_cpus(root, proc) == 1


def test_cgroup_v1_quota(tmp_path):
    root, proc = _v1(tmp_path, 100000)
    assert cgroup_cpu_quota(root, proc) == 1.0 and usable_cpus(root, proc) == 1
    root, proc = _v1(tmp_path / "b", -1)
    assert cgroup_cpu_quota(root, proc) is None


def test_more_quota_than_cpus_is_capped_by_the_affinity_mask(tmp_path):
    root, proc = _v2(tmp_path, f"{(AFFINITY + 8) * 100000} 100000")
    assert usable_cpus(root, proc) == AFFINITY


def test_the_detector_runtimes_size_their_pools_from_it(monkeypatch):
    from yolov6_build import cpus, runtime

    monkeypatch.setattr(cpus, "usable_cpus", lambda *a, **k: 3)
    assert runtime._threads(0) == 3 and runtime._threads(5) == 5


@pytest.mark.skipif(not os.path.exists("/proc/self/cgroup"), reason="no /proc/self/cgroup")
def test_this_machine(tmp_path):
    assert 1 <= usable_cpus() <= AFFINITY
