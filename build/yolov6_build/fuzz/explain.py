"""Why a batch crashes when none of its inputs crashes alone: the same files re-run under controlled
changes (DALI threads, order, one image per run in one process), each experiment in fresh processes."""

from __future__ import annotations

from pathlib import Path

from .harness import Answered, WorkerSpec, Worker


def _deaths(spec: WorkerSpec, batches: list[list[bytes]], repeats: int) -> int:
    """In how many of ``repeats`` fresh workers running ``batches`` one after another the worker died."""
    died = 0
    for _ in range(repeats):
        worker = Worker(spec)
        for batch in batches:
            if not isinstance(worker.run(batch), Answered):
                died += 1
                break
        worker.close()
    return died


def explain_group(files: list[Path], route: str = "dali", repeats: int = 5) -> dict[str, str]:
    """Experiment -> 'deaths/repeats'. Unguarded (the decoders as the old header check let them run)."""
    data = [Path(f).read_bytes() for f in files]
    spec = WorkerSpec(route, guarded=False, batch_size=max(len(data), 1))
    one_thread = WorkerSpec(route, guarded=False, batch_size=max(len(data), 1), threads=1)
    out = {
        "whole batch, 2 DALI threads": _deaths(spec, [data], repeats),
        "whole batch, 1 DALI thread": _deaths(one_thread, [data], repeats),
        "reversed order, 2 threads": _deaths(spec, [data[::-1]], repeats),
        "one image per run, same process": _deaths(spec, [[d] for d in data], repeats),
    }
    for path, item in zip(files, data):
        out[f"{Path(path).name} alone"] = _deaths(spec, [[item]], repeats)
    for i in range(len(data)):
        for j in range(i + 1, len(data)):
            out[f"pair {i},{j}"] = _deaths(spec, [[data[i], data[j]]], repeats)
    return {name: f"{deaths}/{repeats}" for name, deaths in out.items()}
