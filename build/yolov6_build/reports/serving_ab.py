"""``bench-serving-ab``: two CPU repositories served in turn, round after round: which configuration serves more.

This machine's speed drifts by 10-30% within minutes, so a sweep of one repository and then one of the
other compares the drift as much as the configurations. Each round here measures both (A first in even
rounds, B first in odd ones), each as the in-process pipeline of that repository
(``bench_serving.in_process_rates``) and then its server at each concurrency
(``bench_serving.served_steps``: req/s, Triton's time split, CPU per process). The report gives every
round and, per concurrency, the medians over rounds: req/s, served / in-process, machine CPU per request,
and B / A taken within each round.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .machine import describe_machine, machine_header


def _arm(repository: Path, out: Path, encoded: list[bytes], users, step_seconds: float, seconds: float) -> dict:
    """One repository's in-process baseline (its own detector, runtime and letterbox) and served steps, keyed
    by the concurrency as text (the keys survive the JSON report)."""
    from ..build_repo import read_manifest, served_cpu_detector
    from .bench_serving import in_process_rates, repository_settings, served_steps

    config = repository_settings(read_manifest(repository))
    in_process = in_process_rates(served_cpu_detector(repository), config["detector_runtime"],
                                  config["cpu_preprocess"], config["input_hw"], encoded, config["max_batch_size"],
                                  seconds)
    steps = served_steps(repository, out, encoded, users, step_seconds)
    return {"in_process": in_process["best"],
            "served": {str(s["users"]): {**s, "vs_in_process": round(s["rps"] / in_process["best"], 3),
                                         "machine_cpu_ms": s["cpu_ms"].get("machine")} for s in steps}}


MEDIANS = ("rps", "vs_in_process", "machine_cpu_ms")


def summary(rounds: list[dict], labels: list[str]) -> dict:
    """``medians``: per label and concurrency, the medians over rounds (and the failed requests of all rounds);
    ``b_vs_a``: the median of B's req/s over A's, each pair from one round."""
    a, b = labels
    users = list(rounds[0][a]["served"])

    def median(label, user, key):
        values = [r[label]["served"][user][key] for r in rounds if r[label]["served"][user][key] is not None]
        return round(statistics.median(values), 3) if values else None

    medians = {label: {user: {**{key: median(label, user, key) for key in MEDIANS},
                              "failures": sum(r[label]["served"][user]["failures"] for r in rounds)}
                       for user in users} for label in labels}
    b_vs_a = {user: round(statistics.median(r[b]["served"][user]["rps"] / r[a]["served"][user]["rps"] for r in rounds),
                          3) for user in users}
    return {"medians": medians, "b_vs_a": b_vs_a}


def serving_ab(repositories: dict[str, Path], out_dir: Path, rounds: int = 3, users=(1, 4, 32),
               step_seconds: float = 8.0, seconds: float = 6.0, images: int = 32) -> dict:
    """Odd rounds measure B first: a drift within a round then favours neither. The report is rewritten after
    every round, so a failure late in a long run keeps the rounds before it."""
    from ..demo import sample_images
    from ..errors import ConfigError

    if len(repositories) != 2:
        raise ConfigError(f"compare two repositories, got {len(repositories)}")
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    from ..progress import progress as progress_bar

    out = Path(out_dir)
    encoded = [p.read_bytes() for p in sample_images(out / "images", images)]
    labels = list(repositories)
    report = {"repositories": {k: str(v) for k, v in repositories.items()}, "users": [str(u) for u in users],
              "machine": describe_machine(), "rounds": []}
    for index in progress_bar(range(rounds), desc="A/B rounds", unit="round"):
        order = labels if index % 2 == 0 else labels[::-1]
        measured = {label: _arm(Path(repositories[label]), out / f"round_{index}_{label}", encoded, users,
                                step_seconds, seconds) for label in order}
        report["rounds"].append({label: measured[label] for label in labels})
        report["summary"] = summary(report["rounds"], labels)
        (out / "serving_ab.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "serving_ab.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    labels, users = list(report["repositories"]), report["users"]
    medians, b_vs_a = report["summary"]["medians"], report["summary"]["b_vs_a"]

    def row(name: str, values: dict) -> str:
        return f"| {name} | " + " | ".join(str(values[u]) for u in users) + " |"

    lines = ["# Two repositories served in turn, round after round", "",
             *machine_header(report),
             *(f"- {label}: `{path}`" for label, path in report["repositories"].items()), "",
             f"Medians over {len(report['rounds'])} round(s) (B / A: within each round, then the median; "
             "odd rounds measure B first):", "",
             "| | " + " | ".join(f"c={u}" for u in users) + " |", "|---" * (len(users) + 1) + "|"]
    for label in labels:
        for key, name in (("rps", "req/s"), ("vs_in_process", "served / in-process"),
                          ("machine_cpu_ms", "machine CPU ms / request"), ("failures", "failed requests (all rounds)")):
            lines.append(row(f"{label} {name}", {u: medians[label][u][key] for u in users}))
    lines.append(row(f"**{labels[1]} / {labels[0]}** req/s", b_vs_a))
    lines += ["", "Every round (in-process: best batch img/s; served: req/s, served / in-process in brackets; CPU ms "
              "per request by process and Triton's time split per step are in serving_ab.json):", "",
              "| round | repository | in-process | " + " | ".join(f"c={u}" for u in users) + " | failures |",
              "|---" * (len(users) + 4) + "|"]
    for index, measured in enumerate(report["rounds"]):
        for label in labels:
            arm = measured[label]
            lines.append(f"| {index} | {label} | {arm['in_process']} | " + " | ".join(
                f"{arm['served'][u]['rps']} ({arm['served'][u]['vs_in_process']:.2f})" for u in users)
                + f" | {sum(step['failures'] for step in arm['served'].values())} |")
    return "\n".join(lines) + "\n"
