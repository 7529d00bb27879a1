"""End to end: raw video -> demo detector -> JSON segments, and the checks around it."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tal_pipeline import Detector
from tal_pipeline.backbone import SPECS
from tal_pipeline.checkpoint import read_checkpoint, save_checkpoint
from tal_pipeline.cli import main
from tal_pipeline.demo import camera, footage
from tal_pipeline.errors import InputError
from tal_pipeline.pipeline import demo_checkpoint_path
from tal_pipeline.weights import SEEDED_SHA256

HELDOUT = footage.find_sources("heldout")
OPTS = camera.CameraOptions(width=192, height=144)


def _tiou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def pan_clip(tmp_path_factory):
    """A held-out-footage clip: 2 s static, a 5 s pan_left, 2 s static (known ground truth)."""
    out = tmp_path_factory.mktemp("clip")
    plan = camera.plan_video("pan_clip", (99, 1), HELDOUT, OPTS, subset="testing",
                             script=[("static", 2.5), ("pan_left", 5.0), ("static", 2.5)], fps=25)
    path = camera.write_video(plan, out / "pan_clip.mp4", HELDOUT)
    (gt,) = plan.annotations()
    return path, gt


@pytest.fixture(scope="module")
def detector():
    return Detector.load("demo")


def test_demo_finds_a_known_pan(pan_clip, detector):
    path, gt = pan_clip
    segments = detector.detect(path)
    assert segments, "no detection at all"
    top = segments[0]
    assert top.label == gt["label"] == "pan_left"
    assert _tiou((top.start, top.end), gt["segment"]) >= 0.5, (top, gt)
    assert all(0 <= s.start < s.end <= 10.0 + 1e-6 and 0 <= s.score <= 1 for s in segments)
    assert [s.score for s in segments] == sorted((s.score for s in segments), reverse=True)


def test_cli_video_and_features_paths_agree(pan_clip, tmp_path):
    path, gt = pan_clip
    runner = CliRunner()
    out = tmp_path / "out.json"
    r = runner.invoke(main, ["detect", str(path), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "pan_left" in r.stdout  # the single-video summary
    res = json.loads(out.read_text())
    assert set(res) >= {"version", "results", "external_data", "videos"}
    assert res["videos"]["pan_clip"]["duration"] == pytest.approx(10.0, abs=0.05)
    ckpt = read_checkpoint(demo_checkpoint_path())
    assert res["external_data"]["backbone"] == ckpt["features"]["backbone"]
    assert not (tmp_path / "out.json.parts").exists()
    # the same features through `tal extract` + `tal detect --features`
    feats = tmp_path / "feats"
    streams = ",".join(ckpt["features"].get("streams") or ["rgb", "flow"])
    r = runner.invoke(main, ["extract", str(path), "-o", str(feats), "--weights", "seeded",
                             "--backbone", ckpt["features"]["backbone"], "--streams", streams, "--flow", ckpt["features"].get("flow_backend", "torch"),
                             "--no-progress"])
    assert r.exit_code == 0, r.output
    out2 = tmp_path / "out2.json"
    r = runner.invoke(main, ["detect", str(feats), "--features", "-o", str(out2), "-q"])
    assert r.exit_code == 0, r.output
    a = res["results"]["pan_clip"]
    b = json.loads(out2.read_text())["results"]["pan_clip"]
    assert [d["label"] for d in a] == [d["label"] for d in b]
    np.testing.assert_allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-4)
    np.testing.assert_allclose([d["segment"] for d in a], [d["segment"] for d in b], atol=1e-3)
    # and `tal eval` reads the output against the clip's ground truth
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps({"database": {"pan_clip": {
        "subset": "testing", "duration": 10.0, "annotations": [gt]}}}))
    r = runner.invoke(main, ["eval", str(out), "--annotations", str(ann), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mAP"][2] == pytest.approx(1.0)  # tIoU 0.5


def test_batch_with_a_corrupt_file_goes_on(pan_clip, tmp_path):
    path, _ = pan_clip
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(path, videos / "good.mp4")
    (videos / "bad.mp4").write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "res"
    r = CliRunner().invoke(main, ["detect", str(videos), "-o", str(out) + "/", "-q"])
    assert r.exit_code == 1
    assert "bad.mp4" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["failures.txt", "good.json"]
    assert "bad.mp4" in (out / "failures.txt").read_text()
    # resume: the good video is not redone, the bad one fails again
    r = CliRunner().invoke(main, ["detect", str(videos), "-o", str(out) + "/", "-q"])
    assert r.exit_code == 1 and "1 skipped" in r.output


def test_checkpoint_for_another_backbone_is_refused(tmp_path):
    ckpt = read_checkpoint(demo_checkpoint_path())
    ckpt["features"] = dict(ckpt["features"], weights="seeded:sha256:" + "0" * 64)
    bad = save_checkpoint(tmp_path / "other.pt", ckpt)
    with pytest.raises(InputError, match="backbone mismatch"):
        Detector.load(bad)
    ckpt["features"] = dict(ckpt["features"], backbone="i3d_r50")
    ckpt["input_dim"] = ckpt["input_dim"]
    bad = save_checkpoint(tmp_path / "other2.pt", ckpt)
    with pytest.raises(Exception, match="i3d_r50|pytorchvideo|mismatch"):
        Detector.load(bad)


def _demo_features(**changes):
    """Features as the demo model's own extractor labels them (flow stream, torch TV-L1, this
    tal's flow version), with ``changes`` to the meta; the array is zeros ``(12, D)``."""
    from dataclasses import replace

    from tal_pipeline.featio import FeatureMeta
    from tal_pipeline.flow import FLOW_VERSIONS
    from tal_pipeline.global_motion import COLUMNS

    f = read_checkpoint(demo_checkpoint_path())["features"]
    dim = f["dim"] - (len(COLUMNS) if "motion_input" in f else 0)  # the features' own width
    extra = {"flow_backend": "torch", "flow_version": FLOW_VERSIONS["torch"], **changes.pop("extra", {})}
    meta = FeatureMeta(video="v.mp4", duration=4.8, fps=10.0, feature_stride=4, t0=0.0, step=0.4,
                       backbone=f["backbone"], weights=f["weights"], streams=("flow",), dim=dim,
                       num_features=12, extra=extra, motion=np.zeros((12, len(COLUMNS)), np.float32))
    return np.zeros((12, dim), np.float32), replace(meta, **changes)


