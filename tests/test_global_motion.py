"""Global-motion descriptor: known synthetic motion, per-step means, the camera-motion check,
and feature files with and without the descriptor."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tal_pipeline.errors import InputError
from tal_pipeline.global_motion import (
    COLUMNS,
    LabelMotion,
    MotionCheck,
    apply_check,
    block_centres,
    block_medians,
    fit_blocks,
    fit_fields,
    segment_motion,
    step_descriptor,
)
from tal_pipeline.postprocess import Segment

S = 112  # px: the demo's flow size
COL = {c: i for i, c in enumerate(COLUMNS)}


def _grid(h: int = S, w: int = S) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs - w / 2, ys - h / 2


def _field(u, v, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """(1, 2, S, S) float32 flow: the given components plus Gaussian noise (TV-L1's)."""
    rng = np.random.default_rng(seed)
    f = np.stack(np.broadcast_arrays(np.asarray(u, np.float32), np.asarray(v, np.float32)))
    return (f + rng.normal(0, noise, f.shape)).astype(np.float32)[None]


def test_pure_pan_is_a_translation():
    d = fit_fields(_field(np.full((S, S), -1.3), np.full((S, S), 0.4)))[0]
    assert d[COL["tx"]] == pytest.approx(-1.3, abs=0.02) and d[COL["ty"]] == pytest.approx(0.4, abs=0.02)
    for c in ("zoom", "rotation", "shear_a", "shear_b"):
        assert abs(d[COL[c]]) < 0.02, c
    assert d[COL["inliers"]] == 1.0 and d[COL["residual"]] < 0.05


@pytest.mark.parametrize("rate", [0.01, -0.006])
def test_zoom_is_the_radial_flow_at_the_edge(rate):
    xs, ys = _grid()
    d = fit_fields(_field(rate * xs, rate * ys))[0]
    assert d[COL["zoom"]] == pytest.approx(rate * S / 2, rel=0.05)
    assert abs(d[COL["tx"]]) < 0.02 and abs(d[COL["ty"]]) < 0.02 and abs(d[COL["rotation"]]) < 0.02


def test_rotation_is_the_curl():
    xs, ys = _grid()
    d = fit_fields(_field(-0.01 * ys, 0.01 * xs))[0]
    assert d[COL["rotation"]] == pytest.approx(0.56, rel=0.05) and abs(d[COL["zoom"]]) < 0.02


@pytest.mark.parametrize("camera", [(0.0, 0.0), (0.9, -0.5)])
def test_a_large_moving_square_is_an_outlier(camera):
    """A square over a third of the frame moving 3 px a pair: the fit stays the camera's."""
    square = np.zeros((S, S), np.float32)
    square[20:85, 15:80] = 3.0  # 65x65 px, 34 % of the frame
    d = fit_fields(_field(square + camera[0], np.full((S, S), camera[1])))[0]
    assert d[COL["tx"]] == pytest.approx(camera[0], abs=0.05)
    assert d[COL["ty"]] == pytest.approx(camera[1], abs=0.05)
    assert abs(d[COL["zoom"]]) < 0.05 and abs(d[COL["rotation"]]) < 0.05
    assert 0.5 < d[COL["inliers"]] < 0.8  # the square's blocks are not explained ...
    # the residual is the square's 3 px over its blocks, more of it in one quadrant than in the others
    assert d[COL["residual"]] == pytest.approx(3.0 * (1 - d[COL["inliers"]]), abs=0.2)
    assert d[COL["worst_quadrant"]] > 1.3 * d[COL["residual"]]


def test_fields_at_once_equal_one_by_one():
    xs, ys = _grid()
    fields = np.concatenate([_field(0.01 * xs, 0.01 * ys, seed=1), _field(np.ones((S, S)), 0 * xs, seed=2)])
    both = fit_fields(fields)
    assert both.shape == (2, len(COLUMNS)) and both.dtype == np.float32
    np.testing.assert_allclose(both[1], fit_fields(fields[1:])[0], atol=1e-5)
    assert fit_fields(np.zeros((0, 2, S, S), np.float32)).shape == (0, len(COLUMNS))
    with pytest.raises(ValueError, match="too small"):
        fit_fields(np.zeros((1, 2, 5, 5), np.float32))


MARGINS = [None, 0.0, 0.05, 0.1]  # fit_fields' zero_margin: None, today's median start alone


def _blockwise(u_blocks, v_blocks, seed: int = 0) -> np.ndarray:
    """(1, 2, S, S) flow constant on each of the 8x8 blocks fit_fields reads (13 px from 4 px in)."""
    f = np.zeros((2, S, S), np.float32)
    for c, b in ((0, u_blocks), (1, v_blocks)):
        f[c, 4:108, 4:108] = np.kron(np.asarray(b, np.float32), np.ones((13, 13), np.float32))
    return _field(f[0], f[1], seed=seed)


@pytest.mark.parametrize("margin", MARGINS)
def test_a_still_background_under_a_smaller_object_is_no_camera_motion(margin):
    """A still background on 55 % of the blocks, an object moving 2 px on the rest: both
    starts see the still majority (the median block is the background's)."""
    u = np.zeros((8, 8))
    u[:, 5:] = 2.0
    u[:5, 4] = 2.0  # 29 of 64 blocks
    d = fit_fields(_blockwise(u, 0 * u), margin)[0]
    assert abs(d[COL["tx"]]) < 0.05 and abs(d[COL["ty"]]) < 0.05 and abs(d[COL["zoom"]]) < 0.05
    assert d[COL["inliers"]] == pytest.approx(35 / 64)


# a still background on 30 blocks, an object's 34 moving 0.1-3.2 px (the weak ones: little texture)
SPREAD = np.array([
    [2.0, 0, 0, 0.3, 0.3, 1.1, 1.5, 3.0], [0.3, 0, 2.4, 0, 2.0, 0, 0.9, 0],
    [0.1, 0, 0, 3.0, 1.3, 0, 0, 0], [0, 2.8, 1.0, 2.0, 0, 0, 0, 2.6],
    [0, 0, 2.9, 1.2, 0.8, 0, 2.2, 2.1], [0, 0, 0.3, 0, 0, 2.0, 3.2, 0],
    [0, 0.9, 0, 0, 0, 2.1, 3.0, 1.3], [2.8, 3.0, 0.3, 0, 1.1, 1.0, 0, 0]])


def test_the_zero_start_keeps_the_still_background_where_the_median_start_drifts():
    """The median block (0.3 px) starts the fit off the still background and IRLS settles on a
    compromise that explains 12 % of the blocks; the zero start explains 56 % and is kept."""
    flow = _blockwise(SPREAD, 0 * SPREAD)
    a = fit_fields(flow, None)[0]
    assert a[COL["tx"]] > 0.6 and a[COL["inliers"]] < 0.2
    for margin in MARGINS[1:]:
        b = fit_fields(flow, margin)[0]
        assert abs(b[COL["tx"]]) < 0.15 and abs(b[COL["zoom"]]) < 0.05 and b[COL["inliers"]] > 0.5


@pytest.mark.parametrize("margin", MARGINS[1:])
def test_the_zero_start_does_not_win_when_the_whole_frame_moves(margin):
    xs, ys = _grid()
    pan = fit_fields(_field(np.full((S, S), -1.3), np.full((S, S), 0.4)), margin)[0]
    assert pan[COL["tx"]] == pytest.approx(-1.3, abs=0.02) and pan[COL["ty"]] == pytest.approx(0.4, abs=0.02)
    assert pan[COL["inliers"]] == 1.0
    for rate in (0.01, -0.006):
        zoom = fit_fields(_field(rate * xs, rate * ys), margin)[0]
        assert zoom[COL["zoom"]] == pytest.approx(rate * S / 2, rel=0.05)
        assert abs(zoom[COL["tx"]]) < 0.02 and abs(zoom[COL["ty"]]) < 0.02
    # a slow pan (under INLIER_PX a pair): the zero model explains every block too, yet both
    # starts converge to the pan, so keeping the zero start's model changes nothing
    slow = fit_fields(_field(np.full((S, S), 0.2), 0 * xs), margin)[0]
    assert slow[COL["tx"]] == pytest.approx(0.2, abs=0.02)
    # and the square of test_a_large_moving_square_is_an_outlier over a panning camera
    square = np.zeros((S, S), np.float32)
    square[20:85, 15:80] = 3.0
    d = fit_fields(_field(square + 0.9, np.full((S, S), -0.5)), margin)[0]
    assert d[COL["tx"]] == pytest.approx(0.9, abs=0.05) and d[COL["ty"]] == pytest.approx(-0.5, abs=0.05)


@pytest.mark.parametrize("margin", MARGINS)
def test_fit_blocks_equals_fit_fields(margin):
    """What benchmarks/camera_check.py caches (block medians) refits to fit_fields' rows."""
    xs, ys = _grid()
    fields = np.concatenate([_field(0.01 * xs, 0.01 * ys, seed=1), _blockwise(SPREAD, 0 * SPREAD)])
    values, centres = block_medians(fields)
    np.testing.assert_array_equal(centres, block_centres(S, S))
    np.testing.assert_array_equal(fit_blocks(values.astype(np.float32), centres, S, margin),
                                  fit_fields(fields, margin))


def test_step_descriptor_averages_the_fields_of_each_step():
    # 10 fps, steps of 0.4 s centred at 0, 0.4, ...: field k (time (k + 0.5) / 10 s) goes to
    # step round((k + 0.5) / 4): fields 0-1 -> 0, 2-5 -> 1, 6-9 -> 2
    rows = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, len(COLUMNS)), np.float32)
    out = step_descriptor(rows, 3, fps=10.0, t0=0.0, step=0.4)
    np.testing.assert_allclose(out[:, 0], [0.5, 3.5, 7.5])
    # more steps than fields reach: the nearest field's row
    out = step_descriptor(rows[:2], 3, fps=10.0, t0=0.0, step=0.4)
    np.testing.assert_allclose(out[:, 0], [0.5, 1.0, 1.0])


