"""The global-motion descriptor as an input of the head (``tal train --motion-input``, issue #31):
its statistics, the checkpoint that carries them, and a head that can only find the actions
through the descriptor finds them with it and not without."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tal_pipeline.cli import main
from tal_pipeline.errors import InputError
from tal_pipeline.featio import FeatureMeta, load_features, save_features
from tal_pipeline.global_motion import COLUMNS, MotionInput

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, D, STEP = 64, 4, 0.4  # steps per video, feature channels, s per step
TX, ZOOM = COLUMNS.index("tx"), COLUMNS.index("zoom")


def _meta(vid: str, motion: np.ndarray | None) -> FeatureMeta:
    return FeatureMeta(video=f"{vid}.mp4", duration=T * STEP, fps=10.0, feature_stride=4, t0=0.0, step=STEP,
                       backbone="r3d_18_grid", weights="seeded:sha256:ab", streams=("flow",), dim=D,
                       num_features=T, extra={"flow_backend": "torch"}, motion=motion)


def _video(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """Noise features (nothing to learn from them) and a descriptor that holds the actions: a
    pan (tx 1.5 px) and a zoom (zoom 1.0 px), one each, 8-16 steps, in random places."""
    feats = rng.normal(0, 1, (T, D)).astype(np.float32)
    motion = rng.normal(0, 0.05, (T, len(COLUMNS))).astype(np.float32)
    motion[:, COLUMNS.index("inliers")] += 0.9
    segs = []
    starts = sorted(rng.choice(np.arange(2, T - 18, 20), size=2, replace=False))
    for (label, col, value), s in zip((("pan_left", TX, 1.5), ("zoom_in", ZOOM, 1.0)), rng.permutation(starts),
                                      strict=True):
        n = int(rng.integers(8, 17))
        motion[s : s + n, col] += value
        segs.append({"label": label, "segment": [s * STEP, (s + n) * STEP]})
    return feats, motion, segs


@pytest.fixture(scope="module")
def motion_set(tmp_path_factory):
    """16 training and 4 validation videos of :func:`_video`, as feature files + annotations."""
    root = tmp_path_factory.mktemp("motion_input")
    rng = np.random.default_rng(5)
    db = {}
    for i in range(20):
        vid = f"v{i:02d}"
        feats, motion, segs = _video(rng)
        save_features(root / "feats", vid, feats, _meta(vid, motion))
        db[vid] = {"subset": "training" if i < 16 else "validation", "duration": T * STEP, "annotations": segs}
    (root / "ann.json").write_text(json.dumps({"database": db}))
    return root


def _train(root, out, *extra):
    return CliRunner().invoke(main, ["train", str(root / "feats"), "--annotations", str(root / "ann.json"),
                                     "-o", str(out), "--epochs", "12", "--window", "64", "--batch-size", "4",
                                     "--min-windows", "128", "--seed", "0", "-q", *extra])


def _validation_map(root, model) -> float:
    """Average mAP (tIoU 0.3:0.7) of ``model`` on the 4 validation videos."""
    from tal_pipeline.annotations import load_annotations
    from tal_pipeline.evaluate import evaluate
    from tal_pipeline.pipeline import Detector

    det = Detector.load(model, build_extractor=False)
    gt = load_annotations(root / "ann.json").select("validation")
    preds = {}
    for vid in gt.videos:
        arr, meta = load_features(root / "feats" / f"{vid}.npy")
        preds[vid] = det.detect_features(arr, meta).segments
    return evaluate(gt, preds).average_mAP


def test_the_head_finds_through_the_descriptor_what_the_features_do_not_hold(motion_set, tmp_path):
    r = _train(motion_set, tmp_path / "with.pt", "--motion-input")
    assert r.exit_code == 0, r.output
    r = _train(motion_set, tmp_path / "without.pt")
    assert r.exit_code == 0, r.output
    ck = torch.load(tmp_path / "with.pt", weights_only=True)
    assert ck["input_dim"] == D + len(COLUMNS) and ck["features"]["motion_input"]["columns"] == list(COLUMNS)
    mi = MotionInput.from_json(ck["features"]["motion_input"])
    assert 0.85 < mi.mean[COLUMNS.index("inliers")] < 0.95  # the training videos' own statistics
    with_, without = _validation_map(motion_set, tmp_path / "with.pt"), _validation_map(motion_set, tmp_path / "without.pt")
    assert with_ > 0.6 and without < 0.3, (with_, without)


def test_features_without_the_descriptor_are_refused_by_name(motion_set, tmp_path):
    from tal_pipeline.pipeline import Detector

    r = _train(motion_set, tmp_path / "m.pt", "--motion-input", "--epochs", "1")
    assert r.exit_code == 0, r.output
    det = Detector.load(tmp_path / "m.pt", build_extractor=False)
    arr, meta = load_features(motion_set / "feats" / "v00.npy")
    assert det.meta.feature_dim == D  # what the features must have: the descriptor is added here
    from dataclasses import replace

    with pytest.raises(InputError, match=r"old\.mp4: features without their global motion"):
        det.detect_features(arr, replace(meta, motion=None), "old.mp4")
    with pytest.raises(InputError, match=f"features have {D + 1} channels, the model expects {D}"):
        det.detect_features(np.zeros((T, D + 1), np.float32), meta)


def test_training_on_features_without_the_descriptor_is_one_clear_error(motion_set, tmp_path):
    feats = tmp_path / "feats"
    for i in range(20):
        arr, meta = load_features(motion_set / "feats" / f"v{i:02d}.npy")
        save_features(feats, f"v{i:02d}", arr, meta if i else _meta("v00", None))
    (tmp_path / "ann.json").write_text((motion_set / "ann.json").read_text())
    r = _train(tmp_path, tmp_path / "m.pt", "--motion-input")
    assert r.exit_code != 0 and "carry no global motion" in r.output and "v00" in r.output
    assert not (tmp_path / "m.pt").exists()


def test_motion_input_statistics_and_their_json():
    rng = np.random.default_rng(0)
    rows = [rng.normal(2.0, 3.0, (50, len(COLUMNS))), rng.normal(2.0, 3.0, (30, len(COLUMNS)))]
    mi = MotionInput.fit(rows)
    out = mi.append(np.ones((50, D), np.float32), rows[0].astype(np.float32))
    assert out.shape == (50, D + len(COLUMNS)) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :D], 1.0)  # the features themselves are untouched
    z = np.concatenate([out[:, D:], mi.append(np.ones((30, D), np.float32), rows[1].astype(np.float32))[:, D:]])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    assert MotionInput.from_json(json.loads(json.dumps(mi.to_json()))) == mi
    with pytest.raises(ValueError, match="other global-motion columns"):
        MotionInput.from_json({**mi.to_json(), "columns": ["tx"]})
    with pytest.raises(ValueError, match="'std' must be"):
        MotionInput.from_json({**mi.to_json(), "std": [0.0] * len(COLUMNS)})
    with pytest.raises(ValueError, match=r"a\.mp4: global motion of shape"):
        mi.append(np.ones((50, D), np.float32), rows[1].astype(np.float32), "a.mp4")


def test_resuming_with_other_input_channels_is_one_clear_error(motion_set, tmp_path):
    from tal_pipeline.annotations import load_annotations
    from tal_pipeline.train import TrainConfig, load_feature_set, train, with_motion_input

    ann = load_annotations(motion_set / "ann.json").select("training")
    plain = load_feature_set(motion_set / "feats", ann)
    config = TrainConfig(epochs=2, window=64, val_every=0)
    train(with_motion_input(plain)[0], tmp_path / "m.pt", config, progress=False, stop_after=1)
    with pytest.raises(InputError, match=r"cannot resume: the run was started with 13 input channels, this one has 4"):
        train(plain, tmp_path / "m.pt", config, resume=True, progress=False)
