"""Losses and label assignment against hand-computed numbers."""

import math

import numpy as np
import pytest
import torch

from tal_pipeline.head.assign import AssignConfig, assign_levels, assign_window, collate_targets
from tal_pipeline.head.losses import (
    LossWeights,
    diou_loss_1d,
    head_loss,
    sigmoid_focal_loss,
    stage_loss,
)
from tal_pipeline.head.model import HeadOutputs

LN2 = math.log(2.0)


def test_focal_loss_hand_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0), math.log(3.0)])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    got = sigmoid_focal_loss(logits, targets)  # alpha 0.25, gamma 2
    want = [
        0.25 * 0.5**2 * LN2,  # p = 0.5, positive
        0.75 * 0.5**2 * LN2,  # p = 0.5, negative
        0.25 * 0.25**2 * -math.log(0.75),  # p = 0.75, positive
        0.75 * 0.75**2 * -math.log(0.25),  # p = 0.75, negative
    ]
    assert got.tolist() == pytest.approx(want, rel=1e-5)


def test_focal_loss_gamma0_no_alpha_is_bce():
    logits, targets = torch.randn(50), (torch.rand(50) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert torch.allclose(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0), bce, atol=1e-6)


def test_diou_loss_hand_values():
    pred = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 1.0]])
    target = torch.tensor([[2.0, 2.0], [2.0, 2.0], [2.0, 0.0]])
    got = diou_loss_1d(pred, target)
    # [-1, 3] vs [-2, 2]: IoU 3/5, enclosing 5, centres 1 apart -> 1 - 0.6 + 1/25
    # identical -> 0; [0, 1] vs [-2, 0]: IoU 0, enclosing 3, centres 1.5 apart -> 1 + 2.25/9
    assert got.tolist() == pytest.approx([0.44, 0.0, 1.25], abs=1e-6)


def test_assign_centre_sampling_and_shortest_wins():
    # class 0 over steps [2, 12] (centre 7, half 5: radius max(1.5, 2.5) = 2.5)
    # class 1 over [6, 8] (short, overlapping: positions 6..8 go to it)
    t = assign_window(np.array([[0, 2.0, 12.0], [1, 6.0, 8.0]]), 16, 2, AssignConfig())
    assert np.flatnonzero(t["positive"]).tolist() == [5, 6, 7, 8, 9]
    assert t["classes"][5].tolist() == [1.0, 0.0] and t["classes"][9].tolist() == [1.0, 0.0]
    assert t["classes"][7].tolist() == [0.0, 1.0]
    assert t["distances"][5].tolist() == [3.0, 7.0]  # steps to start / end of class 0
    assert t["distances"][7].tolist() == [1.0, 1.0]  # the short instance
    assert np.flatnonzero(t["actionness"]).tolist() == list(range(2, 13))


def test_assign_tiny_instance_gets_its_nearest_position():
    t = assign_window(np.array([[0, 3.2, 3.6]]), 8, 1)
    assert np.flatnonzero(t["positive"]).tolist() == [3, 4]  # both steps overlap [3.2, 3.6]
    assert t["distances"][3] == pytest.approx([0.0, 0.6])
    assert t["distances"][4] == pytest.approx([0.8, 0.0])


def test_head_loss_ignores_padding():
    w = assign_window(np.array([[0, 2.0, 6.0]]), 10, 2)
    targets = collate_targets([w], [10], 14)
    torch.manual_seed(0)
    cls, reg, act = torch.randn(1, 14, 2), torch.rand(1, 14, 2) * 3, torch.randn(1, 14)
    out = HeadOutputs(cls, reg, act, cls, reg, act)
    base = head_loss(out, targets)["loss"]
    cls2, reg2, act2 = cls.clone(), reg.clone(), act.clone()
    cls2[:, 10:] = 50.0
    reg2[:, 10:] = 0.0
    act2[:, 10:] = -50.0
    out2 = HeadOutputs(cls2, reg2, act2, cls2, reg2, act2)
    assert torch.allclose(head_loss(out2, targets)["loss"], base)
    assert torch.isfinite(base) and base > 0


