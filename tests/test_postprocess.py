"""Post-processing: grid-to-seconds decoding, Soft-NMS, the whole recipe."""

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from tal_pipeline.postprocess import (
    PostprocessConfig,
    Segment,
    positions_to_seconds,
    postprocess,
    soft_nms,
)


def test_segment_json_round_trip():
    seg = Segment("pan_left", 0.93, 12.4, 18.0)
    obj = seg.to_json()
    assert obj == {"label": "pan_left", "score": 0.93, "segment": [12.4, 18.0]}
    assert Segment.from_json(obj) == seg


def test_config_defaults_are_actionformers():
    cfg = PostprocessConfig()
    assert (cfg.pre_nms_top_k, cfg.min_score, cfg.nms_sigma) == (2000, 0.001, 0.5)
    assert (cfg.iou_threshold, cfg.max_segments, cfg.multiclass) == (0.1, 200, True)
    assert cfg.voting_threshold == 0.0 and cfg.nms_method == "gaussian"
    with pytest.raises(ValueError):
        PostprocessConfig(nms_method="bogus")


def test_positions_to_seconds():
    # step 0.4 s; position 0 at 0.8 s predicts 1 step left, 2 right -> [0.4, 1.6]
    times = np.array([0.8, 1.2])
    offsets = np.array([[1.0, 2.0], [0.0, 0.0]])
    out = positions_to_seconds(times, offsets, 0.4)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.4, 1.6], [1.2, 1.2]])


def test_positions_to_seconds_shape_error():
    with pytest.raises(ValueError):
        positions_to_seconds(np.zeros(3), np.zeros((2, 2)), 0.4)


def test_soft_nms_gaussian_decay_is_exact():
    # tIoU([0,10], [5,15]) = 5 / 15 = 1/3 -> second score *= exp(-(1/9) / 0.5)
    segs = np.array([[0.0, 10.0], [5.0, 15.0]])
    keep, scores = soft_nms(segs, np.array([0.9, 0.8]), sigma=0.5, min_score=0.001)
    assert keep.tolist() == [0, 1]
    assert scores[0] == pytest.approx(0.9)
    assert scores[1] == pytest.approx(0.8 * math.exp(-(1 / 9) / 0.5), rel=1e-12)


def test_soft_nms_picks_in_decayed_order():
    # a: [0,10] 0.9; b: [0,10] 0.85 (iou 1 with a -> 0.85*e^-2 = 0.115); c: [20,30] 0.5 untouched
    segs = np.array([[0.0, 10.0], [0.0, 10.0], [20.0, 30.0]])
    keep, scores = soft_nms(segs, np.array([0.9, 0.85, 0.5]), sigma=0.5, min_score=0.001)
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores, [0.9, 0.5, 0.85 * math.exp(-2.0)])
    assert np.all(np.diff(scores) <= 0)


def test_soft_nms_non_overlapping_untouched_and_max_keep():
    segs = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    keep, scores = soft_nms(segs, np.array([0.3, 0.9, 0.6]), sigma=0.5, min_score=0.001)
    assert keep.tolist() == [1, 2, 0]
    np.testing.assert_allclose(scores, [0.9, 0.6, 0.3])
    keep, _ = soft_nms(segs, np.array([0.3, 0.9, 0.6]), max_keep=2)
    assert keep.tolist() == [1, 2]


def test_soft_nms_min_score_drops_and_hard_nms():
    segs = np.array([[0.0, 10.0], [0.0, 10.0]])
    # 0.01 * e^-2 = 0.00135 < 0.002: dropped
    keep, _ = soft_nms(segs, np.array([0.9, 0.01]), sigma=0.5, min_score=0.002)
    assert keep.tolist() == [0]
    # hard NMS removes overlaps above iou_threshold, keeps the rest
    segs = np.array([[0.0, 10.0], [1.0, 10.0], [9.5, 20.0]])  # ious with first: 0.9, 0.025
    keep, scores = soft_nms(segs, np.array([0.9, 0.8, 0.7]), method="hard", iou_threshold=0.1)
    assert keep.tolist() == [0, 2]
    np.testing.assert_allclose(scores, [0.9, 0.7])
    # linear: decays by (1 - iou) above the threshold
    keep, scores = soft_nms(segs, np.array([0.9, 0.8, 0.7]), method="linear", iou_threshold=0.1)
    assert keep.tolist() == [0, 2, 1]
    assert scores[2] == pytest.approx(0.8 * 0.1)


def test_hard_nms_with_zero_min_score_still_suppresses():
    segs = np.array([[0.0, 10.0], [0.0, 10.0]])
    keep, _ = soft_nms(segs, np.array([0.9, 0.8]), min_score=0.0, method="hard")
    assert keep.tolist() == [0]


def test_soft_nms_empty():
    keep, scores = soft_nms(np.zeros((0, 2)), np.zeros(0))
    assert keep.shape == (0,) and scores.shape == (0,)


def _grid(num: int, step: float = 1.0, t0: float = 0.5) -> np.ndarray:
    return t0 + step * np.arange(num)


def test_postprocess_different_classes_do_not_interact():
    # one position, two classes, same segment: per-class NMS keeps both with their scores
    probs = np.array([[0.9, 0.8]])
    offsets = np.array([[2.0, 2.0]])
    out = postprocess(probs, offsets, [5.0], 1.0, 20.0, ["a", "b"])
    assert out == [Segment("a", 0.9, 3.0, 7.0), Segment("b", 0.8, 3.0, 7.0)]
    # class-agnostic NMS: b decays by exp(-1/0.5)
    out = postprocess(probs, offsets, [5.0], 1.0, 20.0, ["a", "b"], PostprocessConfig(multiclass=False))
    assert out[1].label == "b" and out[1].score == pytest.approx(0.8 * math.exp(-2.0))


