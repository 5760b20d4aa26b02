"""CPU time by process while a load step runs: what a served request costs, and who else takes the cores.

Triton's statistics time each step of a request but not the CPU it burns, and on one box the load
generator shares the cores with the server. ``CpuUse`` measures, over a ``with`` block, the CPU
seconds taken by the server process, by each model's Python stub, by the load generator (this
process, whose threads send the load in ``grpc_load``, and the child processes that finished in the
block: ``run_step``'s Locust, its start-up included) and by the whole machine. Per request they do
not depend on how long the block idled around the load.
"""

from __future__ import annotations

STUB = "triton_python_backend_stub"
SERVER, LOAD_GENERATOR, MACHINE, SERVER_TOTAL = "tritonserver", "load generator", "machine", "server"


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
    """``with CpuUse(server_pid, models) as use: ...`` then ``use.seconds``: {group: CPU seconds}."""

    def __init__(self, server_pid: int, models):
        self.server_pid, self.models = server_pid, tuple(models)
        self.seconds: dict[str, float] = {}

    def _sample(self) -> dict:
        import psutil

        per_group: dict[str, float] = {}
        for pid, group in _server_processes(self.server_pid, self.models).items():
            try:
                per_group[group] = per_group.get(group, 0.0) + _seconds(psutil.Process(pid).cpu_times())
            except psutil.Error:
                continue
        own = psutil.Process().cpu_times()
        per_group[LOAD_GENERATOR] = own.user + own.system + own.children_user + own.children_system  # reaped children
        machine = psutil.cpu_times()
        per_group[MACHINE] = machine.user + machine.system + machine.nice + getattr(machine, "irq", 0.0) \
            + getattr(machine, "softirq", 0.0)
        return per_group

    def __enter__(self):
        self._start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        self.seconds = {group: end[group] - self._start.get(group, 0.0) for group in end}
        self.seconds[SERVER_TOTAL] = sum(v for k, v in self.seconds.items() if k not in (LOAD_GENERATOR, MACHINE))
        return False

    def ms_per(self, count: int) -> dict[str, float]:
        """CPU milliseconds per request (or image) of each group, over ``count`` of them."""
        return {group: round(1000 * seconds / count, 2) for group, seconds in self.seconds.items()} if count else {}
