"""TSA: temporal self-attention over one window of features (docs/method.md, eqs. 1-4).

Three ``T x T`` matrices are built from the stage-1 (coarse) predictions and the features:

* ``A`` (eq. 1), class relation, from each position's predicted class ``c_t``:
  0.5 if ``c_i == c_j`` and both are actions; 0.4 if both are actions of different classes;
  0.1 if exactly one is an action; 0 if both are background.
  *Our reading of "predicted class":* position ``t`` is an action when its stage-1 actionness
  ``sigmoid(act_t) >= 0.5`` (the actionness head is trained with BCE, so 0.5 is a calibrated
  threshold; sigmoid focal-loss class scores are not), and its class is ``argmax_c f1[t, c]``.
* ``B`` (eq. 2), position similarity: the tIoU of the intervals ``[t - l_t, t + r_t]`` that
  positions ``i`` and ``j`` predict (stage-1 distances, in feature steps).
* ``M`` (eqs. 3-4): ``Q, K, V = sigmoid(W_q y), sigmoid(W_k y), sigmoid(W_v y)``,
  ``M = softmax(Q K^T / sqrt(d))`` over the valid (unpadded) keys.

Fusion (one faithful reading of the paper, the one docs/method.md gives):
``G = normalise_rows(M * A * (1 - B))`` and ``y_hat = y + W_o (G V)``; ``normalise=False`` reads
it without the row normalisation, ``G = M * A * (1 - B)`` (the paper does not say which): attention favours other
instances of related classes and ignores background and the position's own instance (high tIoU =
redundant). A row whose weights are all zero (a background position among background) adds
only ``W_o``'s bias. ``A`` and ``B`` come from detached predictions: they steer the attention, gradients flow
through ``M`` and ``V`` only.

Variants (ablation switch ``mode``): ``"full"`` (above), ``"plain"`` (``G = M``, ordinary
attention with sigmoid projections), ``"none"`` (identity, ``y_hat = y``).

Memory is ``O(T^2)`` per window; the model runs long videos in windows (see ``model.py``), so
a whole video never builds one ``T x T`` matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tal_pipeline.head.tpp import Conv1d

TSA_MODES = ("full", "plain", "none")

# eq. 1 weights
A_SAME_ACTION = 0.5  # both actions, same class
A_OTHER_ACTION = 0.4  # both actions, different classes
A_ONE_ACTION = 0.1  # exactly one of the two is an action
A_BACKGROUND = 0.0  # both background
ACTIONNESS_THRESHOLD = 0.5  # sigmoid(actionness) at or above this = "action" position


def class_relation_matrix(classes: torch.Tensor, is_action: torch.Tensor) -> torch.Tensor:
    """Matrix A of eq. 1.

    Args:
        classes: ``(B, T)`` int, predicted class of each position (ignored where background).
        is_action: ``(B, T)`` bool, whether the position is predicted to be inside an action.

    Returns:
        ``(B, T, T)`` float32, ``A[b, i, j]`` as in eq. 1.
    """
    act_i = is_action[:, :, None]  # (B, T, 1)
    act_j = is_action[:, None, :]  # (B, 1, T)
    same = classes[:, :, None] == classes[:, None, :]  # (B, T, T)
    # nested scalar wheres: two (B, T, T) temporaries fewer than a chain of full_like + where
    # (this runs in every training step)
    both = torch.where(same, A_SAME_ACTION, A_OTHER_ACTION)
    return torch.where(act_i & act_j, both, torch.where(act_i ^ act_j, A_ONE_ACTION, A_BACKGROUND)).float()


def interval_tiou_matrix(distances: torch.Tensor) -> torch.Tensor:
    """Matrix B of eq. 2: pairwise tIoU of the intervals each position predicts.

    Args:
        distances: ``(B, T, 2)`` float, distances (>= 0, feature steps) from position ``t`` to
            the start and to the end of its instance; the interval is ``[t - l, t + r]``.

    Returns:
        ``(B, T, T)`` float in ``[0, 1]``; 0 where both intervals are empty.
    """
    t = torch.arange(distances.shape[1], device=distances.device, dtype=distances.dtype)
    start = t[None, :] - distances[..., 0]  # (B, T)
    end = t[None, :] + distances[..., 1]  # (B, T)
    inter = (
        torch.minimum(end[:, :, None], end[:, None, :])
        - torch.maximum(start[:, :, None], start[:, None, :])
    ).clamp(min=0)  # (B, T, T)
    length = (end - start).clamp(min=0)  # (B, T)
    union = length[:, :, None] + length[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-6), torch.zeros_like(inter))


class TemporalSelfAttention(nn.Module):
    """TSA block: ``y (B, H, T) -> y_hat (B, H, T)``, steered by the coarse predictions."""

    def __init__(self, dim: int, mode: str = "full", normalise: bool = True):
        super().__init__()
        if mode not in TSA_MODES:
            raise ValueError(f"tsa mode must be one of {TSA_MODES}, got {mode!r}")
        self.mode = mode
        self.dim = dim
        self.normalise = normalise  # "full" only: rescale G's rows to sum 1 (see fusion)
        if mode != "none":
            self.query = Conv1d(dim, dim, 1)
            self.key = Conv1d(dim, dim, 1)
            self.value = Conv1d(dim, dim, 1)
            self.out = Conv1d(dim, dim, 1)

    def fusion(
        self,
        y: torch.Tensor,
        mask: torch.Tensor,
        cls_logits: torch.Tensor,
        distances: torch.Tensor,
        act_logits: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused weights ``G (B, T, T)`` (rows sum to 1 or 0) and values ``V (B, T, H)``."""
        q = torch.sigmoid(self.query(y)).transpose(1, 2)  # (B, T, H)
        k = torch.sigmoid(self.key(y))  # (B, H, T)
        v = torch.sigmoid(self.value(y)).transpose(1, 2)  # (B, T, H)
        scores = torch.bmm(q, k) / math.sqrt(self.dim)  # (B, T, T)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        m = torch.softmax(scores, dim=-1)  # (B, T, T): M, eqs. 3-4
        if self.mode == "plain":
            return m, v
        with torch.no_grad():
            is_action = torch.sigmoid(act_logits) >= ACTIONNESS_THRESHOLD  # (B, T)
            classes = cls_logits.argmax(dim=-1)  # (B, T)
            a = class_relation_matrix(classes, is_action & mask)  # (B, T, T): eq. 1
            b = interval_tiou_matrix(distances)  # (B, T, T): eq. 2
            keep = a * (1.0 - b) * mask[:, None, :]
        g = m * keep  # (B, T, T)
        if self.normalise:  # rows sum to 1 (zero rows stay 0): a background position among
            # background then takes all of its attention from the few action keys it weights 0.1
            g = g / g.sum(dim=-1, keepdim=True).clamp(min=1e-6)
        # else rows sum to at most 0.5: how much attention a position gives to related instances
        # (and how little a background one gives to actions) survives into y_hat
        return g, v

    def forward(
        self,
        y: torch.Tensor,
        mask: torch.Tensor,
        cls_logits: torch.Tensor,
        distances: torch.Tensor,
        act_logits: torch.Tensor,
    ) -> torch.Tensor:
        """Args (one window, batched):

        y: ``(B, H, T)`` features (zero at padded positions);
        mask: ``(B, T)`` bool, True at valid positions;
        cls_logits: ``(B, T, C)``, distances: ``(B, T, 2)`` steps, act_logits: ``(B, T)``:
        the stage-1 predictions.

        Returns ``y_hat (B, H, T)``, zero at padded positions.
        """
        if self.mode == "none":
            return y
        g, v = self.fusion(y, mask, cls_logits, distances, act_logits)  # (B,T,T), (B,T,H)
        context = torch.bmm(g, v).transpose(1, 2)  # (B, T, H) -> (B, H, T)
        return (y + self.out(context)) * mask[:, None, :]
