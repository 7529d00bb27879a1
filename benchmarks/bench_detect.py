"""`tal detect` end to end: real-time factor, per-stage breakdown and peak RSS.

    python benchmarks/bench_detect.py                    # 60 s 640x360 30 fps clip, CPU
    python benchmarks/bench_detect.py --device cuda      # one GPU
    python benchmarks/bench_detect.py --seconds 20 --model path/to/model.pt

Generates the clip (bench_extract's textured panning clip, cached in /tmp/tal_bench), then, in
one run: a bare PyAV decode loop of the file (the reference), each stage of the demo detector
alone (decode, TV-L1 flow, backbone over the streams the model uses, head + Soft-NMS), and
`tal detect` end to end in a fresh subprocess (wall time and its own peak RSS, ``run_tal``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import bare_decode
from bench_extract import CPU_S, line, make_clip, run_tal, timed


def stages(clip: Path, seconds: float, model: str, device: str) -> dict:
    from tal_pipeline.decode import decode_video, rgb_to_gray
    from tal_pipeline.flow import compute_flow
    from tal_pipeline.pipeline import Detector

    det = Detector.load(model, device=device)
    fx = det.extractor
    res: dict = {"streams": list(fx.options.streams), "flow": fx.options.flow_backend}
    _, dt = timed(lambda: bare_decode(clip), "bare_pyav_decode")
    res["bare_pyav_decode"] = line("bare_pyav_decode", dt, seconds)
    frames, dt = timed(lambda: np.concatenate([c.frames for c in decode_video(clip)]), "decode")
    res["decode"] = line("decode", dt, seconds, f"({len(frames)} frames)")
    gray = rgb_to_gray(frames)

    def run_flow():
        parts = [compute_flow(gray[i: i + 65], backend=fx.options.flow_backend, device=device)
                 for i in range(0, len(gray) - 1, 64)]
        return np.concatenate(parts)

    flow, dt = timed(run_flow, "flow")
    res["flow"] = line("flow", dt, seconds, f"({len(flow)} pairs, {fx.options.flow_backend})")
    flow = np.concatenate([flow, flow[-1:]])
    fx.extract_frames(frames[:24], flow[:24])  # warm-up
    feats, dt = timed(lambda: fx.extract_frames(frames, flow, duration=seconds), "backbone")
    res["backbone"] = line("backbone", dt, seconds, f"(T={len(feats)}, {'+'.join(fx.options.streams)})")
    _, dt = timed(lambda: det.detect_features(feats.array, feats.meta), "head_nms")
    res["head_nms"] = line("head_nms", dt, seconds)
    return res


def end_to_end(clip: Path, model: str, device: str) -> tuple[float, float]:
    """(wall s, peak RSS MB) of ``tal detect clip`` in a fresh process (its own peak: ``run_tal``)."""
    with tempfile.TemporaryDirectory() as out:
        return run_tal(["detect", str(clip), "-o", f"{out}/o.json", "--model", model, "--device", device,
                        "--no-progress"], quiet=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length, seconds")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "tal_bench"
    cache.mkdir(exist_ok=True)
    clip = make_clip(cache / f"clip_{int(args.seconds)}s.mp4", args.seconds)
    import torch

    print(f"clip {clip} ({args.seconds:.0f} s 640x360 30 fps), device {args.device}, "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)
    # the fresh `tal detect` process first: after the in-process stages this process's thread
    # pools and memory stay alive beside the child and slow it
    wall, rss = end_to_end(clip, args.model, args.device)
    res = stages(clip, args.seconds, args.model, args.device)
    bare = res["bare_pyav_decode"]["wall_s"]
    res["end_to_end"] = {"wall_s": wall, "x_realtime": args.seconds / wall, "peak_rss_mb": rss,
                         "vs_bare_decode": bare / wall}
    print(f"{'tal detect (process)':22s} wall {wall:7.2f} s  {args.seconds / wall:6.2f}x real time   "
          f"peak RSS {rss:.0f} MB   throughput vs bare decode {bare / wall:.3f}x", flush=True)
    res["cpu_s"] = dict(CPU_S)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
