"""Where does the demo detector lose? Baselines and oracles on the demo's own features.

    python -m benchmarks.demo_diagnose baselines FEATURES --annotations ANN.json
    python -m benchmarks.demo_diagnose models FEATURES --annotations ANN.json MODEL.pt [MODEL.pt ...]
    python -m benchmarks.demo_diagnose probe FEATURES --annotations ANN.json

``FEATURES`` is a folder of ``tal extract`` features of the demo's train footage and ``ANN.json``
marks its videos ``training`` and ``validation`` (``examples/train_demo.sh`` makes both). Only
those two subsets are read: nothing here looks at the held-out split.

``baselines``: the per-position classifiers of :mod:`benchmarks.head_harness` (a linear probe
with runs of the arg-max class; 5 dilated conv layers with 5-step smoothing) trained on
``training`` and scored on ``validation`` (mAP 0.3..0.7 and AP@0.5 per class). When a
per-position classifier reaches what the head does not, the head's training loses, not the
features.

``probe``: what the features allow one position at a time: a multinomial logistic regression
(``zoom_probe.fit_probe``, standardised features) on the training positions, accuracy on the
validation positions (positions next to a label change left out), per class and per kind of
scene; features averaged over 1, 3 and 7 positions; with 8, 16, 24 and all training videos
(a learning curve: is the training set the limit?); and with each video's median feature
subtracted (does removing the footage's own steady motion help?).

``models``: for each trained head, on ``validation`` and on ``training`` (the gap says whether
it memorised the training videos): mAP, AP@0.5 per class, :func:`benchmarks.head_diagnose.diagnose`'s
oracles (exact boundaries, true classes: which of the two would lift the score), the
per-position class confusion inside instances, the validation curve stored in the checkpoint,
and validation mAP per kind of scene when the annotation file records it (the generator does).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.head_diagnose import diagnose
from benchmarks.head_harness import Split, frame_labels, train_baseline
from benchmarks.zoom_probe import fit_probe, pooled
from tal_pipeline.annotations import load_annotations
from tal_pipeline.checkpoint import load_head
from tal_pipeline.evaluate import evaluate
from tal_pipeline.inference import predict_segments
from tal_pipeline.train import load_feature_set

NUM_CLASSES = 6  # the camera motions (background is one more label for the probe)


def demo_splits(features: Path, annotations: Path) -> dict[str, Split]:
    """``{"training", "validation"}`` -> :class:`Split` of the demo's train footage."""
    ann = load_annotations(annotations)
    tr, va = ann.select("training"), ann.select("validation")
    train = load_feature_set(features, tr)
    val = load_feature_set(features, va, class_names=train.class_names)
    # ground truth of the videos that have features only (a missing video would count as misses)
    gt = {name: type(a)({v.video_id: a.videos[v.video_id] for v in d.videos}, a.source)
          for name, a, d in (("training", tr, train), ("validation", va, val))}
    return {"training": Split(train, gt["training"]), "validation": Split(val, gt["validation"])}


def _row(name: str, res) -> str:
    """One line: mAP at 0.3..0.7, average, AP@0.5 per class (percent)."""
    per = " ".join(f"{k}={100 * v[2]:.1f}" for k, v in res.per_class.items())
    return (f"{name:26s} " + " ".join(f"{100 * m:5.1f}" for m in res.mAP)
            + f" | avg {100 * res.average_mAP:5.1f} | {per}")


def run_baselines(sp: dict[str, Split], epochs: int, seed: int) -> dict:
    """Linear and dilated per-position baselines: train on training, score on validation."""
    # train_baseline scores a "testing" split; here that is validation (held-out stays untouched)
    harness = {"training": sp["training"], "testing": sp["validation"]}
    out = {}
    for kind in ("linear", "dilated"):
        t0 = time.perf_counter()
        res = train_baseline(kind, harness, epochs=epochs, seed=seed)
        out[kind] = {"validation": res["testing"], "train_s": time.perf_counter() - t0}
    return out


