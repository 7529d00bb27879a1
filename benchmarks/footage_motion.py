"""How much the demo generator's video footage moves by itself (issue #12, round 9).

    python benchmarks/footage_motion.py                  # every video source, 120 frames a shot
    python benchmarks/footage_motion.py --frames 60 --size 256x192

Looping-video scenes are where the demo detector loses, on validation as on held-out. This
measures the footage as the generator loads it (``footage.load_video_shot``: stabilised by the
integrated median translation, resized to the output size), per consecutive frame pair:

- the scale change left in the footage (the filming camera's own zoom, which stabilising by
  translation does not remove): a similarity fitted with RANSAC to corners tracked by
  Lucas-Kanade, as pixels a frame at the frame's edge (half its width from the centre);
  "mean" keeps the sign (a steady zoom), "mean abs" does not (jitter and reversals);
- the share of pixels that move by themselves: dense Farneback flow with its median removed,
  magnitude over 0.5 px a frame.

For comparison: the generator's slowest zoom (``CameraOptions.zoom_rate``, 0.10 /s in log-zoom)
moves the edge of a 256-px frame by ~0.5 px a frame at 25 fps.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from tal_pipeline.demo import footage


def shot_motion(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` uint8 (N, H, W, 3) RGB -> (scale change at the edge, px a frame, (M,);
    share of pixels moving > 0.5 px a frame after the median shift, (N-1,))."""
    h, w = frames.shape[1:3]
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    edge = w / 2  # pixels from the centre
    scales, moving = [], []
    for prev, cur in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (H, W, 2)
        resid = flow - np.median(flow.reshape(-1, 2), axis=0)
        moving.append(float((np.hypot(resid[..., 0], resid[..., 1]) > 0.5).mean()))
        pts = cv2.goodFeaturesToTrack(prev, 300, 0.01, 5)
        if pts is None or len(pts) < 10:
            continue
        nxt, ok, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None)
        ok = ok.ravel() == 1
        m, _ = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.RANSAC,
                                           ransacReprojThreshold=0.5)
        if m is not None:  # [[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]
            scales.append((np.hypot(m[0, 0], m[1, 0]) - 1.0) * edge)
    return np.asarray(scales), np.asarray(moving)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120, help="frames per shot, at most")
    ap.add_argument("--size", default="256x192", help="W x H the footage is loaded at")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.lower().split("x"))
    print("| source (split) | shot (frames) | scale change at the frame's edge, mean / mean abs "
          "(px a frame) | pixels moving > 0.5 px a frame |")
    print("|---|---|---|---|")
    for src in footage.find_sources():
        if src.kind != "video":
            continue
        for start, end in footage.shots(src):
            n = min(end - start, args.frames)
            frames, _ = footage.load_video_shot(src, start, n, (w, h))
            scales, moving = shot_motion(frames)
            print(f"| {src.id} ({src.split}) | {start}-{start + n} | {scales.mean():+.3f} / "
                  f"{np.abs(scales).mean():.3f} | {100 * moving.mean():.0f} % |", flush=True)


if __name__ == "__main__":
    main()