def test_segment_motion_is_the_median_inside():
    motion = np.zeros((10, len(COLUMNS)), np.float32)
    motion[:, 0] = [0, 0, 1, 1, 1, 9, 1, 0, 0, 0]  # one step of a cut inside
    times = 0.4 * np.arange(10)
    assert segment_motion(motion, times, 0.8, 2.4)[0] == 1.0
    assert segment_motion(motion, times, 1.85, 1.9)[0] == 9.0  # no centre inside: the nearest


DEMO_LIKE = {"columns": list(COLUMNS), "threshold": 0.2, "scale": 0.0,
             "labels": {"pan_left": {"column": "tx", "sign": 1}, "zoom_out": {"column": "zoom", "sign": -1}}}


def test_check_drops_or_scales_only_what_fails():
    check = MotionCheck.from_json(DEMO_LIKE, ["pan_left", "zoom_out", "other"])
    motion = np.zeros((20, len(COLUMNS)), np.float32)
    motion[:10, COL["tx"]] = 0.8  # the picture moves right 0 - 3.6 s: a pan left
    motion[10:, COL["zoom"]] = 0.1  # grows a little after: not a zoom out
    times = 0.4 * np.arange(20)
    segs = [Segment("pan_left", 0.9, 0.0, 3.6), Segment("pan_left", 0.8, 4.0, 7.6),
            Segment("zoom_out", 0.7, 4.0, 7.6), Segment("other", 0.6, 4.0, 7.6)]
    kept = apply_check(segs, motion, times, check)
    assert [(s.label, s.start) for s in kept] == [("pan_left", 0.0), ("other", 4.0)]
    scaled = apply_check(segs, motion, times, replace(check, scale=0.25))
    assert [round(s.score, 3) for s in scaled] == [0.9, 0.6, 0.2, 0.175]


