"""``make bench`` serving report: one run, ratios side by side on this machine.

- in-process pipeline vs the same INT8 detector through the live server (best QPS over c=1..32),
- DALI CPU letterbox vs OpenCV decode + OpenCV letterbox (preprocessing alone and whole pipeline),
- ORT FP32 vs INT8 detector inside the served ensemble (and in-process).
Targets: server QPS at the best concurrency >= 85% of in-process; zero failed requests at any step.
The server and its load generator share this machine's cores, as they would on a one-box deployment.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from .. import contract as c

log = logging.getLogger(__name__)

SERVER_TARGET = 0.85


def _images_per_second(step, encoded: list[bytes], batch: int, seconds: float) -> float:
    """Run ``step`` on consecutive batches for about ``seconds`` (after one warm-up batch)."""
    step(encoded[:batch])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        start = done % len(encoded)
        chunk = (encoded + encoded)[start:start + batch]
        step(chunk)
        done += len(chunk)
    return done / (time.perf_counter() - started)


def in_process_rates(detector_onnx: Path, input_hw, encoded: list[bytes], batch: int, seconds: float) -> dict:
    """img/s of each preprocessing alone and of the whole in-process pipeline with it."""
    from ..pipeline import PREPROCESSORS, InProcessPipeline, make_preprocessor

    rates = {}
    for kind in PREPROCESSORS:
        rates[f"preprocess_{kind}"] = _images_per_second(make_preprocessor(kind, input_hw, batch), encoded, batch,
                                                         seconds)
        pipeline = InProcessPipeline(detector_onnx, input_hw, max_batch_size=batch, preprocess=kind)
        rates[f"pipeline_{kind}"] = _images_per_second(pipeline, encoded, batch, seconds)
        log.info("in-process %s (%s): %s", kind, Path(detector_onnx).name, rates)
    return rates


def served_sweep(repository: Path, work_dir: Path, images: Path, users, step_seconds: float) -> list:
    """Locust gRPC sweep against the embedded server serving ``repository``."""
    from ..server import ServerOptions, TritonServer
    from .loadtest import sweep

    with TritonServer(repository, work_dir / "server", ServerOptions.on_free_ports()) as server:
        return sweep({"grpc": f"grpc://{server.grpc_url}"}, work_dir, users, step_seconds,
                     max_requests=100_000, images=images)


def bench_serving(int8_repository: Path, out_dir: Path, checkpoint: Path | None = None, images: int = 32,
                  users=(1, 2, 4, 8, 16, 32), step_seconds: float = 8.0, seconds: float = 8.0) -> dict:
    from ..build_repo import build_repository, read_manifest
    from ..demo import sample_images

    out = Path(out_dir)
    image_dir = out / "images"
    paths = sample_images(image_dir, images)
    encoded = [p.read_bytes() for p in paths]
    manifest = read_manifest(int8_repository)
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest["config"].items() if k != "flavour"}
    input_hw, batch = config["input_hw"], config["max_batch_size"]
    repos = {"int8": Path(int8_repository), "fp32": out / "repo_fp32" / "cpu"}
    # Same checkpoint and configs, no calibration: the FP32 export of the same model.
    build_repository(checkpoint or Path(manifest["checkpoint"]["path"]), repos["fp32"], "cpu", **config)
    report: dict = {"input_hw": list(input_hw), "images": len(paths), "batch": batch, "users": list(users),
                    "in_process": {}, "served": {}}
    for precision, repo in repos.items():
        detector = repo / c.DETECTOR_MODEL / "1" / "model.onnx"
        report["in_process"][precision] = in_process_rates(detector, input_hw, encoded, batch, seconds)
        steps = served_sweep(repo, out / f"served_{precision}", image_dir, users, step_seconds)
        best = max(steps, key=lambda s: s.rps)
        report["served"][precision] = {"steps": [asdict(s) for s in steps], "best_rps": best.rps,
                                       "best_users": best.users, "failures": sum(s.failures for s in steps)}
    report["ratios"] = ratios(report)
    _write(report, out)
    return report


def ratios(report: dict) -> dict:
    ip, served = report["in_process"], report["served"]
    return {
        "server_vs_in_process_int8": round(served["int8"]["best_rps"] / ip["int8"]["pipeline_dali"], 3),
        "dali_vs_plain_preprocess": round(ip["int8"]["preprocess_dali"] / ip["int8"]["preprocess_plain"], 3),
        "dali_vs_plain_pipeline": round(ip["int8"]["pipeline_dali"] / ip["int8"]["pipeline_plain"], 3),
        "int8_vs_fp32_served": round(served["int8"]["best_rps"] / served["fp32"]["best_rps"], 3),
        "int8_vs_fp32_in_process": round(ip["int8"]["pipeline_dali"] / ip["fp32"]["pipeline_dali"], 3),
        "server_target_met": served["int8"]["best_rps"] >= SERVER_TARGET * ip["int8"]["pipeline_dali"],
        "zero_failures": all(s["failures"] == 0 for s in served.values()),
    }


def markdown(report: dict) -> str:
    ip, served, r = report["in_process"], report["served"], report["ratios"]
    h, w = report["input_hw"]
    lines = [f"# Serving benchmark ({h}x{w}, {report['images']} synthetic JPEGs of mixed sizes, img/s, one run)", "",
             "| path | FP32 | INT8 | INT8/FP32 |", "|---|---|---|---|"]
    for label, key in (("preprocess only: DALI CPU", "preprocess_dali"),
                       ("preprocess only: OpenCV decode + letterbox", "preprocess_plain"),
                       ("in-process pipeline, DALI", "pipeline_dali"),
                       ("in-process pipeline, OpenCV decode + letterbox", "pipeline_plain")):
        fp32, int8 = ip["fp32"][key], ip["int8"][key]
        lines.append(f"| {label} | {fp32:.1f} | {int8:.1f} | {int8 / fp32:.2f}x |")
    lines.append(f"| served ensemble, best concurrency (c) | {served['fp32']['best_rps']:.1f} "
                 f"(c={served['fp32']['best_users']}) | {served['int8']['best_rps']:.1f} "
                 f"(c={served['int8']['best_users']}) | {r['int8_vs_fp32_served']:.2f}x |")
    lines += ["", f"- server / in-process (INT8, DALI): **{r['server_vs_in_process_int8']:.2f}** "
              f"(target >= {SERVER_TARGET}: {'met' if r['server_target_met'] else 'NOT met'})",
              f"- DALI / OpenCV: preprocessing {r['dali_vs_plain_preprocess']:.2f}x, "
              f"pipeline {r['dali_vs_plain_pipeline']:.2f}x",
              f"- failed requests c={report['users'][0]}..{report['users'][-1]}: FP32 "
              f"{served['fp32']['failures']}, INT8 {served['int8']['failures']} (target 0: "
              f"{'met' if r['zero_failures'] else 'NOT met'})", "",
              "| served | c | req/s | p50 ms | p95 ms | p99 ms | failures |", "|---|---|---|---|---|---|---|"]
    for precision in ("int8", "fp32"):
        for s in served[precision]["steps"]:
            lines.append(f"| {precision} | {s['users']} | {s['rps']} | {s['p50_ms']:g} | {s['p95_ms']:g} | "
                         f"{s['p99_ms']:g} | {s['failures']} |")
    return "\n".join(lines) + "\n"


def _write(report: dict, out: Path) -> None:
    from .loadtest import StepResult, plot_sweep

    (out / "bench_serving.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench_serving.md").write_text(markdown(report))
    steps = [StepResult(**{**s, "protocol": f"grpc {precision}"}) for precision in ("int8", "fp32")
             for s in report["served"][precision]["steps"]]
    plot_sweep(steps, out / "bench_serving.png", "Served ensemble (gRPC): FP32 vs INT8 detector")
