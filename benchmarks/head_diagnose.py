"""Why does a trained head lose? Oracle and ablation measurements on a split.

    python -m benchmarks.head_diagnose MODEL.pt --regime hard [--subset validation]

For the head's raw outputs on every video of the split it reports mAP (0.3..0.7) of:

* ``as is``: the detector's own recipe;
* ``oracle boundaries``: every position inside a ground-truth instance regresses that instance's
  exact boundaries (classification and scores unchanged): what perfect regression would give;
* ``oracle classes``: inside an instance, the position's best score moves to the true class
  (boundaries unchanged): what resolving class confusion would give;
* ``actionness fusion``: score = class probability x actionness;
* ``score voting``: kept boundaries averaged over overlapping candidates (tIoU >= 0.7);
* ``hard NMS`` instead of Soft-NMS; and ``best candidate recall``: the fraction of instances
  for which some candidate of the right class reaches tIoU 0.5 / 0.7 before NMS.

Also the mean absolute boundary error (steps) at positions inside instances, split by instance
length, and per-position class accuracy inside instances (pairs confused or not).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.head_harness import Split, score, splits
from benchmarks.synthetic import make_benchmark, regime
from tal_pipeline.checkpoint import load_head
from tal_pipeline.head.model import HeadModel
from tal_pipeline.inference import position_times
from tal_pipeline.postprocess import PostprocessConfig, positions_to_seconds, postprocess


def _inside(v, pos: np.ndarray):
    """``(N,)`` instance index covering each output position (centres ``pos``, steps; -1:
    background), and the exact distances to that instance's boundaries ``(N, 2)``."""
    owner = np.full(len(pos), -1)
    dist = np.zeros((len(pos), 2))
    for k, (_, s, e) in enumerate(v.instances):
        m = (pos >= s) & (pos <= e)
        owner[m] = k
        dist[m, 0], dist[m, 1] = pos[m] - s, e - pos[m]
    return owner, dist


def diagnose(model: HeadModel, split: Split) -> dict:
    names = split.data.class_names
    runs = {k: {} for k in ("as is", "oracle boundaries", "oracle classes", "actionness fusion", "hard NMS", "score voting")}
    errs, accs, recall = [], [], {0.5: [], 0.7: []}
    hard = PostprocessConfig(nms_method="hard", iou_threshold=0.5)
    for v in split.data.videos:
        x = torch.from_numpy(np.array(v.features, np.float32))  # (T, D), a writable copy
        # (N, C), (N, 2) steps, (N,), (N,) centres in steps: the head's raw outputs, not fused
        probs, offs, act, pos = (a.numpy() for a in model.infer(x, return_positions=True))
        owner, dist = _inside(v, pos)
        ins = owner >= 0
        gt_cls = np.where(ins, v.instances[np.maximum(owner, 0), 0], -1).astype(int)
        lengths = np.where(ins, v.instances[np.maximum(owner, 0), 2] - v.instances[np.maximum(owner, 0), 1], 0)
        errs.append(np.c_[np.abs(offs - dist)[ins].mean(1), lengths[ins]])
        accs.append(probs[ins].argmax(1) == gt_cls[ins])
        times = position_times(pos, v.times, v.step)  # (N,) s
        args = (times, v.step, v.duration, names)
        runs["as is"][v.video_id] = postprocess(probs, offs, *args)
        runs["hard NMS"][v.video_id] = postprocess(probs, offs, *args, hard)
        runs["score voting"][v.video_id] = postprocess(probs, offs, *args, PostprocessConfig(voting_threshold=0.7))
        runs["actionness fusion"][v.video_id] = postprocess(probs * act[:, None], offs, *args)
        runs["oracle boundaries"][v.video_id] = postprocess(probs, np.where(ins[:, None], dist, offs), *args)
        oc = probs.copy()
        oc[ins] = oc[ins].min(1, keepdims=True)
        oc[ins, gt_cls[ins]] = probs[ins].max(1)
        runs["oracle classes"][v.video_id] = postprocess(oc, offs, *args)
        segs = positions_to_seconds(times, np.maximum(offs, 0), v.step)  # (N, 2)
        for c, s, e in v.instances:
            g0, g1 = v.t0 + s * v.step, v.t0 + e * v.step
            ok = probs[:, int(c)] > 0.05
            inter = np.clip(np.minimum(segs[ok, 1], g1) - np.maximum(segs[ok, 0], g0), 0, None)
            iou = inter / ((segs[ok, 1] - segs[ok, 0]) + (g1 - g0) - inter)
            for th, hits in recall.items():
                hits.append(bool((iou >= th).any()))
    err = np.concatenate(errs)
    report = {k: score(split, r) for k, r in runs.items()}
    bins = [(0, 10), (10, 25), (25, 45), (45, 1e9)]
    report["boundary error (steps) by length"] = {
        f"{a}-{b if b < 1e9 else 'inf'}": float(err[(err[:, 1] >= a) & (err[:, 1] < b), 0].mean())
        for a, b in bins if ((err[:, 1] >= a) & (err[:, 1] < b)).any()}
    report["class accuracy inside instances"] = float(np.concatenate(accs).mean())
    report["candidate recall"] = {str(k): float(np.mean(v)) for k, v in recall.items()}
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--regime", default="hard")
    p.add_argument("--subset", default="validation")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sp = splits(make_benchmark(regime(args.regime)))
    rep = diagnose(load_head(args.model)[0], sp[args.subset])
    for k, v in rep.items():
        if isinstance(v, dict) and "mAP" in v:
            print(f"{k:20s} " + " ".join(f"{100 * m:5.1f}" for m in v["mAP"]) + f" | avg {100 * v['average_mAP']:5.1f}")
        else:
            print(k, v)


if __name__ == "__main__":
    main()
