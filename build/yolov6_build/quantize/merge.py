"""Share quantization scales across branches so TensorRT can fuse Concat/Add/MaxPool in INT8.

Groups come from the exported graph (``export.lint.QdqGraph.merge_groups``), not from layer
names: quantizers that read the same tensor (a stem feeding cls and reg branches), everything
around a Concat (SPPF pools, upsample paths, PAN concats) or residual Add, and max-pool
inputs/outputs. Two ways to give a group one scale (``SHARING``):

- ``merge``: calibrate each quantizer alone, then give the group its members' largest amax.
- ``tie``: pool the members' calibration statistics (histograms on one set of bins, or maxima)
  and compute one amax from the pooled data, as if the group were one quantizer all along.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)
SHARING = ("merge", "tie", "none")


def scale_groups(quant_model, input_hw=(64, 64)) -> list[list[str]]:
    """Names of activation quantizers that must share one scale, one list per group."""
    from ..deps import require
    from ..export.lint import QdqGraph
    from ..export.onnx import export_onnx
    from .ort_int8 import node_module

    onnx = require("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(quant_model, Path(tmp) / "probe.onnx", input_hw, dynamic_batch=False)
        graph = QdqGraph(onnx.load(str(path)))
    groups = []
    for nodes in graph.merge_groups():
        # a module called several times (SPPF's pool) exports 'input_quantizer_1', '_2', ...
        names = sorted({re.sub(r"_quantizer_\d+$", "_quantizer", node_module(n.name)) for n in nodes})
        if len(names) > 1:
            groups.append(names)
    return groups


def merge_scales(quant_model, input_hw=(64, 64)) -> list[list[str]]:
    """Set every group's amax to the group maximum, in place. Returns the groups."""
    import torch

    modules = dict(quant_model.named_modules())
    groups = scale_groups(quant_model, input_hw)
    for names in groups:
        quantizers = [modules[n] for n in names]
        amax = torch.stack([q.amax.detach().reshape(()) for q in quantizers]).max()
        for q in quantizers:
            q.amax = amax.clone()
    log.info("merged scales of %d quantizer group(s) (%d quantizers)", len(groups), sum(map(len, groups)))
    return groups


def tie_scales(quant_model, ptq_cfg, input_hw=(64, 64)) -> list[list[str]]:
    """Give every group one amax computed from the group's pooled statistics, in place.

    Needs the calibrators' statistics (``ptq.calibrate`` keeps them). Returns the groups.
    """
    from .ptq import finalize_amax

    modules = dict(quant_model.named_modules())
    groups = scale_groups(quant_model, input_hw)
    for names in groups:
        quantizers = [modules[n] for n in names]
        pool_statistics([q._calibrator for q in quantizers])
        for quantizer in quantizers:
            finalize_amax(quantizer, ptq_cfg)
    log.info("tied scales of %d quantizer group(s) (%d quantizers)", len(groups), sum(map(len, groups)))
    return groups


def pool_statistics(calibrators) -> None:
    """Replace each calibrator's statistics by the pool of all of them (same type of calibrator)."""
    import torch

    if all(hasattr(c, "_calib_hist") for c in calibrators):
        hist, edges = pooled_histogram([(c._calib_hist, c._calib_bin_edges) for c in calibrators
                                        if c._calib_hist is not None])
        for c in calibrators:
            c._calib_hist, c._calib_bin_edges = torch.from_numpy(hist).float(), torch.from_numpy(edges).float()
    elif all(hasattr(c, "_calib_amax") for c in calibrators):
        amax = max(c._calib_amax for c in calibrators if c._calib_amax is not None)
        for c in calibrators:
            c._calib_amax = amax.clone()
    else:
        raise ValueError(f"cannot pool statistics of {sorted({type(c).__name__ for c in calibrators})}")


def pooled_histogram(histograms) -> tuple:
    """One histogram of |x| over [0, largest edge] holding every member's counts.

    Members were binned on their own ranges; each bin's count moves to the common bin holding its
    centre. The common bins are as many as the finest member over the whole range would need,
    capped, so a narrow member does not force millions of bins.
    """
    import numpy as np

    as_np = [(np.asarray(h.cpu() if hasattr(h, "cpu") else h, dtype=np.float64),
              np.asarray(e.cpu() if hasattr(e, "cpu") else e, dtype=np.float64)) for h, e in histograms]
    top = max(edges[-1] for _, edges in as_np)
    finest = min(edges[1] - edges[0] for _, edges in as_np)
    bins = int(min(max(np.ceil(top / finest), max(len(h) for h, _ in as_np)), 1 << 16))
    common = np.linspace(0.0, top, bins + 1)
    pooled = np.zeros(bins)
    for counts, edges in as_np:
        pooled += np.histogram((edges[1:] + edges[:-1]) / 2, bins=common, weights=counts)[0]
    return pooled, common


def share_scales(quant_model, sharing: str, ptq_cfg, input_hw=(64, 64)) -> list[list[str]]:
    """Apply one of ``SHARING`` to a calibrated model, in place; returns the groups ([] for 'none')."""
    if sharing not in SHARING:
        raise ConfigError(f"scale sharing must be one of {SHARING}, got {sharing!r}")
    if sharing == "none":
        return []
    return merge_scales(quant_model, input_hw) if sharing == "merge" else tie_scales(quant_model, ptq_cfg, input_hw)
