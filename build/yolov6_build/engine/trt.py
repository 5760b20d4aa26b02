"""Build TensorRT plans, strongly typed, from the graphs build-repo typed for it (``export.fp16``): the
Q/DQ graph (INT8 convolutions, FP16 elsewhere) or the FP16 graph (the baseline).

TensorRT 11 builds only strongly typed networks: its BuilderFlag has no FP16 or INT8, and precisions
come from the graph. TensorRT 10 builds the same graphs the same way (NetworkDefinitionCreationFlag
STRONGLY_TYPED, which 11 keeps and ignores), so one code path serves the release whichever it ships.

Runs where TensorRT and a GPU exist: the ``engine`` service of docker/docker-compose.yml, the
TensorRT image of the release pinned in ``yolov6_build.release`` (a plan only runs on the
TensorRT version and GPU that built it). Imports only tensorrt, the standard library and this
package's stdlib-only modules, so that image needs nothing else installed (tested with torch,
onnx, onnxruntime and modelopt blocked). Input size, max batch and precision come from the
repository's manifest, so the plan's profile always matches the configs Triton loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..contract import DETECTOR_INPUT
from ..deps import require
from ..errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
# the manifest's engine["typing"]: graphs typed for a strongly typed build (an older build-repo wrote FP32 ones)
STRONGLY_TYPED_GRAPHS = "strong"
# The profile's opt batch: what light load runs (the preprocess sends 1-2 images per call there). Kernels are
# tuned for it; bigger batches up to the max run on them. gpu-check measures it against opt = max batch.
LIGHT_LOAD_BATCH = 2


@dataclass(frozen=True)
class EngineConfig:
    precision: str = "int8"  # int8: Q/DQ graph, INT8 where Q/DQ say, FP16 elsewhere; fp16: baseline
    input_hw: tuple[int, int] = (640, 640)
    max_batch_size: int = 8
    opt_batch_size: int | None = None  # default: LIGHT_LOAD_BATCH, at most max_batch_size
    workspace_mib: int = 4096
    timing_cache_dir: str | None = "artifacts/engines"  # one cache file per TensorRT version and GPU

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be >= 1")
        if self.opt_batch_size is None:
            object.__setattr__(self, "opt_batch_size", min(LIGHT_LOAD_BATCH, self.max_batch_size))
        if not 1 <= self.opt_batch_size <= self.max_batch_size:
            raise ConfigError(f"opt_batch_size must be within 1..{self.max_batch_size}, got {self.opt_batch_size}")


@dataclass(frozen=True)
class EnginePlan:
    """What the repository's manifest says to build: graphs, plan path, profile (paths absolute)."""

    onnx: Path
    fp16_baseline_onnx: Path
    reference_onnx: Path  # FP32: what the served detections and mAP are compared with
    plan: Path
    config: EngineConfig


def plan_from_manifest(repository: str | Path, **overrides) -> EnginePlan:
    """Read ``<repository>/manifest.json`` (written by ``build-repo --flavour gpu``)."""
    repository = Path(repository)
    path = repository / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{repository} has no manifest.json: run `make build-repo FLAVOUR=gpu` first")
    engine = json.loads(path.read_text()).get("engine")
    if not engine:
        raise ArtifactError(f"{path} has no engine section: it is not a gpu repository (build-repo --flavour gpu)")
    if engine.get("typing") != STRONGLY_TYPED_GRAPHS:
        raise ArtifactError(f"{repository} holds FP32 graphs from an older build-repo; TensorRT builds strongly typed "
                            "plans from typed ones: run `make build-repo FLAVOUR=gpu` again")
    settings = {"precision": engine["precision"], "input_hw": tuple(engine["input_hw"]),
                "max_batch_size": int(engine["max_batch_size"])}
    cfg = EngineConfig(**{**settings, **{k: v for k, v in overrides.items() if v is not None}})
    return EnginePlan(onnx=repository / engine["onnx"], fp16_baseline_onnx=repository / engine["fp16_baseline_onnx"],
                      reference_onnx=repository / engine["reference_onnx"], plan=repository / engine["plan"],
                      config=cfg)


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
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # no precision flags: the graph's types rule
    profile = builder.create_optimization_profile()
    c, (h, w) = 3, cfg.input_hw
    profile.set_shape(DETECTOR_INPUT, (1, c, h, w), (cfg.opt_batch_size, c, h, w), (cfg.max_batch_size, c, h, w))
    config.add_optimization_profile(profile)
    cache_path = timing_cache_path(cfg.timing_cache_dir, trt.__version__) if cfg.timing_cache_dir else None
    _use_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    plan_path = Path(plan_path)
    _write_atomically(plan_path, bytes(serialized))  # Triton never sees half a plan
    if cache_path:
        _write_atomically(cache_path, bytes(config.get_timing_cache().serialize()))
    report = layer_report(plan_path)
    plan_path.with_suffix(".layers.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("built %s (%s): %d layers, %d reformats, precisions %s", plan_path, cfg.precision, report["layers"],
             report["reformat_layers"], report["precisions"])
    return plan_path