def test_postprocess_same_class_overlap_decays():
    probs = np.array([[0.9], [0.8]])
    offsets = np.array([[5.0, 5.0], [5.0, 5.0]])  # [0,10] and [5,15] with step 1 s
    out = postprocess(probs, offsets, [5.0, 10.0], 1.0, 100.0, ["a"])
    assert [(s.start, s.end) for s in out] == [(0.0, 10.0), (5.0, 15.0)]
    assert out[1].score == pytest.approx(0.8 * math.exp(-(1 / 9) / 0.5))


def test_postprocess_clamps_and_drops_empty():
    probs = np.array([[0.9], [0.8], [0.7]])
    # position 0 reaches before 0; position 1 beyond the end; position 2 starts after the end
    offsets = np.array([[10.0, 1.0], [1.0, 10.0], [0.0, 3.0]])
    times = np.array([1.0, 9.0, 12.0])
    out = postprocess(probs, offsets, times, 0.5, 10.0, ["a"], PostprocessConfig(nms_sigma=1e9))
    assert len(out) == 2
    assert (out[0].start, out[0].end) == (0.0, 1.5)
    assert (out[1].start, out[1].end) == (8.5, 10.0)
    for s in out:
        assert 0.0 <= s.start < s.end <= 10.0


def test_postprocess_drops_segments_shorter_than_one_step():
    # step 0.4 s. Position 0 predicts 0.3 steps each side (0.24 s); position 1 is clamped at
    # 0 s to 0.2 s; position 2 is one step exactly, position 3 clamped at the end to 0.6 s
    probs = np.array([[0.9], [0.8], [0.7], [0.6]])
    offsets = np.array([[0.3, 0.3], [2.0, 0.5], [0.5, 0.5], [0.25, 3.0]])
    times = np.array([5.0, 0.0, 8.0, 9.5])
    keep = PostprocessConfig(nms_sigma=1e9)
    out = postprocess(probs, offsets, times, 0.4, 10.0, ["a"], keep)
    assert [(round(s.start, 6), round(s.end, 6)) for s in out] == [(7.8, 8.2), (9.4, 10.0)]
    assert all(s.end - s.start >= 0.4 - 1e-6 for s in out)
    # min_length=0: every non-empty segment, as before the rule
    out = postprocess(probs, offsets, times, 0.4, 10.0, ["a"], replace(keep, min_length=0.0))
    assert len(out) == 4
    # a video shorter than one step keeps a segment that covers it
    out = postprocess([[0.9]], [[1.0, 1.0]], [0.15], 0.4, 0.3, ["a"])
    assert [(s.start, s.end) for s in out] == [(0.0, 0.3)]
    with pytest.raises(ValueError, match="min_length"):
        PostprocessConfig(min_length=-1.0)


def test_postprocess_negative_offsets_count_as_zero():
    out = postprocess([[0.5]], [[-3.0, 2.0]], [4.0], 1.0, 10.0, ["a"])
    assert (out[0].start, out[0].end) == (4.0, 6.0)


def test_postprocess_top_k_and_max_segments_and_min_score():
    num = 10
    probs = np.linspace(0.1, 1.0, num)[:, None]  # (10, 1)
    offsets = np.full((num, 2), 0.5)  # 1 s segments (one step), 1 s apart: they only touch
    times = _grid(num)
    out = postprocess(probs, offsets, times, 1.0, 20.0, ["a"], PostprocessConfig(pre_nms_top_k=3))
    assert [round(s.score, 6) for s in out] == [1.0, 0.9, 0.8]
    out = postprocess(probs, offsets, times, 1.0, 20.0, ["a"], PostprocessConfig(max_segments=2))
    assert [round(s.score, 6) for s in out] == [1.0, 0.9]
    out = postprocess(probs, offsets, times, 1.0, 20.0, ["a"], PostprocessConfig(min_score=0.75))
    assert [round(s.score, 6) for s in out] == [1.0, 0.9, 0.8]
    out = postprocess(probs, offsets, times, 1.0, 20.0, ["a"])
    assert len(out) == num
    assert all(a.score >= b.score for a, b in itertools.pairwise(out))


def test_postprocess_score_voting_moves_boundaries():
    # two candidates [0,10] (0.9) and [1,11] (0.6) overlap by tIoU 9/11 >= 0.7:
    # the kept one becomes their score*iou weighted mean
    probs = np.array([[0.9], [0.6]])
    offsets = np.array([[5.0, 5.0], [5.0, 5.0]])
    out = postprocess(probs, offsets, [5.0, 6.0], 1.0, 100.0, ["a"], PostprocessConfig(voting_threshold=0.7))
    w = np.array([0.9 * 1.0, 0.6 * 9 / 11])
    expect = (w[0] * np.array([0, 10]) + w[1] * np.array([1, 11])) / w.sum()
    assert (out[0].start, out[0].end) == pytest.approx(tuple(expect))
    assert out[0].score == pytest.approx(0.9)


def test_postprocess_empty_and_errors():
    assert postprocess(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), 1.0, 10.0, ["a", "b"]) == []
    assert postprocess(np.zeros((4, 2)), np.ones((4, 2)), _grid(4), 1.0, 10.0, ["a", "b"]) == []
    with pytest.raises(ValueError):
        postprocess(np.zeros((4, 2)), np.ones((4, 2)), _grid(4), 1.0, 10.0, ["a"])
