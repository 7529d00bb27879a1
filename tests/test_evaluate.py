"""Official ActivityNet detection mAP: hand-computed cases, edge cases, the `tal eval` verb."""

import json
import logging

import click
import numpy as np
import pytest
from click.testing import CliRunner

from tal_pipeline.cli import main
from tal_pipeline.commands.eval_ import parse_tiou
from tal_pipeline.errors import InputError
from tal_pipeline.evaluate import (
    ACTIVITYNET_TIOU,
    THUMOS_TIOU,
    EvalResult,
    average_precision,
    evaluate,
    interpolated_ap,
    tiou,
)
from tal_pipeline.postprocess import Segment
from tal_pipeline.results import load_annotations, load_results, make_results, write_results


def _gt(videos: dict, subset="test") -> dict:
    """{vid: [(label, t0, t1)]} -> annotation JSON object."""
    return {
        "database": {
            vid: {
                "subset": subset,
                "duration": 100.0,
                "annotations": [{"label": lab, "segment": [t0, t1]} for lab, t0, t1 in segs],
            }
            for vid, segs in videos.items()
        }
    }


# ------------------------------------------------------------------ tIoU


def test_tiou_values():
    cands = np.array([[0, 10], [5, 15], [10, 20], [2, 4], [20, 30], [3, 3]], dtype=float)
    # identical 1; half shifted 5/15; touching 0; contained 2/10; disjoint 0; zero length 0
    np.testing.assert_allclose(tiou([0, 10], cands), [1.0, 1 / 3, 0.0, 0.2, 0.0, 0.0])
    assert tiou([3, 3], np.array([[3, 3]])).tolist() == [0.0]  # empty union: 0, not NaN
    assert tiou([0, 1], np.zeros((0, 2))).shape == (0,)


def test_interpolated_ap_matches_hand_computation():
    # precision 1, 0.5, 2/3 at recall 0.5, 0.5, 1 -> envelope 1, 2/3, 2/3 -> 0.5*1 + 0.5*2/3
    assert interpolated_ap([1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0]) == pytest.approx(5 / 6)
    assert interpolated_ap([], []) == 0.0


# ------------------------------------------------------------------ AP, hand-computed


def test_ap_duplicate_is_false_positive():
    # GT: [0,10], [20,30]. Ranked preds: [0,10] TP; [1,10] duplicate of the same GT (tIoU 0.9) FP;
    # [20,30] TP. precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> AP = 1/2*1 + 1/2*2/3 = 5/6
    gt = {"v": [[0, 10], [20, 30]]}
    preds = [("v", 0.9, 0, 10), ("v", 0.8, 1, 10), ("v", 0.7, 20, 30)]
    assert average_precision(gt, preds, [0.5]) == pytest.approx([5 / 6])
    # input order does not matter: predictions are ranked by score
    assert average_precision(gt, preds[::-1], [0.5]) == pytest.approx([5 / 6])


def test_ap_false_positive_first():
    # ranked FP, TP, TP with 2 GT: precision 0, 1/2, 2/3; recall 0, 1/2, 1
    # envelope 2/3 everywhere -> AP = 1/2*2/3 + 1/2*2/3 = 2/3
    gt = {"v": [[0, 10], [20, 30]]}
    preds = [("v", 0.95, 40, 50), ("v", 0.9, 0, 10), ("v", 0.8, 20, 30)]
    assert average_precision(gt, preds, [0.5]) == pytest.approx([2 / 3])


def test_ap_multiple_thresholds():
    # tIoU([0,8], [0,10]) = 0.8: TP at 0.5 and 0.7, FP at 0.9
    ap = average_precision({"v": [[0, 10]]}, [("v", 0.5, 0, 8)], [0.5, 0.7, 0.9])
    np.testing.assert_allclose(ap, [1.0, 1.0, 0.0])


