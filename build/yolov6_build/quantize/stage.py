"""Stage: checkpoint + calibration images -> INT8 detector graphs (+ optional sensitivity/partial PTQ).

Writes into ``out_dir``:
    detector_fp32.onnx       FP32 graph with the candidate head (baseline, ORT input)
    detector_qdq.onnx        explicit Q/DQ graph for TensorRT (symmetric INT8, shared scales, float layers float;
                             fine-tuned by QAT + channel-wise distillation when the config has ``qat``)
    detector_qdq_u8.onnx     its CPU form (same scales, uint8 activations, Q/DQ where ORT fuses): the cpu
                             flavour's detector on OpenVINO and on ONNX Runtime alike
    quantize.json            resolved config, float layers, metrics
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .ptq import PtqConfig
from .qat import QatConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeStageConfig:
    ptq: PtqConfig = field(default_factory=PtqConfig)
    calib_images: int = 128
    batch_size: int = 16
    float_top_k: int = 0  # keep the k most sensitive layers float
    auto_budget_points: float | None = None  # smallest float set within this mAP drop (needs val set)
    sensitivity_images: int = 32
    val_annotations: str | None = None
    val_limit: int | None = 150
    topk: int = 1000
    scale_sharing: str = "merge"  # one scale per Concat/Add/MaxPool/shared input (merge.SHARING)
    qat: QatConfig | None = None  # fine-tune the calibrated model (fixed scales) on labelled images before export
    seed: int = 0

    def __post_init__(self):
        from .merge import SHARING

        if self.scale_sharing not in SHARING:
            raise ConfigError(f"scale_sharing must be one of {SHARING}, got {self.scale_sharing!r}")
        if self.auto_budget_points is not None and not self.val_annotations:
            raise ConfigError("automatic partial PTQ needs a val set (--val) to measure mAP")


def run_quantize(checkpoint: Path, calib_source: Path, out_dir: Path, cfg: QuantizeStageConfig,
                 progress: bool = True) -> dict:
    from ..export.onnx import export_onnx
    from ..model.checkpoint import load_deploy_model
    from .calibration import load_batches
    from .merge import merge_scales, tie_scales
    from .cpu_qdq import uint8_activations
    from .ptq import executed_layers, float_layers_of, quantize_ptq, set_float_layers

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, info = load_deploy_model(checkpoint)
    input_hw = tuple(info.input_hw)
    log.info("quantize %s (YOLOv6-%s, %dx%d): PTQ, %s calibration on up to %d images from %s", checkpoint, info.size,
             *input_hw, cfg.ptq.calibrator, cfg.calib_images, calib_source)
    batches = load_batches(calib_source, input_hw, cfg.calib_images, cfg.batch_size, cfg.seed, progress)
    quant = quantize_ptq(model, batches, cfg.ptq, progress)
    report: dict = {"stage": "quantize", "checkpoint": str(checkpoint), "config": asdict(cfg),
                    "input_hw": list(input_hw)}
    if cfg.scale_sharing == "tie":  # before the float layers are chosen: they are judged on the tied model
        report["scale_groups"] = len(tie_scales(quant, cfg.ptq, input_hw))
    float_layers = float_layers_of(cfg.ptq, executed_layers(model, input_hw))
    if cfg.float_top_k or cfg.auto_budget_points is not None:
        from ..data import CocoDataset
        from ..evaluate import map_evaluator
        from .partial import auto_float_layers, top_k
        from .sensitivity import analyse, write_report

        sens_batches = batches[: max(1, cfg.sensitivity_images // cfg.batch_size)]
        results = analyse(model, quant, sens_batches, progress=progress)
        report["sensitivity_report"] = {k: str(v) for k, v in write_report(results, out_dir).items()}
        if cfg.auto_budget_points is not None:
            map_fn = map_evaluator(CocoDataset(cfg.val_annotations), input_hw, cfg.val_limit)
            fp32_map = map_fn(model)
            auto = auto_float_layers(quant, results, map_fn, fp32_map, cfg.auto_budget_points)
            float_layers = sorted(set(float_layers) | set(auto.float_layers))
            report["auto"] = {"fp32_map50_95": fp32_map, "map50_95": auto.map50_95, "trace": auto.trace}
        else:
            float_layers = sorted(set(float_layers) | set(top_k(results, cfg.float_top_k)))
        set_float_layers(quant, set(float_layers))
    report["float_layers"] = float_layers
    if cfg.scale_sharing == "merge":  # after the float layers: only quantized members set the group's amax
        report["scale_groups"] = len(merge_scales(quant, input_hw))
    if cfg.qat is not None:  # every amax stays as calibrated and merged; weights and biases learn
        from .qat import train_qat

        log.info("QAT%s: %d iterations on %s, every scale kept", " + CWD" if cfg.qat.distill else "",
                 cfg.qat.iterations, cfg.qat.train_annotations)
        report["qat_history"] = train_qat(quant, model, cfg.qat, input_hw, progress)
    log.info("exporting the FP32, Q/DQ (TensorRT) and CPU-form graphs")
    fp32_path = export_onnx(model, out_dir / "detector_fp32.onnx", input_hw, topk=cfg.topk)
    qdq_path = export_onnx(quant, out_dir / "detector_qdq.onnx", input_hw, topk=cfg.topk)
    uint8_activations(qdq_path, out_dir / "detector_qdq_u8.onnx")
    report["seconds"] = round(time.monotonic() - started, 1)
    (out_dir / "quantize.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("quantized %s in %.0fs: %d float layer(s); graphs in %s", checkpoint, report["seconds"],
             len(float_layers), out_dir)
    return report
