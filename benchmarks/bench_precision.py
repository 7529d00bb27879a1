"""Does bf16 change anything that matters? The demo detector's held-out mAP from fp32 and from
bf16 features of the same frames and the same TV-L1 flow, and the backbone's speed in both.

    python -m tal_pipeline.demo.camera --out data/demo/heldout --split heldout --videos 16 \\
        --seed 1 --min-duration 30 --max-duration 60        # the demo's held-out split
    python benchmarks/bench_precision.py data/demo/heldout   # [--videos 8] [--threads 2]

Per video: decode once, TV-L1 flow once (the torch backend's options as the demo detector was
trained with, pinned below, so later changes of the defaults do not move this comparison), then
the demo's flow-stream backbone in each precision on those same frames and fields, the head,
Soft-NMS, and the ActivityNet mAP of each precision against the split's annotations. bf16 runs
where the CPU has it natively (``features.cpu_has_native_bf16``; it is emulated, and slow,
elsewhere). Goal (issue #15): |mAP(bf16) - mAP(fp32)| <= 1 point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tal_pipeline.flow.tvl1_torch import TVL1Options

# the torch TV-L1 options the demo detector's training features were made with (weights/README.md)
DEMO_TVL1 = TVL1Options(scales=8, scale_step=0.7, warps=5, iterations=10, epsilon=0.01, check_every=5,
                        median=3, interpolation="bicubic", finest_iterations=0, presmooth=0.0, antialias=False)
PRECISIONS = ("fp32", "bf16")


def main() -> None:
    from tal_pipeline.decode import decode_video, probe_video, rgb_to_gray
    from tal_pipeline.evaluate import evaluate
    from tal_pipeline.features import FeatureExtractor, cpu_has_native_bf16
    from tal_pipeline.flow import compute_flow
    from tal_pipeline.pipeline import Detector
    from tal_pipeline.results import Annotations, load_annotations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="held-out folder: videos + annotations.json")
    parser.add_argument("--videos", type=int, default=0, help="first N videos (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(args.data.glob("*.mp4"))[: args.videos or None]
    if not paths:
        sys.exit(f"bench_precision: no .mp4 in {args.data}")
    print(f"bench_precision {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"{platform.processor() or platform.machine()}  cores {os.cpu_count()}  "
          f"native bf16: {cpu_has_native_bf16()}  videos {len(paths)}  load {os.getloadavg()[0]:.1f}")
    det = Detector.load("demo", build_extractor=False)
    streams = det.meta.streams
    extractors = {
        p: FeatureExtractor(backbone=det.meta.backbone, weights="seeded", streams=streams, precision=p)
        for p in PRECISIONS
    }
    for fx in extractors.values():
        det.check_extractor(fx)
    found = {p: {} for p in PRECISIONS}
    seconds = {p: 0.0 for p in PRECISIONS}
    rel = []
    video_s = 0.0
    for path in paths:
        frames = np.concatenate([c.frames for c in decode_video(path)])  # (N, 112, 112, 3)
        flow = compute_flow(rgb_to_gray(frames), backend="torch", options=DEMO_TVL1)
        flow = np.concatenate([flow, flow[-1:]])  # (N, 2, 112, 112): the last field repeats
        duration = probe_video(path).duration
        video_s += duration
        arrays = {}
        for p, fx in extractors.items():
            start = time.perf_counter()
            feats = fx.extract_frames(frames, flow, video=str(path), duration=duration)
            seconds[p] += time.perf_counter() - start
            arrays[p] = feats.array
            found[p][path.stem] = det.detect_features(feats.array, feats.meta).segments
        a, b = arrays["fp32"], arrays["bf16"]
        rel.append(float(np.linalg.norm(a - b) / np.linalg.norm(a)))
        print(f"{path.stem}: {len(frames)} frames, rel. L2 bf16 vs fp32 {rel[-1]:.2e}, "
              f"backbone fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s so far", flush=True)
    full = load_annotations(args.data / "annotations.json")
    ann = Annotations({k: v for k, v in full.videos.items() if k in {p.stem for p in paths}}, full.source)
    result = {}
    for p in PRECISIONS:
        ev = evaluate(ann, found[p])
        result[p] = {"mAP": list(ev.mAP), "average_mAP": ev.average_mAP, "backbone_s": seconds[p]}
        print(f"{p}: mAP@{ev.tiou} = {[round(100 * m, 2) for m in ev.mAP]}, avg {100 * ev.average_mAP:.2f}, "
              f"backbone {seconds[p]:.1f} s for {video_s:.0f} s of video")
    diff = [100 * (b - a) for a, b in zip(result["fp32"]["mAP"], result["bf16"]["mAP"], strict=True)]
    print(f"bf16 - fp32 mAP (points) per tIoU: {[round(d, 2) for d in diff]}; "
          f"avg {100 * (result['bf16']['average_mAP'] - result['fp32']['average_mAP']):.2f}; "
          f"goal |diff| <= 1: {'met' if max(map(abs, diff)) <= 1 else 'not met'}")
    print(f"features rel. L2 bf16 vs fp32: median {np.median(rel):.2e}, max {max(rel):.2e}; "
          f"backbone speed-up {seconds['fp32'] / seconds['bf16']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "rel_l2": rel, "video_s": video_s}, indent=1))


if __name__ == "__main__":
    main()