@pytest.mark.parametrize("bad, why", [
    ({"labels": {"nope": {"column": "tx", "sign": 1}}, "threshold": 0.2}, "does not have"),
    ({"labels": {"pan_left": {"column": "tz", "sign": 1}}, "threshold": 0.2}, "column"),
    ({"labels": {"pan_left": {"column": "tx", "sign": 2}}, "threshold": 0.2}, "sign"),
    ({"labels": {}, "threshold": float("nan")}, "finite"),
    ({"labels": {}, "threshold": 0.2, "scale": 2}, "scale"),
    ({"labels": {}, "threshold": 0.2, "columns": ["tx"]}, "other global-motion columns"),
    ([1, 2], "dict"),
])
def test_check_refuses_malformed_data(bad, why):
    with pytest.raises((TypeError, ValueError), match=why):
        MotionCheck.from_json(bad, ["pan_left"])


# ------------------------------------------------------------------- checkpoints and feature files


def test_demo_checkpoint_declares_the_check_and_its_head_is_unchanged():
    from tal_pipeline.checkpoint import load_head
    from tal_pipeline.pipeline import demo_checkpoint_path

    _, meta = load_head(demo_checkpoint_path())
    check = meta.motion_check
    assert check is not None and set(check.labels) == set(meta.class_names)
    # the camera's direction read from the picture's motion (demo/camera.py's table)
    assert check.labels["pan_left"] == LabelMotion("tx", 1) and check.labels["tilt_down"] == LabelMotion("ty", -1)
    assert check.labels["zoom_in"] == LabelMotion("zoom", 1) and 0 < check.threshold < 0.68
    # a detection that fails it, even at score 1, is no longer a detection in the console summary
    from tal_pipeline.writers import SUBTITLE_MIN_SCORE

    assert check.scale < SUBTITLE_MIN_SCORE


