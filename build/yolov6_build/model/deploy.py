"""The export-ready detector: fused YOLOv6 plus candidate selection inside the graph.

Rather than ship N x (5+nc) floats per image to the NMS step (8400 x 85 at 640), the graph keeps
each anchor's best class and returns the top-k anchors by that score as xyxy boxes. NMS then
works on k candidates. Matches upstream's single-label NMS (score = class score; v3.0's
objectness column is a constant 1).

Selection happens on the raw class logits: the sigmoid is monotonic, so the best class and the
top-k anchors are the same, and only the k chosen scores and boxes are decoded (not N x nc
sigmoids and N boxes, most of the float work left in an INT8 graph).
"""

from __future__ import annotations

import torch
from torch import nn

from ..contract import DEFAULT_TOPK
from .head import anchor_points, ltrb_to_xyxy


class CandidateDetector(nn.Module):
    """images float32 [B,3,H,W] -> (boxes_xyxy [B,K,4], scores [B,K], class_ids int32 [B,K]), input pixels."""

    def __init__(self, model: nn.Module, topk: int = DEFAULT_TOPK):
        super().__init__()
        self.model = model
        self.topk = topk

    def forward(self, images: torch.Tensor):
        detect = self.model.detect
        raw = self.model(images, undecoded=True)  # through the modules' calls: the graph keeps their scopes
        logits = raw["cls_logits_by_channel"]  # (B, nc, N): reduced over classes without transposing
        batch, classes, anchors = logits.shape
        top_logits, index = logits.amax(dim=1).topk(min(self.topk, anchors), dim=1)  # (B, K), descending
        # The best class of the k chosen anchors only: an arg-max over all N anchors cost OpenVINO
        # more than the rest of the selection (1.6 ms of n at 640, batch 1). The gather's indices have
        # the shape of its output (OpenVINO rejects broadcast GatherElements indices).
        chosen = logits.gather(2, index.unsqueeze(1).expand(batch, classes, index.shape[1]))  # (B, nc, K)
        best_classes = chosen.argmax(dim=1)  # (B, K)
        # Row indices into the batch flattened to (B*N, ...): a plain Gather.
        rows = index + torch.arange(batch, device=index.device).unsqueeze(1) * anchors
        reg = raw["reg_dist"]
        distances = detect.distances(reg.reshape(-1, reg.shape[-1])[rows])  # (B, K, 4) ltrb, grid units
        points, strides = anchor_points(raw["shapes_hw"], detect.strides, reg.dtype, reg.device)
        boxes_xyxy = ltrb_to_xyxy(distances, points[index]) * strides[index]
        return boxes_xyxy, top_logits.sigmoid(), best_classes.to(torch.int32)
