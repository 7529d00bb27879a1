"""Losses of both stages (docs/method.md, eqs. 5-6): sigmoid focal (classes), DIoU (intervals), BCE
(actionness).

Per stage (stage-1 and final), over valid positions of a batch::

    L_stage = sum(focal(cls, one-hot target)) / N_pos
            + reg_weight * sum(DIoU(reg, target) at positives) / N_pos
            + act_weight * mean(BCE(act, inside-any-instance))
    L = L_stage1 + L_final

``N_pos`` is the number of positive positions in the batch (at least 1). Targets come from
:mod:`tal_pipeline.head.assign`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tal_pipeline.head.assign import Targets
from tal_pipeline.head.model import HeadOutputs

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
FINAL_ACT_TARGETS = ("inside", "iou")


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al. 2017), not reduced.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p = sigmoid(logits)``,
    ``p_t = p`` where the target is 1 and ``1 - p`` where it is 0, ``alpha_t = alpha`` for
    targets 1 and ``1 - alpha`` for targets 0 (``alpha < 0`` disables the weighting).

    Args:
        logits, targets: same shape; targets in ``[0, 1]``.
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Element-wise 1D DIoU loss between intervals given as distances around the same point.

    ``pred, target: (..., 2)`` = (distance to start, distance to end), >= 0, any unit.
    For ``p = [-l, r]`` and ``g = [-l*, r*]``::

        IoU  = |p ∩ g| / |p ∪ g|
        DIoU = 1 - IoU + (centre distance)^2 / (length of the smallest enclosing interval)^2

    Returns ``(...)`` losses in ``[0, 2)``.
    """
    lp, rp = pred[..., 0], pred[..., 1]
    lg, rg = target[..., 0], target[..., 1]
    inter = (torch.minimum(lp, lg) + torch.minimum(rp, rg)).clamp(min=0)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / union.clamp(min=eps)
    enclose = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    centre_dist = 0.5 * ((rp - lp) - (rg - lg))
    return 1.0 - iou + centre_dist**2 / enclose.clamp(min=eps) ** 2


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms."""

    reg: float = 1.0  # DIoU relative to focal
    act: float = 1.0  # actionness BCE relative to focal
    stage1: float = 1.0  # stage-1 total relative to the final stage
    final_act: str = "inside"  # final stage's actionness target: "inside" (1 inside any instance)
    #   or "iou" (the tIoU of the position's own predicted interval with its target at positives,
    #   0 elsewhere: a localisation-quality score, which score fusion multiplies in, so better
    #   placed candidates outrank worse ones at high tIoU; stage 1's actionness, which steers TSA
    #   and TPP, keeps "inside")

    def __post_init__(self):
        if self.final_act not in FINAL_ACT_TARGETS:
            raise ValueError(f"final_act must be one of {FINAL_ACT_TARGETS}, got {self.final_act!r}")


def interval_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """tIoU ``(...)`` of intervals given as ``(..., 2)`` distances around the same point (>= 0)."""
    inter = (torch.minimum(pred[..., 0], target[..., 0]) + torch.minimum(pred[..., 1], target[..., 1])).clamp(min=0)
    union = pred.sum(-1) + target.sum(-1) - inter
    return inter / union.clamp(min=eps)


def stage_loss(
    cls: torch.Tensor, reg: torch.Tensor, act: torch.Tensor, targets: Targets, weights: LossWeights,
    act_target: str = "inside",
) -> dict[str, torch.Tensor]:
    """Losses of one stage. ``cls (B,T,C)``, ``reg (B,T,2)`` steps, ``act (B,T)`` logits;
    ``act_target``: see :attr:`LossWeights.final_act`."""
    valid = targets.mask  # (B, T)
    pos = targets.positive & valid  # (B, T)
    n_pos = pos.sum().clamp(min=1).to(cls.dtype)
    focal = sigmoid_focal_loss(cls[valid], targets.classes[valid]).sum() / n_pos
    if pos.any():
        diou = diou_loss_1d(reg[pos], targets.distances[pos]).sum() / n_pos
    else:
        diou = reg.sum() * 0.0
    act_t = targets.actionness  # (B, T)
    if act_target == "iou":  # detached: the quality score learns the regression, not the reverse
        act_t = torch.zeros_like(act_t)
        act_t[pos] = interval_iou(reg[pos].detach(), targets.distances[pos])
    bce = F.binary_cross_entropy_with_logits(act[valid], act_t[valid])
    total = focal + weights.reg * diou + weights.act * bce
    return {"total": total, "focal": focal, "diou": diou, "bce": bce}


def head_loss(
    out: HeadOutputs, targets: Targets, weights: LossWeights | None = None, final: Targets | None = None
) -> dict[str, torch.Tensor]:
    """Both stages: ``{"loss", "stage1", "final", "focal", "diou", "bce"}`` (the last three final-stage).

    ``final``: the final stage's targets when its positions differ from stage 1's (several
    output levels, :func:`~tal_pipeline.head.assign.assign_levels`); default ``targets``.
    """
    weights = weights or LossWeights()
    s1 = stage_loss(out.cls1, out.reg1, out.act1, targets, weights)
    s2 = stage_loss(out.cls, out.reg, out.act, final if final is not None else targets, weights, weights.final_act)
    loss = weights.stage1 * s1["total"] + s2["total"]
    return {"loss": loss, "stage1": s1["total"], "final": s2["total"], "focal": s2["focal"],
            "diou": s2["diou"], "bce": s2["bce"]}
