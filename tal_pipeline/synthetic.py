"""Synthetic feature benchmark: feature sequences with planted action instances.

Deterministic from a seed (numpy PCG64), no video needed. Each video is a ``(T, D)`` float32
sequence at ``step`` seconds per position (0.4 s, as our backbone gives) built from:

* **correlated noise**: AR(1) in time (coefficient ``noise_corr`` per step) plus a per-video
  constant "scene" offset;
* **class-specific temporal patterns**: class ``c`` has three prototypes (onset, middle,
  offset phase); inside an instance the feature moves from the first through the second to
  the third (triangular weights over the instance's relative time). Prototypes share a common
  component across classes (``class_overlap``), so classes are confusable;
* **onset/offset cues**: two shared vectors that peak (Gaussian, ~1 step wide) at each
  instance's start and end;
* **distractors** (background): segments that hold one class's *middle* prototype without the
  temporal progression or the cues, and lone cue spikes.

Instances per video: ``1..max_instances`` of ``min_len..max_len`` steps, not overlapping.
Annotation times are ``t0 + s * step`` (fractional ``s``), the centre-time convention of the
feature files. The split: ``num_train`` videos in subset ``training``, ``num_test`` in
``testing``.

API: :func:`make_benchmark` (in memory) and :func:`write_benchmark` (a features folder through
:func:`tal_pipeline.featio.save_features` plus an ActivityNet annotation JSON).
``python -m tal_pipeline.synthetic OUT_DIR [--seed N]`` writes the default benchmark.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tal_pipeline.featio import FeatureMeta, save_features
from tal_pipeline.fsutil import atomic_write_json

WINDOW_FRAMES = 16  # frames per backbone window, so t0 = 0.5 * 16 / fps


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate (defaults: the benchmark of ``benchmarks/bench_head.py``)."""

    num_classes: int = 5
    dim: int = 64  # D, feature channels
    num_train: int = 100  # videos in subset "training"
    num_test: int = 40  # videos in subset "testing"
    min_steps: int = 150  # video length range, feature steps
    max_steps: int = 400
    max_instances: int = 4  # instances per video: 1..max_instances
    min_len: float = 6.0  # instance length range, feature steps
    max_len: float = 60.0
    signal: float = 0.7  # class-pattern amplitude per channel (noise std is 1)
    cue: float = 0.6  # onset/offset cue amplitude per channel
    class_overlap: float = 0.5  # weight of the component all classes share (0..1)
    noise_corr: float = 0.7  # AR(1) coefficient of the noise, per step
    scene: float = 0.3  # per-video constant offset amplitude per channel
    distractors: int = 2  # distractor segments per video: 0..distractors
    fps: float = 10.0  # sampled frames per second (as our backbone)
    feature_stride: int = 4  # frames per feature step -> step = 0.4 s
    seed: int = 0

    @property
    def step(self) -> float:
        return self.feature_stride / self.fps


@dataclass(frozen=True)
class SyntheticBenchmark:
    """A generated benchmark, in memory."""

    config: SyntheticConfig
    class_names: list[str]
    features: dict[str, np.ndarray]  # video id -> (T, D) float32
    metas: dict[str, FeatureMeta]  # video id -> feature meta (t0, step, ...)
    annotations: dict  # ActivityNet JSON object ({"database": ...})

    def subset(self, name: str) -> list[str]:
        """Video ids of a subset (``"training"`` or ``"testing"``)."""
        db = self.annotations["database"]
        return [vid for vid in self.features if db[vid]["subset"] == name]


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True) * np.sqrt(d)  # rms 1 per channel


def _place(rng: np.random.Generator, length: int, lens: list[float], gap: float = 3.0) -> list[float] | None:
    """Start positions (steps) of non-overlapping segments of ``lens`` in ``[1, length - 2]``."""
    free = length - 3 - sum(lens) - gap * len(lens)
    if free <= 0:
        return None
    cuts = np.sort(rng.uniform(0, free, len(lens)))
    order = rng.permutation(len(lens))
    starts, pos, prev = [0.0] * len(lens), 1.0, 0.0
    for k, idx in enumerate(order):
        pos += cuts[k] - prev
        prev = cuts[k]
        starts[idx] = pos
        pos += lens[idx] + gap
    return starts