def test_ap_matches_highest_tiou_ground_truth():
    # GT g1 [0,10], g2 [5,15]. p1 [5,14]: tIoU 1/3 with g1, 0.9 with g2 -> takes g2;
    # p2 [0,9]: 0.9 with g1 -> TP. Both TP: AP 1 (matching the first GT >= 0.3 would give 1/2)
    gt = {"v": [[0, 10], [5, 15]]}
    preds = [("v", 0.9, 5, 14), ("v", 0.8, 0, 9)]
    assert average_precision(gt, preds, [0.3]) == pytest.approx([1.0])


def test_ap_matches_across_videos_only_within_a_video():
    # the same segment in another video is a FP; recall counts both videos' GT
    gt = {"a": [[0, 10]], "b": [[0, 10]]}
    preds = [("a", 0.9, 0, 10), ("c", 0.8, 0, 10)]
    # TP, FP: precision 1, 1/2; recall 1/2, 1/2 -> AP = 1/2
    assert average_precision(gt, preds, [0.5]) == pytest.approx([0.5])


def test_ap_ties_keep_input_order():
    # equal scores: the stable sort keeps input order. FP then TP -> precision 0, 1/2, recall 0, 1
    gt = {"v": [[0, 10]]}
    assert average_precision(gt, [("v", 0.5, 50, 60), ("v", 0.5, 0, 10)], [0.5]) == pytest.approx([0.5])
    assert average_precision(gt, [("v", 0.5, 0, 10), ("v", 0.5, 50, 60)], [0.5]) == pytest.approx([1.0])


def test_ap_empty():
    assert average_precision({"v": [[0, 1]]}, [], [0.5, 0.7]).tolist() == [0.0, 0.0]
    assert average_precision({}, [("v", 1.0, 0, 1)], [0.5]).tolist() == [0.0]


