"""The export-ready detector: fused YOLOv6 plus candidate selection inside the graph.

Rather than ship N x (5+nc) floats per image to the NMS step (8400 x 85 at 640), the graph keeps
each anchor's best class and returns the top-k anchors by that score as xyxy boxes. NMS then
works on k candidates. Matches upstream's single-label NMS (score = class score x column 4).
"""

from __future__ import annotations

import torch
from torch import nn

from ..contract import DEFAULT_TOPK


class CandidateDetector(nn.Module):
    """images float32 [B,3,H,W] -> (boxes_xyxy [B,K,4], scores [B,K], class_ids int32 [B,K]), input pixels."""

    def __init__(self, model: nn.Module, topk: int = DEFAULT_TOPK):
        super().__init__()
        self.model = model
        self.topk = topk

    def forward(self, images: torch.Tensor):
        prediction = self.model(images)  # (B, N, 5+nc)
        scores_all = prediction[..., 5:] * prediction[..., 4:5]
        best_scores, best_classes = scores_all.max(dim=-1)  # (B, N)
        k = min(self.topk, prediction.shape[1])
        scores, index = best_scores.topk(k, dim=1)  # (B, K), descending
        xywh = prediction[..., :4].gather(1, index.unsqueeze(-1).expand(-1, -1, 4))
        boxes_xyxy = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
        return boxes_xyxy, scores, best_classes.gather(1, index).to(torch.int32)