def _video(rng: np.random.Generator, cfg: SyntheticConfig, protos: np.ndarray, cues: np.ndarray):
    """One video: (features (T, D), instances [(class, s, e)] in steps)."""
    t = int(rng.integers(cfg.min_steps, cfg.max_steps + 1))
    d = cfg.dim
    eps = rng.standard_normal((t, d))
    noise = np.empty((t, d))
    noise[0] = eps[0]
    a = cfg.noise_corr
    for i in range(1, t):  # AR(1), unit stationary variance
        noise[i] = a * noise[i - 1] + np.sqrt(1 - a * a) * eps[i]
    x = noise + cfg.scene * rng.standard_normal(d)
    pos = np.arange(t, dtype=np.float64)

    n_inst = int(rng.integers(1, cfg.max_instances + 1))
    n_dis = int(rng.integers(0, cfg.distractors + 1))
    lens = list(rng.uniform(cfg.min_len, cfg.max_len, n_inst + n_dis))
    starts = None
    while starts is None:  # shrink until everything fits
        starts = _place(rng, t, lens)
        if starts is None:
            lens = [0.8 * v for v in lens]
    instances = []
    for k, (s, length) in enumerate(zip(starts, lens)):
        e = s + length
        u = np.clip((pos - s) / length, 0.0, 1.0)  # relative time inside the segment
        inside = ((pos >= s) & (pos <= e)).astype(np.float64)[:, None]  # (T, 1)
        if k < n_inst:
            c = int(rng.integers(cfg.num_classes))
            w = np.stack([np.maximum(0, 1 - 2 * u), 1 - np.abs(2 * u - 1), np.maximum(0, 2 * u - 1)], 1)  # (T, 3)
            x += cfg.signal * inside * (w @ protos[c])
            x += cfg.cue * np.exp(-0.5 * (pos - s) ** 2)[:, None] * cues[0]
            x += cfg.cue * np.exp(-0.5 * (pos - e) ** 2)[:, None] * cues[1]
            instances.append((c, float(s), float(e)))
        else:  # distractor: a flat middle prototype, or a lone cue
            kind = rng.integers(3)
            if kind == 0 or length < 4:
                spike = cues[int(rng.integers(2))]
                x += cfg.cue * np.exp(-0.5 * (pos - s - 0.5 * length) ** 2)[:, None] * spike
            else:
                c = int(rng.integers(cfg.num_classes))
                x += cfg.signal * inside * protos[c, 1]
    return x.astype(np.float32), instances


def make_benchmark(config: SyntheticConfig = SyntheticConfig()) -> SyntheticBenchmark:
    """Generate the benchmark in memory (deterministic for a config)."""
    rng = np.random.Generator(np.random.PCG64(config.seed))
    c, d = config.num_classes, config.dim
    shared = _unit_rows(rng, 3, d)  # (3, D): one per phase, common to all classes
    own = _unit_rows(rng, c * 3, d).reshape(c, 3, d)
    w = config.class_overlap
    protos = np.sqrt(w) * shared[None] + np.sqrt(1 - w) * own  # (C, 3, D)
    cues = _unit_rows(rng, 2, d)  # (2, D): onset, offset
    class_names = [f"action_{k}" for k in range(c)]
    step, t0 = config.step, 0.5 * WINDOW_FRAMES / config.fps
    features, metas, database = {}, {}, {}
    for n in range(config.num_train + config.num_test):
        subset = "training" if n < config.num_train else "testing"
        vid = f"syn_{subset[:5]}_{n:04d}"
        x, inst = _video(rng, config, protos, cues)
        t = x.shape[0]
        duration = (t - 1) * step + WINDOW_FRAMES / config.fps
        meta = FeatureMeta(
            video=vid, duration=float(duration), fps=config.fps, feature_stride=config.feature_stride,
            t0=t0, step=step, backbone="synthetic", weights=f"synthetic:seed={config.seed}",
            streams=("synthetic",), dim=d, num_features=t,
        )
        anns = [
            {"label": class_names[k], "segment": [round(max(0.0, t0 + s * step), 3), round(min(duration, t0 + e * step), 3)]}
            for k, s, e in inst
        ]
        features[vid], metas[vid] = x, meta
        database[vid] = {"subset": subset, "duration": round(duration, 3), "fps": config.fps, "annotations": anns}
    annotations = {"version": "synthetic-1", "database": database}
    return SyntheticBenchmark(config, class_names, features, metas, annotations)


def write_benchmark(bench: SyntheticBenchmark, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``OUT/features/<id>.npy|.json`` and ``OUT/annotations.json``; returns both paths."""
    out = Path(out_dir)
    feats = out / "features"
    feats.mkdir(parents=True, exist_ok=True)
    for vid, x in bench.features.items():
        save_features(feats, vid, x, bench.metas[vid])
    ann = out / "annotations.json"
    atomic_write_json(ann, bench.annotations)
    return feats, ann


def main(argv: list[str] | None = None) -> None:
    """``python -m tal_pipeline.synthetic OUT_DIR [--seed N] [--dim D]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=SyntheticConfig.dim)
    args = p.parse_args(argv)
    feats, ann = write_benchmark(make_benchmark(SyntheticConfig(seed=args.seed, dim=args.dim)), args.out_dir)
    print(f"features: {feats}\nannotations: {ann}")


if __name__ == "__main__":
    main()
