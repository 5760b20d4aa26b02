"""Stage: checkpoint -> Triton model repository (configs, model.py files, detector model, manifest)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from . import contract as c
from .coco_names import default_class_names
from .engine.trt import STRONGLY_TYPED_GRAPHS
from .errors import ArtifactError
from .repository import RepositoryConfig, check_ensemble_wiring, parse_repository, remove_stale, write_repository

log = logging.getLogger(__name__)

WARMUP_JPEG = Path(__file__).parent / "assets" / "warmup.jpg"
ENGINE_ONNX_DIR = "onnx"  # <repo>/yolov6_detector/onnx/: not a version folder, so Triton ignores it


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def served_int8_graph(flavour: str) -> str:
    """Which graph of the quantize stage a flavour serves. gpu: the explicit Q/DQ graph TensorRT
    builds from. cpu: its CPU form (modelopt's scales, uint8 activations, see quantize.cpu_qdq),
    one file for OpenVINO and ONNX Runtime."""
    return "detector_qdq.onnx" if flavour == "gpu" else "detector_qdq_u8.onnx"


def repository_config_for(checkpoint_info, flavour: str, **overrides) -> RepositoryConfig:
    """Defaults from the checkpoint (input size, class names), then explicit overrides."""
    from .model.registry import get_variant

    names = default_class_names(checkpoint_info.num_classes, checkpoint_info.class_names)
    cfg = RepositoryConfig(flavour=flavour, input_hw=tuple(checkpoint_info.input_hw), class_names=tuple(names),
                           strides=get_variant(checkpoint_info.size).strides)
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def build_repository(checkpoint: Path, out_dir: Path, flavour: str = "cpu", detector_onnx: Path | None = None,
                     calib: Path | None = None, quantize_config=None, quantize_dir: Path | None = None,
                     **overrides) -> Path:
    """Write a complete repository for ``flavour`` into ``out_dir``; returns the manifest path.

    The detector graph: ``detector_onnx`` when given; else, with ``calib`` images, the INT8 graph
    PTQ makes from them (``served_int8_graph``); else FP32.
    cpu places it as model.onnx; gpu writes model.dali and the ONNX TensorRT builds model.plan from.
    The quantize stage's intermediates go to ``quantize_dir`` (default ``artifacts/quantize/<name>``),
    never into the model repository tree, which holds only what Triton serves.
    """
    quantize_report = None
    if detector_onnx is None and calib is not None:
        from .quantize.stage import QuantizeStageConfig, run_quantize

        quant_dir = Path(quantize_dir or Path("artifacts") / "quantize" / Path(out_dir).name)
        quantize_report = run_quantize(checkpoint, calib, quant_dir, quantize_config or QuantizeStageConfig())
        detector_onnx = quant_dir / served_int8_graph(flavour)
    from .export.onnx import export_onnx
    from .model.checkpoint import load_deploy_model

    started = time.monotonic()
    model, info = load_deploy_model(checkpoint)
    cfg = repository_config_for(info, flavour, **overrides)
    problems = check_ensemble_wiring(parse_repository(cfg))
    if problems:
        raise ArtifactError("generated ensemble is inconsistent: " + "; ".join(problems))
    out_dir = Path(out_dir)
    remove_stale(out_dir, cfg)
    write_repository(cfg, out_dir, WARMUP_JPEG.read_bytes())
    version_dir = out_dir / c.DETECTOR_MODEL / "1"
    if flavour == "cpu":
        target = served_cpu_detector(out_dir)
        if detector_onnx is not None:
            target.write_bytes(Path(detector_onnx).read_bytes())
        else:
            export_onnx(model, target, cfg.input_hw, topk=cfg.topk)
        artifacts = [target]
    else:
        from .dali.pipeline import serialize_gpu_pipeline

        dali_file = serialize_gpu_pipeline(out_dir / c.DALI_MODEL / "1" / "model.dali", cfg.input_hw,
                                           cfg.max_batch_size, cfg.dali_threads)
        engine = _engine_inputs(out_dir, model, cfg, detector_onnx)
        artifacts = [dali_file, *sorted({out_dir / engine[k] for k in ("onnx", "fp16_baseline_onnx", "reference_onnx")})]
        log.info("gpu flavour: build %s/model.plan on the GPU host: docker compose -f docker/docker-compose.yml "
                 "run --rm engine %s", version_dir, out_dir)
    manifest = {
        "stage": "build-repo",
        "checkpoint": {"path": str(checkpoint), "sha256": sha256(Path(checkpoint)), "size": info.size,
                       "num_classes": info.num_classes, "format": info.source_format},
        "config": asdict(cfg),
        "artifacts": {str(p): sha256(p) for p in artifacts},
        "detector": "fp32" if detector_onnx is None else str(detector_onnx),
        "quantize": quantize_report,
        **({"engine": engine} if flavour == "gpu" else {}),
        "seconds": round(time.monotonic() - started, 2),
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("built %s repository in %s (%.1fs)", flavour, out_dir, manifest["seconds"])
    return manifest_path


def _engine_inputs(out_dir: Path, model, cfg: RepositoryConfig, detector_onnx: Path | None) -> dict:
    """Place the graphs TensorRT builds from inside the repository; the manifest's ``engine`` section.

    TensorRT builds them strongly typed (the only kind TensorRT 11 builds), so they carry their own
    precisions: the network body in FP16 (``export.fp16``), INT8 where the Q/DQ graph quantizes. The FP32
    graph stays beside them as the reference gpu-check compares against. Paths are relative to the
    repository, so the TensorRT container finds them wherever it mounts it.
    """
    from .export.fp16 import write_fp16_compute
    from .export.onnx import export_onnx

    folder = out_dir / c.DETECTOR_MODEL / ENGINE_ONNX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, folder / "detector_fp32.onnx", cfg.input_hw, topk=cfg.topk)
    fp16 = write_fp16_compute(fp32, folder / "detector_fp16.onnx")
    source = fp16 if detector_onnx is None else write_fp16_compute(detector_onnx, folder / "detector_qdq.onnx")
    return {"onnx": source.relative_to(out_dir).as_posix(), "precision": "fp16" if detector_onnx is None else "int8",
            "fp16_baseline_onnx": fp16.relative_to(out_dir).as_posix(),
            "reference_onnx": fp32.relative_to(out_dir).as_posix(), "typing": STRONGLY_TYPED_GRAPHS,
            "plan": f"{c.DETECTOR_MODEL}/1/model.plan", "input_hw": list(cfg.input_hw),
            "max_batch_size": cfg.max_batch_size}


def served_cpu_detector(repository: Path) -> Path:
    """The detector graph a built cpu repository serves (what ``build_repository`` writes there)."""
    return Path(repository) / c.DETECTOR_MODEL / "1" / "model.onnx"


def read_manifest(repository: Path) -> dict:
    """The manifest ``build_repository`` wrote (checkpoint, config, artifacts); ArtifactError if absent."""
    path = Path(repository) / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{repository} has no manifest.json: build it with `make build-repo` "
                            "(python -m yolov6_build build-repo)")
    return json.loads(path.read_text())
