"""A live server under a stream of mutated images of every format: each request must get detections or a
per-request INVALID_ARGUMENT error, and every server process (tritonserver and its stubs) keep its PID."""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .mutate import mutate
from .seeds import FORMATS, make_seeds


# what a per-request error for a bad image says (admission, decoders, limits): anything else is unexpected
CLEAR_ERROR = re.compile(r"decod|image|format|header|allowed|limit|empty")


def server_processes(pid: int) -> dict[int, str]:
    """PID -> command line of a server process and all its descendants (the Python backend stubs)."""
    import psutil

    root = psutil.Process(pid)
    return {p.pid: " ".join(p.cmdline()[:3]) for p in [root, *root.children(recursive=True)]}


@dataclass
class StreamReport:
    sent: int = 0
    by_format: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # 'detections', 'per-request error', 'other error'
    unexpected: list = field(default_factory=list)  # (format, message) of answers that are neither
    pids_before: dict = field(default_factory=dict)
    pids_after: dict = field(default_factory=dict)

    @property
    def processes_kept(self) -> bool:
        return bool(self.pids_before) and self.pids_before == self.pids_after

    @property
    def ok(self) -> bool:
        return self.processes_kept and not self.unexpected

    def markdown(self) -> str:
        lines = [f"Sent {self.sent} mutated images ({', '.join(f'{k} {v}' for k, v in sorted(self.by_format.items()))}).",
                 f"Answers: {', '.join(f'{k} {v}' for k, v in sorted(self.outcomes.items()))}.",
                 f"Server processes: {len(self.pids_before)} before, {len(self.pids_after)} after, "
                 f"{'same PIDs' if self.processes_kept else 'CHANGED: ' + str(self.pids_before) + ' -> ' + str(self.pids_after)}."]
        lines += [f"Unexpected answer ({fmt}): {msg}" for fmt, msg in self.unexpected[:10]]
        return "\n".join(lines)


def stream_mutants(grpc_url: str, server_pid: int, count: int, seed: int = 0, concurrency: int = 8,
                   extra_files: list[Path] = (), formats=FORMATS) -> StreamReport:
    """Send ``count`` mutants (formats in turn) plus ``extra_files`` (e.g. the crash corpus), ``concurrency``
    at a time so the server batches them; compare the server's processes before and after."""
    from yolov6_client import ServerError, TritonDetector

    from ..progress import progress as progress_bar

    seeds, rng = make_seeds(formats), np.random.default_rng(seed)
    payloads = [(p.suffix.lstrip("."), p.read_bytes()) for p in extra_files]
    for i in range(count):
        family = formats[i % len(formats)]
        payloads.append((family, mutate(seeds[family][int(rng.integers(0, len(seeds[family])))], family, rng)[0]))
    report = StreamReport(pids_before=server_processes(server_pid))

    def send(item):
        family, data = item
        with TritonDetector(grpc_url, retries=0, timeout_s=120) as detector:
            try:
                detector.detect(data)
                return family, "detections", ""
            except ServerError as exc:
                clear = exc.status == "StatusCode.INVALID_ARGUMENT" and CLEAR_ERROR.search(str(exc))
                return family, "per-request error" if clear else "other error", str(exc)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = progress_bar(pool.map(send, payloads), desc="fuzz-server", total=len(payloads), unit="img")
        for family, outcome, message in answers:
            report.sent += 1
            report.by_format[family] += 1
            report.outcomes[outcome] += 1
            if outcome == "other error":
                report.unexpected.append((family, message[:300]))
    report.pids_after = server_processes(server_pid)
    return report
