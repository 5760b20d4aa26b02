"""RepVGG-trained vs RepOpt-trained model: FP32 mAP, PTQ drop, and the weight statistics behind it.

Merging RepVGG branches adds the 1x1 kernel and the identity (a BN-scaled 1 on the centre diagonal)
into the 3x3 kernel: a few large centre weights next to many small ones. With one INT8 scale per
tensor (or per output channel) the small ones then get few levels. RepOpt trains the single kernel
directly, so its weights keep one distribution; QARepVGG keeps branches but drops the BNs on the
1x1 and identity ones (one BN after the sum), so the merged kernel stays narrow too. The statistics
per deployed conv:
  - ``max_over_std``: max |w| / std(w), how far the extreme weights stand out;
  - ``snr_tensor_db`` / ``snr_channel_db``: SNR of the weights after symmetric INT8 rounding with
    one scale per tensor / per output channel (TensorRT uses per channel).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from ..quantize.ptq import CALIBRATORS

log = logging.getLogger(__name__)


def _int8_snr_db(weight: np.ndarray, axis: tuple[int, ...] | None) -> float:
    amax = np.abs(weight).max(axis=axis, keepdims=axis is not None)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    error = weight - np.clip(np.round(weight / scale), -127, 127) * scale
    return float(10 * np.log10((weight**2).sum() / max((error**2).sum(), 1e-30)))


def weight_stats(model) -> list[dict]:
    """One row per 3x3 conv of the deployed model (the layers RepVGG/RepOpt differ in)."""
    import torch

    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Conv2d) or module.kernel_size != (3, 3) or name.startswith("detect."):
            continue
        w = module.weight.detach().float().numpy()
        rows.append({"layer": name, "out_channels": int(w.shape[0]),
                     "max_over_std": round(float(np.abs(w).max() / (w.std() + 1e-12)), 2),
                     "snr_tensor_db": round(_int8_snr_db(w, None), 2),
                     "snr_channel_db": round(_int8_snr_db(w, (1, 2, 3)), 2)})
    return rows


def _summary(rows: list[dict]) -> dict:
    return {key: round(float(np.median([r[key] for r in rows])), 2)
            for key in ("max_over_std", "snr_tensor_db", "snr_channel_db")} | {"layers": len(rows)}


def repopt_report(checkpoints: dict[str, Path], val_annotations: Path, calib_source: Path, out_dir: Path,
                  calib_images: int = 128, val_limit: int | None = None, calibrators=CALIBRATORS) -> dict:
    """``checkpoints``: {label: path}; same val set, calibration and evaluator for each. PTQ runs with each
    of ``calibrators`` (max first: the bundle's default, and the weight statistics' reference)."""
    from ..data import CocoDataset
    from ..evaluate import EvalSettings, evaluate, map_evaluator, onnx_runner
    from ..export.onnx import export_onnx
    from ..model.checkpoint import load_deploy_model
    from ..progress import progress as progress_bar
    from ..quantize.calibration import load_batches
    from ..quantize.merge import merge_scales
    from ..quantize.ort_int8 import quantize_for_ort
    from ..quantize.ptq import PtqConfig, quantize_ptq

    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    val = CocoDataset(val_annotations)
    report: dict = {"models": {}, "val_images": val_limit or len(val)}
    bar = progress_bar(total=len(checkpoints) * len(calibrators), desc="PTQ per model and calibrator", unit="PTQ")
    for label, checkpoint in checkpoints.items():
        model, info = load_deploy_model(checkpoint)
        hw = tuple(info.input_hw)
        torch_map = map_evaluator(val, hw, val_limit)
        batches = load_batches(calib_source, hw, calib_images, 16, progress=False)
        by_calibrator = {}
        for calibrator in calibrators:
            ptq = quantize_ptq(model, batches, PtqConfig(calibrator), progress=False)
            merge_scales(ptq, hw)
            by_calibrator[calibrator] = torch_map(ptq)
            bar.set_postfix(model=label, refresh=False)
            bar.update()
        slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
        fp32_onnx = export_onnx(model, out / f"{slug}_fp32.onnx", hw, topk=1000)
        ort_int8 = quantize_for_ort(fp32_onnx, out / f"{slug}_int8_ort.onnx", batches, [], "max")
        rows = weight_stats(model)
        entry = {"checkpoint": str(checkpoint), "training_mode": info.training_mode, "fp32": torch_map(model),
                 "ptq": by_calibrator[calibrators[0]], "ptq_by_calibrator": by_calibrator,
                 "ort_int8": evaluate(onnx_runner(ort_int8), val, hw, EvalSettings(limit=val_limit),
                                      progress=False)["map50_95"],
                 "weights": _summary(rows), "layers": rows}
        entry["ptq_drop_points"] = round(100 * (entry["ptq"] - entry["fp32"]), 2)
        entry["drop_by_calibrator"] = {c: round(100 * (v - entry["fp32"]), 2) for c, v in by_calibrator.items()}
        entry["ort_drop_points"] = round(100 * (entry["ort_int8"] - entry["fp32"]), 2)
        report["models"][label] = entry
        log.info("%s: %s", label, {k: v for k, v in entry.items() if k != "layers"})
    bar.close()
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    (out / "repopt.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "repopt.md").write_text(markdown(report))
    plot(report, out / "repopt_weights.png")
    return report


def markdown(report: dict) -> str:
    lines = [f"# RepVGG, RepOpt and QARepVGG training ({report['val_images']} val images, mAP@0.5:0.95)", "",
             "| model | FP32 | PTQ (max, merged) | drop | ORT INT8 | drop | median max/std | median INT8 SNR "
             "per tensor | per channel |", "|---|---|---|---|---|---|---|---|---|"]
    for label, m in report["models"].items():
        w = m["weights"]
        lines.append(f"| {label} | {m['fp32']:.4f} | {m['ptq']:.4f} | {m['ptq_drop_points']:+.2f} | "
                     f"{m['ort_int8']:.4f} | {m['ort_drop_points']:+.2f} | {w['max_over_std']} | "
                     f"{w['snr_tensor_db']} dB | {w['snr_channel_db']} dB |")
    calibrators = list(next(iter(report["models"].values())).get("ptq_by_calibrator", {}))
    if calibrators:
        lines += ["", "PTQ drop by calibrator (points of mAP, merged scales):", "",
                  "| model | " + " | ".join(calibrators) + " |", "|---" * (len(calibrators) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(f"{m['drop_by_calibrator'][c]:+.2f}" for c in calibrators) + " |"
                  for label, m in report["models"].items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ratio, ax_snr) = plt.subplots(1, 2, figsize=(12, 4))
    for label, m in report["models"].items():
        rows = m["layers"]
        ax_ratio.plot([r["max_over_std"] for r in rows], marker=".", label=label)
        ax_snr.plot([r["snr_tensor_db"] for r in rows], marker=".", label=f"{label}, per tensor")
        ax_snr.plot([r["snr_channel_db"] for r in rows], linestyle="--", label=f"{label}, per channel")
    ax_ratio.set_title("max |w| / std(w) per 3x3 conv (lower quantizes better)")
    ax_snr.set_title("weight SNR after INT8 rounding, dB (higher is better)")
    for ax in (ax_ratio, ax_snr):
        ax.set_xlabel("3x3 conv, input to output")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
