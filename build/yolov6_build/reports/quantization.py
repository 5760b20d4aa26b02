"""The quantization results table: mAP of FP32, PTQ per calibrator, partial PTQ and the stock path.

Every variant is measured on the same val images with the same letterbox, NMS and evaluator,
both as the fake-quantized PyTorch model (what TensorRT will run) and as the CPU form of its Q/DQ
graph on the cpu flavour's default runtime (what the CPU flavour serves).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

from ..quantize.ptq import CALIBRATORS, PtqConfig

log = logging.getLogger(__name__)


def quantization_report(checkpoint: Path, val_annotations: Path, calib_source: Path, out_dir: Path,
                        calib_images: int = 128, budget_points: float = 0.3, val_limit: int | None = None) -> dict:
    from ..data import CocoDataset
    from ..evaluate import EvalSettings, detector_runner, evaluate, map_evaluator, onnx_runner
    from ..export.onnx import export_onnx
    from ..model.checkpoint import load_deploy_model
    from ..quantize.calibration import load_batches
    from ..quantize.cpu_qdq import uint8_activations
    from ..quantize.ort_int8 import quantize_stock
    from ..repository import RepositoryConfig
    from ..quantize.merge import merge_scales
    from ..quantize.partial import auto_float_layers
    from ..quantize.ptq import quantize_ptq, set_float_layers
    from ..quantize.sensitivity import analyse, write_report

    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_deploy_model(checkpoint)
    hw = tuple(info.input_hw)
    val = CocoDataset(val_annotations)
    settings = EvalSettings(limit=val_limit)
    batches = load_batches(calib_source, hw, calib_images, 16)

    torch_map = map_evaluator(val, hw, val_limit)

    def ort_map(path):
        return evaluate(onnx_runner(path), val, hw, settings, progress=False)["map50_95"]

    def cpu_map(quant, name):
        """The served CPU graph of ``quant`` (its Q/DQ export in CPU form) on the default runtime."""
        graph = uint8_activations(export_onnx(quant, out / f"{name}_qdq.onnx", hw, topk=1000), out / f"{name}_cpu.onnx")
        return evaluate(detector_runner(graph, RepositoryConfig.detector_runtime), val, hw, settings,
                        progress=False)["map50_95"]

    rows = []

    def add(name, torch_value, ort_value, float_layers=0):
        rows.append({"variant": name, "torch_map50_95": torch_value, "ort_map50_95": ort_value,
                     "float_layers": float_layers})
        log.info("%-32s torch %s  ort %s", name, torch_value, ort_value)

    fp32_onnx = export_onnx(model, out / "fp32.onnx", hw, topk=1000)
    fp32 = torch_map(model)
    add("FP32", fp32, ort_map(fp32_onnx))
    quantized = {}
    for calibrator in CALIBRATORS:
        cfg = PtqConfig(calibrator)
        quantized[calibrator] = quantize_ptq(model, batches, cfg, progress=False)
        add(f"PTQ {calibrator}", torch_map(quantized[calibrator]), cpu_map(quantized[calibrator], calibrator))
    best = max(CALIBRATORS, key=lambda c: next(r["torch_map50_95"] for r in rows if r["variant"] == f"PTQ {c}"))
    quant = quantized[best]
    merged = copy.deepcopy(quant)
    merge_scales(merged, hw)
    served = " (served default)" if best == PtqConfig().calibrator else ""
    add(f"PTQ {best} + merged scales{served}", torch_map(merged), cpu_map(merged, "merged"))
    float_stem = quantize_ptq(model, batches, PtqConfig(best, float_stem=True), progress=False)
    merge_scales(float_stem, hw)
    add(f"PTQ {best} + merged scales, stem float", torch_map(float_stem), cpu_map(float_stem, "float_stem"), 1)
    results = analyse(model, quant, batches[:2], progress=False)
    write_report(results, out, title=f"Per-layer INT8 sensitivity ({best} calibration)")
    auto = auto_float_layers(quant, results, torch_map, fp32, budget_points)
    set_float_layers(quant, set(auto.float_layers))
    merge_scales(quant, hw)
    add(f"partial PTQ {best} + merged (auto, {budget_points} pt budget)", torch_map(quant), cpu_map(quant, "partial"),
        len(auto.float_layers))
    raw_onnx = export_onnx(model, out / "fp32_raw.onnx", hw)  # upstream's output layout, as a user exports it
    stock = quantize_stock(raw_onnx, out / "int8_stock.onnx", batches)
    add("stock ORT quantize_static (defaults)", None, ort_map(stock))
    report = {"checkpoint": str(checkpoint), "val": str(val_annotations), "val_images": settings.limit or len(val),
              "calib_images": calib_images, "input_hw": list(hw), "best_calibrator": best,
              "partial_float_layers": list(auto.float_layers), "partial_trace": auto.trace, "rows": rows,
              "minutes": round((time.monotonic() - started) / 60, 1)}
    (out / "quantization.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "quantization.md").write_text(markdown_table(report))
    return report


def _fmt(value, fp32):
    if value is None:
        return "-"
    return f"{value:.4f} ({100 * (value - fp32):+.2f})"


def markdown_table(report: dict) -> str:
    fp32_t = report["rows"][0]["torch_map50_95"]
    fp32_o = report["rows"][0]["ort_map50_95"]
    lines = [f"# INT8 accuracy on {report['val_images']} val images ({report['input_hw'][0]}x{report['input_hw'][1]})",
             "", "mAP@0.5:0.95 (change vs FP32 in points). PyTorch = modelopt fake-quant (the TensorRT numerics); "
             "CPU = the served CPU graph (its Q/DQ export in CPU form) on the cpu flavour's default runtime; "
             "stock = ORT on its own graph.", "",
             "| variant | float layers | PyTorch mAP | CPU mAP |", "|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['variant']} | {row['float_layers']} | {_fmt(row['torch_map50_95'], fp32_t)} | "
                     f"{_fmt(row['ort_map50_95'], fp32_o)} |")
    lines += ["", f"Partial PTQ float layers: {', '.join(f'`{n}`' for n in report['partial_float_layers']) or 'none'}",
              f"Calibration: {report['calib_images']} images; took {report['minutes']} min.", ""]
    return "\n".join(lines)
