"""The synthetic feature benchmark generator."""

import itertools

import numpy as np
import pytest

from benchmarks.synthetic import REGIMES, SyntheticConfig, make_benchmark, regime, write_benchmark
from tal_pipeline.featio import list_feature_files, load_features
from tal_pipeline.results import load_annotations

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


def test_validation_split_leaves_train_and_test_unchanged():
    without = make_benchmark(SMALL)
    with_val = make_benchmark(SyntheticConfig(**{**SMALL.__dict__, "num_val": 3}))
    assert len(with_val.subset("validation")) == 3 and not without.subset("validation")
    for vid in without.features:  # validation videos are generated last
        assert np.array_equal(without.features[vid], with_val.features[vid])
    assert not set(with_val.subset("validation")) & set(with_val.subset("testing"))


def test_pairs_regime_is_confusable_per_position_and_oscillates():
    """The hard regime's pairs share most of their direction; the odd class of a pair oscillates."""
    cfg = regime("hard", num_train=6, num_test=0, num_val=0, noise_corr=0.0, scene=0.0, distractors=0,
                 signal=3.0, cue=0.0, min_steps=300, max_steps=300)
    bench = make_benchmark(cfg)
    means: dict[int, list] = {}
    spreads: dict[int, list] = {}
    for vid, x in bench.features.items():
        t = bench.metas[vid].times()
        for a in bench.annotations["database"][vid]["annotations"]:
            inside = (t >= a["segment"][0] + 0.8) & (t <= a["segment"][1] - 0.8)
            if inside.sum() < 8:
                continue
            c = int(a["label"].split("_")[1])
            norms = np.linalg.norm(x[inside], axis=1)  # (n,)
            means.setdefault(c, []).append(x[inside].mean(0))
            spreads.setdefault(c, []).append(norms.std() / norms.mean())
    mu = {c: np.mean(v, 0) for c, v in means.items()}
    for c, m in mu.items():
        if c % 2 == 0 and c + 1 in mu:
            cos = m @ mu[c + 1] / np.linalg.norm(m) / np.linalg.norm(mu[c + 1])
            assert cos > 0.7  # pairs share most of their mean direction
            assert np.mean(spreads[c + 1]) > 3 * np.mean(spreads[c])  # only the odd one oscillates


def test_regimes_have_fixed_seeds_and_named_sizes():
    assert {"easy", "hard", "long"} <= set(REGIMES)
    hard = REGIMES["hard"]
    assert hard.dim == 128 and hard.step == 0.4 and hard.num_train == 80 and hard.num_test == 30
    assert hard.num_val > 0 and hard.kind == "pairs" and REGIMES["long"].dim == 2048
    assert len({r.seed for r in REGIMES.values()}) == len(REGIMES)
    with pytest.raises(KeyError):
        regime("nope")
    with pytest.raises(ValueError):
        SyntheticConfig(kind="pairs", num_classes=3)


def test_classes_per_video_limits_each_video_to_its_classes():
    """``classes_per_video`` draws a video's classes once; 0 leaves every instance free."""
    one = make_benchmark(regime("recur", num_train=12, num_test=0, num_val=0))
    labels = [{a["label"] for a in v["annotations"]} for v in one.annotations["database"].values()]
    assert all(len(s) == 1 for s in labels) and len(set().union(*labels)) > 2  # one each, not all the same
    free = make_benchmark(regime("hard", num_train=12, num_test=0, num_val=0))
    assert any(len({a["label"] for a in v["annotations"]}) > 1 for v in free.annotations["database"].values())
    with pytest.raises(ValueError):
        SyntheticConfig(kind="pairs", num_classes=6, classes_per_video=7)
    with pytest.raises(ValueError):
        SyntheticConfig(classes_per_video=1)  # the phases kind has no such option


def _inside_contrast(cfg) -> float:
    """rms per channel of (mean feature inside instances - mean outside): the per-position signal."""
    bench = make_benchmark(cfg)
    inside, outside = [], []
    for vid, x in bench.features.items():
        t = bench.metas[vid].times()
        m = np.zeros(len(t), bool)
        for a in bench.annotations["database"][vid]["annotations"]:
            m |= (t >= a["segment"][0]) & (t <= a["segment"][1])
        inside.append(x[m])
        outside.append(x[~m])
    diff = np.concatenate(inside).mean(0) - np.concatenate(outside).mean(0)
    return float(np.sqrt(np.mean(diff**2)))


def test_harder_regime_is_weaker_than_hard_on_the_same_layout():
    """'harder' keeps hard's kind and sizes but carries less signal per position (same seed and
    videos for both, so only the knobs differ) and trains on fewer videos; test and validation sizes
    stay, so its rows compare with hard's."""
    hard, harder = REGIMES["hard"], REGIMES["harder"]
    assert (harder.kind, harder.dim, harder.num_classes) == (hard.kind, hard.dim, hard.num_classes)
    assert harder.num_train < hard.num_train and (harder.num_test, harder.num_val) == (hard.num_test, hard.num_val)
    small = {"num_train": 8, "num_test": 0, "num_val": 0, "seed": 7}
    weak = _inside_contrast(regime("harder", **small))
    strong = _inside_contrast(regime("hard", **{**small, "max_len": harder.max_len, "min_len": harder.min_len}))
    assert weak < 0.9 * strong
