"""Weights made from each state-dict key's name and shape: upstream's model and ours, filled by the same
function, hold the same numbers wherever their keys agree, with no weight file stored.

BatchNorm statistics are perturbed away from identity (fusion must fold real statistics); convolution
weights are scaled by fan-in so activations stay in a range where float32 comparisons are meaningful.
"""

from __future__ import annotations

import zlib

import numpy as np


def value_for(key: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    leaf = key.rsplit(".", 1)[-1]
    if key.endswith("detect.proj") or key.endswith("proj_conv.weight"):  # DFL's fixed bin centres, never trained
        return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if leaf == "running_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if leaf == "alpha":
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    is_bn = ".bn." in key or key.split(".")[-2] in ("bn", "rbr_identity")
    if leaf == "weight" and (is_bn or len(shape) == 1):
        return rng.uniform(0.4, 0.9, shape).astype(np.float32)  # gains below 1: activations stay bounded
    if leaf == "bias":
        return rng.normal(0.0, 0.05, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (rng.normal(0.0, 1.0, shape) / np.sqrt(fan_in)).astype(np.float32)


def fill(module) -> None:
    """Set every parameter and buffer of a torch module from its key (in place)."""
    import torch

    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            tensor.copy_(torch.from_numpy(value_for(key, tuple(tensor.shape))))
