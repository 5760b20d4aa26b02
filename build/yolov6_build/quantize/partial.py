"""Partial PTQ: keep the most sensitive layers in float (FP16 in TensorRT, FP32 on CPU).

Three ways to choose: by name, the top-k of a sensitivity metric, or automatically: the
smallest prefix of the sensitivity ranking whose mAP drop from FP32 stays within a budget.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .ptq import set_float_layers
from .sensitivity import LayerSensitivity, rank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoResult:
    float_layers: tuple[str, ...]
    map50_95: float
    fp32_map50_95: float
    trace: tuple[tuple[int, float], ...]  # (number of float layers, mAP) for each step tried


def top_k(results: list[LayerSensitivity], k: int, metric: str = "output_snr_db") -> list[str]:
    return [r.layer for r in rank(results, metric)[:k]]


def auto_float_layers(quant_model, results: list[LayerSensitivity], map_fn, fp32_map: float,
                      budget_points: float = 0.5, max_float: int = 12, metric: str = "output_snr_db") -> AutoResult:
    """Grow the float set along the ranking until mAP >= FP32 - budget (or ``max_float`` is reached)."""
    ranked = [r.layer for r in rank(results, metric)]
    trace, best = [], None
    for count in range(0, min(max_float, len(ranked)) + 1):
        chosen = tuple(ranked[:count])
        set_float_layers(quant_model, set(chosen))
        score = map_fn(quant_model)
        trace.append((count, score))
        log.info("partial PTQ: %d float layer(s) -> mAP %.4f (FP32 %.4f)", count, score, fp32_map)
        if best is None or score > best[1]:
            best = (chosen, score)
        if 100 * (fp32_map - score) <= budget_points:
            best = (chosen, score)
            break
    set_float_layers(quant_model, set(best[0]))
    return AutoResult(best[0], best[1], fp32_map, tuple(trace))
