"""ONNX Runtime's own QDQ quantization (``quantize_static``): the comparisons, not the served graph.

The cpu flavour serves the bundle's own Q/DQ graph in CPU form (``cpu_qdq``) on either runtime.
This module keeps ORT's re-calibrated graph for the reports that compare against it (RepOpt's
table) and the stock paths a user would take without the bundle (``quantize_static_qdq``,
``quantize_stock``). Convs, transposed convs, max-pools, concats and adds of the backbone and neck
are quantized; the head's decode and the candidate selection stay float; ``exclude`` keeps named
layers float.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..contract import DETECTOR_INPUT
from ..deps import require

log = logging.getLogger(__name__)

# ORT calibration methods matching ours; ORT has no MSE calibrator, percentile stands in
ORT_METHODS = {"max": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "mse": "Percentile"}
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MaxPool", "Concat", "Add")
BODY_SCOPES = ("backbone", "neck")


class _DropPreprocessingAdvice(logging.Filter):
    """``quantize_static`` advises pre-processing the model on every call, as a warning on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


def _quantize_static(q, *args, **kwargs) -> None:
    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        q.quantize_static(*args, **kwargs)
    finally:
        logging.getLogger().removeFilter(advice)


def node_module(node_name: str) -> str:
    """'/model/backbone/ERBlock_5/ERBlock_5.2/cspsppf/m/MaxPool_1' -> 'backbone.ERBlock_5.2.cspsppf.m'.

    The legacy exporter scopes nodes by module path, repeating a Sequential's name before each
    child ('ERBlock_5/ERBlock_5.2'); the last component is the op.
    """
    parts = [p for p in node_name.strip("/").split("/")[:-1] if p]
    if parts and parts[0] == "model":
        parts = parts[1:]
    merged: list[str] = []
    for part in parts:
        if merged and part.startswith(merged[-1] + "."):
            merged[-1] = part
        else:
            merged.append(part)
    return ".".join(merged)


def nodes_to_exclude(model_proto, float_layers) -> list[str]:
    """Float nodes: everything outside backbone/neck except convs, plus the float layers' nodes."""
    excluded = []
    for node in model_proto.graph.node:
        module = node_module(node.name)
        in_body = module.split(".")[0] in BODY_SCOPES
        is_conv = node.op_type in ("Conv", "ConvTranspose")
        if module in float_layers or (not in_body and not is_conv):
            excluded.append(node.name)
    return excluded


class _Reader:
    """ORT CalibrationDataReader over in-memory batches."""

    def __init__(self, batches):
        self._iter = iter(batches)

    def get_next(self):
        batch = next(self._iter, None)
        return None if batch is None else {DETECTOR_INPUT: batch}


def quantize_for_ort(fp32_onnx: str | Path, out_path: str | Path, batches, float_layers=(),
                     calibrator: str = "percentile", percentile: float = 99.99) -> Path:
    """Write ORT's INT8 QDQ graph of ``fp32_onnx``, calibrated by ORT on ``batches``."""
    onnx = require("onnx")
    q = require("onnxruntime.quantization")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32_onnx))
    excluded = nodes_to_exclude(model, set(float_layers))
    method = getattr(q.CalibrationMethod, ORT_METHODS[calibrator])
    _quantize_static(q, str(fp32_onnx), str(out_path), _Reader(batches), quant_format=q.QuantFormat.QDQ,
                        per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded,
                        calibrate_method=method,
                        extra_options={"CalibPercentile": percentile, "ActivationSymmetric": False,
                                       "WeightSymmetric": True})
    log.info("wrote ORT INT8 graph %s (%s calibration, %d float layers)", out_path, ORT_METHODS[calibrator],
             len(float_layers))
    return out_path


def quantize_static_qdq(fp32_onnx: str | Path, out_path: str | Path, batches) -> Path:
    """The stock ORT path a competent user takes: QDQ, per-channel int8 weights, uint8 activations,
    every supported op, MinMax calibration, no knowledge of the model."""
    q = require("onnxruntime.quantization")
    _quantize_static(q, str(fp32_onnx), str(out_path), _Reader(batches), quant_format=q.QuantFormat.QDQ,
                        per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    return Path(out_path)


def quantize_stock(fp32_onnx: str | Path, out_path: str | Path, batches) -> Path:
    """What a user gets without this bundle: ``quantize_static`` with its default settings."""
    q = require("onnxruntime.quantization")
    _quantize_static(q, str(fp32_onnx), str(out_path), _Reader(batches))
    return Path(out_path)


def conv_count(onnx_path) -> tuple[int, int]:
    """(quantized convs, float convs) of a QDQ graph: a conv is quantized when its weight is dequantized."""
    onnx = require("onnx")
    graph = onnx.load(str(onnx_path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    quantized = sum(1 for n in graph.node if n.op_type in ("Conv", "ConvTranspose")
                    and getattr(producers.get(n.input[1]), "op_type", "") == "DequantizeLinear")
    total = sum(1 for n in graph.node if n.op_type in ("Conv", "ConvTranspose"))
    return quantized, total - quantized
