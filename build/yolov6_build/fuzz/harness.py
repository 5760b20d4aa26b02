"""Child processes that run batches, and the bisection of a batch that killed one.

A ``Worker`` keeps one route alive across batches, as a serving process does; when it dies, the batch
it was given is re-run in fresh workers and halved until the inputs that crash alone are found. A
batch that crashes while none of its halves does is kept whole (a crash that needs its neighbours).
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from .worker import write_frame

STARTUP_TIMEOUT_S = 120.0
BATCH_TIMEOUT_S = 60.0  # far above the slowest batch seen (a DALI rebuild with eight 96x80 images: 0.3 s)


@dataclass
class Died:
    """A worker ended during a batch: ``how`` is the signal's name (SIGSEGV), 'exit N' or 'hang'."""
    how: str


@dataclass
class Answered:
    answered: int
    errors: int
    exception: str = ""  # the route raised instead of answering per image (a defect, not a crash)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


@dataclass
class WorkerSpec:
    route: str
    guarded: bool = True
    input_size: int = 320
    batch_size: int = 8
    threads: int = 2

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "yolov6_build.fuzz.worker", "--route", self.route, "--threads", str(self.threads),
               "--input-size", str(self.input_size), "--batch-size", str(self.batch_size)]
        return cmd + ([] if self.guarded else ["--unguarded"])


class Worker:
    """One child process running ``spec``'s route; ``run(batch)`` -> Answered or Died."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.proc = subprocess.Popen(spec.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        ready = self._answer(STARTUP_TIMEOUT_S)
        if not isinstance(ready, dict) or not ready.get("ready"):
            raise RuntimeError(f"fuzz worker for route {spec.route} did not start: {ready}")

    def _answer(self, timeout_s: float):
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not readable:
            self.proc.kill()
            self.proc.wait()
            return Died("hang")
        line = self.proc.stdout.readline()
        if not line:
            return Died(describe_exit(self.proc.wait()))
        return json.loads(line)

    def run(self, batch: list[bytes]) -> Answered | Died:
        try:
            write_frame(self.proc.stdin, batch)
        except BrokenPipeError:
            return Died(describe_exit(self.proc.wait()))
        answer = self._answer(BATCH_TIMEOUT_S)
        if isinstance(answer, Died):
            return answer
        return Answered(answer["answered"], answer["errors"], answer.get("exception", ""))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_fresh(spec: WorkerSpec, batch: list[bytes], repeats: int = 1) -> Died | None:
    """Run ``batch`` in a new worker up to ``repeats`` times; the first death, or None."""
    for _ in range(repeats):
        worker = Worker(spec)
        outcome = worker.run(batch)
        worker.close()
        if isinstance(outcome, Died):
            return outcome
    return None


@dataclass
class Bisection:
    """``singles``: inputs that crash alone (index, Died). ``groups``: index lists that crash only together.
    ``reproduced``: whether the batch crashed again in a fresh worker at all."""
    reproduced: bool
    singles: list = field(default_factory=list)
    groups: list = field(default_factory=list)


def bisect(spec: WorkerSpec, batch: list[bytes], repeats: int = 2) -> Bisection:
    whole = run_fresh(spec, batch, repeats)
    if whole is None:
        return Bisection(reproduced=False)
    result = Bisection(reproduced=True)
    _split(spec, list(range(len(batch))), batch, whole, repeats, result)
    return result


def _split(spec, indices, batch, died, repeats, result):
    if len(indices) == 1:
        result.singles.append((indices[0], died))
        return
    half = len(indices) // 2
    found = False
    for part in (indices[:half], indices[half:]):
        outcome = run_fresh(spec, [batch[i] for i in part], repeats)
        if outcome is not None:
            found = True
            _split(spec, part, batch, outcome, repeats, result)
    if not found:
        result.groups.append((indices, died))


def probe_operators(data: bytes) -> dict[str, str]:
    """Each operator of ``routes.OPERATORS`` on ``data``, each in its own process: 'ok', 'error: ...' or the signal."""
    from .routes import OPERATORS

    outcomes = {}
    for name in OPERATORS:
        proc = subprocess.run([sys.executable, "-m", "yolov6_build.fuzz.worker", "--probe", name], input=data,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT_S)
        if proc.returncode != 0:
            outcomes[name] = describe_exit(proc.returncode)
            continue
        answer = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        outcomes[name] = "ok" if answer.get("ok") else f"error: {answer['error']}"
    return outcomes
