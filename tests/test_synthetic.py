"""The synthetic feature benchmark generator."""

import itertools

import numpy as np

from tal_pipeline.featio import list_feature_files, load_features
from tal_pipeline.results import load_annotations
from tal_pipeline.synthetic import SyntheticConfig, make_benchmark, write_benchmark

SMALL = SyntheticConfig(num_classes=3, dim=8, num_train=4, num_test=2, min_steps=60, max_steps=90, seed=3)


def test_deterministic_from_seed():
    a, b = make_benchmark(SMALL), make_benchmark(SMALL)
    assert list(a.features) == list(b.features)
    assert all(np.array_equal(a.features[k], b.features[k]) for k in a.features)
    assert a.annotations == b.annotations
    c = make_benchmark(SyntheticConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not np.array_equal(a.features[next(iter(a.features))], c.features[next(iter(c.features))])


def test_shapes_split_and_instances():
    bench = make_benchmark(SMALL)
    assert len(bench.subset("training")) == 4 and len(bench.subset("testing")) == 2
    db = bench.annotations["database"]
    for vid, x in bench.features.items():
        meta = bench.metas[vid]
        assert x.dtype == np.float32 and x.shape == (meta.num_features, 8)
        assert 60 <= x.shape[0] <= 90 and meta.step == 0.4
        segs = sorted(a["segment"] for a in db[vid]["annotations"])
        assert 1 <= len(segs) <= SMALL.max_instances
        for (s0, e0), (s1, _) in itertools.pairwise(segs):
            assert e0 < s1  # instances do not overlap
        assert all(0 <= s < e <= db[vid]["duration"] for s, e in segs)
        assert {a["label"] for a in db[vid]["annotations"]} <= set(bench.class_names)


def test_instances_carry_signal():
    """Features inside instances differ from background (the task is learnable)."""
    bench = make_benchmark(SyntheticConfig(num_classes=2, dim=16, num_train=6, num_test=0, seed=1))
    inside, outside = [], []
    for vid, x in bench.features.items():
        meta = bench.metas[vid]
        t = meta.times()
        m = np.zeros(len(t), bool)
        for a in bench.annotations["database"][vid]["annotations"]:
            m |= (t >= a["segment"][0]) & (t <= a["segment"][1])
        inside.append(x[m])
        outside.append(x[~m])
    mu_in, mu_out = np.concatenate(inside).mean(0), np.concatenate(outside).mean(0)
    assert np.linalg.norm(mu_in - mu_out) > 0.3


def test_write_benchmark_round_trip(tmp_path):
    bench = make_benchmark(SMALL)
    feats, ann = write_benchmark(bench, tmp_path)
    files = list_feature_files(feats)
    assert [p.stem for p in files] == sorted(bench.features)
    arr, meta = load_features(files[0])
    assert np.array_equal(arr, bench.features[files[0].stem]) and meta.backbone == "synthetic"
    gt = load_annotations(ann)
    assert set(gt.videos) == set(bench.features) and gt.class_names == sorted(bench.class_names)
