"""Building blocks of YOLOv6 v3.0, with upstream's attribute names so state dicts match.

Every BatchNorm uses eps=1e-3, momentum=0.03 (upstream sets these for all BN layers).
``fuse()`` on a block folds its BatchNorms (and RepVGG branches) into single convs in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (weight, bias) of a conv equivalent to conv followed by ``bn`` (eval statistics; anything with
    its weight, bias, running_mean, running_var and eps)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    conv_bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + (conv_bias - bn.running_mean) * scale


def merged_conv(kernel: torch.Tensor, bias: torch.Tensor, stride: int) -> nn.Conv2d:
    """The 3x3 conv (padding 1) holding a re-parameterised block's merged kernel and bias."""
    conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, stride, 1, bias=True)
    conv.weight.data.copy_(kernel.detach())
    conv.bias.data.copy_(bias.detach())
    return conv


class ConvModule(nn.Module):
    """Conv2d (no bias) + BatchNorm + optional activation; after ``fuse()`` a biased conv + activation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, activation=None, padding=None, groups=1):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = batch_norm(out_channels)
        self.act = activation if activation is not None else nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def fuse(self) -> None:
        if self.bn is None:
            return
        weight, bias = fold_bn(self.conv.weight, self.conv.bias, self.bn)
        conv = self.conv
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True)
        fused.weight.data.copy_(weight.detach())
        fused.bias.data.copy_(bias.detach())
        self.conv = fused
        self.bn = None


class _ConvAct(nn.Module):
    """Upstream's ConvBNReLU / ConvBNSiLU: a ConvModule stored under ``block``."""

    activation_cls: type[nn.Module] = nn.ReLU

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, padding=None):
        super().__init__()
        self.block = ConvModule(in_channels, out_channels, kernel_size, stride, self.activation_cls(), padding, groups)

    def forward(self, x):
        return self.block(x)


class ConvBNReLU(_ConvAct):
    activation_cls = nn.ReLU


class ConvBNSiLU(_ConvAct):
    activation_cls = nn.SiLU


class ReparamBlock(nn.Module):
    """What the RepVGG-family blocks share: a 3x3 geometry, ReLU after an identity SE, and a deploy form of
    one merged 3x3 conv (``fuse()`` builds it from ``equivalent_kernel_bias`` and drops ``branch_names``).
    Subclasses compute their training-time sum in ``branches``."""

    branch_names: tuple[str, ...] = ()

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        super().__init__()
        if kernel_size != 3 or padding != 1:
            raise ValueError(f"{type(self).__name__} supports kernel_size=3, padding=1 only")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()
        self.rbr_reparam = None

    def forward(self, x):
        out = self.rbr_reparam(x) if self.rbr_reparam is not None else self.branches(x)
        return self.nonlinearity(self.se(out))

    def branches(self, x):
        raise NotImplementedError

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def fuse(self) -> None:
        if self.rbr_reparam is not None:
            return
        self.rbr_reparam = merged_conv(*self.equivalent_kernel_bias(), self.stride)
        for name in self.branch_names:
            setattr(self, name, None)


