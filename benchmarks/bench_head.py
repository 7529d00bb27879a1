"""Head benchmark: the head against simple baselines on the synthetic regimes (held-out test
videos, settings chosen on validation only), and inference time / peak memory on a 1-hour
video's features (T = 9000 at 0.4 s, D = 1024).

    python benchmarks/bench_head.py                                  # all regimes, all methods
    python benchmarks/bench_head.py --regimes hard --methods dilated,head
    python benchmarks/bench_head.py --seeds 0,1,2          # every method with 3 training seeds
    python benchmarks/bench_head.py --infer-only

Regimes: ``benchmarks/synthetic.py`` (``easy``, ``hard``, ``long``, ``recur``, ``harder``). Methods
(``benchmarks/head_harness.py``): ``linear`` (per-position linear probe + runs), ``dilated``
(5-layer dilated conv per-position classifier, 40 epochs, 5-step moving average + runs),
``head-bare`` (the head with TSA off and TPP off), ``head`` (``tal train``'s defaults), and the
ablations ``head-noTSA``, ``head-noTPP``, ``head-plain``; ``head-fp32`` and ``head-bf16``, the
head trained in float32 / under bfloat16 autocast whatever ``tal train``'s default; ``actionformer``, the peer, by its own THUMOS14
recipe with its EMA weights (``benchmarks/actionformer_peer.py``; needs ``$ACTIONFORMER_DIR``, a
checkout at its pinned commit, and ``$ACTIONFORMER_PYTHONPATH`` for its own imports; ``--epochs``
sets its epochs after warm-up). Every (regime, method, seed) trains in its own process with one
intra-op thread, ``--jobs`` at a time. ``--seeds`` are *training* seeds (initial
weights, window order); the data of a regime is fixed by its own seed. With several seeds the
table adds each method's mean row: one seed of the head moves its mAP by a few points.

``--train-time THREADS [--precision P]`` times ``tal train``'s default schedule on 80 training
videos of 5 minutes (D = 128).

Inference is timed with ``--infer-threads`` torch threads (default 1: on a busy 2-core machine
one thread beat two by 2.5x) in a fresh process per T; peak memory is the growth of the
process's max RSS during inference, for T = 2250, 4500, 9000 (linear in T if windows work).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable as a script

HEADS = {  # method -> head overrides on top of tal train's defaults
    "head": {},
    "head-bare": {"tsa": "none", "tpp": False},
    "head-noTSA": {"tsa": "none"},
    "head-noTPP": {"tpp": False},
    "head-plain": {"tsa": "plain"},
    "head-fp32": {},
    "head-bf16": {},
}
TRAIN = {  # method -> TrainConfig overrides on top of tal train's defaults
    "head-fp32": {"precision": "fp32"},  # training forward pass in float32 / under bfloat16 autocast
    "head-bf16": {"precision": "bf16"},
}
PEERS = ("actionformer",)  # benchmarks/actionformer_peer.py
METHODS = ("linear", "dilated", *HEADS, *PEERS)


def _peer_setup():
    """(checkout, work folder) of the ActionFormer peer, from the environment."""
    from benchmarks import actionformer_peer

    checkout = os.environ.get("ACTIONFORMER_DIR")
    if not checkout or not (Path(checkout) / "train.py").is_file():
        sys.exit(f"method actionformer needs $ACTIONFORMER_DIR: a checkout at {actionformer_peer.AF_COMMIT}")
    actionformer_peer.EXTRA_PATH.extend(d for d in os.environ.get("ACTIONFORMER_PYTHONPATH", "").split(":") if d)
    return Path(checkout).resolve(), Path(os.environ.get("ACTIONFORMER_WORK", actionformer_peer.DEFAULT_WORK)).resolve()


def run_method(regime_name: str, method: str, epochs: int | None, seed: int) -> dict:
    from dataclasses import replace

    import torch

    from benchmarks.head_harness import splits, train_baseline, train_head
    from benchmarks.synthetic import make_benchmark, regime
    from tal_pipeline.train import TrainConfig

    torch.set_num_threads(1)
    sp = splits(make_benchmark(regime(regime_name)))
    if method in PEERS:
        from benchmarks.actionformer_peer import PeerOptions, run_peer

        checkout, work = _peer_setup()
        row = run_peer(regime_name, checkout, work, PeerOptions(epochs=epochs, seed=seed))[0]  # EMA weights
        r, val = {"testing": row["test"], "train_s": row["train_s"]}, None
    elif method in HEADS:
        config = replace(TrainConfig(seed=seed), **TRAIN.get(method, {}), **({} if epochs is None else {"epochs": epochs}))
        with tempfile.TemporaryDirectory() as tmp:
            r = train_head(sp, Path(tmp) / "m.pt", config, head=HEADS[method])
        val = max(r["validation"], key=lambda h: h["average_mAP"]) if r["validation"] else None
    else:
        r = train_baseline(method, sp, seed=seed, **({} if epochs is None else {"epochs": epochs}))
        val = r["validation"]
    return {"regime": regime_name, "method": method, "seed": seed, "test": r["testing"], "val": val,
            "train_s": r["train_s"],
            "videos": {k: len(v.data.videos) for k, v in sp.items()}}


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


def run_train_time(threads: int, seed: int, precision: str | None = None) -> dict:
    """``tal train``'s default schedule on 80 training videos of 5 minutes (750 steps at 0.4 s,
    D = 128, the hard regime's signal) with 20 validation videos, ``threads`` torch threads."""
    import torch

    from benchmarks.head_harness import splits, train_head
    from benchmarks.synthetic import make_benchmark, regime
    from tal_pipeline.train import TrainConfig

    torch.set_num_threads(threads)
    sp = splits(make_benchmark(regime("hard", min_steps=750, max_steps=750, num_test=5, seed=seed + 100)))
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(seed=seed) if precision is None else TrainConfig(seed=seed, precision=precision)
        r = train_head(sp, Path(tmp) / "m.pt", config)
    return {"threads": threads, "precision": config.precision, "train_s": r["train_s"], "cpu_s": r["cpu_s"], "epochs": r["epochs"],
            "videos": {k: len(v.data.videos) for k, v in sp.items()}, "test": r["testing"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regimes", default="easy,hard,long,recur,harder")
    p.add_argument("--methods", default="linear,dilated,head-bare,head")
    p.add_argument("--epochs", type=int, default=None, help="override every method's epochs")
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated (mean row when several)")
    p.add_argument("--jobs", type=int, default=2, help="methods trained at the same time")
    p.add_argument("--infer-only", action="store_true")
    p.add_argument("--no-infer", action="store_true")
    p.add_argument("--infer-threads", type=int, default=1, help="torch threads for inference (1 is fastest on a busy machine)")
    p.add_argument("--train-time", type=int, default=0, metavar="THREADS",
                   help="only time tal train's default schedule on 80 five-minute videos with THREADS threads")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="--train-time: the training precision (default: tal train's)")
    p.add_argument("--_run", help=argparse.SUPPRESS)
    p.add_argument("--_infer", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._run:
        regime_name, method = args._run.split(":")
        print(json.dumps(run_method(regime_name, method, args.epochs, int(args.seeds))))
        return
    if args._infer:
        print(json.dumps(run_inference(args._infer, 1024, args.infer_threads)))
        return

    if args.train_time:
        print(json.dumps(run_train_time(args.train_time, int(args.seeds.split(",")[0]), args.precision)))
        return
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, python {platform.python_version()}")
    if not args.infer_only:
        from concurrent.futures import ThreadPoolExecutor

        methods = [m.strip() for m in args.methods.split(",")]
        unknown = set(methods) - set(METHODS)
        if unknown:
            sys.exit(f"unknown methods {sorted(unknown)}; known: {list(METHODS)}")
        seeds = [s.strip() for s in args.seeds.split(",")]
        jobs = [(f"{r.strip()}:{m}", s) for r in args.regimes.split(",") for m in methods for s in seeds]
        if set(methods) & set(PEERS):  # its patched copy and NMS build, once, before parallel jobs
            from benchmarks.actionformer_peer import prepare

            prepare(*_peer_setup())
        common = ["--epochs", str(args.epochs)] if args.epochs else []
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda j: _child(["--_run", j[0], "--seeds", j[1], *common]), jobs))
        from benchmarks.head_harness import print_table

        print()
        print_table(rows)
        print("\ntest = held-out testing videos; val avg = validation average mAP (the head: of the selected "
              "epoch); videos per split: " + ", ".join(f"{r['regime']} {r['videos']}"
                                                  for r in rows[::len(methods) * len(seeds)]))
    if args.no_infer:
        return
    print("\n| T (steps) | D | threads | inference (s) | peak RSS growth (MB) |")
    print("|---|---|---|---|---|")
    for t in (2250, 4500, 9000):
        r = _child(["--_infer", str(t), "--infer-threads", str(args.infer_threads)], one_thread=False)
        print(f"| {r['T']} | {r['D']} | {r['threads']} | {r['seconds']:.2f} | {r['peak_rss_growth_mb']:.0f} |")


if __name__ == "__main__":
    main()
