"""Property tests (hypothesis): post-processing always yields valid segments; evaluation never
crashes on well-formed input, stays in [0, 1], and scores perfect predictions 1."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tal_pipeline.evaluate import THUMOS_TIOU, evaluate
from tal_pipeline.postprocess import PostprocessConfig, Segment, postprocess
from tal_pipeline.results import load_annotations

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@st.composite
def head_outputs(draw):
    num_pos = draw(st.integers(0, 40))
    num_cls = draw(st.integers(1, 4))
    probs = draw(arrays(np.float64, (num_pos, num_cls), elements=st.floats(0, 1)))
    offsets = draw(arrays(np.float64, (num_pos, 2), elements=finite))  # negatives count as 0
    step = draw(st.floats(0.05, 2.0))
    t0 = draw(st.floats(-1.0, 5.0))
    times = t0 + step * np.arange(num_pos)
    duration = draw(st.floats(0.1, 100.0))
    config = PostprocessConfig(
        pre_nms_top_k=draw(st.integers(1, 300)),
        min_score=draw(st.sampled_from([0.0, 0.001, 0.3])),
        nms_method=draw(st.sampled_from(["gaussian", "linear", "hard"])),
        max_segments=draw(st.integers(1, 50)),
        multiclass=draw(st.booleans()),
        voting_threshold=draw(st.sampled_from([0.0, 0.7])),
    )
    return probs, offsets, times, step, duration, config


@FAST
@given(head_outputs())
def test_postprocess_gives_valid_segments(case):
    probs, offsets, times, step, duration, config = case
    names = [f"c{k}" for k in range(probs.shape[1])]
    out = postprocess(probs, offsets, times, step, duration, names, config)
    assert len(out) <= config.max_segments
    assert len(out) <= max(config.pre_nms_top_k, 0)
    for seg in out:
        assert isinstance(seg, Segment) and seg.label in names
        assert 0.0 <= seg.start < seg.end <= duration
        assert 0.0 <= seg.score <= 1.0
        assert seg.score >= config.min_score
    scores = [s.score for s in out]
    assert scores == sorted(scores, reverse=True)


@st.composite
def eval_case(draw):
    labels = ["a", "b", "c"]
    interval = st.tuples(st.floats(0, 90), st.floats(0.01, 10)).map(lambda p: (p[0], p[0] + p[1]))
    gt = {}
    for v in range(draw(st.integers(1, 4))):
        segs = draw(st.lists(st.tuples(st.sampled_from(labels), interval), max_size=5))
        gt[f"v{v}"] = [(lab, t0, t1) for lab, (t0, t1) in segs]
    if not any(gt.values()):
        gt["v0"] = [("a", 1.0, 2.0)]
    preds = {}
    for v in range(draw(st.integers(0, 5))):  # v4 is never in the ground truth
        segs = draw(st.lists(
            st.tuples(st.sampled_from(labels + ["zzz"]), st.floats(0, 1), interval), max_size=8))
        preds[f"v{v}"] = [Segment(lab, s, t0, t1) for lab, s, (t0, t1) in segs]
    return gt, preds


def _annotations(gt: dict):
    return load_annotations({"database": {
        vid: {"subset": "s", "duration": 100.0,
              "annotations": [{"label": lab, "segment": [t0, t1]} for lab, t0, t1 in segs]}
        for vid, segs in gt.items()
    }})


@FAST
@given(eval_case(), st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4))
def test_evaluate_never_crashes_and_stays_in_range(case, thresholds):
    gt, preds = case
    res = evaluate(_annotations(gt), preds, thresholds)
    assert len(res.mAP) == len(thresholds)
    assert all(0.0 <= m <= 1.0 for m in res.mAP)
    assert 0.0 <= res.average_mAP <= 1.0
    assert set(res.per_class) == {lab for segs in gt.values() for lab, _, _ in segs}
    for aps in res.per_class.values():
        assert all(0.0 <= ap <= 1.0 for ap in aps)


@FAST
@given(eval_case(), st.floats(0.0, 1.0))
def test_perfect_predictions_score_one(case, jitter):
    gt, _ = case
    # every ground-truth instance predicted exactly, with any positive scores
    preds = {vid: [Segment(lab, 0.5 + 0.5 * jitter / (k + 1), t0, t1) for k, (lab, t0, t1) in enumerate(segs)]
             for vid, segs in gt.items()}
    res = evaluate(_annotations(gt), preds, THUMOS_TIOU + (0.95, 1.0))
    assert res.mAP == (1.0,) * 7
    assert res.average_mAP == 1.0