class RepVGGBlock(ReparamBlock):
    """3x3 conv-BN + 1x1 conv-BN (+ identity BN) summed, then ReLU; ``fuse()`` makes one 3x3 conv."""

    branch_names = ("rbr_dense", "rbr_1x1", "rbr_identity")

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding)
        self.rbr_identity = batch_norm(in_channels) if in_channels == out_channels and stride == 1 else None
        self.rbr_dense = ConvModule(in_channels, out_channels, 3, stride, padding=1)
        self.rbr_1x1 = ConvModule(in_channels, out_channels, 1, stride, padding=0)

    def branches(self, x):
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        return out + self.rbr_identity(x) if self.rbr_identity is not None else out

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias that equal the three branches in eval mode."""
        k3, b3 = self._branch(self.rbr_dense)
        k1, b1 = self._branch(self.rbr_1x1)
        kernel, bias = k3 + F.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            identity = torch.zeros_like(k3)
            identity[torch.arange(self.in_channels), torch.arange(self.in_channels), 1, 1] = 1.0
            ki, bi = fold_bn(identity, None, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @staticmethod
    def _branch(module: ConvModule) -> tuple[torch.Tensor, torch.Tensor]:
        if module.bn is None:  # already BN-folded
            return module.conv.weight, module.conv.bias
        return fold_bn(module.conv.weight, module.conv.bias, module.bn)


class QARepVGGBlockV2(ReparamBlock):
    """Quantization-aware RepVGG (upstream's ``qarepvggv2``): a 3x3 conv-BN, a bare 1x1 conv, and where shapes
    allow the identity and a 3x3 average pool, summed, then one BatchNorm and ReLU. The branches carry no
    BatchNorm of their own except the 3x3 one, so the merged kernel's weight distribution stays narrow
    enough for INT8. ``fuse()`` makes one 3x3 conv (upstream keeps the trailing BN beside its merged conv;
    here it is folded in too: the same function)."""

    branch_names = ("rbr_dense", "rbr_1x1", "rbr_identity", "rbr_avg", "bn")

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding)
        has_identity = in_channels == out_channels and stride == 1
        self.rbr_identity = nn.Identity() if has_identity else None
        self.rbr_dense = ConvModule(in_channels, out_channels, 3, stride, padding=1)
        self.rbr_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
        self.bn = batch_norm(out_channels)
        self.rbr_avg = nn.AvgPool2d(3, stride, padding=1) if has_identity else None

    def branches(self, x):
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + x + self.rbr_avg(x)
        return self.bn(out)

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fold_bn(*self.merged_branches(), self.bn)

    def merged_branches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The branches as one 3x3 kernel and bias, before the trailing BN (upstream's deploy conv)."""
        kernel, bias = RepVGGBlock._branch(self.rbr_dense)
        kernel = kernel + F.pad(self.rbr_1x1.weight, [1, 1, 1, 1])
        if self.rbr_identity is not None:
            channels = torch.arange(self.in_channels)
            extra = torch.zeros_like(kernel)
            extra[channels, channels] = 1.0 / 9  # the average pool (padding counted, as AvgPool2d does)
            extra[channels, channels, 1, 1] += 1.0  # the identity
            kernel = kernel + extra
        return kernel, bias


class RealVGGBlock(_ConvAct):
    """RepOpt's plain block: one 3x3 conv + BN + ReLU, trained as is (its optimizer carries what the
    RepVGG branches would have added); deploys by folding the BN, with no branch merging."""

    activation_cls = nn.ReLU

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        if kernel_size != 3 or padding != 1:
            raise ValueError("RealVGGBlock supports kernel_size=3, padding=1 only")
        super().__init__(in_channels, out_channels, 3, stride)
        self.has_identity = in_channels == out_channels and stride == 1  # where RepVGG has an identity branch


class LinearAddBlock(nn.Module):
    """RepOpt's hyper-search block: learnable per-channel scales on a 3x3 conv, a 1x1 conv and (when
    shapes allow) the identity, summed, then BN + ReLU. Only its trained scales are used afterwards."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        super().__init__()
        if kernel_size != 3 or padding != 1:
            raise ValueError("LinearAddBlock supports kernel_size=3, padding=1 only")
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.scale_conv = nn.Parameter(torch.ones(out_channels))
        self.conv_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
        self.scale_1x1 = nn.Parameter(torch.ones(out_channels))
        has_identity = in_channels == out_channels and stride == 1
        self.scale_identity = nn.Parameter(torch.ones(out_channels)) if has_identity else None
        self.bn = batch_norm(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv(x) * self.scale_conv.view(1, -1, 1, 1) + self.conv_1x1(x) * self.scale_1x1.view(1, -1, 1, 1)
        if self.scale_identity is not None:
            out = out + x * self.scale_identity.view(1, -1, 1, 1)
        return self.relu(self.bn(out))


class ResidualAdd(nn.Module):
    """``branch + residual`` as a module, so quantization can put Q/DQ on both inputs (TensorRT then
    runs the add in INT8 instead of reformatting); it holds no parameters."""

    def forward(self, branch, residual):
        return branch + residual


class BottleRep(nn.Module):
    """Two basic blocks with a (learnable-weight) residual connection."""

    def __init__(self, in_channels, out_channels, basic_block=RepVGGBlock, weight=False):
        super().__init__()
        self.conv1 = basic_block(in_channels, out_channels)
        self.conv2 = basic_block(out_channels, out_channels)
        self.shortcut = in_channels == out_channels
        self.alpha = nn.Parameter(torch.ones(1)) if weight else 1.0
        self.add = ResidualAdd()

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        return self.add(out, self.alpha * x) if self.shortcut else out


class BottleRep3(nn.Module):
    """Three basic blocks with a learnable-weight residual connection (MBLA's unit)."""

    def __init__(self, in_channels, out_channels, basic_block=RepVGGBlock, weight=False):
        super().__init__()
        self.conv1 = basic_block(in_channels, out_channels)
        self.conv2 = basic_block(out_channels, out_channels)
        self.conv3 = basic_block(out_channels, out_channels)
        self.shortcut = in_channels == out_channels
        self.alpha = nn.Parameter(torch.ones(1)) if weight else 1.0
        self.add = ResidualAdd()

    def forward(self, x):
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.add(out, self.alpha * x) if self.shortcut else out


class MBLABlock(nn.Module):
    """Multi-branch layer aggregation (the MBLA models' stage): a 1x1 conv split into 2-3 branches; all but
    the first run a chain of BottleRep3s (the last branch ``n // 2`` of them, the middle one the largest
    power of two below half that); every branch's input and every chain output are concatenated and mixed
    by a 1x1 conv."""

    def __init__(self, in_channels, out_channels, n=1, e=0.5, block=RepVGGBlock):
        super().__init__()
        n = max(n // 2, 1)
        if n == 1:
            chain_lengths = [0, 1]
        else:
            middle = 1
            while middle * 2 < n:
                middle *= 2
            chain_lengths = [0, middle, n]
        self.c = int(out_channels * e)
        activation = nn.SiLU if block is ConvBNSiLU else nn.ReLU
        branches = len(chain_lengths)
        self.cv1 = ConvModule(in_channels, branches * self.c, 1, 1, activation())
        self.cv2 = ConvModule((sum(chain_lengths) + branches) * self.c, out_channels, 1, 1, activation())
        self.m = nn.ModuleList(nn.Sequential(*(BottleRep3(self.c, self.c, basic_block=block, weight=True)
                                               for _ in range(length))) for length in chain_lengths[1:])

    def forward(self, x):
        branches = self.cv1(x).split(self.c, 1)
        outputs = [branches[0]]
        for branch, chain in zip(branches[1:], self.m):
            outputs.append(branch)
            for unit in chain:
                outputs.append(unit(outputs[-1]))
        return self.cv2(torch.cat(outputs, 1))


class RepBlock(nn.Module):
    """A stack of ``n`` blocks (or n//2 BottleReps when ``block`` is BottleRep)."""

    def __init__(self, in_channels, out_channels, n=1, block=RepVGGBlock, basic_block=RepVGGBlock):
        super().__init__()
        if block is BottleRep:
            self.conv1 = BottleRep(in_channels, out_channels, basic_block=basic_block, weight=True)
            n = n // 2
            extra = [BottleRep(out_channels, out_channels, basic_block=basic_block, weight=True) for _ in range(n - 1)]
        else:
            self.conv1 = block(in_channels, out_channels)
            extra = [block(out_channels, out_channels) for _ in range(n - 1)]
        self.block = nn.Sequential(*extra) if n > 1 else None

    def forward(self, x):
        x = self.conv1(x)
        return self.block(x) if self.block is not None else x


class BepC3(nn.Module):
    """CSP stage: two 1x1 branches, one through a RepBlock of BottleReps, concatenated and mixed."""

    def __init__(self, in_channels, out_channels, n=1, e=0.5, block=RepVGGBlock):
        super().__init__()
        hidden = int(out_channels * e)
        conv = ConvBNSiLU if block is ConvBNSiLU else ConvBNReLU
        self.cv1 = conv(in_channels, hidden, 1, 1)
        self.cv2 = conv(in_channels, hidden, 1, 1)
        self.cv3 = conv(2 * hidden, out_channels, 1, 1)
        self.m = RepBlock(hidden, hidden, n=n, block=BottleRep, basic_block=block)

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPFModule(nn.Module):
    """Spatial pyramid pooling (fast): three chained max-pools, concatenated with their input."""

    def __init__(self, in_channels, out_channels, kernel_size=5, block=ConvBNReLU):
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = block(in_channels, hidden, 1, 1)
        self.cv2 = block(hidden * 4, out_channels, 1, 1)
        self.m = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class CSPSPPFModule(nn.Module):
    """CSP version of SPPF: a pooled branch and a 1x1 bypass, concatenated."""

    def __init__(self, in_channels, out_channels, kernel_size=5, e=0.5, block=ConvBNReLU):
        super().__init__()
        hidden = int(out_channels * e)
        self.cv1 = block(in_channels, hidden, 1, 1)
        self.cv2 = block(in_channels, hidden, 1, 1)
        self.cv3 = block(hidden, hidden, 3, 1)
        self.cv4 = block(hidden, hidden, 1, 1)
        self.m = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.cv5 = block(4 * hidden, hidden, 1, 1)
        self.cv6 = block(hidden, hidden, 3, 1)
        self.cv7 = block(2 * hidden, out_channels, 1, 1)

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y0 = self.cv2(x)
        y1 = self.m(x1)
        y2 = self.m(y1)
        y3 = self.cv6(self.cv5(torch.cat([x1, y1, y2, self.m(y2)], 1)))
        return self.cv7(torch.cat((y0, y3), dim=1))


class SimSPPF(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=5, block=ConvBNReLU):
        super().__init__()
        self.sppf = SPPFModule(in_channels, out_channels, kernel_size, block)

    def forward(self, x):
        return self.sppf(x)


class SPPF(SimSPPF):
    def __init__(self, in_channels, out_channels, kernel_size=5, block=ConvBNSiLU):
        super().__init__(in_channels, out_channels, kernel_size, block)


class SimCSPSPPF(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=5, e=0.5, block=ConvBNReLU):
        super().__init__()
        self.cspsppf = CSPSPPFModule(in_channels, out_channels, kernel_size, e, block)

    def forward(self, x):
        return self.cspsppf(x)


class CSPSPPF(SimCSPSPPF):
    def __init__(self, in_channels, out_channels, kernel_size=5, e=0.5, block=ConvBNSiLU):
        super().__init__(in_channels, out_channels, kernel_size, e, block)


class Transpose(nn.Module):
    """2x upsampling by a stride-2 transposed conv (kept as is by deploy conversion)."""

    def __init__(self, in_channels, out_channels, kernel_size=2, stride=2):
        super().__init__()
        self.upsample_transpose = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, bias=True)

    def forward(self, x):
        return self.upsample_transpose(x)


class BiFusion(nn.Module):
    """Fuse an upsampled coarse map, a same-level map and a downsampled finer map."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.cv1 = ConvBNReLU(in_channels[0], out_channels, 1, 1)
        self.cv2 = ConvBNReLU(in_channels[1], out_channels, 1, 1)
        self.cv3 = ConvBNReLU(out_channels * 3, out_channels, 1, 1)
        self.upsample = Transpose(out_channels, out_channels)
        self.downsample = ConvBNReLU(out_channels, out_channels, 3, 2)

    def forward(self, x):
        coarse, same, fine = x
        return self.cv3(torch.cat((self.upsample(coarse), self.cv1(same), self.downsample(self.cv2(fine))), 1))
