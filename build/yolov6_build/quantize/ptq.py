"""Post-training quantization of the deploy model with nvidia-modelopt.

INT8 per-channel weights (axis 0 for Conv2d, 1 for ConvTranspose2d, as TensorRT expects) and
per-tensor activations at every conv and max-pool input and at both inputs of residual adds
(m/l's BottleRep). Layers are chosen by rule, not by name:
every conv and pool the forward pass runs (so the unused DFL projection of n/s stays out).
Activation ranges come from a histogram (percentile/MSE/entropy) or max.
``exclude`` keeps named layers in float (partial PTQ); so does ``float_stem`` for the first conv.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import dataclass

import numpy as np

from ..deps import require
from ..errors import ConfigError

log = logging.getLogger(__name__)
CALIBRATORS = ("max", "percentile", "mse", "entropy")
QUANTIZER_KINDS = ("input_quantizer", "weight_quantizer", "residual_quantizer")


@dataclass(frozen=True)
class PtqConfig:
    calibrator: str = "max"  # best measured on the demo model for both served graphs (docs/quantization.md)
    percentile: float = 99.99
    exclude: tuple[str, ...] = ()  # layer (module) names kept in float
    # Keep the stem (the first conv, reading the image) float. Off by default: on the demo model it
    # scored the same as INT8 once both ran in f32 (0.7990 vs 0.7993 served on the CPU, whose INT8
    # stem reads the exact pixel grid) and cost 3-5% of the CPU speed (docs/quantization.md).
    float_stem: bool = False

    def __post_init__(self):
        if self.calibrator not in CALIBRATORS:
            raise ConfigError(f"calibrator must be one of {CALIBRATORS}, got {self.calibrator!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must lie in (50, 100], got {self.percentile}")


def _quantizable_types():
    torch = require("torch")
    from ..model.layers import ResidualAdd

    return torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.MaxPool2d, ResidualAdd


def _register_residual_add() -> None:
    """Teach modelopt to quantize ``ResidualAdd``: one quantizer per input (tied later, see merge.py)."""
    mtq = require("modelopt.torch.quantization")
    from modelopt.torch.quantization.nn import QuantModuleRegistry, TensorQuantizer

    from ..model.layers import ResidualAdd

    if QuantModuleRegistry.get(ResidualAdd) is not None:
        return

    class QuantResidualAdd(ResidualAdd):
        def _setup(self):
            self.input_quantizer = TensorQuantizer()
            self.residual_quantizer = TensorQuantizer()

        def forward(self, branch, residual):
            return self.input_quantizer(branch) + self.residual_quantizer(residual)

    mtq.register(original_cls=ResidualAdd, quantized_cls=QuantResidualAdd)


def executed_layers(model, input_hw=(64, 64)) -> list[str]:
    """Names of the convs, transposed convs and max-pools a forward pass actually runs, in run order."""
    torch = require("torch")
    seen: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: seen.append(n))
             for name, m in model.named_modules() if isinstance(m, _quantizable_types())]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *input_hw))
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(seen))


def float_layers_of(cfg: PtqConfig, layers: list[str]) -> list[str]:
    """The layers ``cfg`` keeps float among the executed ``layers`` (in run order): the stem, then ``exclude``."""
    stem = layers[:1] if cfg.float_stem else []
    return list(dict.fromkeys(stem + list(cfg.exclude)))


def quant_config(cfg: PtqConfig, layers: list[str], all_layers: list[str]) -> dict:
    activation = {"num_bits": 8, "axis": None}
    if cfg.calibrator != "max":
        activation["calibrator"] = "histogram"
    entries = [{"quantizer_name": "*", "enable": False},
               {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
               {"quantizer_name": "*weight_quantizer", "parent_class": "nn.ConvTranspose2d",
                "cfg": {"num_bits": 8, "axis": 1}},
               {"quantizer_name": "*input_quantizer", "cfg": activation},
               {"quantizer_name": "*residual_quantizer", "cfg": activation}]
    float_layers = [name for name in all_layers if name not in layers] + float_layers_of(cfg, layers)
    entries += [{"quantizer_name": f"{name}.*", "enable": False} for name in float_layers]
    return {"quant_cfg": entries, "algorithm": None}


def insert_quantizers(fused_model, cfg: PtqConfig, input_hw=(64, 64)):
    """A copy of the deploy model with (uncalibrated) quantizers on every executed conv."""
    mtq = require("modelopt.torch.quantization")
    model = copy.deepcopy(fused_model).eval()
    layers = executed_layers(model, input_hw)
    unknown = sorted(set(cfg.exclude) - set(layers))
    if unknown:
        raise ConfigError(f"excluded layers not found among the model's convs: {unknown[:5]} "
                          f"(names look like {layers[0]!r})")
    all_layers = [n for n, m in model.named_modules() if isinstance(m, _quantizable_types())]
    _register_residual_add()
    with contextlib.redirect_stdout(io.StringIO()) as chatter:  # modelopt prints "Inserted N quantizers"
        mtq.quantize(model, quant_config(cfg, layers, all_layers), forward_loop=None)
    log.debug("modelopt: %s", chatter.getvalue().strip())
    return model


def calibrate(model, batches, cfg: PtqConfig, progress: bool = True):
    """Collect statistics over ``batches`` (float32 [B,3,H,W] arrays) and set every quantizer's amax."""
    torch = require("torch")
    from modelopt.torch.quantization.model_calib import enable_stats_collection
    from ..progress import progress as progress_bar

    enable_stats_collection(model)
    with torch.no_grad():
        for batch in progress_bar(batches, desc=f"calibrate ({cfg.calibrator})", unit="batch", enabled=progress):
            model(torch.from_numpy(batch))
    for _, quantizer in quantizers(model):
        if quantizer.is_enabled:
            finalize_amax(quantizer, cfg)
            quantizer.enable_quant()
            quantizer.disable_calib()
    log.info("calibrated %d quantizers with %s", sum(1 for _, q in quantizers(model) if q.is_enabled), cfg.calibrator)
    return model