def gpu_name() -> str:
    """The name of the GPU TensorRT builds for (device 0 of this container), for cache keys and reports."""
    result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown-gpu"


def timing_cache_path(cache_dir: str | Path, trt_version: str, gpu: str | None = None) -> Path:
    """One timing cache per TensorRT version and GPU: a cache from another pair is never offered."""
    key = re.sub(r"[^A-Za-z0-9.]+", "-", f"trt{trt_version}-{gpu or gpu_name()}").strip("-")
    return Path(cache_dir) / f"timing-{key}.cache"


def _use_timing_cache(config, cache_path: Path | None) -> None:
    """Load the cache when it matches; a stale or corrupt one is reported and replaced by an empty cache."""
    data = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # noqa: BLE001 - TensorRT raises its own types for unreadable caches
        cache = None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    log.warning("timing cache %s does not fit this TensorRT/GPU: building with a fresh one", cache_path)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise ArtifactError("TensorRT refused an empty timing cache")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)  # readable by the Triton container and the host user, as a plain write would be
    os.replace(tmp.name, path)


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
        raise ArtifactError("trtexec not found: run inside the TensorRT container (docker compose run engine)")
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


OPT_AT_MAX = "int8, opt batch = max"  # the profile tuned for full batches, measured against the default


def compare_engines(plan: EnginePlan, out_dir: str | Path, seconds: int = 10) -> dict:
    """Build the repository's INT8 plan, an FP16 baseline and the INT8 plan with its profile tuned for the
    max batch (in ``out_dir``), benchmark each at batch 1, the opt batch and the max, and write
    ``engines.{json,md}`` into ``out_dir``.

    Ratios are measured in one run on one GPU (plans and timings do not transfer across GPUs).
    """
    if plan.config.precision != "int8":
        raise ConfigError("--compare-fp16 compares the INT8 plan with FP16: this repository has no Q/DQ graph "
                          "(build it with --calib)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = plan.config
    plans = {"int8": build_engine(plan.onnx, plan.plan, cfg),
             "fp16": build_engine(plan.fp16_baseline_onnx, out / "fp16.plan", replace(cfg, precision="fp16")),
             OPT_AT_MAX: build_engine(plan.onnx, out / "int8_opt_max.plan",
                                      replace(cfg, opt_batch_size=cfg.max_batch_size))}
    report: dict = {"input_hw": list(cfg.input_hw), "opt_batch_size": cfg.opt_batch_size, "gpu": gpu_name(),
                    "tensorrt": require("tensorrt").__version__, "engines": {}}
    for name, path in plans.items():
        layers = json.loads(path.with_suffix(".layers.json").read_text())
        runs = [benchmark_plan(path, batch, cfg.input_hw, seconds)
                for batch in sorted({1, cfg.opt_batch_size, cfg.max_batch_size})]
        report["engines"][name] = {"plan": str(path), "layers": layers["layers"],
                                   "reformat_layers": layers["reformat_layers"],
                                   "precisions": layers["precisions"], "runs": runs}
    (out / "engines.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "engines.md").write_text(engines_markdown(report))
    return report


def engines_markdown(report: dict) -> str:
    """The plans side by side (structure, throughput per batch), then INT8/FP16 and the default profile over
    one tuned for the max batch, per batch size."""
    engines = report["engines"]
    h, w = report["input_hw"]
    lines = [f"# TensorRT plans at {h}x{w}", "", "| plan | layers | reformat layers | output precisions | "
             "batch | images/s | mean latency ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
    for name, engine in engines.items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(engine["precisions"].items()))
        for run in engine["runs"]:
            lines.append(f"| {name} | {engine['layers']} | {engine['reformat_layers']} | {kinds} | {run['batch']} | "
                         f"{run['images_per_s']:.1f} | {run.get('latency_mean_ms', '-')} | "
                         f"{run.get('latency_p99_ms', '-')} |")
    for other, label in (("fp16", "INT8/FP16"),
                         (OPT_AT_MAX, f"opt batch {report.get('opt_batch_size')} / opt batch = max")):
        if {"int8", other} <= set(engines):
            lines.append("")
            lines += [f"{label} at batch {mine['batch']}: **{mine['images_per_s'] / theirs['images_per_s']:.2f}x**"
                      for mine, theirs in zip(engines["int8"]["runs"], engines[other]["runs"])]
    return "\n".join(lines) + "\n"
