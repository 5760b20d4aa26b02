"""``make bench-gpu-standin``: the gpu flavour's batching settings compared on the CPU stand-in.

Each variant is the gpu repository as build-repo writes it with one setting changed, served through the
stand-in (``repository.standin_repository``) by the embedded Triton, with closed-loop gRPC load at a few
concurrencies. Variants are measured in turn, round after round (the order reversed in odd rounds: this
machine drifts); the report gives the median req/s per variant and concurrency, and each variant over
the first.

What it can show is the cost of the steps' scheduling (queue delays, one or two preprocess instances
around the BLS call): the stand-in's DALI and detector run on the CPU cores the server and the load
generator share, so absolute rates say nothing about a T4 (`make gpu-check` measures those).

    python -m tests.gpu_standin.bench [--rounds 2] [--users 1 4 16] [-o artifacts/reports/gpu_standin]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from yolov6_build import contract as c

# name -> (build_repository overrides, the DALI model's queue delay in us: None keeps what build-repo writes)
VARIANTS = {
    "delays 2000 us, DALI too (before)": ({"max_queue_delay_us": 2000}, 2000),
    "delays 2000 us, DALI 0": ({"max_queue_delay_us": 2000}, None),
    "delays 0": ({"max_queue_delay_us": 0}, None),
    "delays 0, 2 preprocess instances": ({"max_queue_delay_us": 0, "preprocess_instances": 2}, None),
}


def variant_repository(checkpoint: Path, cpu_repository: Path, out: Path, overrides: dict,
                       dali_delay_us: int | None) -> Path:
    from yolov6_build.build_repo import build_repository

    from .repository import standin_repository

    build_repository(checkpoint, out / "gpu", "gpu", **overrides)
    if dali_delay_us is not None:
        config = out / "gpu" / c.DALI_MODEL / "config.pbtxt"
        config.write_text(re.sub(r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {dali_delay_us}",
                                 config.read_text()))
    return standin_repository(out / "gpu", cpu_repository, out / "served")


def bench(checkpoint: Path, cpu_repository: Path, out: Path, rounds: int, users: tuple[int, ...],
          step_seconds: float) -> dict:
    from yolov6_build.demo import sample_images
    from yolov6_build.reports.bench_serving import served_steps
    from yolov6_build.reports.machine import describe_machine

    encoded = [p.read_bytes() for p in sample_images(out / "images", 16)]
    served = {name: variant_repository(checkpoint, cpu_repository, out / f"variant_{i}", *settings)
              for i, (name, settings) in enumerate(VARIANTS.items())}
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for index in range(rounds):
        order = list(VARIANTS) if index % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            steps = served_steps(served[name], out / f"round_{index}", encoded, users, step_seconds)
            runs[name].append({str(s["users"]): {"rps": s["rps"], "p50_ms": s["p50_ms"], "failures": s["failures"]}
                               for s in steps})
    first = next(iter(VARIANTS))
    medians = {name: {str(u): statistics.median(r[str(u)]["rps"] for r in rounds_) for u in users}
               for name, rounds_ in runs.items()}
    report = {"machine": describe_machine(), "users": list(users), "rounds": runs, "median_rps": medians,
              "vs_first": {name: {u: round(v / medians[first][u], 3) for u, v in m.items()} for name, m in medians.items()},
              "failures": sum(s["failures"] for r in runs.values() for rnd in r for s in rnd.values())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_standin.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_standin.md").write_text(markdown(report, rounds))
    return report


def markdown(report: dict, rounds: int) -> str:
    users = [str(u) for u in report["users"]]
    lines = ["# The gpu flavour's batching settings on the CPU stand-in", "",
             f"Median req/s over {rounds} round(s) (in brackets: over the first row); "
             f"failed requests: {report['failures']}. CPU: {report['machine']['cpu']}, {report['machine']['cores']} cores.",
             "", "| variant | " + " | ".join(f"c={u}" for u in users) + " |", "|---" * (len(users) + 1) + "|"]
    for name, medians in report["median_rps"].items():
        lines.append(f"| {name} | " + " | ".join(f"{medians[u]:.1f} ({report['vs_first'][name][u]:.2f})"
                                                 for u in users) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/yolov6n_synthetic_320.pt"))
    parser.add_argument("--cpu-repository", type=Path, default=Path("model_repository/cpu"),
                        help="a built cpu repository: its detector stands in for the TensorRT plan")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--step-seconds", type=float, default=6.0)
    parser.add_argument("-o", "--out", type=Path, default=Path("artifacts/reports/gpu_standin"))
    args = parser.parse_args()
    report = bench(args.checkpoint, args.cpu_repository, args.out, args.rounds, tuple(args.users), args.step_seconds)
    print(markdown(report, args.rounds))


if __name__ == "__main__":
    main()
