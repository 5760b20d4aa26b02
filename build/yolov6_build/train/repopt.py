"""RepOpt: train the plain network with an optimizer that carries what RepVGG's branches would add.

A RepVGG block computes s3*conv3(x) + s1*conv1(x) + s0*x. With fixed scales, one SGD step on the
branches equals one SGD step on the merged 3x3 kernel W whose gradient is multiplied, element by
element, by M = s3^2 everywhere plus s1^2 at the kernel centre (the identity is constant: it only
enters W's initialisation). So:
1. hyper-search: train the model with ``LinearAddBlock``s (learnable per-channel s3, s1, s0);
2. build the plain model (``RealVGGBlock``: one 3x3 conv + BN + ReLU per block), initialise each
   kernel as s3*W3 + s1*W1(centre) + s0*I(centre) from fresh W3/W1, and train it with ``RepOptSGD``,
   which multiplies each kernel's gradient by its M before the usual SGD update.
The trained model has no branches to merge: deployment only folds BN.

Adam-style optimizers divide each element's step by its own gradient scale, which cancels M, so
RepOpt is defined with SGD (momentum, weight decay) only.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..model.layers import LinearAddBlock, RealVGGBlock

Scales = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]  # block -> (s3, s1, s0 | None)


def extract_scales(hyper_search_model: nn.Module) -> Scales:
    """Per-channel (s3, s1, s0) of every LinearAddBlock, by module name."""
    scales = {name: (m.scale_conv.detach().clone(), m.scale_1x1.detach().clone(),
                     None if m.scale_identity is None else m.scale_identity.detach().clone())
              for name, m in hyper_search_model.named_modules() if isinstance(m, LinearAddBlock)}
    if not scales:
        raise ConfigError("no hyper-search blocks found: train with training_mode='hyper_search' first")
    return scales


def scales_from_checkpoint(path: str | Path) -> Scales:
    from ..model.checkpoint import load_checkpoint

    model, info = load_checkpoint(path)
    if info.training_mode != "hyper_search":
        raise ConfigError(f"{path} is a {info.training_mode!r} checkpoint, not a RepOpt hyper-search one")
    return extract_scales(model)


def _plain_blocks(model: nn.Module, scales: Scales) -> list[tuple[str, RealVGGBlock]]:
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, RealVGGBlock)]
    missing = sorted({name for name, _ in blocks} ^ set(scales))
    if missing:
        raise ConfigError(f"hyper-search scales and RepOpt model differ at {missing[:3]} (same size and classes?)")
    return blocks


def gradient_multiplier(block: RealVGGBlock, s3: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """M for one kernel [out, in, 3, 3]: s3^2 per output channel, plus s1^2 at the centre."""
    weight = block.block.conv.weight
    mask = (s3**2).view(-1, 1, 1, 1).expand_as(weight).clone()
    mask[:, :, 1, 1] += (s1**2).view(-1, 1)
    return mask


def initialize_from_scales(model: nn.Module, scales: Scales, seed: int = 0) -> None:
    """Kernels as s3*W3 + s1*W1(centre) + s0*I(centre), W3/W1 freshly initialised (Kaiming uniform)."""
    generator = torch.Generator().manual_seed(seed)
    for name, block in _plain_blocks(model, scales):
        s3, s1, s0 = scales[name]
        weight = block.block.conv.weight
        out_c, in_c = weight.shape[:2]
        w3 = _kaiming_uniform((out_c, in_c, 3, 3), generator)
        w1 = _kaiming_uniform((out_c, in_c, 1, 1), generator)
        kernel = s3.view(-1, 1, 1, 1) * w3
        kernel[:, :, 1:2, 1:2] += s1.view(-1, 1, 1, 1) * w1
        if s0 is not None and block.has_identity:
            kernel[torch.arange(out_c), torch.arange(out_c), 1, 1] += s0
        with torch.no_grad():
            weight.copy_(kernel)


def _kaiming_uniform(shape, generator) -> torch.Tensor:
    fan_in = shape[1] * shape[2] * shape[3]
    bound = 1 / math.sqrt(fan_in)  # what nn.Conv2d's default init gives (a=sqrt(5))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class RepOptSGD(torch.optim.SGD):
    """SGD whose update of each RepOpt kernel uses grad * M (``gradient_multiplier``); others as SGD."""

    def __init__(self, params, multipliers: dict[torch.Tensor, torch.Tensor], **sgd_options):
        super().__init__(params, **sgd_options)
        self.multipliers = multipliers

    @torch.no_grad()
    def step(self, closure=None):
        for param, mask in self.multipliers.items():
            if param.grad is not None:
                param.grad.mul_(mask)
        return super().step(closure)


def repopt_optimizer(model: nn.Module, scales: Scales, param_groups, **sgd_options) -> RepOptSGD:
    multipliers = {block.block.conv.weight: gradient_multiplier(block, scales[name][0], scales[name][1])
                   for name, block in _plain_blocks(model, scales)}
    return RepOptSGD(param_groups, multipliers, **sgd_options)
