"""What one-scale-per-branch-group costs: mAP and lint findings of per-branch, merged and tied scales.

For each calibrator the model is calibrated once; the three sharing modes (``quantize.merge.SHARING``)
are applied to copies of it, so the rows differ only in how the groups get their scale. Each row is
measured as the fake-quantized PyTorch model (TensorRT's numerics) on the same val images, and its
exported Q/DQ graph is linted (the findings TensorRT would pay for in reformats).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

from ..quantize.merge import SHARING
from ..quantize.ptq import PtqConfig

log = logging.getLogger(__name__)
DEFAULT_CALIBRATORS = ("max", "percentile", "mse")


def scale_sharing_report(checkpoint: Path, val_annotations: Path, calib_source: Path, out_dir: Path,
                         calibrators=DEFAULT_CALIBRATORS, calib_images: int = 128,
                         val_limit: int | None = None) -> dict:
    from ..data import CocoDataset
    from ..evaluate import map_evaluator
    from ..model.checkpoint import load_deploy_model
    from ..quantize.calibration import load_batches
    from ..quantize.merge import share_scales
    from ..quantize.ptq import executed_layers, float_layers_of, quantize_ptq

    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_deploy_model(checkpoint)
    hw = tuple(info.input_hw)
    batches = load_batches(calib_source, hw, calib_images, 16)
    torch_map = map_evaluator(CocoDataset(val_annotations), hw, val_limit)
    rows = [{"calibrator": "-", "sharing": "FP32", "map50_95": torch_map(model), "groups": 0, "findings": {}}]
    layers = executed_layers(model, hw)
    for calibrator in calibrators:
        cfg = PtqConfig(calibrator)
        calibrated = quantize_ptq(model, batches, cfg, progress=False)
        float_layers = float_layers_of(cfg, layers)
        for sharing in SHARING[::-1]:  # none, tie, merge
            quant = copy.deepcopy(calibrated)
            groups = share_scales(quant, sharing, cfg, hw)
            rows.append({"calibrator": calibrator, "sharing": sharing, "map50_95": torch_map(quant),
                         "groups": len(groups), "findings": _lint_counts(quant, hw, float_layers)})
            log.info("%s / %s: mAP %.4f, findings %s", calibrator, sharing, rows[-1]["map50_95"], rows[-1]["findings"])
    report = {"checkpoint": str(checkpoint), "val_images": val_limit, "calib_images": calib_images,
              "input_hw": list(hw), "rows": rows, "minutes": round((time.monotonic() - started) / 60, 1)}
    (out / "scale_sharing.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "scale_sharing.md").write_text(markdown(report))
    plot(report, out / "scale_sharing.png")
    return report


def _lint_counts(quant, hw, float_layers) -> dict[str, int]:
    from ..export.lint import lint_qdq
    from ..export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        findings = lint_qdq(export_onnx(quant, Path(tmp) / "qdq.onnx", hw, dynamic_batch=False), float_layers)
    return dict(Counter(f.kind for f in findings))


def markdown(report: dict) -> str:
    fp32 = report["rows"][0]["map50_95"]
    per_branch = {r["calibrator"]: r["map50_95"] for r in report["rows"] if r["sharing"] == "none"}
    lines = [f"# Cost of one scale per branch group ({report['input_hw'][0]}x{report['input_hw'][1]}, "
             f"{report['val_images'] or 'all'} val images)", "",
             "mAP@0.5:0.95 of the fake-quantized model (TensorRT numerics). none = per-branch scales; "
             "merge = largest member amax; tie = one amax from the group's pooled statistics. "
             "Findings: `lint-qdq` on the exported Q/DQ graph.", "",
             "| calibrator | scales | groups | mAP | vs FP32 | vs per-branch | lint findings |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        base = per_branch.get(row["calibrator"])
        vs_branch = "-" if base is None else f"{100 * (row['map50_95'] - base):+.2f}"
        findings = ", ".join(f"{k} {v}" for k, v in sorted(row["findings"].items())) or "0"
        lines.append(f"| {row['calibrator']} | {row['sharing']} | {row['groups']} | {row['map50_95']:.4f} | "
                     f"{100 * (row['map50_95'] - fp32):+.2f} | {vs_branch} | {findings} |")
    lines += ["", f"Calibration: {report['calib_images']} images; took {report['minutes']} min.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fp32 = report["rows"][0]["map50_95"]
    calibrators = list(dict.fromkeys(r["calibrator"] for r in report["rows"][1:]))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(SHARING)
    for i, sharing in enumerate(SHARING[::-1]):
        drops = [100 * (next(r["map50_95"] for r in report["rows"] if r["calibrator"] == c and r["sharing"] == sharing)
                        - fp32) for c in calibrators]
        ax.bar([x + i * width for x in range(len(calibrators))], drops, width, label=sharing)
    ax.set_xticks([x + width for x in range(len(calibrators))], calibrators)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("mAP change vs FP32 (points)")
    ax.set_title("INT8 accuracy by scale sharing")
    ax.legend(title="scales")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