def _reference_ap(gt: dict, preds: list, thr: float) -> float:
    """A literal loop transcription of the official algorithm (no ties in the inputs)."""
    npos = sum(len(g) for g in gt.values())
    preds = sorted(preds, key=lambda p: -p[1])
    locked = {vid: [False] * len(g) for vid, g in gt.items()}
    tp = []
    for vid, _, t0, t1 in preds:
        hit = 0
        if gt.get(vid):
            ious = []
            for g0, g1 in gt[vid]:
                inter = max(0.0, min(t1, g1) - max(t0, g0))
                ious.append(inter / ((t1 - t0) + (g1 - g0) - inter))
            for j in sorted(range(len(ious)), key=lambda j: -ious[j]):
                if ious[j] < thr:
                    break
                if not locked[vid][j]:
                    locked[vid][j] = True
                    hit = 1
                    break
        tp.append(hit)
    ctp = np.cumsum(tp)
    prec = ctp / np.arange(1, len(tp) + 1)
    rec = ctp / npos
    mprec = [0.0, *prec, 0.0]
    mrec = [0.0, *rec, 1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


@pytest.mark.parametrize("seed", range(6))
def test_ap_agrees_with_literal_reference(seed):
    rng = np.random.default_rng(seed)
    gt = {}
    for v in range(4):
        starts = rng.uniform(0, 90, size=rng.integers(0, 6))
        gt[f"v{v}"] = [(s, s + rng.uniform(1, 10)) for s in starts]
    preds = []
    for _ in range(60):
        vid = f"v{rng.integers(0, 5)}"  # v4 has no GT
        s = rng.uniform(0, 95)
        preds.append((vid, float(rng.uniform()), s, s + rng.uniform(0.5, 12)))
    thr = [0.1, 0.3, 0.5, 0.7, 0.9]
    ap = average_precision(gt, preds, thr)
    for i, t in enumerate(thr):
        assert ap[i] == pytest.approx(_reference_ap(gt, preds, t), abs=1e-12)


# ------------------------------------------------------------------ evaluate()


def test_evaluate_hand_computed_map():
    # class a: the 5/6 case above; class b: 1 GT and no predictions -> AP 0, counted in the mean
    ann = load_annotations(_gt({"v": [("a", 0, 10), ("a", 20, 30), ("b", 40, 50)]}))
    preds = {"v": [Segment("a", 0.9, 0, 10), Segment("a", 0.8, 1, 10), Segment("a", 0.7, 20, 30)]}
    res = evaluate(ann, preds, tiou_thresholds=[0.5])
    assert isinstance(res, EvalResult)
    assert res.per_class["a"] == pytest.approx((5 / 6,))
    assert res.per_class["b"] == (0.0,)
    assert res.mAP == pytest.approx((5 / 12,))
    assert res.average_mAP == pytest.approx(5 / 12)
    assert (res.num_videos, res.num_ground_truth, res.num_predictions) == (1, 3, 3)


def test_evaluate_ignores_unknown_videos_and_labels(caplog):
    ann = load_annotations(_gt({"v": [("a", 0, 10)], "w": []}))
    preds = {
        "v": [Segment("a", 0.9, 0, 10), Segment("zzz", 0.99, 0, 10)],  # unknown label: ignored
        "x": [Segment("a", 0.95, 0, 10)] * 3,  # video not in GT: ignored
        "w": [{"label": "a", "score": 0.5, "segment": [0, 10]}],  # GT video w/o instances: FP
    }
    with caplog.at_level(logging.WARNING):
        res = evaluate(ann, preds, tiou_thresholds=[0.5])
    # ranked: v TP (0.9), w FP (0.5) -> AP 1 (the FP comes after full recall)
    assert res.mAP == (1.0,)
    assert (res.num_ignored_label, res.num_ignored_video, res.num_predictions) == (1, 3, 2)
    text = caplog.text
    assert "1 predicted videos are not in the ground truth, their 3 predictions are ignored: 'x'" in text
    assert "labels that are not ground-truth classes: 'zzz'" in text


def test_evaluate_fp_in_gt_video_without_that_class():
    # ranked FP (video w, no instance of a) before the TP: precision 0, 1/2 -> AP 1/2
    ann = load_annotations(_gt({"v": [("a", 0, 10)], "w": [("b", 0, 10)]}))
    res = evaluate(ann, {"w": [Segment("a", 0.9, 0, 10)], "v": [Segment("a", 0.8, 0, 10)]}, [0.5])
    assert res.per_class == {"a": (0.5,), "b": (0.0,)}


def test_evaluate_empty_predictions_and_missing_videos(caplog):
    ann = load_annotations(_gt({"v": [("a", 0, 10)], "w": [("a", 5, 9)]}))
    res = evaluate(ann, {}, THUMOS_TIOU)
    assert res.mAP == (0.0,) * 5 and res.average_mAP == 0.0
    assert res.num_videos_without_predictions == 2
    # w without predictions: its instance is a false negative -> recall 1/2 -> AP 1/2
    res = evaluate(ann, {"v": [Segment("a", 0.9, 0, 10)]}, THUMOS_TIOU)
    assert res.mAP == pytest.approx((0.5,) * 5)
    assert "1 of 2 ground-truth videos have no predictions" in caplog.text


def test_evaluate_multiple_thresholds_and_defaults():
    ann = load_annotations(_gt({"v": [("a", 0, 10)]}))
    res = evaluate(ann, {"v": [Segment("a", 0.9, 0, 6.5)]})  # tIoU 0.65
    assert res.tiou == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert res.mAP == (1.0, 1.0, 1.0, 1.0, 0.0)
    assert res.average_mAP == pytest.approx(0.8)
    # np.arange's 0.6000000000000001 is rounded to 0.6: an exact tIoU of 0.6 matches
    res = evaluate(ann, {"v": [Segment("a", 0.9, 0, 6)]}, np.arange(0.3, 0.71, 0.1))
    assert res.tiou == THUMOS_TIOU and res.mAP[3] == 1.0
    assert len(ACTIVITYNET_TIOU) == 10 and ACTIVITYNET_TIOU[-1] == 0.95


def test_evaluate_subset_and_results_object():
    obj = _gt({"v": [("a", 0, 10)]})
    obj["database"]["t"] = {"subset": "train", "duration": 10.0, "annotations": [{"label": "a", "segment": [0, 5]}]}
    ann = load_annotations(obj)
    preds = make_results({"v": [Segment("a", 0.9, 0, 10)]})
    res = evaluate(ann, load_results(preds), [0.5], subset="test")
    assert res.mAP == (1.0,) and res.num_videos == 1
    assert evaluate(ann, load_results(preds), [0.5]).mAP == (0.5,)  # all videos: t is missed


def test_evaluate_errors():
    ann = load_annotations(_gt({"v": [], "w": []}))
    with pytest.raises(InputError, match="no action instances"):
        evaluate(ann, {})
    ann = load_annotations(_gt({"v": [("a", 0, 1)]}))
    with pytest.raises(InputError, match="thresholds"):
        evaluate(ann, {}, [0.0])


# ------------------------------------------------------------------ tal eval


def test_parse_tiou():
    assert parse_tiou("0.3:0.7:0.1") == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert parse_tiou("0.5:0.95:0.05") == ACTIVITYNET_TIOU
    assert parse_tiou("0.5, 0.75,0.95") == (0.5, 0.75, 0.95)
    assert parse_tiou("0.5") == (0.5,)
    assert parse_tiou("0.5:0.5:0.1") == (0.5,)
    for bad in ("0:1", "0.3:0.7:0", "0.7:0.3:0.1", "a,b", "0.5,1.5", "0", ""):
        with pytest.raises(click.BadParameter):
            parse_tiou(bad)


@pytest.fixture
def eval_files(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_gt({"v": [("a", 0, 10), ("a", 20, 30), ("b", 40, 50)]})))
    preds = {"v": [Segment("a", 0.9, 0, 10), Segment("a", 0.8, 1, 10), Segment("a", 0.7, 20, 30)]}
    pred = write_results(tmp_path / "pred.json", make_results(preds))
    return ann, pred


