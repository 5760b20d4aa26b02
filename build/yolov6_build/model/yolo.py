"""The whole YOLOv6 network and its builder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .backbone import BLOCKS, Backbone, Neck, NeckP6
from .head import Detect
from .layers import ConvModule, ReparamBlock
from .lite import DPBlock, LiteBackbone, LiteNeck
from .registry import HEAD_VARIANTS, get_variant


@dataclass(frozen=True)
class ModelSpec:
    """What to build: size, class count, head variant ('plain' or 'distill') and training mode
    ('repvgg', 'repopt', RepOpt's 'hyper_search' or 'qarepvggv2'; see backbone.BLOCKS)."""

    size: str = "n"
    num_classes: int = 80
    head: str = "plain"
    training_mode: str = "repvgg"

    def __post_init__(self):
        get_variant(self.size)
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.head not in HEAD_VARIANTS:
            raise ConfigError(f"head must be one of {HEAD_VARIANTS}, got {self.head!r}")
        if self.training_mode not in BLOCKS:
            raise ConfigError(f"training_mode must be one of {sorted(BLOCKS)}, got {self.training_mode!r}")


class YOLOv6(nn.Module):
    """Backbone -> neck -> head. Eval output: Tensor[B, N, 5+nc] rows (cx, cy, w, h, 1, scores...)
    in input pixels, anchors level by level (strides 8, 16, 32, and 64 for P6), row-major within a level."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        variant = get_variant(spec.size)
        self.spec = spec
        if variant.lite:
            self.backbone, self.neck = LiteBackbone(variant.width_multiple), LiteNeck(variant.width_multiple)
        else:
            self.backbone = Backbone(variant, training_mode=spec.training_mode)
            self.neck = (NeckP6 if variant.p6 else Neck)(variant, training_mode=spec.training_mode)
        self.detect = Detect(spec.num_classes, variant.head_channels, variant.use_dfl, spec.head, variant.strides,
                             lite=variant.lite)

    def forward(self, images: torch.Tensor, undecoded: bool = False):
        return self.detect(self.neck(self.backbone(images)), undecoded)

    def neck_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The maps the head reads (strides 8, 16, 32, and 64 for P6)."""
        return self.neck(self.backbone(images))

    @property
    def is_deploy(self) -> bool:
        return not any(isinstance(m, nn.BatchNorm2d) for m in self.modules())


def build_model(spec: ModelSpec) -> YOLOv6:
    model = YOLOv6(spec)
    model.detect.initialize_biases()
    return model.eval()


def fuse_for_deploy(model: YOLOv6) -> YOLOv6:
    """Fold every BatchNorm and re-parameterise every RepVGG block, in place. Idempotent.

    The model is put in eval mode: folding uses the running statistics.
    """
    model.eval()
    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, (ReparamBlock, DPBlock, ConvModule)):
                module.fuse()
    return model
