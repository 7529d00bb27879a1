"""THUMOS14 readiness: ActionFormer's public layout (bare ``.npy (T, 2048)``, ``thumos14.json``,
feat_stride 4, num_frames 16, 30 fps) through ``tal train`` -> ``tal detect --features`` ->
``tal eval``, as the README's recipe runs it."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.synthetic import make_benchmark, regime
from tal_pipeline.cli import main

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

FPS, STRIDE, FRAMES = 30.0, 4, 16  # ActionFormer's thumos_i3d.yaml: default_fps, feat_stride, num_frames
SUBSETS = ("Validation", "Validation", "Validation", "Test")  # THUMOS14 trains on Validation


@pytest.fixture(scope="module")
def thumos(tmp_path_factory):
    """``thumos/i3d_features/<vid>.npy`` and ``thumos/annotations/thumos14.json``: 4 videos."""
    root = tmp_path_factory.mktemp("thumos")
    # strong, clean signal: this checks the plumbing and the time grid, not the head's accuracy
    cfg = regime("hard", num_classes=2, dim=2048, num_train=4, num_test=0, num_val=0, fps=FPS,
                 feature_stride=STRIDE, min_steps=300, max_steps=360, max_instances=3, steps_per_instance=0,
                 min_len=20.0, max_len=60.0, signal=1.5, noise_corr=0.5, pair_own=0.8, distractors=0, seed=5)
    bench = make_benchmark(cfg)
    feats = root / "i3d_features"
    feats.mkdir()
    database, names = {}, ["BaseballPitch", "BasketballDunk"]
    for k, (vid, x) in enumerate(bench.features.items()):
        subset = SUBSETS[k]
        new = f"video_{subset.lower()}_{k + 51:07d}"
        np.save(feats / f"{new}.npy", x)  # float32 (T, 2048), no meta beside it
        entry = bench.annotations["database"][vid]
        duration = (x.shape[0] * STRIDE + FRAMES) / FPS  # the video the features came from, s
        anns = [{"label": names[int(a["label"].split("_")[1])], "segment": a["segment"],
                 "segment(frames)": [round(a["segment"][0] * FPS, 1), round(a["segment"][1] * FPS, 1)],
                 "label_id": 7 + int(a["label"].split("_")[1])} for a in entry["annotations"]]
        database[new] = {"subset": subset, "duration": round(duration, 2), "fps": FPS, "annotations": anns}
    ann = root / "annotations" / "thumos14.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps({"version": "Thumos14-30fps", "database": database}))
    return feats, ann, bench


def test_thumos14_layout_trains_and_detects(thumos, tmp_path):
    feats, ann, bench = thumos
    # the generator's instance times assume its own grid; check they use ActionFormer's
    first = next(iter(bench.metas.values()))
    assert first.t0 == pytest.approx(0.5 * FRAMES / FPS) and first.step == pytest.approx(STRIDE / FPS)
    runner = CliRunner()
    model = tmp_path / "thumos14_head.pt"
    r = runner.invoke(main, ["train", str(feats), "--annotations", str(ann), "--subset", "Validation",
                             "--val-subset", "Test", "--select", "last", "--feature-stride", "4",
                             "--hidden-dim", "32", "--window", "128", "--epochs", "12", "--batch-size", "8", "--min-windows", "128",
                             "--lr", "3e-3", "-q", "-o", str(model)])
    assert r.exit_code == 0, r.output
    ck = torch.load(model, weights_only=True)
    assert ck["input_dim"] == 2048 and ck["features"]["backbone"] == "unknown"
    assert ck["head_config"]["embed_kernel"] == 3  # wide features get tal train's 3-tap embedding
    assert ck["head_config"]["input_dropout"] == 0.5  # ... and input-channel dropout
    assert ck["features"]["step"] == pytest.approx(4 / 30) and ck["features"]["t0"] == pytest.approx(8 / 30)
    assert ck["class_names"] == ["BaseballPitch", "BasketballDunk"] and ck["training"]["num_videos"] == 3
    out = tmp_path / "thumos14_test.json"
    r = runner.invoke(main, ["detect", str(feats), "--features", "--model", str(model), "--annotations", str(ann),
                             "--feature-stride", "4", "-q", "-o", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())["results"]
    db = json.loads(ann.read_text())["database"]
    assert set(res) == set(db)
    for vid, segs in res.items():
        assert segs and all(0 <= s["segment"][0] < s["segment"][1] <= db[vid]["duration"] + 1e-6 for s in segs)
    r = runner.invoke(main, ["eval", str(out), "--annotations", str(ann), "--subset", "Validation", "--json"])
    assert r.exit_code == 0, r.output
    # on its training videos the head must find the instances at the right times (a wrong grid,
    # e.g. 10 fps assumed or t0 dropped, misplaces every boundary by seconds)
    assert json.loads(r.stdout)["mAP"][2] >= 0.5, r.stdout