def test_cli_eval_json(eval_files):
    ann, pred = eval_files
    result = CliRunner().invoke(main, ["eval", str(pred), "--annotations", str(ann), "--tiou", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"tiou", "mAP", "average_mAP", "per_class"}
    assert out["tiou"] == [0.5]
    assert out["mAP"] == pytest.approx([5 / 12])
    assert out["per_class"]["a"] == pytest.approx([5 / 6]) and out["per_class"]["b"] == [0.0]


def test_cli_eval_table_and_folder(eval_files, tmp_path):
    ann, pred = eval_files
    result = CliRunner().invoke(main, ["eval", str(pred), "-a", str(ann), "--tiou", "0.3:0.7:0.1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("tIoU"))
    assert header.split() == ["tIoU", "0.30", "0.40", "0.50", "0.60", "0.70", "avg"]
    m_ap = next(line for line in lines if line.startswith("mAP"))
    assert m_ap.split()[1] == "41.67"  # 5/12 in percent
    assert any(line.startswith("a ") for line in lines) and any(line.startswith("b ") for line in lines)
    # a folder of per-video files works the same
    folder = tmp_path / "per_video"
    write_results(folder / "v.json", json.loads(pred.read_text()))
    result = CliRunner().invoke(main, ["eval", str(folder), "-a", str(ann), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mAP"] == pytest.approx([5 / 12] * 5)


def test_cli_eval_errors(eval_files, tmp_path):
    ann, pred = eval_files
    result = CliRunner().invoke(main, ["eval", str(pred), "-a", str(ann), "--tiou", "0:2:1"])
    assert result.exit_code == 2 and "thresholds must be in (0, 1]" in result.output
    result = CliRunner().invoke(main, ["eval", str(pred), "-a", str(ann), "--subset", "training"])
    assert result.exit_code == 1
    assert "tal: error:" in result.stderr and "no video in subset training" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {"v": [{"label": "a", "score": 1, "segment": [3, 1]}]}}))
    result = CliRunner().invoke(main, ["eval", str(bad), "-a", str(ann)])
    assert result.exit_code == 1
    assert "bad.json: results['v'][0].segment: expected [t0, t1] with t0 <= t1" in result.stderr
