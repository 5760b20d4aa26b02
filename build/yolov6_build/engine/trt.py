"""Build TensorRT plans from the explicit Q/DQ ONNX (INT8 + FP16 fallback) or FP32 ONNX (FP16 baseline).

Runs where TensorRT and a GPU exist: the ``build`` service of docker/docker-compose.yml, on the
NGC release pinned in ``TRITON_RELEASE`` (a plan only runs on the TensorRT version and GPU that
built it). Written against the TensorRT 10 Python API; imported lazily so the rest of the bundle
works without it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..contract import DETECTOR_INPUT
from ..deps import require
from ..errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

# The Triton container that serves the plan and the TensorRT that must build it (same NGC release).
TRITON_RELEASE = "24.10"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
BUILD_IMAGE = f"nvcr.io/nvidia/pytorch:{TRITON_RELEASE}-py3"  # TensorRT 10.5, as in the Triton image
PRECISIONS = ("int8", "fp16")


@dataclass(frozen=True)
class EngineConfig:
    precision: str = "int8"  # int8: Q/DQ graph, INT8 where Q/DQ say, FP16 elsewhere; fp16: baseline
    input_hw: tuple[int, int] = (640, 640)
    max_batch_size: int = 8
    opt_batch_size: int | None = None  # default: max_batch_size
    workspace_mib: int = 4096
    timing_cache: str | None = "artifacts/engines/timing.cache"
    strongly_typed: bool = False  # TensorRT >= 10 alternative to the INT8/FP16 builder flags

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be >= 1")
        if self.strongly_typed and self.precision == "fp16":
            raise ConfigError("a strongly typed network runs the graph's own types: the FP16 baseline needs the "
                              "FP16 builder flag (build it without strongly_typed)")


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return shutil.which("nvidia-smi") is not None


def build_engine(onnx_path: str | Path, plan_path: str | Path, cfg: EngineConfig = EngineConfig()) -> Path:
    """Parse the ONNX, build and serialise the plan; writes ``<plan>.layers.json`` (engine inspector)."""
    trt = require("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if cfg.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not cfg.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if cfg.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from Q/DQ nodes
    profile = builder.create_optimization_profile()
    c, (h, w) = 3, cfg.input_hw
    opt = cfg.opt_batch_size or cfg.max_batch_size
    profile.set_shape(DETECTOR_INPUT, (1, c, h, w), (opt, c, h, w), (cfg.max_batch_size, c, h, w))
    config.add_optimization_profile(profile)
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    report = layer_report(plan_path)
    plan_path.with_suffix(".layers.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("built %s (%s): %d layers, %d reformats, precisions %s", plan_path, cfg.precision, report["layers"],
             report["reformat_layers"], report["precisions"])
    return plan_path


def layer_report(plan_path: str | Path) -> dict:
    """Per-layer precision/fusion summary from the engine inspector."""
    trt = require("tensorrt")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers = info.get("Layers", [])
    return summarize_layers(layers)


def summarize_layers(layers: list) -> dict:
    """Counts from engine-inspector layer records (dicts with Name, LayerType, Outputs[].Format/Datatype)."""
    precisions: dict[str, int] = {}
    reformats = 0
    for layer in layers:
        if isinstance(layer, str):  # inspector without DETAILED verbosity gives names only
            layer = {"Name": layer}
        kind = str(layer.get("LayerType", ""))
        name = str(layer.get("Name", ""))
        if "Reformat" in kind or re.search(r"reformat", name, re.IGNORECASE):
            reformats += 1
        for output in layer.get("Outputs", []):
            fmt = str(output.get("Format/Datatype", "unknown"))
            key = "int8" if "Int8" in fmt or "INT8" in fmt else "fp16" if "Half" in fmt or "FP16" in fmt else \
                "fp32" if "Float" in fmt or "FP32" in fmt else "other"
            precisions[key] = precisions.get(key, 0) + 1
    return {"layers": len(layers), "reformat_layers": reformats, "precisions": precisions,
            "layer_names": [str(layer.get("Name", layer)) if isinstance(layer, dict) else layer for layer in layers]}


def benchmark_plan(plan_path: str | Path, batch: int, input_hw: tuple[int, int], seconds: int = 10) -> dict:
    """Throughput/latency of the plan alone with ``trtexec`` (ships in the NGC containers)."""
    trtexec = shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
    if not Path(trtexec).exists():
        raise ArtifactError("trtexec not found: run inside the NGC build container (docker compose run build)")
    shape = f"{DETECTOR_INPUT}:{batch}x3x{input_hw[0]}x{input_hw[1]}"
    result = subprocess.run([trtexec, f"--loadEngine={plan_path}", f"--shapes={shape}", f"--duration={seconds}",
                             "--useCudaGraph", "--noDataTransfers"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ArtifactError(f"trtexec failed: {result.stderr[-500:]}")
    return parse_trtexec(result.stdout, batch)


def parse_trtexec(text: str, batch: int) -> dict:
    """Throughput (queries/s -> images/s) and latency percentiles from trtexec's summary."""
    qps = re.search(r"Throughput:\s*([\d.]+)\s*qps", text)
    latency = re.search(r"Latency: min = ([\d.]+) ms, max = ([\d.]+) ms, mean = ([\d.]+) ms, median = ([\d.]+) ms,"
                        r" percentile\(90%\) = ([\d.]+) ms, percentile\(95%\) = ([\d.]+) ms, percentile\(99%\) = "
                        r"([\d.]+) ms", text)
    if not qps:
        raise ArtifactError("could not read throughput from trtexec output")
    result = {"batch": batch, "qps": float(qps.group(1)), "images_per_s": float(qps.group(1)) * batch}
    if latency:
        result.update(latency_mean_ms=float(latency.group(3)), latency_p50_ms=float(latency.group(4)),
                      latency_p99_ms=float(latency.group(7)))
    return result


