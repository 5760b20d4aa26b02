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
        batch, anchors = prediction.shape[:2]
        k = min(self.topk, anchors)
        scores, index = best_scores.topk(k, dim=1)  # (B, K), descending
        # Row indices into the batch flattened to (B*N, ...): a plain Gather, which every runtime
        # takes (a GatherElements with broadcast indices loads in ONNX Runtime but not in OpenVINO).
        rows = index + torch.arange(batch, device=index.device).unsqueeze(1) * anchors
        xywh = prediction[..., :4].reshape(-1, 4)[rows]  # (B, K, 4)
        boxes_xyxy = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
        return boxes_xyxy, scores, best_classes.reshape(-1)[rows].to(torch.int32)