def _positions(videos, transform, pool: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features ``(N, D)``, labels ``(N,)`` (background = C) and video ids of the positions of
    ``videos``, leaving out the two positions around each label change."""
    xs, ys, ids = [], [], []
    for v in videos:
        y = frame_labels(v, NUM_CLASSES)  # (T,)
        keep = np.ones(len(y), bool)
        change = np.flatnonzero(np.diff(y))  # position k differs from k + 1
        keep[change] = keep[np.minimum(change + 1, len(y) - 1)] = False
        xs.append(pooled(transform(v.features), pool)[keep])
        ys.append(y[keep])
        ids += [v.video_id] * int(keep.sum())
    return np.concatenate(xs), np.concatenate(ys), ids


def run_probe(sp: dict[str, Split], scenes: dict[str, str], l2: float = 1e-4) -> list[dict]:
    """Per-position probe rows (see the module docstring)."""
    train, val = sp["training"].data.videos, sp["validation"].data.videos
    same = {"as extracted": lambda a: a}
    median = {"minus the video's median": lambda a: a - np.median(a, axis=0)}
    plan = [(name, f, pool, len(train)) for name, f in same.items() for pool in (1, 3, 7)]
    plan += [("as extracted", same["as extracted"], 3, n) for n in (8, 16, 24) if n < len(train)]
    plan += [(name, f, 3, len(train)) for name, f in median.items()]
    rows = []
    for name, transform, pool, n in plan:
        xtr, ytr, _ = _positions(train[:n], transform, pool)
        xva, yva, ids = _positions(val, transform, pool)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        lin = fit_probe(((xtr - mu) / sd).astype(np.float32), ytr, l2)
        with torch.no_grad():
            pred = lin(torch.from_numpy(((xva - mu) / sd).astype(np.float32))).argmax(1).numpy()
        kinds = np.array([scenes.get(i, "?") for i in ids])
        rows.append({"features": name, "pool": pool, "train_videos": n, "accuracy": float(np.mean(pred == yva)),
                     "recall": [float(np.mean(pred[yva == c] == c)) for c in range(NUM_CLASSES + 1)],
                     "by_scene": {k: float(np.mean(pred[kinds == k] == yva[kinds == k])) for k in sorted(set(kinds))}})
    return rows


def _confusion(model, split: Split) -> np.ndarray:
    """``(C, C + 1)`` per-position counts inside instances: true class x (arg-max class, or
    "none" when no class probability reaches 0.3)."""
    names = split.data.class_names
    c = len(names)
    conf = np.zeros((c, c + 1), np.int64)
    for v in split.data.videos:
        x = torch.from_numpy(np.array(v.features, np.float32))
        probs, _, _, pos = (a.numpy() for a in model.infer(x, return_positions=True))  # (N, C) .. (N,)
        for k, s, e in v.instances:
            inside = (pos >= s) & (pos <= e)
            p = probs[inside]
            pred = np.where(p.max(1) >= 0.3, p.argmax(1), c)
            np.add.at(conf[int(k)], pred, 1)
    return conf


def run_models(sp: dict[str, Split], paths: list[str], scenes: dict[str, str] | None = None) -> dict:
    """Scores, oracles, confusion and curves of trained heads (see the module docstring);
    ``scenes`` (video id -> scene kind) adds validation mAP per kind of scene."""
    report = {}
    for path in paths:
        model, meta = load_head(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        entry = {"selected_epoch": ckpt["training"].get("selected_epoch"),
                 "curve": [(r["epoch"], r["mAP"][2], r["average_mAP"]) for r in ckpt["training"]["validation"]]}
        for name, split in sp.items():
            preds = {v.video_id: predict_segments(model, v.features, v.times, v.step, v.duration, meta.class_names)
                     for v in split.data.videos}
            res = evaluate(split.gt, preds)
            entry[name] = {"result": res, "oracles": diagnose(model, split) if name == "validation" else None}
            if name == "validation" and scenes:
                entry["by scene"] = {}
                for kind in sorted(set(scenes.values())):
                    ids = [v for v in preds if scenes.get(v) == kind]
                    gt = type(split.gt)({v: split.gt.videos[v] for v in ids}, split.gt.source)
                    if gt.num_instances:
                        entry["by scene"][f"{kind} ({len(ids)} videos)"] = evaluate(gt, {v: preds[v] for v in ids})
        entry["confusion"] = _confusion(model, sp["validation"])
        report[path] = entry
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["baselines", "models", "probe"])
    p.add_argument("features", type=Path)
    p.add_argument("--annotations", type=Path, required=True)
    p.add_argument("models", nargs="*", help="checkpoints (for 'models')")
    p.add_argument("--epochs", type=int, default=40, help="baseline epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_intermixed_args(argv)
    torch.set_num_threads(1)
    sp = demo_splits(args.features, args.annotations)
    names = sp["training"].data.class_names
    # the generator records each video's scene kind in its annotation file (a looping video
    # shot, a photo, a mosaic, a video inset in a photo); other annotation files have none
    database = json.loads(args.annotations.read_text()).get("database", {})
    scenes = {k: v["scene"] for k, v in database.items() if isinstance(v, dict) and "scene" in v}
    print(f"{len(sp['training'].data.videos)} training / {len(sp['validation'].data.videos)} validation videos, "
          f"{sp['validation'].gt.num_instances} validation instances; columns: mAP at tIoU 0.3..0.7")
    if args.what == "baselines":
        rep = run_baselines(sp, args.epochs, args.seed)
        for kind, r in rep.items():
            v = r["validation"]
            print(f"{kind:10s} " + " ".join(f"{100 * m:5.1f}" for m in v["mAP"])
                  + f" | avg {100 * v['average_mAP']:5.1f} | {r['train_s']:.0f} s")
        # per-class AP needs the predictions; train_baseline keeps them to itself, so the
        # per-class view comes from the models report
        if args.json:
            args.json.write_text(json.dumps(rep, indent=1))
        return
    if args.what == "probe":
        rows = run_probe(sp, scenes)
        print("per-position probe on validation: features, pool, training videos: accuracy | recall "
              f"({', '.join(names)}, background) | accuracy by scene")
        for r in rows:
            print(f"{r['features']:26s} {r['pool']} {r['train_videos']:3d}: {r['accuracy']:.3f} | "
                  + " ".join(f"{x:.2f}" for x in r["recall"]) + " | "
                  + " ".join(f"{k} {v:.2f}" for k, v in r["by_scene"].items()))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    rep = run_models(sp, args.models, scenes)
    out = {}
    for path, e in rep.items():
        print(f"== {path}: selected epoch {e['selected_epoch']}")
        print("   validation curve (epoch, mAP@0.5, avg): "
              + ", ".join(f"({a}, {100 * b:.1f}, {100 * c:.1f})" for a, b, c in e["curve"]))
        for name in ("training", "validation"):
            print(_row(f"  {name}", e[name]["result"]))
        for kind, res in e.get("by scene", {}).items():
            print(_row(f"  val {kind}", res))
        for k, v in e["validation"]["oracles"].items():
            if isinstance(v, dict) and "mAP" in v:
                print(f"  val {k:22s} " + " ".join(f"{100 * m:5.1f}" for m in v["mAP"])
                      + f" | avg {100 * v['average_mAP']:5.1f}")
            else:
                print(f"  val {k}: {v}")
        print("  validation positions inside instances, true class (rows) x arg-max (cols; last: none >= 0.3):")
        for k, row in enumerate(e["confusion"]):
            print(f"    {names[k]:10s} " + " ".join(f"{n:4d}" for n in row))
        out[path] = {"selected_epoch": e["selected_epoch"], "curve": e["curve"],
                     **{n: e[n]["result"].to_dict() for n in ("training", "validation")},
                     "by scene": {k: r.to_dict() for k, r in e.get("by scene", {}).items()},
                     "oracles": {k: v for k, v in e["validation"]["oracles"].items()},
                     "confusion": e["confusion"].tolist()}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