def test_malformed_check_in_a_checkpoint_is_one_clear_error(tmp_path):
    from tal_pipeline.checkpoint import read_checkpoint, save_checkpoint
    from tal_pipeline.pipeline import demo_checkpoint_path

    ckpt = torch.load(demo_checkpoint_path(), weights_only=True)
    ckpt["motion_check"] = {"labels": {"pan_left": {"column": "tx", "sign": 0}}, "threshold": 0.2}
    path = save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(InputError, match=r"bad\.pt: checkpoint motion_check label 'pan_left'"):
        read_checkpoint(path)


def _meta(t: int, motion=None):
    from tal_pipeline.featio import FeatureMeta

    return FeatureMeta(video="v.mp4", duration=0.4 * t, fps=10.0, feature_stride=4, t0=0.0, step=0.4,
                       backbone="r3d_18", weights="seeded:sha256:ab", streams=("flow",), dim=3,
                       num_features=t, extra={"flow_backend": "torch"}, motion=motion)


def test_feature_files_keep_the_descriptor_and_old_ones_load(tmp_path):
    from tal_pipeline.featio import load_features, save_features

    rng = np.random.default_rng(0)
    motion = rng.normal(0, 1, (5, len(COLUMNS))).astype(np.float32)
    npy, js = save_features(tmp_path, "new", np.ones((5, 3), np.float32), _meta(5, motion))
    _, meta = load_features(npy)
    np.testing.assert_allclose(meta.motion, motion, atol=1e-4)
    assert "global_motion" not in meta.extra and "motion" not in json.loads(js.read_text())
    # a file from before the descriptor: loads, without it
    npy, js = save_features(tmp_path, "old", np.ones((5, 3), np.float32), _meta(5))
    d = json.loads(js.read_text())
    assert "global_motion" not in d
    assert load_features(npy)[1].motion is None
    # another version's columns: not read; malformed values: one clear error naming the file
    d["global_motion"] = {"columns": ["a", "b"], "values": [[0, 0]] * 5}
    js.write_text(json.dumps(d))
    assert load_features(npy)[1].motion is None
    d["global_motion"] = {"columns": list(COLUMNS), "values": [[0.0] * len(COLUMNS)] * 4}
    js.write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"old\.json: feature meta 'global_motion' must be 5 rows"):
        load_features(npy)


# ------------------------------------------------------------ real flow through the real check


def _photo(w: int, h: int) -> np.ndarray:
    import cv2

    from tal_pipeline.demo import footage

    src = next(s for s in footage.find_sources("heldout") if s.kind == "photo")
    return cv2.resize(footage.load_photo(src.path), (w, h), interpolation=cv2.INTER_AREA)


def _object_video(n: int = 40) -> np.ndarray:
    """A fixed camera on a still photo, a textured square a third of the frame wide crossing it
    left to right at 2.5 px a frame (what a naive reading calls a pan left): uint8 (n, S, S, 3)."""
    bg = _photo(S, S)
    patch = np.ascontiguousarray(_photo(200, 200)[60:100, 40:80][::-1])  # 40x40 px, other texture
    frames = np.repeat(bg[None], n, axis=0)
    for k in range(n):
        x = round(2.5 * k) - 10
        x0, x1 = max(x, 0), min(x + 40, S)
        if x1 > x0:
            frames[k, 36:76, x0:x1] = patch[:, x0 - x : x1 - x]
    return frames


def _pan_video(n: int = 40) -> np.ndarray:
    """The camera panning left over the photo at 1 px a frame (the picture moves right)."""
    wide = _photo(S + n + 2, S)
    return np.stack([wide[:, n - k : n - k + S] for k in range(n)])


@pytest.fixture(scope="module")
def demo_detector():
    from tal_pipeline.pipeline import Detector

    return Detector.load("demo", build_extractor=False)


