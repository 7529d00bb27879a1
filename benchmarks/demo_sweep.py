"""Head settings for the demo detector, compared on its validation split (never on held-out).

    python -m benchmarks.demo_sweep FEATURES --annotations ANN.json --out DIR RUNS.json
    python -m benchmarks.demo_sweep FEATURES --annotations ANN.json --out DIR \\
        '{"base": {}, "dropout 0.6": {"head": {"dropout": 0.6}}, "16 videos": {"n_train": 16}}'

Each run trains the head with ``tal train``'s code (:func:`tal_pipeline.train.train`) on subset
``training`` of ``ANN.json`` and scores subset ``validation`` every 5 epochs, one torch thread,
and prints one JSON line: the best validation epoch and its mAP@0.5 / average mAP (0.3:0.7),
the mean average mAP of the last six validation runs (epochs 35-60: less lucky than the best of
twelve), and the whole curve. A run is ``{"head": {HeadConfig overrides}, "train":
{TrainConfig fields}, "seed": int, "n_train": int}``, all optional: ``head`` goes on top of the
previous demo head (:data:`DEMO_HEAD`, what ``examples/train_demo.sh`` passes with ``--head``),
``n_train`` keeps the first N training videos (a learning curve).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from tal_pipeline.annotations import load_annotations
from tal_pipeline.train import FeatureSet, TrainConfig, load_feature_set, train

# The previous demo model's head: HeadConfig's own defaults (2 stem layers, TPP 1-2-4 /
# strides 2-4, one output level, class scores) instead of tal train's newer ones
DEMO_HEAD = {"stem_layers": 2, "stem_dilations": (), "tpp_dilations": (1, 2, 4), "tpp_strides": (2, 4),
             "output_levels": 1, "score_fusion": "class"}
EPOCHS = 60


def run(name: str, spec: dict, data: FeatureSet, vdata: FeatureSet, vgt, out_dir: Path) -> dict:
    """One run of the sweep (see the module docstring)."""
    head = {**DEMO_HEAD, **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("head", {}).items()}}
    n = spec.get("n_train")
    if n:
        data = FeatureSet(data.videos[:n], data.class_names, data.info)
    config = replace(TrainConfig(seed=spec.get("seed", 0), device="cpu", select="best"), epochs=EPOCHS,
                     **spec.get("train", {}))
    t0 = time.perf_counter()
    ck = train(data, out_dir / f"{name.replace(' ', '_')}.pt", config, head=head, val_data=vdata,
               val_annotations=vgt, progress=False)
    hist = ck["training"]["validation"]
    best = max(hist, key=lambda r: r["average_mAP"])
    return {"run": name, "spec": spec, "train_videos": len(data.videos), "best_epoch": best["epoch"],
            "val_mAP@0.5": round(100 * best["mAP"][2], 2), "val_avg": round(100 * best["average_mAP"], 2),
            "val_avg_last6": round(100 * sum(r["average_mAP"] for r in hist[-6:]) / len(hist[-6:]), 2),
            "s": round(time.perf_counter() - t0),
            "curve": [(r["epoch"], round(100 * r["mAP"][2], 1), round(100 * r["average_mAP"], 1)) for r in hist]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("features", type=Path)
    p.add_argument("runs", help="JSON: {name: run} (or a file holding it)")
    p.add_argument("--annotations", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for the checkpoints")
    args = p.parse_intermixed_args(argv)
    torch.set_num_threads(1)
    runs = json.loads(Path(args.runs).read_text() if Path(args.runs).is_file() else args.runs)
    ann = load_annotations(args.annotations)
    tr, va = ann.select("training"), ann.select("validation")
    data = load_feature_set(args.features, tr)
    vdata = load_feature_set(args.features, va, class_names=data.class_names)
    vgt = type(va)({v.video_id: va.videos[v.video_id] for v in vdata.videos}, va.source)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in runs.items():
        print(json.dumps(run(name, spec, data, vdata, vgt, args.out)), flush=True)


if __name__ == "__main__":
    main()