def test_final_actionness_iou_target():
    """final_act="iou": the final stage's actionness learns the tIoU of each positive's own
    predicted interval (0 elsewhere, also inside the instance); stage 1 keeps "inside"."""
    w = assign_window(np.array([[0, 2.0, 8.0]]), 12, 1)  # positives at steps 4, 5, 6 (centre 5)
    targets = collate_targets([w], [12], 12)
    pos = targets.positive[0]
    assert pos.nonzero()[:, 0].tolist() == [4, 5, 6]
    reg = targets.distances.clone()
    reg[0, 4] = torch.tensor([2.0, 4.0])  # exact: tIoU 1
    reg[0, 5] = torch.tensor([1.5, 1.5])  # [3.5, 6.5] in [2, 8]: tIoU 3 / 6
    reg[0, 6] = torch.tensor([4.0, 4.0])  # [2, 10] vs [2, 8]: tIoU 6 / 8
    expect = torch.zeros(1, 12)
    expect[0, 4:7] = torch.tensor([1.0, 0.5, 0.75])
    cls, act = torch.zeros(1, 12, 1), torch.randn(1, 12)
    got = stage_loss(cls, reg, act, targets, LossWeights(), "iou")["bce"]
    assert torch.allclose(got, torch.nn.functional.binary_cross_entropy_with_logits(act, expect))
    inside = stage_loss(cls, reg, act, targets, LossWeights(), "inside")["bce"]
    assert not torch.allclose(got, inside)  # steps 2-3 and 7-8 are inside: target 1 there
    out = HeadOutputs(cls, reg, act, cls, reg, act)
    both = head_loss(out, targets, LossWeights(final_act="iou"))
    assert torch.allclose(both["bce"], got) and torch.allclose(both["stage1"] - both["final"], inside - got)
    with pytest.raises(ValueError, match="final_act"):
        LossWeights(final_act="quality")


def test_assign_levels_ranges_centres_and_collate():
    # strides 1, 2, 4, 8; ranges [0, 4), [4, 8), [8, 16), [16, inf) of the larger distance
    inst = np.array([[0, 10.0, 13.0], [1, 20.0, 80.0]])
    t = assign_levels(inst, 100, 2, (1, 2, 4, 8))
    sizes = [100, 50, 25, 13]
    assert len(t["positive"]) == sum(sizes)
    lv = np.split(t["positive"], np.cumsum(sizes)[:-1])
    # the short one at level 0, within 1.5 steps of its centre 11.5
    assert np.flatnonzero(lv[0]).tolist() == [10, 11, 12, 13]
    # the long one (half-length 30) only at level 3: centres p*8 + 3.5 within 12 steps of 50
    assert not lv[1].any() and not lv[2].any()
    assert np.flatnonzero(lv[3]).tolist() == [5, 6, 7]
    rows = sum(sizes[:3]) + np.arange(5, 8)
    assert t["distances"][rows].ravel().tolist() == pytest.approx([23.5, 36.5, 31.5, 28.5, 39.5, 20.5])
    assert (t["classes"][rows, 1] == 1).all()
    # actionness at every level inside any instance: level 3 centres 11.5 (the short one), 27.5 .. 75.5
    assert np.flatnonzero(np.split(t["actionness"], np.cumsum(sizes)[:-1])[3]).tolist() == [1, *range(3, 10)]
    # collate pads each level separately: a 60-step window beside a 100-step one
    short = assign_levels(inst[:1], 60, 2, (1, 2, 4, 8))
    batch = collate_targets([t, short], [100, 60], 100, (1, 2, 4, 8))
    assert batch.mask.shape == (2, sum(sizes))
    m = np.split(batch.mask[1].numpy(), np.cumsum(sizes)[:-1])
    assert [int(x.sum()) for x in m] == [60, 30, 15, 8]
    assert batch.positive[1].sum() == 4 and bool(batch.positive[0, 100 + 50 + 25 + 5])