def test_real_flow_check_drops_an_object_and_keeps_a_pan(demo_detector, one_torch_thread):
    """TV-L1 and the extractor's descriptor on 4 s at 10 fps, then the demo checkpoint's own
    check on a pan_left detection over each clip: the object's is demoted (or dropped), the
    pan's kept."""
    from tal_pipeline.features import FeatureExtractor

    fx = FeatureExtractor(backbone="r3d_18", weights="seeded", streams=("flow",), progress=False)
    seg = [Segment("pan_left", 0.9, 0.4, 3.6)]
    obj = fx.extract_frames(_object_video())
    pan = fx.extract_frames(_pan_video())
    assert obj.meta.motion.shape == (len(obj), len(COLUMNS)) and obj.meta.motion.dtype == np.float32
    tx = COL["tx"]
    assert np.median(pan.meta.motion[1:-1, tx]) == pytest.approx(1.0, abs=0.15)
    assert abs(np.median(obj.meta.motion[1:-1, tx])) < 0.1
    check = demo_detector.meta.motion_check
    demoted = [replace(seg[0], score=0.9 * check.scale)] if check.scale else []
    assert demo_detector._motion_check(seg, obj.meta, "object") == demoted
    assert demo_detector._motion_check(seg, pan.meta, "pan") == seg
    # check off, or features without their descriptor: untouched
    off = _detector_with(demo_detector, motion_check=False)
    assert off._motion_check(seg, obj.meta, "object") == seg
    assert demo_detector._motion_check(seg, replace(obj.meta, motion=None), "old") == seg


def _detector_with(det, **post):
    from tal_pipeline.pipeline import Detector

    return Detector(det.model, det.meta, None, replace(det.postprocess, **post), det.device)


def test_cli_no_motion_check_keeps_what_the_check_demotes(tmp_path, one_torch_thread):
    """`tal detect --features` on the demo's features of a fixed camera with a crossing object:
    with the check every detection's score is the unchecked one x the check's scale; with
    --no-motion-check they are the head's own, and the provenance says which ran."""
    from click.testing import CliRunner

    from tal_pipeline.cli import main
    from tal_pipeline.featio import save_features
    from tal_pipeline.pipeline import Detector

    det = Detector.load("demo")
    feats = det.extractor.extract_frames(_object_video(60))
    assert feats.meta.motion is not None
    npy, _ = save_features(tmp_path / "feat", "object", np.asarray(feats.array), feats.meta)
    runs = {}
    for name, extra in (("on", []), ("off", ["--no-motion-check"])):
        out = tmp_path / f"{name}.json"
        res = CliRunner().invoke(main, ["detect", "--features", str(npy), "-o", str(out), "--no-progress", *extra])
        assert res.exit_code == 0, res.output
        runs[name] = json.loads(out.read_text())
    on, off = (runs[k]["results"]["object"] for k in ("on", "off"))
    assert off and max(s["score"] for s in off) > 0.01
    # every kept score is the head's own or its demoted one, and none is below --min-score's 0.001
    scale = det.meta.motion_check.scale
    own = np.array([s["score"] for s in off])
    assert all(s["score"] >= 0.001 for s in on)
    assert all(np.isclose(own, s["score"], atol=2e-4).any() or np.isclose(own * scale, s["score"], atol=2e-4).any()
               for s in on)
    assert max(s["score"] for s in on) < max(own)  # the best detection of an object is demoted
    prov = {k: runs[k]["external_data"]["provenance"] for k in runs}
    assert prov["on"] != prov["off"]


def test_field_hook_sees_the_fields_the_descriptor_is_fitted_to(one_torch_thread):
    """FeatureExtractor.field_hook (camera_check.py's cache) gets every raw flow field once, in
    order, across chunks; the descriptor refitted from their block medians is the stored one."""
    from tal_pipeline.features import FeatureExtractor

    size = 32
    fx = FeatureExtractor(weights="seeded", streams=("flow",), size=size, chunk_frames=8, decode_chunk=8,
                          progress=False)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, size, size, 3), dtype=np.uint8)
    flow = rng.normal(0, 2, (20, 2, size, size)).astype(np.float32)
    seen: list[np.ndarray] = []
    fx.field_hook = lambda f: seen.append(np.array(f))
    feats = fx.extract_frames(frames, flow)
    np.testing.assert_array_equal(np.concatenate(seen), flow)
    values, centres = block_medians(np.concatenate(seen))
    m = feats.meta
    again = step_descriptor(fit_blocks(values, centres, size), m.num_features, m.fps, m.t0, m.step)
    np.testing.assert_allclose(again, m.motion, atol=1e-4)  # IRLS stops per batch of fields
    fx.field_hook = None
    np.testing.assert_array_equal(fx.extract_frames(frames, flow).array, feats.array)
