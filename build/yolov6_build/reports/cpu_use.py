"""CPU time by process while a load step runs: what a served request costs, and who else takes the cores.

Triton's statistics time each step of a request but not the CPU it burns, and on one box the load
generator shares the cores with the server. ``CpuUse`` measures, over a ``with`` block, the cores
(CPU seconds per wall second) taken by the server process, by each model's Python stub, by the
load generator (the block's child processes that finished in it: ``run_step``'s Locust) and by the
whole machine.
"""

from __future__ import annotations

import time

STUB = "triton_python_backend_stub"
SERVER, LOAD_GENERATOR, MACHINE = "tritonserver", "load generator", "machine"


def _seconds(times) -> float:
    return times.user + times.system


def _server_processes(server_pid: int, models) -> dict[int, str]:
    """pid -> 'tritonserver' or the model name of each Python stub under the server."""
    import psutil

    server = psutil.Process(server_pid)
    groups = {server_pid: SERVER}
    for child in server.children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if STUB in command:
            groups[child.pid] = next((m for m in models if f"/{m}/" in command), "other stubs")
    return groups


class CpuUse:
    """``with CpuUse(server_pid, models) as use: ...`` then ``use.cores``: {group: cores}."""

    def __init__(self, server_pid: int, models):
        self.server_pid, self.models = server_pid, tuple(models)
        self.cores: dict[str, float] = {}

    def _sample(self) -> dict:
        import psutil

        per_group: dict[str, float] = {}
        for pid, group in _server_processes(self.server_pid, self.models).items():
            try:
                per_group[group] = per_group.get(group, 0.0) + _seconds(psutil.Process(pid).cpu_times())
            except psutil.Error:
                continue
        own = psutil.Process().cpu_times()
        per_group[LOAD_GENERATOR] = own.children_user + own.children_system  # reaped children only
        machine = psutil.cpu_times()
        per_group[MACHINE] = machine.user + machine.system + machine.nice + getattr(machine, "irq", 0.0) \
            + getattr(machine, "softirq", 0.0)
        return per_group

    def __enter__(self):
        self._start, self._started = self._sample(), time.monotonic()
        return self

    def __exit__(self, *exc):
        end, wall = self._sample(), time.monotonic() - self._started
        self.cores = {group: round((end[group] - self._start.get(group, 0.0)) / wall, 2) for group in end}
        return False

    @property
    def server_cores(self) -> float:
        """Cores the server took: its own process and every stub."""
        return round(sum(v for k, v in self.cores.items() if k not in (LOAD_GENERATOR, MACHINE)), 2)
