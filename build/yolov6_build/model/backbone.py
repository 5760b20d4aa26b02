"""Backbones (EfficientRep for n/s, CSPBepBackbone for m/l, each with a P6 form) and necks (RepBiFPAN,
CSPRepBiFPAN, and their P6 forms)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import (CSPSPPF, SPPF, BepC3, BiFusion, ConvBNReLU, ConvBNSiLU, LinearAddBlock, MBLABlock,
                     QARepVGGBlockV2, RealVGGBlock, RepBlock, RepVGGBlock, SimCSPSPPF, SimSPPF)
from .registry import Variant

# training_mode -> the 3x3 block of backbone and neck: RepVGG branches, RepOpt's plain block, RepOpt's
# hyper-search block (learns the branch scales the RepOpt optimizer then uses), or QARepVGG's branches
# (upstream configs/qarepvgg; their head and plain convs are the RepVGG models').
BLOCKS = {"repvgg": RepVGGBlock, "repopt": RealVGGBlock, "hyper_search": LinearAddBlock,
          "qarepvggv2": QARepVGGBlockV2}


def _basic_block(variant: Variant, training_mode: str = "repvgg"):
    return ConvBNSiLU if variant.block == "conv_silu" else BLOCKS[training_mode]


class Backbone(nn.Module):
    """Stem + four down-sampling stages (five for P6); returns the P2..P5 (P6) maps (fuse_P2 on, as in v3.0).
    The pyramid pool ends the last stage."""

    def __init__(self, variant: Variant, in_channels: int = 3, training_mode: str = "repvgg"):
        super().__init__()
        block = _basic_block(variant, training_mode)
        ch, n = variant.channels, variant.repeats
        stage = _stage_builder(variant, training_mode)

        self.stem = block(in_channels, ch[0], 3, 2)
        self.ERBlock_2 = nn.Sequential(block(ch[0], ch[1], 3, 2), stage(ch[1], ch[1], n[1]))
        self.ERBlock_3 = nn.Sequential(block(ch[1], ch[2], 3, 2), stage(ch[2], ch[2], n[2]))
        self.ERBlock_4 = nn.Sequential(block(ch[2], ch[3], 3, 2), stage(ch[3], ch[3], n[3]))
        pool = _pyramid_pool(variant, block)
        self.ERBlock_5 = nn.Sequential(block(ch[3], ch[4], 3, 2), stage(ch[4], ch[4], n[4]),
                                       *([] if variant.p6 else [pool(ch[4], ch[4], kernel_size=5)]))
        if variant.p6:
            self.ERBlock_6 = nn.Sequential(block(ch[4], ch[5], 3, 2), stage(ch[5], ch[5], n[5]),
                                           pool(ch[5], ch[5], kernel_size=5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = [self.ERBlock_2(self.stem(x))]
        for stage in (self.ERBlock_3, self.ERBlock_4, self.ERBlock_5, getattr(self, "ERBlock_6", None)):
            if stage is not None:
                maps.append(stage(maps[-1]))
        return tuple(maps)


def _stage_builder(variant: Variant, training_mode: str):
    """``stage(c_in, c_out, repeats)``: a backbone or neck stage, RepBlock (n/s), BepC3 (m/l) or MBLABlock (MBLA)."""
    block = _basic_block(variant, training_mode)

    def stage(c_in: int, c_out: int, repeats: int) -> nn.Module:
        if variant.mbla:
            return MBLABlock(c_in, c_out, n=repeats, e=variant.csp_e, block=block)
        if variant.csp:
            return BepC3(c_in, c_out, n=repeats, e=variant.csp_e, block=block)
        return RepBlock(c_in, c_out, n=repeats, block=block)

    return stage


def _pyramid_pool(variant: Variant, block):
    silu = block is ConvBNSiLU
    if variant.csp:
        return SPPF if silu else SimSPPF
    return CSPSPPF if silu else SimCSPSPPF


class Neck(nn.Module):
    """Bi-directional FPN/PAN. Input (P2, P3, P4, P5); output the stride 8/16/32 maps for the head."""

    def __init__(self, variant: Variant, training_mode: str = "repvgg"):
        super().__init__()
        ch, n = variant.channels, variant.repeats
        stage = _stage_builder(variant, training_mode)

        self.reduce_layer0 = ConvBNReLU(ch[4], ch[5], 1, 1)
        self.Bifusion0 = BiFusion([ch[3], ch[2]], ch[5])
        self.Rep_p4 = stage(ch[5], ch[5], n[5])
        self.reduce_layer1 = ConvBNReLU(ch[5], ch[6], 1, 1)
        self.Bifusion1 = BiFusion([ch[2], ch[1]], ch[6])
        self.Rep_p3 = stage(ch[6], ch[6], n[6])
        self.downsample2 = ConvBNReLU(ch[6], ch[7], 3, 2)
        self.Rep_n3 = stage(ch[6] + ch[7], ch[8], n[7])
        self.downsample1 = ConvBNReLU(ch[8], ch[9], 3, 2)
        self.Rep_n4 = stage(ch[5] + ch[9], ch[10], n[8])

    def forward(self, features: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        p2, p3, p4, p5 = features
        fpn_out0 = self.reduce_layer0(p5)
        f_out0 = self.Rep_p4(self.Bifusion0([fpn_out0, p4, p3]))
        fpn_out1 = self.reduce_layer1(f_out0)
        pan_out2 = self.Rep_p3(self.Bifusion1([fpn_out1, p3, p2]))
        pan_out1 = self.Rep_n3(torch.cat([self.downsample2(pan_out2), fpn_out1], 1))
        pan_out0 = self.Rep_n4(torch.cat([self.downsample1(pan_out1), fpn_out0], 1))
        return [pan_out2, pan_out1, pan_out0]


class NeckP6(nn.Module):
    """The P6 neck (upstream's RepBiFPANNeck6 / CSPRepBiFPANNeck_P6): three top-down fusions, three bottom-up
    steps. Input (P2..P6); output the stride 8/16/32/64 maps for the head."""

    def __init__(self, variant: Variant, training_mode: str = "repvgg"):
        super().__init__()
        ch, n = variant.channels, variant.repeats
        stage = _stage_builder(variant, training_mode)

        self.reduce_layer0 = ConvBNReLU(ch[5], ch[6], 1, 1)
        self.Bifusion0 = BiFusion([ch[4], ch[6]], ch[6])
        self.Rep_p5 = stage(ch[6], ch[6], n[6])
        self.reduce_layer1 = ConvBNReLU(ch[6], ch[7], 1, 1)
        self.Bifusion1 = BiFusion([ch[3], ch[7]], ch[7])
        self.Rep_p4 = stage(ch[7], ch[7], n[7])
        self.reduce_layer2 = ConvBNReLU(ch[7], ch[8], 1, 1)
        self.Bifusion2 = BiFusion([ch[2], ch[8]], ch[8])
        self.Rep_p3 = stage(ch[8], ch[8], n[8])
        self.downsample2 = ConvBNReLU(ch[8], ch[8], 3, 2)
        self.Rep_n4 = stage(ch[8] + ch[8], ch[9], n[9])
        self.downsample1 = ConvBNReLU(ch[9], ch[9], 3, 2)
        self.Rep_n5 = stage(ch[7] + ch[9], ch[10], n[10])
        self.downsample0 = ConvBNReLU(ch[10], ch[10], 3, 2)
        self.Rep_n6 = stage(ch[6] + ch[10], ch[11], n[11])

    def forward(self, features: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        p2, p3, p4, p5, p6 = features
        fpn_out0 = self.reduce_layer0(p6)
        fpn_out1 = self.reduce_layer1(self.Rep_p5(self.Bifusion0([fpn_out0, p5, p4])))
        fpn_out2 = self.reduce_layer2(self.Rep_p4(self.Bifusion1([fpn_out1, p4, p3])))
        pan_out3 = self.Rep_p3(self.Bifusion2([fpn_out2, p3, p2]))
        pan_out2 = self.Rep_n4(torch.cat([self.downsample2(pan_out3), fpn_out2], 1))
        pan_out1 = self.Rep_n5(torch.cat([self.downsample1(pan_out2), fpn_out1], 1))
        pan_out0 = self.Rep_n6(torch.cat([self.downsample0(pan_out1), fpn_out0], 1))
        return [pan_out3, pan_out2, pan_out1, pan_out0]
