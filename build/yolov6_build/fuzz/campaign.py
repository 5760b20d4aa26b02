"""A fuzz campaign: mutants of each format through a route in a child process, until a time or input
budget is spent; crashes bisected, reproducers saved, counts reported (``fuzz.json`` and ``fuzz.md``)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .harness import Answered, WorkerSpec, Worker, bisect, probe_operators
from .mutate import mutate
from .seeds import FORMATS, make_seeds

SUFFIX = {"jpeg": "jpg", "png": "png", "bmp": "bmp", "tiff": "tif", "webp": "webp", "jpeg2000": "jp2", "pnm": "ppm"}


@dataclass
class FormatCounts:
    inputs: int = 0
    batches: int = 0
    errors: int = 0  # per-image errors answered (refused or undecodable)
    crashed_batches: int = 0
    hangs: int = 0
    exceptions: int = 0  # batches the route answered with an exception instead of per-image results
    seconds: float = 0.0


@dataclass
class Crash:
    """A reproducer: ``files`` crash together (one file: alone) in ``route``; ``operators`` on a single file."""
    route: str
    guarded: bool
    family: str
    signal: str
    kind: str  # 'alone', 'with its batch', 'not reproduced', 'hang'
    files: list[str]
    mutations: list[str]
    operators: dict = field(default_factory=dict)


@dataclass
class Campaign:
    routes: tuple[str, ...] = ("opencv", "dali")
    formats: tuple[str, ...] = FORMATS
    seconds: float = 600.0  # per route
    inputs_per_format: int = 0  # 0: no input budget, only time
    batch_size: int = 8
    guarded: bool = True
    seed: int = 0
    input_size: int = 320
    out_dir: Path = Path("artifacts/reports/fuzz")
    counts: dict = field(default_factory=dict)
    wall_seconds: dict = field(default_factory=dict)  # route -> whole run, bisection and probes included
    crashes: list = field(default_factory=list)
    exceptions: list = field(default_factory=list)  # (format, message): the first 20

    def run(self, progress: bool = True) -> "Campaign":
        seeds = make_seeds(self.formats)
        (self.out_dir / "crashes").mkdir(parents=True, exist_ok=True)
        for route in self.routes:
            self._run_route(route, seeds, progress)
            self.write_report()
        return self

    def _budget_left(self, route: str, deadline: float) -> list[str]:
        if time.monotonic() >= deadline:
            return []
        if not self.inputs_per_format:
            return list(self.formats)
        return [f for f in self.formats if self.counts[route][f].inputs < self.inputs_per_format]

    def _run_route(self, route: str, seeds: dict, progress: bool) -> None:
        from ..progress import progress as progress_bar

        spec = WorkerSpec(route, self.guarded, self.input_size, self.batch_size)
        rng = np.random.default_rng([self.seed, len(route)])
        self.counts[route] = {f: FormatCounts() for f in self.formats}
        total = self.inputs_per_format * len(self.formats) or None
        bar = progress_bar(total=total, desc=f"fuzz {route}", unit="img", enabled=progress, smoothing=0.05)
        started = time.monotonic()
        deadline, worker = started + self.seconds, Worker(spec)
        while formats := self._budget_left(route, deadline):
            family = formats[int(rng.integers(0, len(formats)))]
            pool = seeds[family]
            mutants = [mutate(pool[int(rng.integers(0, len(pool)))], family, rng) for _ in range(self.batch_size)]
            batch = [m for m, _ in mutants]
            start = time.monotonic()
            outcome = worker.run(batch)
            counts = self.counts[route][family]
            counts.seconds += time.monotonic() - start
            counts.inputs += len(batch)
            counts.batches += 1
            bar.update(len(batch))
            if isinstance(outcome, Answered):
                counts.errors += outcome.errors
                counts.exceptions += bool(outcome.exception)
                if outcome.exception and len(self.exceptions) < 20:
                    self.exceptions.append((family, outcome.exception))
                continue
            counts.crashed_batches += 1
            counts.hangs += outcome.how == "hang"
            self._record(spec, family, batch, [d for _, d in mutants], outcome)
            bar.set_postfix(crashes=len(self.crashes))
            worker = Worker(spec)
        worker.close()
        bar.close()
        self.wall_seconds[route] = time.monotonic() - started

    def _save(self, data: bytes, family: str) -> str:
        name = f"{hashlib.sha256(data).hexdigest()[:16]}.{SUFFIX[family]}"
        (self.out_dir / "crashes" / name).write_bytes(data)
        return name

    def _record(self, spec: WorkerSpec, family: str, batch: list[bytes], mutations: list[str], died) -> None:
        base = dict(route=spec.route, guarded=spec.guarded, family=family)
        if died.how == "hang":
            self.crashes.append(Crash(**base, signal="hang", kind="hang", files=[self._save(b, family) for b in batch],
                                      mutations=mutations))
            return
        found = bisect(spec, batch)
        if not found.reproduced:
            self.crashes.append(Crash(**base, signal=died.how, kind="not reproduced",
                                      files=[self._save(b, family) for b in batch], mutations=mutations))
        for index, single in found.singles:
            self.crashes.append(Crash(**base, signal=single.how, kind="alone", files=[self._save(batch[index], family)],
                                      mutations=[mutations[index]], operators=probe_operators(batch[index])))
        for indices, group in found.groups:
            self.crashes.append(Crash(**base, signal=group.how, kind="with its batch",
                                      files=[self._save(batch[i], family) for i in indices],
                                      mutations=[mutations[i] for i in indices]))

    def summary(self) -> dict:
        return {"routes": list(self.routes), "formats": list(self.formats), "guarded": self.guarded,
                "batch_size": self.batch_size, "seed": self.seed, "input_size": self.input_size,
                "counts": {r: {f: asdict(c) for f, c in per.items()} for r, per in self.counts.items()},
                "wall_seconds": self.wall_seconds,
                "crashes": [asdict(c) for c in self.crashes], "exceptions": self.exceptions}

    def write_report(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "fuzz.json").write_text(json.dumps(self.summary(), indent=1))
        path = self.out_dir / "fuzz.md"
        path.write_text(self.markdown())
        return path

    def markdown(self) -> str:
        mode = "served routes (admission first)" if self.guarded else "unguarded decoders (old header check only)"
        lines = [f"# Fuzz campaign: {mode}", "",
                 f"Batches of {self.batch_size} mutants of one format, one child process per route (a new one "
                 f"after each crash); seed {self.seed}; letterbox {self.input_size}.", "",
                 "| route | format | inputs | per-image errors | crashed batches | hangs | batches raising | inputs/s |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for route, per in self.counts.items():
            for family, c in per.items():
                rate = c.inputs / c.seconds if c.seconds else 0.0
                lines.append(f"| {route} | {family} | {c.inputs} | {c.errors} | {c.crashed_batches} | {c.hangs} | {c.exceptions} | {rate:.0f} |")
        lines += ["", "Wall time: " + ", ".join(f"{r} {s / 60:.1f} min" for r, s in self.wall_seconds.items())
                  + " (inputs/s above: worker time only)"]
        lines += [f"Batch raised ({fmt}): {message}" for fmt, message in self.exceptions]
        lines += ["", f"Reproducers: {len(self.crashes)} (files under `crashes/`)", ""]
        if self.crashes:
            lines += ["| route | format | signal | crashes | files | operators that died |", "|---|---|---|---|---|---|"]
            for c in self.crashes:
                died = ", ".join(f"{op} ({out})" for op, out in c.operators.items() if not out.startswith(("ok", "error")))
                lines.append(f"| {c.route} | {c.family} | {c.signal} | {c.kind} | {', '.join(c.files)} | {died or '-'} |")
        return "\n".join(lines) + "\n"