def compare_engines(qdq_onnx: str | Path, fp32_onnx: str | Path, int8_plan: str | Path, out_dir: str | Path,
                    cfg: EngineConfig = EngineConfig(), seconds: int = 10) -> dict:
    """Build the INT8 plan (at ``int8_plan``) and its FP16 baseline (in ``out_dir``) with the same
    profile, benchmark both and write ``engines.{json,md}`` into ``out_dir``.

    The ratio is measured in one run on one GPU (plans and timings do not transfer across GPUs).
    """
    from dataclasses import replace

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = {"int8": build_engine(qdq_onnx, int8_plan, replace(cfg, precision="int8")),
             "fp16": build_engine(fp32_onnx, out / "fp16.plan", replace(cfg, precision="fp16", strongly_typed=False))}
    report: dict = {"input_hw": list(cfg.input_hw), "engines": {}}
    for precision, plan in plans.items():
        layers = json.loads(plan.with_suffix(".layers.json").read_text())
        runs = [benchmark_plan(plan, batch, cfg.input_hw, seconds) for batch in sorted({1, cfg.max_batch_size})]
        report["engines"][precision] = {"plan": str(plan), "layers": layers["layers"],
                                        "reformat_layers": layers["reformat_layers"],
                                        "precisions": layers["precisions"], "runs": runs}
    (out / "engines.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "engines.md").write_text(engines_markdown(report))
    return report


def engines_markdown(report: dict) -> str:
    """Side-by-side table of the INT8 and FP16 plans: structure, throughput per batch, INT8/FP16 ratio."""
    engines = report["engines"]
    h, w = report["input_hw"]
    lines = [f"# TensorRT plans at {h}x{w}", "", "| plan | layers | reformat layers | output precisions | "
             "batch | images/s | mean latency ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
    for precision, engine in engines.items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(engine["precisions"].items()))
        for run in engine["runs"]:
            lines.append(f"| {precision} | {engine['layers']} | {engine['reformat_layers']} | {kinds} | {run['batch']} | "
                         f"{run['images_per_s']:.1f} | {run.get('latency_mean_ms', '-')} | "
                         f"{run.get('latency_p99_ms', '-')} |")
    if {"int8", "fp16"} <= set(engines):
        for int8_run, fp16_run in zip(engines["int8"]["runs"], engines["fp16"]["runs"]):
            lines.append(f"\nINT8/FP16 at batch {int8_run['batch']}: "
                         f"**{int8_run['images_per_s'] / fp16_run['images_per_s']:.2f}x**")
    return "\n".join(lines) + "\n"
