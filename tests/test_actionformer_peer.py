"""The ActionFormer peer script's own parts: export layout, config adaptation, result conversion,
patches. ActionFormer itself is not run here (it needs its checkout and minutes of training)."""

import json

import numpy as np
import pytest

from benchmarks.actionformer_peer import (
    PATCHES,
    WINDOW_DIVISOR,
    PeerOptions,
    actionformer_config,
    apply_patches,
    convert_results,
    export_regime,
    max_seq_len_for,
)
from benchmarks.head_harness import score, splits
from benchmarks.synthetic import make_benchmark, regime

SMALL = regime("hard", num_train=4, num_test=3, num_val=2, min_steps=120, max_steps=200, seed=5)

# the part of configs/thumos_i3d.yaml that actionformer_config reads or must leave alone
RECIPE = {
    "dataset_name": "thumos", "train_split": ["validation"], "val_split": ["test"],
    "dataset": {"json_file": "x", "feat_folder": "y", "file_prefix": None, "file_ext": ".npy", "num_classes": 20,
                "input_dim": 2048, "feat_stride": 4, "num_frames": 16, "trunc_thresh": 0.5,
                "crop_ratio": [0.9, 1.0], "max_seq_len": 2304},
    "model": {"fpn_type": "identity", "max_buffer_len_factor": 6.0, "n_mha_win_size": 19},
    "opt": {"learning_rate": 0.0001, "epochs": 30, "weight_decay": 0.05},
    "loader": {"batch_size": 2},
    "train_cfg": {"init_loss_norm": 100, "clip_grad_l2norm": 1.0},
    "test_cfg": {"voting_thresh": 0.7, "pre_nms_topk": 2000, "max_seg_num": 200, "min_score": 0.001},
    "output_folder": "./ckpt/",
}


def test_export_layout_and_grid(tmp_path):
    """Every video's .npy is its (T, D) features; ActionFormer's seconds-to-grid formula with the
    exported num_frames puts each instance where our steps say it is."""
    bench = make_benchmark(SMALL)
    ex = export_regime(bench, tmp_path)
    assert sorted(p.stem for p in ex.feat_folder.glob("*.npy")) == sorted(bench.features)
    vid = next(iter(bench.features))
    arr = np.load(ex.feat_folder / f"{vid}.npy")
    assert arr.dtype == np.float32 and np.array_equal(arr, bench.features[vid])
    db = json.loads(ex.json_file.read_text())["database"]
    assert {v["subset"] for v in db.values()} == {"training", "testing", "validation"}
    assert ex.num_frames == 16 and ex.max_train_len == max(bench.features[v].shape[0] for v in bench.subset("training"))
    sp = splits(bench)
    by_id = {v.video_id: v for s in sp.values() for v in s.data.videos}
    fps, stride = bench.config.fps, bench.config.feature_stride
    for vid, entry in db.items():
        for a, (c, s, e) in zip(entry["annotations"], by_id[vid].instances):
            assert ex.class_names[a["label_id"]] == a["label"] and int(c) == a["label_id"]
            grid = np.asarray(a["segment"]) * fps / stride - 0.5 * ex.num_frames / stride  # its loader
            assert np.allclose(grid, [s, e], atol=0.01)  # 3-decimal seconds in the JSON


def test_config_changes_only_what_the_data_forces(tmp_path):
    bench = make_benchmark(SMALL)
    ex = export_regime(bench, tmp_path)
    cfg = actionformer_config(RECIPE, ex, 128, 10.0, 4, PeerOptions(seed=2), tmp_path / "ckpt")
    ds = cfg["dataset"]
    assert (ds["input_dim"], ds["num_classes"], ds["default_fps"], ds["feat_stride"], ds["num_frames"]) == (128, 6, 10.0, 4, 16)
    assert ds["max_seq_len"] % WINDOW_DIVISOR == 0 and cfg["devices"] == ["cpu"]
    assert cfg["train_split"] == ["training"] and cfg["val_split"] == ["testing"]
    assert cfg["init_rand_seed"] == 1234567891 + 2
    # the recipe itself is untouched: optimiser, crop, model, post-processing, and the input dict
    for key in ("opt", "model", "train_cfg", "test_cfg"):
        assert cfg[key] == RECIPE[key]
    assert (ds["crop_ratio"], ds["trunc_thresh"]) == ([0.9, 1.0], 0.5) and RECIPE["dataset"]["input_dim"] == 2048
    short = actionformer_config(RECIPE, ex, 128, 10.0, 4, PeerOptions(epochs=1, warmup_epochs=1), tmp_path)
    assert (short["opt"]["epochs"], short["opt"]["warmup_epochs"]) == (1, 1)


def test_max_seq_len_is_a_multiple_of_the_window_divisor():
    assert max_seq_len_for(100) == WINDOW_DIVISOR  # never shorter than one divisor
    assert max_seq_len_for(600) == 576 and max_seq_len_for(1200) == 1152
    assert max_seq_len_for(10_000) == 2304  # the recipe's own length caps it


def test_convert_results_round_trip_scores_ground_truth_perfectly(tmp_path):
    """Ground truth written as ActionFormer's saved predictions converts back to segments that our
    evaluator scores 100 %; a shifted label scores less (the label mapping matters)."""
    bench = make_benchmark(SMALL)
    ex = export_regime(bench, tmp_path)
    test = splits(bench)["testing"]
    db = json.loads(ex.json_file.read_text())["database"]
    rows = [(vid, a["segment"][0], a["segment"][1], a["label_id"]) for vid in bench.subset("testing")
            for a in db[vid]["annotations"]]
    raw = {"video-id": [r[0] for r in rows], "t-start": np.array([r[1] for r in rows], np.float32),
           "t-end": np.array([r[2] for r in rows], np.float32), "label": np.array([r[3] for r in rows]),
           "score": np.linspace(0.9, 0.5, len(rows)).astype(np.float32)}
    preds = convert_results(raw, ex.class_names)
    assert set(preds) == set(bench.subset("testing")) and sum(map(len, preds.values())) == len(rows)
    assert score(test, preds)["average_mAP"] == pytest.approx(1.0)
    wrong = convert_results({**raw, "label": (raw["label"] + 1) % len(ex.class_names)}, ex.class_names)
    assert score(test, wrong)["average_mAP"] < 0.5
    with pytest.raises(ValueError):
        convert_results({**raw, "score": raw["score"][:-1]}, ex.class_names)


def test_patches_apply_once_and_refuse_another_version(tmp_path):
    for rel, old, _ in PATCHES:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        prev = path.read_text() if path.exists() else "import os\n"
        path.write_text(prev + f"    {old}\n")
    apply_patches(tmp_path)
    for rel, old, new in PATCHES:
        text = (tmp_path / rel).read_text()
        assert new in text and (old not in text or old in new)
    (tmp_path / "eval.py").write_text("nothing to patch\n")
    with pytest.raises(RuntimeError, match="patch target not found"):
        apply_patches(tmp_path)