def test_features_of_another_stream_or_flow_backend_are_refused(detector):
    """Same backbone, weights and width: only the recorded streams and flow backend tell the
    features apart from what the demo model (flow stream, torch TV-L1) reads."""
    array, ok = _demo_features()
    detector.detect_features(array, ok)  # its own kind: accepted
    _, rgb = _demo_features(streams=("rgb",), extra={"flow_backend": None, "flow_version": None})
    with pytest.raises(InputError, match=r"^v.npy: features of the rgb stream, but the model was "
                                         r"trained on flow; extract them with --streams flow$"):
        detector.detect_features(array, rgb, video="v.npy")
    _, both = _demo_features(streams=("rgb", "flow"))
    with pytest.raises(InputError, match="rgb\\+flow streams, but the model was trained on flow"):
        detector.detect_features(array, both)
    _, opencv = _demo_features(extra={"flow_backend": "opencv", "flow_version": 1})
    with pytest.raises(InputError, match="flow from the opencv TV-L1, .* --flow torch$"):
        detector.detect_features(array, opencv)
    # meta-less features (streams unknown) are not refused for what they cannot say
    _, foreign = _demo_features(streams=(), backbone="unknown", weights="unknown", extra={"flow_backend": None})
    detector.detect_features(array, foreign)


def test_rgb_features_of_the_demo_backbone_fail_in_tal_detect(tmp_path):
    """The issue's case end to end: `tal extract --streams rgb` with the demo model's backbone
    and weights (the same width as its flow features), then `tal detect --features`: that
    input fails with one line, exit status 1, no results for it."""
    from videogen import write_video

    frames = [np.full((64, 64, 3), 40 + 10 * k, np.uint8) for k in range(8)]
    write_video(tmp_path / "v.mp4", frames, fps=10, codec="mpeg4")
    backbone = read_checkpoint(demo_checkpoint_path())["features"]["backbone"]
    r = CliRunner().invoke(main, ["extract", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "f"), "--weights",
                                  "seeded", "--backbone", backbone, "--streams", "rgb", "--size", "32",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["detect", str(tmp_path / "f" / "v.npy"), "--features", "-o",
                                  str(tmp_path / "x.json"), "--no-progress"])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("tal: ")]
    assert lines == [(f"tal: {tmp_path / 'f' / 'v.npy'}: features of the rgb stream, but the model was "
                     "trained on flow; extract them with --streams flow")], r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "x.json").exists()


def test_another_flow_version_is_named_in_one_warning(tmp_path, caplog):
    """A model trained on the torch TV-L1 before its per-warp gain (flow version 1) still loads
    and reads this tal's features, with one warning naming the versions (re-extracting cannot
    give version 1); the shipped demo model gets none."""
    from tal_pipeline.flow import FLOW_VERSIONS

    ckpt = read_checkpoint(demo_checkpoint_path())
    assert ckpt["features"]["flow_version"] == FLOW_VERSIONS["torch"]
    array, meta = _demo_features()
    with caplog.at_level("WARNING", logger="tal_pipeline.checkpoint"):
        Detector.load(demo_checkpoint_path(), build_extractor=False).detect_features(array, meta)
    assert not caplog.records
    ckpt["features"] = dict(ckpt["features"], flow_version=1)
    old = save_checkpoint(tmp_path / "old_flow.pt", ckpt)
    with caplog.at_level("WARNING", logger="tal_pipeline.checkpoint"):
        det = Detector.load(old, build_extractor=False)
        for _ in range(3):
            det.detect_features(array, meta)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "flow version 1" in warned[0] and "version 2" in warned[0], warned


def test_demo_checkpoint_is_small_and_plain():
    path = demo_checkpoint_path()
    assert path.stat().st_size < 8 * 2**20
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["class_names"] == list(camera.CLASSES) or set(ckpt["class_names"]) == set(camera.CLASSES)
    spec = SPECS[ckpt["features"]["backbone"]]  # one of ours: tal detect builds its extractor
    motion = len(ckpt["features"]["motion_input"]["columns"]) if "motion_input" in ckpt["features"] else 0
    assert ckpt["input_dim"] == spec.dim * len(ckpt["features"]["streams"]) + motion
    assert ckpt["features"]["weights"] == f"seeded:sha256:{SEEDED_SHA256[spec.weights_of]}"
    assert math.isclose(ckpt["features"]["step"], 0.4)
