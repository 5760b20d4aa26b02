"""Task-aligned assigner and the YOLOv6 v3.0 detection loss (VFL + GIoU, plus DFL for m/l heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.head import anchor_points, ltrb_to_xyxy

EPS = 1e-9


def box_iou_pairwise(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of [..., M, 4] x [..., N, 4] -> [..., M, N]."""
    lt = torch.maximum(a_xyxy[..., :, None, :2], b_xyxy[..., None, :, :2])
    rb = torch.minimum(a_xyxy[..., :, None, 2:], b_xyxy[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a_xyxy[..., 2] - a_xyxy[..., 0]).clamp(min=0) * (a_xyxy[..., 3] - a_xyxy[..., 1]).clamp(min=0)
    area_b = (b_xyxy[..., 2] - b_xyxy[..., 0]).clamp(min=0) * (b_xyxy[..., 3] - b_xyxy[..., 1]).clamp(min=0)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter + EPS)


def giou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matching rows [..., 4] -> [...]."""
    lt = torch.maximum(a_xyxy[..., :2], b_xyxy[..., :2])
    rb = torch.minimum(a_xyxy[..., 2:], b_xyxy[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a_xyxy[..., 2:] - a_xyxy[..., :2]).clamp(min=0).prod(-1)
    area_b = (b_xyxy[..., 2:] - b_xyxy[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter + EPS
    hull = (torch.maximum(a_xyxy[..., 2:], b_xyxy[..., 2:]) - torch.minimum(a_xyxy[..., :2], b_xyxy[..., :2]))
    hull_area = hull.clamp(min=0).prod(-1) + EPS
    return inter / union - (hull_area - union) / hull_area


@torch.no_grad()
def task_aligned_assign(scores, boxes_xyxy, points_xy, gt_labels, gt_boxes_xyxy, gt_mask, topk=13, alpha=1.0,
                        beta=6.0):
    """TOOD's task-aligned assignment.

    Args:
        scores: [B, N, C] predicted class probabilities; boxes_xyxy: [B, N, 4] predicted boxes (pixels).
        points_xy: [N, 2] anchor centres (pixels). gt_labels: [B, M] int; gt_boxes_xyxy: [B, M, 4];
        gt_mask: [B, M] bool, real (not padding) ground truths.
    Returns:
        fg_mask [B, N] bool, target_labels [B, N] int64, target_boxes [B, N, 4], target_scores [B, N, C].
    """
    b, n, c = scores.shape
    m = gt_labels.shape[1]
    lt = points_xy[None, None] - gt_boxes_xyxy[..., None, :2]
    rb = gt_boxes_xyxy[..., None, 2:] - points_xy[None, None]
    inside = torch.cat([lt, rb], -1).amin(-1) > EPS  # [B, M, N]
    valid = inside & gt_mask[..., None]
    overlaps = box_iou_pairwise(gt_boxes_xyxy, boxes_xyxy) * valid  # [B, M, N]
    labels = gt_labels.long().clamp(0, c - 1)
    class_scores = scores.gather(2, labels[:, None, :].expand(b, n, m)).permute(0, 2, 1)  # [B, M, N]
    metric = class_scores.pow(alpha) * overlaps.pow(beta) * valid
    top = metric.topk(min(topk, n), dim=-1).indices
    chosen = torch.zeros_like(valid).scatter_(-1, top, True) & valid  # [B, M, N]
    # an anchor claimed by several ground truths keeps the one it overlaps most
    multiple = chosen.sum(1, keepdim=True) > 1
    best_gt = F.one_hot(overlaps.argmax(1), m).permute(0, 2, 1).bool()
    chosen = torch.where(multiple, best_gt & valid, chosen)
    fg_mask = chosen.any(1)
    gt_index = chosen.float().argmax(1)  # [B, N]
    target_labels = labels.gather(1, gt_index)
    target_boxes = gt_boxes_xyxy.gather(1, gt_index[..., None].expand(b, n, 4))
    metric = metric * chosen
    # scale each gt's metrics so its best anchor's target equals that anchor's IoU
    best_overlap = (overlaps * chosen).amax(-1, keepdim=True)  # [B, M, 1]
    norm = (metric * best_overlap / (metric.amax(-1, keepdim=True) + EPS)).amax(1)  # [B, N]
    target_scores = F.one_hot(target_labels, c).float() * (norm * fg_mask)[..., None]
    return fg_mask, target_labels, target_boxes, target_scores


def varifocal_loss(logits, target_scores, labels_one_hot, alpha=0.75, gamma=2.0):
    """VFL: positives weighted by their IoU-aware target, negatives down-weighted by p^gamma."""
    prob = logits.sigmoid()
    weight = alpha * prob.pow(gamma) * (1 - labels_one_hot) + target_scores * labels_one_hot
    return (F.binary_cross_entropy_with_logits(logits, target_scores, reduction="none") * weight).sum()


def distribution_focal_loss(reg_logits, target_ltrb, reg_max):
    """DFL: cross-entropy onto the two bins around each target distance, linearly weighted."""
    target = target_ltrb.clamp(0, reg_max - 0.01)
    left = target.long()
    weight_right = target - left
    logits = reg_logits.reshape(-1, reg_max + 1)
    loss = (F.cross_entropy(logits, left.reshape(-1), reduction="none") * (1 - weight_right).reshape(-1)
            + F.cross_entropy(logits, (left + 1).reshape(-1), reduction="none") * weight_right.reshape(-1))
    return loss.reshape(target.shape).mean(-1)


class DetectionLoss:
    """Weighted sum of classification (VFL), box (GIoU) and, for DFL heads, distribution losses."""

    def __init__(self, head, cls_weight=1.0, iou_weight=2.5, dfl_weight=0.5):
        self.head = head
        self.cls_weight, self.iou_weight, self.dfl_weight = cls_weight, iou_weight, dfl_weight

    def __call__(self, raw: dict, targets: torch.Tensor, target_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        cls_logits, reg_dist = raw["cls_logits"], raw["reg_dist"]
        points, strides = anchor_points(raw["shapes_hw"], self.head.strides, cls_logits.dtype, cls_logits.device)
        distances = self.head.distances(reg_dist)  # [B, N, 4] grid units
        pred_boxes = ltrb_to_xyxy(distances, points) * strides  # pixels
        fg, labels, target_boxes, target_scores = task_aligned_assign(
            cls_logits.detach().sigmoid(), pred_boxes.detach(), points * strides, targets[..., 0].long(),
            targets[..., 1:], target_mask)
        score_sum = target_scores.sum().clamp(min=1.0)
        one_hot = F.one_hot(labels, cls_logits.shape[-1]).float() * fg[..., None]
        loss_cls = varifocal_loss(cls_logits, target_scores, one_hot) / score_sum
        weight = target_scores.sum(-1)[fg]
        loss_iou = ((1 - giou(pred_boxes[fg], target_boxes[fg])) * weight).sum() / score_sum
        total = self.cls_weight * loss_cls + self.iou_weight * loss_iou
        parts = {"cls": loss_cls.detach(), "iou": loss_iou.detach()}
        if self.head.use_dfl and fg.any():
            b, n = fg.shape
            grid_points, grid_strides = points.expand(b, n, 2)[fg], strides.expand(b, n, 1)[fg]
            target_grid = target_boxes[fg] / grid_strides
            target_ltrb = torch.cat([grid_points - target_grid[:, :2], target_grid[:, 2:] - grid_points], -1)
            loss_dfl = (distribution_focal_loss(reg_dist[fg], target_ltrb, self.head.reg_max) * weight).sum() / score_sum
            total = total + self.dfl_weight * loss_dfl
            parts["dfl"] = loss_dfl.detach()
        return total, parts
