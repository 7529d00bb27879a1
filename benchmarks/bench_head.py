"""Head benchmark: ablation mAP on the synthetic benchmark's held-out split, training time, and
inference time / peak memory on a 1-hour video's features (T = 9000 at 0.4 s, D = 1024).

    python benchmarks/bench_head.py                      # everything (ablations run in parallel)
    python benchmarks/bench_head.py --epochs 20 --variants full,none
    python benchmarks/bench_head.py --infer-only

Each ablation trains in its own process with one intra-op thread (on a shared 2-core machine,
two threads per process are several times slower than one). Inference is timed with
``--infer-threads`` torch threads (default 1: on a busy 2-core machine one thread beat two by
2.5x) in a fresh process per T; peak memory is the growth of
the process's max RSS during inference, for T = 2250, 4500, 9000 (linear in T if windows work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {  # name -> head overrides
    "full": {"tsa": "full", "tpp": True},
    "no TSA": {"tsa": "none", "tpp": True},
    "plain attention": {"tsa": "plain", "tpp": True},
    "no TPP": {"tsa": "full", "tpp": False},
}


def run_variant(name: str, epochs: int, seed: int, data_seed: int) -> dict:
    import torch

    from tal_pipeline.evaluate import evaluate
    from tal_pipeline.inference import HeadPredictor
    from tal_pipeline.results import load_annotations
    from tal_pipeline.synthetic import SyntheticConfig, make_benchmark, write_benchmark
    from tal_pipeline.train import TrainConfig, load_feature_set, train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        feats, ann = write_benchmark(make_benchmark(SyntheticConfig(seed=data_seed)), tmp)
        train_gt, test_gt = load_annotations(ann, "training"), load_annotations(ann, "testing")
        data = load_feature_set(feats, train_gt)
        test = load_feature_set(feats, test_gt, class_names=data.class_names)
        t = time.perf_counter()
        train(data, Path(tmp) / "m.pt", TrainConfig(epochs=epochs, seed=seed), head=VARIANTS[name], progress=False)
        train_s = time.perf_counter() - t
        pred = HeadPredictor.load(Path(tmp) / "m.pt")
        dets = {v.video_id: pred.predict(v.features, v.times, v.step, v.duration) for v in test.videos}
        res = evaluate(test_gt, dets)
    return {"variant": name, "mAP": list(res.mAP), "average_mAP": res.average_mAP, "train_s": train_s,
            "epochs": epochs, "train_videos": len(data.videos), "test_videos": len(test.videos)}


def run_inference(t: int, dim: int, threads: int) -> dict:
    import numpy as np
    import torch

    from tal_pipeline.head import HeadConfig, HeadModel
    from tal_pipeline.inference import predict_segments

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = HeadModel(HeadConfig(input_dim=dim, num_classes=20)).eval()
    x = np.random.default_rng(0).standard_normal((t, dim)).astype(np.float32)
    times = 0.8 + 0.4 * np.arange(t)
    names = [f"c{k}" for k in range(20)]
    predict_segments(model, x[:512], times[:512], 0.4, 300.0, names)  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    segs = predict_segments(model, x, times, 0.4, t * 0.4 + 1.2, names)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"T": t, "D": dim, "threads": threads, "seconds": wall, "peak_rss_growth_mb": (peak - base) / 1024,
            "segments": len(segs)}


def _child(args: list[str], one_thread: bool = True) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else dict(os.environ)
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--infer-only", action="store_true")
    p.add_argument("--infer-threads", type=int, default=1, help="torch threads for inference (1 is fastest on a busy machine)")
    p.add_argument("--_variant", help=argparse.SUPPRESS)
    p.add_argument("--_infer", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._variant:
        print(json.dumps(run_variant(args._variant, args.epochs, args.seed, args.data_seed)))
        return
    if args._infer:
        print(json.dumps(run_inference(args._infer, 1024, args.infer_threads)))
        return

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, python {platform.python_version()}")
    if not args.infer_only:
        from concurrent.futures import ThreadPoolExecutor

        names = [n.strip() for n in args.variants.split(",")]
        unknown = set(names) - set(VARIANTS)
        if unknown:
            sys.exit(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
        common = ["--epochs", str(args.epochs), "--seed", str(args.seed), "--data-seed", str(args.data_seed)]
        with ThreadPoolExecutor(len(names)) as pool:
            rows = list(pool.map(lambda n: _child(["--_variant", n, *common]), names))
        print("\n| variant | mAP@0.3 | 0.4 | 0.5 | 0.6 | 0.7 | avg | train time (s) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            cells = " | ".join(f"{100 * m:.1f}" for m in r["mAP"])
            print(f"| {r['variant']} | {cells} | {100 * r['average_mAP']:.1f} | {r['train_s']:.0f} |")
        print(f"\n{rows[0]['train_videos']} training / {rows[0]['test_videos']} held-out videos, "
              f"{args.epochs} epochs, {len(rows)} runs in parallel, 1 thread each")
    print("\n| T (steps) | D | threads | inference (s) | peak RSS growth (MB) |")
    print("|---|---|---|---|---|")
    for t in (2250, 4500, 9000):
        r = _child(["--_infer", str(t), "--infer-threads", str(args.infer_threads)], one_thread=False)
        print(f"| {r['T']} | {r['D']} | {r['threads']} | {r['seconds']:.2f} | {r['peak_rss_growth_mb']:.0f} |")


if __name__ == "__main__":
    main()
