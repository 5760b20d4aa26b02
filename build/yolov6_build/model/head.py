"""The efficient decoupled anchor-free head (EffiDeHead) and its box decoding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNSiLU
from .lite import DPBlock
from .registry import DFL_BINS, STRIDES

GRID_CELL_OFFSET = 0.5
PRIOR_PROB = 1e-2


def anchor_points(shapes_hw: list[tuple[int, int]], strides=STRIDES, dtype=torch.float32, device=None):
    """Anchor centres for every level, level by level, row-major (y then x).

    Returns:
        points: Tensor[N, 2] as (x, y) in grid units of each level (cell centre = index + 0.5).
        stride_per_point: Tensor[N, 1] with each point's level stride.
    """
    points, point_strides = [], []
    for (h, w), stride in zip(shapes_hw, strides):
        ys = torch.arange(h, dtype=dtype, device=device) + GRID_CELL_OFFSET
        xs = torch.arange(w, dtype=dtype, device=device) + GRID_CELL_OFFSET
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x, grid_y], -1).reshape(-1, 2))
        point_strides.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(point_strides)


def ltrb_to_xywh(distances: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(left, top, right, bottom) distances [..., N, 4] around ``points`` [N, 2] -> (cx, cy, w, h)."""
    lt, rb = distances.split(2, dim=-1)
    x1y1, x2y2 = points - lt, points + rb
    return torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], -1)


def ltrb_to_xyxy(distances: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    lt, rb = distances.split(2, dim=-1)
    return torch.cat([points - lt, points + rb], -1)


class Detect(nn.Module):
    """Per level: 1x1 stem, then separate 3x3 cls and reg branches and 1x1 predictors.

    ``head='distill'`` adds the ``reg_preds_dist`` DFL predictors that upstream's self-distillation
    training uses for n/s; inference ignores them, exactly as upstream.
    """

    def __init__(self, num_classes: int, in_channels: tuple[int, ...], use_dfl: bool, head: str = "plain",
                 strides: tuple[int, ...] = STRIDES, lite: bool = False):
        super().__init__()
        self.nc = num_classes
        self.nl = len(in_channels)
        self.strides = strides
        self.use_dfl = use_dfl
        self.reg_max = DFL_BINS if use_dfl else 0
        self.head = head
        if lite:  # YOLOv6-Lite: depthwise 5x5 blocks throughout, and no DFL projection at all
            self.stems, self.cls_convs, self.reg_convs = (nn.ModuleList(DPBlock(c, c, 5, 1) for c in in_channels)
                                                          for _ in range(3))
        else:
            self.proj = nn.Parameter(torch.linspace(0, DFL_BINS, DFL_BINS + 1), requires_grad=False)
            self.proj_conv = nn.Conv2d(DFL_BINS + 1, 1, 1, bias=False)
            self.proj_conv.weight = nn.Parameter(self.proj.detach().clone().view(1, -1, 1, 1), requires_grad=False)
            self.stems = nn.ModuleList(ConvBNSiLU(c, c, 1, 1) for c in in_channels)
            self.cls_convs = nn.ModuleList(ConvBNSiLU(c, c, 3, 1) for c in in_channels)
            self.reg_convs = nn.ModuleList(ConvBNSiLU(c, c, 3, 1) for c in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in in_channels)
        if head == "distill":
            self.reg_preds_dist = nn.ModuleList(nn.Conv2d(c, 4 * (DFL_BINS + 1), 1) for c in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4 * (self.reg_max + 1), 1) for c in in_channels)

    def initialize_biases(self) -> None:
        """Start training with low class scores and unit box distances (upstream's recipe)."""
        cls_bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for conv in self.cls_preds:
            nn.init.zeros_(conv.weight)
            nn.init.constant_(conv.bias, cls_bias)
        for conv in self.reg_preds:
            nn.init.zeros_(conv.weight)
            nn.init.constant_(conv.bias, 1.0)

    def raw_outputs(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Undecoded predictions, all levels concatenated.

        Returns dict with ``cls_logits`` (B, N, nc), the same as ``cls_logits_by_channel`` (B, nc, N),
        ``reg_dist`` (B, N, 4*(reg_max+1)) in grid units (DFL logits when use_dfl) and ``shapes_hw``
        (per-level feature sizes).
        """
        cls_all, reg_all, shapes = [], [], []
        for i, x in enumerate(feats):
            b, _, h, w = x.shape
            shapes.append((h, w))
            x = self.stems[i](x)
            cls_all.append(self.cls_preds[i](self.cls_convs[i](x)).reshape(b, self.nc, h * w))
            reg_all.append(self.reg_preds[i](self.reg_convs[i](x)).reshape(b, -1, h * w))
        cls_by_channel = torch.cat(cls_all, -1)
        return {
            "cls_logits": cls_by_channel.permute(0, 2, 1),  # (B, N, nc)
            "cls_logits_by_channel": cls_by_channel,  # (B, nc, N): what an exported graph reduces without a transpose
            "reg_dist": torch.cat(reg_all, -1).permute(0, 2, 1),  # (B, N, 4*(reg_max+1))
            "shapes_hw": shapes,
        }

    def distances(self, reg_dist: torch.Tensor) -> torch.Tensor:
        """(B, N, 4*(reg_max+1)) -> (B, N, 4) ltrb in grid units (DFL expectation when use_dfl)."""
        if not self.use_dfl:
            return reg_dist
        b, n, _ = reg_dist.shape
        probs = F.softmax(reg_dist.reshape(b, n, 4, self.reg_max + 1), dim=-1)
        return probs @ self.proj.to(probs.dtype)

    def forward(self, feats: list[torch.Tensor], undecoded: bool = False):
        """Eval: (B, N, 5+nc) rows in upstream's layout; training or ``undecoded``: ``raw_outputs``."""
        raw = self.raw_outputs(feats)
        if self.training or undecoded:
            return raw
        points, point_strides = anchor_points(raw["shapes_hw"], self.strides, raw["cls_logits"].dtype,
                                              raw["cls_logits"].device)
        boxes_xywh = ltrb_to_xywh(self.distances(raw["reg_dist"]), points) * point_strides
        scores = raw["cls_logits"].sigmoid()
        objectness = torch.ones_like(scores[..., :1])  # upstream's constant placeholder column
        return torch.cat([boxes_xywh, objectness, scores], -1)  # (B, N, 5+nc), input pixels
