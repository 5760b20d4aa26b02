"""YOLOv6-Lite (upstream configs/yolov6_lite): a mobile backbone of shuffle blocks with squeeze-excitation,
a CSP neck of depthwise 5x5 blocks at one width (96), and a depthwise head on four levels (strides 8-64).
Upstream's module and parameter names, so its checkpoints load key for key. Hardswish throughout.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ResidualAdd, _ConvAct, batch_norm, fold_bn
from .registry import LITE_HEAD_CHANNELS as NECK_CHANNELS
from .registry import LITE_STEM_CHANNELS as STEM_CHANNELS

BACKBONE_REPEATS = (1, 3, 7, 3)
BACKBONE_CHANNELS = (24, 32, 64, 128, 256)
NECK_IN_CHANNELS = (256, 128, 64)
MID_SCALE = 0.5


def make_divisible(value: float, divisor: int = 16) -> int:
    """Round to a multiple of ``divisor``, never below it nor more than 10% under ``value`` (upstream's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def lite_channels(width: float) -> tuple[list[int], list[int], list[int]]:
    """(backbone out channels, backbone mid channels, neck input channels) at this width multiple."""
    out = [make_divisible(c * width) for c in BACKBONE_CHANNELS]
    mid = [make_divisible(int(c * MID_SCALE), divisor=8) for c in out]
    out[0] = STEM_CHANNELS
    return out, mid, [make_divisible(c * width) for c in NECK_IN_CHANNELS]


class ConvBNHS(_ConvAct):
    activation_cls = nn.Hardswish


class ConvBN(_ConvAct):
    activation_cls = nn.Identity


class SEBlock(nn.Module):
    """Squeeze-excitation: global average, 1x1 down by 4, ReLU, 1x1 up, hard sigmoid, times the input."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)
        self.hardsigmoid = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.hardsigmoid(self.conv2(self.relu(self.conv1(self.avg_pool(x)))))


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class LiteEffiBlockS1(nn.Module):
    """Stride 1: half the channels pass, the other half go 1x1 -> depthwise 3x3 -> SE -> 1x1; shuffled."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv_pw_1 = ConvBNHS(in_channels // 2, mid_channels, 1, 1, padding=0)
        self.conv_dw_1 = ConvBN(mid_channels, mid_channels, 3, stride, groups=mid_channels, padding=1)
        self.se = SEBlock(mid_channels)
        self.conv_1 = ConvBNHS(mid_channels, out_channels // 2, 1, 1, padding=0)

    def forward(self, x):
        passed, branch = x.split(x.shape[1] // 2, 1)
        branch = self.conv_1(self.se(self.conv_dw_1(self.conv_pw_1(branch))))
        return channel_shuffle(torch.cat([passed, branch], 1), 2)


class LiteEffiBlockS2(nn.Module):
    """Stride 2: a depthwise-then-1x1 branch and a 1x1-depthwise-SE-1x1 branch, concatenated, then a
    depthwise 3x3 and a 1x1."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        half_mid, half_out = mid_channels // 2, out_channels // 2
        self.conv_dw_1 = ConvBN(in_channels, in_channels, 3, stride, groups=in_channels, padding=1)
        self.conv_1 = ConvBNHS(in_channels, half_out, 1, 1, padding=0)
        self.conv_pw_2 = ConvBNHS(in_channels, half_mid, 1, 1, padding=0)
        self.conv_dw_2 = ConvBN(half_mid, half_mid, 3, stride, groups=half_mid, padding=1)
        self.se = SEBlock(half_mid)
        self.conv_2 = ConvBNHS(half_mid, half_out, 1, 1, padding=0)
        self.conv_dw_3 = ConvBNHS(out_channels, out_channels, 3, 1, groups=out_channels, padding=1)
        self.conv_pw_3 = ConvBNHS(out_channels, out_channels, 1, 1, padding=0)

    def forward(self, x):
        left = self.conv_1(self.conv_dw_1(x))
        right = self.conv_2(self.se(self.conv_dw_2(self.conv_pw_2(x))))
        return self.conv_pw_3(self.conv_dw_3(torch.cat([left, right], 1)))


class DPBlock(nn.Module):
    """Depthwise k x k conv (biased) + BN + Hardswish, then 1x1 conv (biased) + BN + Hardswish;
    ``fuse()`` folds both BatchNorms."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv_dw_1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                                   groups=out_channels)
        self.bn_1 = batch_norm(out_channels)
        self.act_1 = nn.Hardswish()
        self.conv_pw_1 = nn.Conv2d(out_channels, out_channels, 1, 1, 0)
        self.bn_2 = batch_norm(out_channels)
        self.act_2 = nn.Hardswish()

    def forward(self, x):
        x = self.conv_dw_1(x)
        x = self.act_1(self.bn_1(x) if self.bn_1 is not None else x)
        x = self.conv_pw_1(x)
        return self.act_2(self.bn_2(x) if self.bn_2 is not None else x)

    def fuse(self) -> None:
        for conv_name, bn_name in (("conv_dw_1", "bn_1"), ("conv_pw_1", "bn_2")):
            bn, conv = getattr(self, bn_name), getattr(self, conv_name)
            if bn is None:
                continue
            weight, bias = fold_bn(conv.weight, conv.bias, bn)
            conv.weight.data.copy_(weight.detach())
            conv.bias.data.copy_(bias.detach())
            setattr(self, bn_name, None)


class DarknetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, expansion: float = 0.5):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv_1 = ConvBNHS(in_channels, hidden, 1, 1, padding=0)
        self.conv_2 = DPBlock(hidden, out_channels, kernel_size, 1)

    def forward(self, x):
        return self.conv_2(self.conv_1(x))


class CSPBlock(nn.Module):
    """Two 1x1 branches, one through a DarknetBlock, concatenated and mixed by a 1x1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, expand_ratio: float = 0.5):
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.conv_1 = ConvBNHS(in_channels, mid, 1, 1, padding=0)
        self.conv_2 = ConvBNHS(in_channels, mid, 1, 1, padding=0)
        self.conv_3 = ConvBNHS(2 * mid, out_channels, 1, 1, padding=0)
        self.blocks = DarknetBlock(mid, mid, kernel_size, 1.0)

    def forward(self, x):
        return self.conv_3(torch.cat((self.blocks(self.conv_1(x)), self.conv_2(x)), 1))


class LiteBackbone(nn.Module):
    """Stem, then four stages: a stride-2 block, then stride-1 ones (the stage's repeats count both);
    returns the stride 8/16/32 maps."""

    def __init__(self, width: float, in_channels: int = 3):
        super().__init__()
        out, mid, _ = lite_channels(width)
        self.conv_0 = ConvBNHS(in_channels, out[0], 3, 2, padding=1)
        for index, repeats in enumerate(BACKBONE_REPEATS, start=1):
            blocks = [LiteEffiBlockS2(out[index - 1], mid[index], out[index], 2)]
            blocks += [LiteEffiBlockS1(out[index], mid[index], out[index], 1) for _ in range(repeats - 1)]
            setattr(self, f"lite_effiblock_{index}", nn.Sequential(*blocks))

    def forward(self, x):
        x = self.lite_effiblock_2(self.lite_effiblock_1(self.conv_0(x)))
        p3 = x
        p4 = self.lite_effiblock_3(p3)
        return p3, p4, self.lite_effiblock_4(p4)


class LiteNeck(nn.Module):
    """Top-down and bottom-up CSP fusion at one width; a fourth, stride-64 map from two strided
    depthwise blocks added together."""

    def __init__(self, width: float):
        super().__init__()
        _, _, c_in = lite_channels(width)
        u = NECK_CHANNELS
        self.reduce_layer0 = ConvBNHS(c_in[0], u, 1, 1, padding=0)
        self.reduce_layer1 = ConvBNHS(c_in[1], u, 1, 1, padding=0)
        self.reduce_layer2 = ConvBNHS(c_in[2], u, 1, 1, padding=0)
        self.upsample0 = nn.Upsample(scale_factor=2, mode="nearest")
        self.upsample1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.Csp_p4 = CSPBlock(2 * u, u, 5)
        self.Csp_p3 = CSPBlock(2 * u, u, 5)
        self.Csp_n3 = CSPBlock(2 * u, u, 5)
        self.Csp_n4 = CSPBlock(2 * u, u, 5)
        self.downsample2 = DPBlock(u, u, 5, 2)
        self.downsample1 = DPBlock(u, u, 5, 2)
        self.p6_conv_1 = DPBlock(u, u, 5, 2)
        self.p6_conv_2 = DPBlock(u, u, 5, 2)
        self.p6_add = ResidualAdd()  # a module, so quantization puts Q/DQ on both inputs (no parameters)

    def forward(self, features):
        p3, p4, p5 = features
        fpn_out0 = self.reduce_layer0(p5)
        f_out1 = self.Csp_p4(torch.cat([self.upsample0(fpn_out0), self.reduce_layer1(p4)], 1))
        pan_out3 = self.Csp_p3(torch.cat([self.upsample1(f_out1), self.reduce_layer2(p3)], 1))
        pan_out2 = self.Csp_n3(torch.cat([self.downsample2(pan_out3), f_out1], 1))
        pan_out1 = self.Csp_n4(torch.cat([self.downsample1(pan_out2), fpn_out0], 1))
        return [pan_out3, pan_out2, pan_out1, self.p6_add(self.p6_conv_1(fpn_out0), self.p6_conv_2(pan_out1))]
