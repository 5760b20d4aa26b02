"""Per-layer quantization sensitivity: the damage each layer does alone, and the reverse view.

For every quantized layer L, against the FP32 model on the same images:
- ``only``: only L quantized -> MSE, SNR (dB) and cosine similarity of the model output and of
  the three neck feature maps; optionally mAP on a val subset (slow).
- ``all_but``: everything quantized except L -> the same measures (how much keeping L in float helps).
Reports: JSON for machines, a Markdown table and a PNG bar chart (ranked) for people.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..deps import require
from .ptq import layer_quantizers, set_float_layers

log = logging.getLogger(__name__)
METRICS = ("snr_db", "mse", "cosine", "map50_95")


@dataclass
class LayerSensitivity:
    layer: str
    only: dict = field(default_factory=dict)  # metrics with only this layer quantized
    all_but: dict = field(default_factory=dict)  # metrics with every layer but this one quantized


def compare(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """MSE, SNR in dB (signal = reference) and cosine similarity of two arrays (flattened)."""
    ref, out = reference.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    noise = float(np.mean((ref - out) ** 2))
    signal = float(np.mean(ref ** 2))
    cosine = float(ref @ out / (np.linalg.norm(ref) * np.linalg.norm(out) + 1e-12))
    return {"mse": noise, "snr_db": 10 * np.log10(signal / max(noise, 1e-30)), "cosine": cosine}


def _forward(model, batches):
    """Concatenated (output, [neck maps]) over batches."""
    torch = require("torch")
    outputs, necks = [], []
    with torch.no_grad():
        for batch in batches:
            x = torch.from_numpy(batch)
            features = model.neck(model.backbone(x))
            outputs.append(model.detect([f.clone() for f in features]).numpy())
            necks.append([f.numpy() for f in features])
    return np.concatenate(outputs), [np.concatenate([n[i] for n in necks]) for i in range(3)]


def _measure(model, batches, reference) -> dict[str, float]:
    output, necks = _forward(model, batches)
    result = {f"output_{k}": v for k, v in compare(reference[0], output).items()}
    neck_scores = [compare(r, n) for r, n in zip(reference[1], necks)]
    result.update({f"neck_{k}": float(np.mean([s[k] for s in neck_scores])) for k in ("mse", "snr_db", "cosine")})
    return result


def analyse(fp32_model, quant_model, batches, map_fn=None, progress: bool = True) -> list[LayerSensitivity]:
    """Sensitivity of every quantized layer of ``quant_model`` (a calibrated PTQ model).

    ``map_fn(model) -> mAP@0.5:0.95`` adds the mAP measure when given (one evaluation per layer and view).
    """
    from ..progress import progress as progress_bar

    reference = _forward(fp32_model.eval(), batches)
    layers = list(layer_quantizers(quant_model))
    results = []
    for layer in progress_bar(layers, desc="sensitivity", unit="layer", enabled=progress):
        entry = LayerSensitivity(layer)
        set_float_layers(quant_model, set(layers) - {layer})  # only this layer quantized
        entry.only = _measure(quant_model, batches, reference)
        if map_fn:
            entry.only["map50_95"] = map_fn(quant_model)
        set_float_layers(quant_model, {layer})  # all but this layer
        entry.all_but = _measure(quant_model, batches, reference)
        if map_fn:
            entry.all_but["map50_95"] = map_fn(quant_model)
        results.append(entry)
    set_float_layers(quant_model, set())
    return results


def rank(results: list[LayerSensitivity], metric: str = "output_snr_db") -> list[LayerSensitivity]:
    """Most damaging first: lowest SNR / cosine / mAP, highest MSE, with only that layer quantized."""
    worse_is_higher = metric.endswith("mse")
    return sorted(results, key=lambda r: r.only[metric], reverse=worse_is_higher)


def write_report(results: list[LayerSensitivity], out_dir: str | Path, metric: str = "output_snr_db",
                 title: str = "Per-layer INT8 sensitivity") -> dict[str, Path]:
    """sensitivity.json, sensitivity.md and sensitivity.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranked = rank(results, metric)
    paths = {"json": out / "sensitivity.json", "md": out / "sensitivity.md", "png": out / "sensitivity.png"}
    paths["json"].write_text(json.dumps({"metric": metric, "layers": [asdict(r) for r in ranked]}, indent=2) + "\n")
    has_map = any("map50_95" in r.only for r in ranked)
    head = "| rank | layer | output SNR dB | output cosine | output MSE | neck SNR dB | all-but output SNR dB |"
    if has_map:
        head += " mAP only | mAP all-but |"
    lines = [f"# {title}", "", f"Ranked by `{metric}` with only that layer quantized (most damaging first).", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for i, r in enumerate(ranked, 1):
        row = (f"| {i} | `{r.layer}` | {r.only['output_snr_db']:.2f} | {r.only['output_cosine']:.5f} | "
               f"{r.only['output_mse']:.4g} | {r.only['neck_snr_db']:.2f} | {r.all_but['output_snr_db']:.2f} |")
        if has_map:
            row += f" {r.only.get('map50_95', float('nan')):.4f} | {r.all_but.get('map50_95', float('nan')):.4f} |"
        lines.append(row)
    paths["md"].write_text("\n".join(lines) + "\n")
    _plot(ranked, metric, paths["png"], title)
    return paths


def _plot(ranked: list[LayerSensitivity], metric: str, path: Path, title: str) -> None:
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ranked[:40]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(shown) + 1.5))
    values = [r.only[metric] for r in shown]
    ax.barh(range(len(shown)), values, color="#c0392b")
    ax.set_yticks(range(len(shown)), [r.layer for r in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} with only this layer quantized ({'higher' if metric.endswith('mse') else 'lower'} = "
                  "more damage)")
    ax.set_title(f"{title} (top {len(shown)} of {len(ranked)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
