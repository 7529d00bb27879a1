"""One harness for the head benchmark: splits of a synthetic regime, the baselines, the head.

Every method trains on subset ``training``, may choose settings / epochs on ``validation`` only,
and is scored on the held-out ``testing`` videos with the official-style mAP
(:func:`tal_pipeline.evaluate.evaluate`, tIoU 0.3..0.7).

Baselines (per-position classifiers, the "student's afternoon" answers):

* ``linear``: a linear softmax probe over ``C + 1`` classes (background included) on
  standardised features, position by position; segments = runs of the same arg-max class.
* ``dilated``: 5 dilated 3-tap conv layers (dilations 1, 2, 4, 8, 16; receptive field 63 steps),
  cross-entropy per position, 40 epochs; class probabilities smoothed by a 5-step moving average,
  then runs of the same arg-max class.

A run's score is the mean probability of its class over the run; a run spans
``[t_first - step / 2, t_last + step / 2]``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks.synthetic import SyntheticBenchmark
from tal_pipeline.evaluate import evaluate
from tal_pipeline.postprocess import Segment
from tal_pipeline.results import Annotations, parse_annotations
from tal_pipeline.train import FeatureSet, TrainVideo

SUBSETS = ("training", "validation", "testing")


@dataclass
class Split:
    """Features and ground truth of one subset."""

    data: FeatureSet
    gt: Annotations


def splits(bench: SyntheticBenchmark) -> dict[str, Split]:
    """``{"training", "validation", "testing"} -> Split`` (subsets without videos are left out)."""
    names = bench.class_names
    index = {n: k for k, n in enumerate(names)}
    ann = parse_annotations(bench.annotations, "synthetic")
    out = {}
    for subset in SUBSETS:
        vids = bench.subset(subset)
        if not vids:
            continue
        videos = []
        for vid in vids:
            meta = bench.metas[vid]
            a = ann.videos[vid]
            inst = [(index[lab], (s - meta.t0) / meta.step, (e - meta.t0) / meta.step) for lab, s, e in a.segments]
            videos.append(TrainVideo(vid, bench.features[vid], meta.t0, meta.step, a.duration,
                                     np.asarray(inst, np.float64).reshape(-1, 3)))
        info = {"step": bench.config.step, "steps_vary": False, "fps": bench.config.fps,
                "feature_stride": bench.config.feature_stride, "t0": bench.metas[vids[0]].t0, "window_frames": 16,
                "backbone": "synthetic", "weights": f"synthetic:seed={bench.config.seed}", "dim": bench.config.dim,
                "streams": ["synthetic"], "flow_backend": None}
        out[subset] = Split(FeatureSet(videos, list(names), info), ann.select(subset))
    return out


def score(split: Split, preds: dict[str, list[Segment]]) -> dict:
    """``{"mAP": [0.3..0.7], "average_mAP"}`` of predictions on a split."""
    res = evaluate(split.gt, preds)
    return {"mAP": [float(m) for m in res.mAP], "average_mAP": float(res.average_mAP)}


def frame_labels(video: TrainVideo, num_classes: int) -> np.ndarray:
    """``(T,)`` int: the class of the instance covering each position, ``num_classes`` = background."""
    t = video.features.shape[0]
    labels = np.full(t, num_classes, np.int64)
    pos = np.arange(t)
    for c, s, e in video.instances:
        labels[(pos >= s) & (pos <= e)] = int(c)
    return labels


def runs_to_segments(probs: np.ndarray, video: TrainVideo, class_names: list[str]) -> list[Segment]:
    """Runs of the same arg-max class (background = last column) -> scored segments."""
    c = len(class_names)
    arg = probs.argmax(1)  # (T,)
    out = []
    edges = np.flatnonzero(np.diff(arg)) + 1
    for a, b in zip(np.r_[0, edges], np.r_[edges, len(arg)]):
        k = int(arg[a])
        if k == c:
            continue
        t = video.times
        start = max(0.0, t[a] - 0.5 * video.step)
        end = min(video.duration, t[b - 1] + 0.5 * video.step)
        if end > start:
            out.append(Segment(class_names[k], float(probs[a:b, k].mean()), float(start), float(end)))
    return out


class DilatedConv(nn.Module):
    """Per-position classifier: 5 dilated 3-tap conv layers, ``(B, D, T) -> (B, C + 1, T)``."""

    def __init__(self, d: int, c: int, hidden: int = 128, dilations=(1, 2, 4, 8, 16)):
        super().__init__()
        layers, cin = [], d
        for r in dilations:
            layers += [nn.Conv1d(cin, hidden, 3, padding=r, dilation=r), nn.ReLU()]
            cin = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv1d(hidden, c + 1, 1)

    def forward(self, x):
        return self.out(self.body(x))


class Linear(nn.Module):
    def __init__(self, d: int, c: int):
        super().__init__()
        self.out = nn.Conv1d(d, c + 1, 1)

    def forward(self, x):
        return self.out(x)


def _standardiser(train: FeatureSet):
    x = np.concatenate([v.features for v in train.videos])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    return lambda a: ((a - mu) / sd).astype(np.float32)


def train_baseline(kind: str, sp: dict[str, Split], epochs: int = 40, window: int = 256, batch: int = 8,
                   lr: float = 1e-3, seed: int = 0) -> dict:
    """Train a baseline (``linear`` or ``dilated``) on training, report validation and test mAP."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = sp["training"].data
    c = len(train.class_names)
    norm = _standardiser(train)
    xs = [norm(v.features) for v in train.videos]
    ys = [frame_labels(v, c) for v in train.videos]
    model = DilatedConv(xs[0].shape[1], c) if kind == "dilated" else Linear(xs[0].shape[1], c)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    t0 = time.perf_counter()
    visits = [k for k, x in enumerate(xs) for _ in range(max(1, math.ceil(len(x) / window)))]
    for _ in range(epochs):
        model.train()
        order = rng.permutation(visits)
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            fx = np.zeros((len(idx), window, xs[0].shape[1]), np.float32)
            fy = np.full((len(idx), window), -100, np.int64)  # -100: padding, ignored by CE
            for j, k in enumerate(idx):
                s = int(rng.integers(0, max(1, len(xs[k]) - window + 1)))
                n = min(window, len(xs[k]) - s)
                fx[j, :n], fy[j, :n] = xs[k][s : s + n], ys[k][s : s + n]
            logits = model(torch.from_numpy(fx).transpose(1, 2))  # (B, C+1, W)
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(fy), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t0
    smooth = 5 if kind == "dilated" else 1

    def predict(split: Split) -> dict[str, list[Segment]]:
        model.eval()
        out = {}
        with torch.no_grad():
            for v in split.data.videos:
                p = torch.softmax(model(torch.from_numpy(norm(v.features)).T[None]), 1)[0].T.numpy()  # (T, C+1)
                if smooth > 1:
                    kernel = np.ones(smooth) / smooth
                    p = np.stack([np.convolve(np.pad(p[:, k], smooth // 2, mode="edge"), kernel, "valid")
                                  for k in range(p.shape[1])], 1)
                out[v.video_id] = runs_to_segments(p, v, split.data.class_names)
        return out

    return {"validation": score(sp["validation"], predict(sp["validation"])) if "validation" in sp else None,
            "testing": score(sp["testing"], predict(sp["testing"])), "train_s": train_s}


def train_head(sp: dict[str, Split], out_path, config=None, head: dict | None = None, progress: bool = False) -> dict:
    """Train the TSA/TPP head (``tal train``'s code path) and report validation and test mAP."""
    from tal_pipeline.checkpoint import load_head
    from tal_pipeline.inference import predict_segments
    from tal_pipeline.train import TrainConfig, train

    val = sp.get("validation")
    t0, c0 = time.perf_counter(), time.process_time()
    ckpt = train(sp["training"].data, out_path, config or TrainConfig(), head=head,
                 val_data=val.data if val else None, val_annotations=val.gt if val else None, progress=progress)
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    model, meta = load_head(out_path)
    test = sp["testing"]
    dets = {v.video_id: predict_segments(model, v.features, v.times, v.step, v.duration, meta.class_names)
            for v in test.data.videos}
    return {"testing": score(test, dets), "validation": ckpt["training"]["validation"], "train_s": train_s,
            "cpu_s": cpu_s, "epochs": ckpt["training"]["epochs_done"]}


def print_table(rows: list[dict]) -> None:
    """bench_head's rows (regime, method, seed, test/val mAP, train_s) as a Markdown table, with
    the mean over seeds where a method ran several."""
    print("| regime | method | seed | mAP@0.3 | 0.4 | 0.5 | 0.6 | 0.7 | avg | val avg | train (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["regime"], r["method"]), []).append(r)
    for (regime_name, method), group in groups.items():
        for r in group:
            cells = " | ".join(f"{100 * m:.1f}" for m in r["test"]["mAP"])
            val = f"{100 * r['val']['average_mAP']:.1f}" if r["val"] else "-"
            print(f"| {regime_name} | {method} | {r['seed']} | {cells} | {100 * r['test']['average_mAP']:.1f} | "
                  f"{val} | {r['train_s']:.0f} |", flush=True)
        if len(group) > 1:  # the mean over training seeds
            mean = [100 * sum(r["test"]["mAP"][k] for r in group) / len(group) for k in range(5)]
            avg = 100 * sum(r["test"]["average_mAP"] for r in group) / len(group)
            vals = [r["val"]["average_mAP"] for r in group if r["val"]]
            val = f"{100 * sum(vals) / len(vals):.1f}" if vals else "-"
            print(f"| {regime_name} | **{method}** | mean | " + " | ".join(f"{m:.1f}" for m in mean)
                  + f" | **{avg:.1f}** | {val} | - |", flush=True)