def finalize_amax(quantizer, cfg: PtqConfig) -> None:
    """Set ``quantizer.amax`` from the statistics its calibrator collected (kept, so they can be pooled)."""
    torch = require("torch")
    calibrator = quantizer._calibrator
    if type(calibrator).__name__ == "HistogramCalibrator" and cfg.calibrator == "mse":
        quantizer.amax = torch.tensor(mse_amax(calibrator._calib_hist, calibrator._calib_bin_edges))
    elif type(calibrator).__name__ == "HistogramCalibrator":
        kwargs = {"percentile": cfg.percentile} if cfg.calibrator == "percentile" else {}
        quantizer.load_calib_amax(cfg.calibrator, **kwargs)
    else:
        quantizer.load_calib_amax()


def mse_amax(hist, bin_edges, num_bits: int = 8, start_bin: int = 128) -> float:
    """The clipping value that minimises the histogram-weighted MSE of symmetric INT8 quantization.

    Our own search: modelopt 0.47's MSE calibrator quantizes the bin centres with a kernel that
    returns a constant on CPU, which makes every candidate tie and picks the smallest range.
    """
    counts = np.asarray(hist.cpu() if hasattr(hist, "cpu") else hist, dtype=np.float64)
    edges = np.asarray(bin_edges.cpu() if hasattr(bin_edges, "cpu") else bin_edges, dtype=np.float64)
    centers = (edges[1:] + edges[:-1]) / 2
    bound = 2 ** (num_bits - 1) - 1
    candidates = centers[start_bin:][:, None]  # [C, 1]
    step = candidates / bound
    quantized = np.clip(np.round(centers[None, :] / step), -bound, bound) * step  # [C, bins]
    errors = ((quantized - centers[None, :]) ** 2 * counts[None, :]).sum(axis=1)
    return float(candidates[int(np.argmin(errors)), 0])


def quantizers(model):
    """(name, TensorQuantizer) pairs of the model."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, TensorQuantizer)]


def layer_quantizers(model) -> dict[str, list]:
    """Quantized layer name -> its enabled input/weight/residual quantizers."""
    layers: dict[str, list] = {}
    for name, quantizer in quantizers(model):
        layer, _, kind = name.rpartition(".")
        if kind in QUANTIZER_KINDS and quantizer.is_enabled:
            layers.setdefault(layer, []).append(quantizer)
    return layers


def set_float_layers(model, float_layers) -> None:
    """Turn quantization off for ``float_layers`` and on for every other calibrated layer."""
    for name, quantizer in quantizers(model):
        layer, _, kind = name.rpartition(".")
        if kind not in QUANTIZER_KINDS or getattr(quantizer, "_amax", None) is None:
            continue
        if layer in float_layers:
            quantizer.disable_quant()
        else:
            quantizer.enable_quant()


def quantize_ptq(fused_model, batches, cfg: PtqConfig = PtqConfig(), progress: bool = True):
    """Insert quantizers, calibrate them on ``batches``; returns the fake-quantized copy."""
    input_hw = tuple(batches[0].shape[2:]) if batches else (64, 64)
    model = insert_quantizers(fused_model, cfg, input_hw)
    return calibrate(model, batches, cfg, progress)
