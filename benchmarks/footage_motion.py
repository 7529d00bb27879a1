"""How much the demo generator's video footage moves by itself (issue #12, round 9).

    python benchmarks/footage_motion.py                  # every video source, 120 frames a shot
    python benchmarks/footage_motion.py --frames 60 --size 256x192
    python benchmarks/footage_motion.py --objects        # local vs global motion, per shot
    python benchmarks/footage_motion.py --objects --videos a.mp4 b.mp4 --seconds 20
    python benchmarks/footage_motion.py --objects --videos examples/camera_demo.mp4 \
        --annotations examples/camera_demo.json --seconds 60      # camera moving vs still

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

``--objects`` (issue #31) measures instead how much of the motion is *local*, the part no
camera motion explains, as the detector sees it: frames sampled at 10 fps of real-time playback,
resized to 171x128 and centre-cropped to 112 as ``decode`` does, TV-L1 flow (the demo model's
torch backend) and a global affine motion fitted to each field robustly (:func:`fit_global`).
Per shot: the moving area (residual > ``MOVING_PX``) and the flow inside and outside it; the
share of the flow's magnitude the global model leaves unexplained, over the frame and inside
the moving area; the global part (translation, its largest net over 1 s, zoom at the crop's
edge); the residual's frame mean, the drift local motion adds to a frame average (what a
detector that pools the field reads as a pan or tilt); and the worst 2x2 quadrant's mean
residual (near 0 while only the camera moves). ``--view full`` measures all of the footage's
frame instead of the crop (an object that fills the crop is a smaller part of it).
``--videos`` measures video files the same way, through ``decode_video`` itself, split by
``--annotations`` into the pairs where the camera moves and the rest.
Units: pixels of the 112-px crop per 0.1 s. The generator's slowest pan
(``CameraOptions.pan_speed`` 0.04 frame widths/s) is 0.68 px per step there, its slowest zoom
0.56 px per step at the crop's edge; inside a video scene the camera's crop magnifies the
footage another 1.3-2x (``scene.sample_scene``).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from tal_pipeline.decode import decode_video, rgb_to_gray
from tal_pipeline.demo import footage
from tal_pipeline.flow import compute_flow
from tal_pipeline.results import load_annotations

DETECTOR_FPS = 10.0  # frames per second the detector samples
DECODE_WH = (171, 128)  # decode's resize before the 112-px centre crop (Kinetics preset)
CROP = 112  # pixels
MOVING_PX = 0.5  # px per 0.1 s at 112 px: residual above this is local motion (slowest pan: 0.68)
MARGIN = 4  # px left out at the crop's border, where TV-L1 has no content to match


def shot_motion(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` uint8 (N, H, W, 3) RGB -> (scale change at the edge, px a frame, (M,);
    share of pixels moving > 0.5 px a frame after the median shift, (N-1,))."""
    w = frames.shape[2]
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    edge = w / 2  # pixels from the centre
    scales, moving = [], []
    for prev, cur in itertools.pairwise(grey):
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


def fit_global(flow: np.ndarray, iters: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Robust global affine motion of one field: ``flow`` float32 (2, H, W), pixels ->
    (params (2, 3): [[u0, du/dx, du/dy], [v0, dv/dx, dv/dy]] about the centre; the model's
    field (2, H, W)).

    Starts from the median flow (a translation: what most of the frame does), then least
    squares on the pixels the model explains, each round keeping those whose residual is under
    2.5 robust sigmas (1.4826 x the median residual, at least 0.1 px); so objects covering less
    than about half the frame do not pull the fit, and one covering more *is* the fit.
    """
    _, h, w = flow.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs -= (w - 1) / 2
    ys -= (h - 1) / 2
    design = np.stack([np.ones(h * w), xs.ravel(), ys.ravel()], 1)  # (H*W, 3)
    target = flow.reshape(2, -1).T.astype(np.float64)  # (H*W, 2)
    coef = np.zeros((3, 2))
    coef[0] = np.median(target, axis=0)
    keep = None
    for _ in range(iters):
        resid = np.hypot(*(target - design @ coef).T)  # (H*W,)
        new = resid < max(2.5 * 1.4826 * float(np.median(resid)), 0.1)
        if new.sum() < 12 or (keep is not None and np.array_equal(new, keep)):
            break
        keep = new
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)  # (3, 2)
    model = (design @ coef).T.reshape(2, h, w)
    return coef.T, model.astype(np.float32)


def object_motion(flow: np.ndarray, moving_px: float = MOVING_PX, margin: int = MARGIN) -> dict[str, np.ndarray]:
    """Local vs global motion of flow fields ``(N, 2, H, W)``, pixels, per field (each (N,)):

    ``flow`` / ``resid``: summed magnitude of the flow / of its residual after :func:`fit_global`;
    ``flow_in`` / ``resid_in``: the same inside the moving regions (residual > ``moving_px``);
    ``area``: their share of the pixels; ``u0``, ``v0``: the global translation (at the centre);
    ``zoom``: the global divergence as px at the crop's edge (half the width from the centre);
    ``drift``: magnitude of the residual's frame mean (what local motion adds to an average);
    ``quad``: the largest such magnitude over the 2x2 quadrants (a camera move leaves every
    quadrant explained, an object fills one or two).
    Pixels within ``margin`` of the border are left out.
    """
    out: dict[str, list[float]] = {k: [] for k in ("flow", "resid", "flow_in", "resid_in", "area",
                                                   "u0", "v0", "zoom", "drift", "quad")}
    for f in flow:
        f = f[:, margin:f.shape[1] - margin, margin:f.shape[2] - margin]  # (2, h, w)
        coef, model = fit_global(f)
        mag, res = np.hypot(f[0], f[1]), f - model
        rmag = np.hypot(res[0], res[1])
        moving = rmag > moving_px
        out["flow"].append(float(mag.sum()))
        out["resid"].append(float(rmag.sum()))
        out["flow_in"].append(float(mag[moving].sum()))
        out["resid_in"].append(float(rmag[moving].sum()))
        out["area"].append(float(moving.mean()))
        out["u0"].append(float(coef[0, 0]))
        out["v0"].append(float(coef[1, 0]))
        out["zoom"].append(float((coef[0, 1] + coef[1, 2]) / 2 * (f.shape[2] + 2 * margin) / 2))
        out["drift"].append(float(np.hypot(*res.reshape(2, -1).mean(1))))
        h2, w2 = res.shape[1] // 2, res.shape[2] // 2
        out["quad"].append(max(float(np.hypot(*res[:, y:y + h2, x:x + w2].reshape(2, -1).mean(1)))
                               for y in (0, h2) for x in (0, w2)))
    return {k: np.asarray(v) for k, v in out.items()}


def detector_view(frames: np.ndarray, fps: float, full: bool = False) -> np.ndarray:
    """Footage ``uint8 (N, H, W, 3)`` at ``fps`` -> the grey frames the detector would sample
    from it at 10 fps (nearest source frame): resized to 171x128 and centre-cropped,
    ``uint8 (M, 112, 112)``; ``full``: the whole frame resized to 112 rows instead (the
    background is then more of the picture than any object)."""
    idx = np.arange(0, len(frames) - 0.5, fps / DETECTOR_FPS).round().astype(int)
    idx = idx[idx < len(frames)]
    if full:
        size = (round(frames.shape[2] * CROP / frames.shape[1]), CROP)
        return rgb_to_gray(np.stack([cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in idx]))
    x0, y0 = (DECODE_WH[0] - CROP) // 2, (DECODE_WH[1] - CROP) // 2
    crops = [cv2.resize(frames[i], DECODE_WH, interpolation=cv2.INTER_AREA)[y0:y0 + CROP, x0:x0 + CROP]
             for i in idx]
    return rgb_to_gray(np.stack(crops))


def _ratio(a: float, b: float, fmt: str = "{:.0f} %", scale: float = 100.0) -> str:
    return fmt.format(scale * a / b) if b > 0 else "-"


def net_shift(u0: np.ndarray, v0: np.ndarray, steps: int = round(DETECTOR_FPS)) -> float:
    """Largest net global translation over any ``steps`` consecutive fields (1 s), pixels: large
    for a camera that keeps moving one way, small for jitter that comes back."""
    steps = min(steps, len(u0))
    cum = np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([u0, v0], 1), 0)])  # (N+1, 2)
    return float(np.hypot(*(cum[steps:] - cum[:-steps]).T).max())


def object_rows(name: str, grey: np.ndarray, moving: np.ndarray | None = None) -> list[str]:
    """Markdown table rows of :func:`object_motion` over grey 112-px frames (M, H, W): one for
    all pairs, or with ``moving`` (bool (M-1,): the camera moves during that pair) one for the
    pairs where the camera moves and one for those where it is still."""
    m = object_motion(compute_flow(grey, backend="torch"))
    if moving is None:
        return [object_row(name, m, grey.shape[1:])]
    return [object_row(f"{name}, camera {what}", {k: v[sel] for k, v in m.items()}, grey.shape[1:],
                       contiguous=False)
            for what, sel in (("moving", moving), ("still", ~moving)) if sel.any()]


def object_row(name: str, m: dict[str, np.ndarray], hw: tuple[int, int], contiguous: bool = True) -> str:
    """One markdown table row of :func:`object_motion`'s ``m`` over frames of ``hw`` pixels
    (``contiguous``: the pairs follow each other, so a net shift over 1 s means something)."""
    n = len(m["flow"])
    npix = (hw[0] - 2 * MARGIN) * (hw[1] - 2 * MARGIN)
    n_in = float((m["area"] * npix).sum())
    flow_in, flow_out = float(m["flow_in"].sum()), float((m["flow"] - m["flow_in"]).sum())
    shift = np.hypot(m["u0"], m["v0"])
    px = "{:.2f}"
    net = f"{net_shift(m['u0'], m['v0']):.1f}" if contiguous else "-"
    return (f"| {name} | {n} | {m['flow'].sum() / (n * npix):.2f} | {100 * m['area'].mean():.0f} % | "
            f"{_ratio(flow_in, n_in, px, 1)} / {_ratio(flow_out, n * npix - n_in, px, 1)} | "
            f"{_ratio(m['resid'].sum(), m['flow'].sum())} / {_ratio(m['resid_in'].sum(), flow_in)} | "
            f"{shift.mean():.2f} / {net} | "
            f"{np.abs(m['zoom']).mean():.2f} | {m['drift'].mean():.2f} / {m['drift'].max():.2f} | "
            f"{m['quad'].mean():.2f} / {np.quantile(m['quad'], 0.9):.2f} |")


OBJECT_HEADER = (
    "| footage | pairs | flow, mean (px/step) | moving area (residual > 0.5 px) | flow inside / "
    "outside it (px/step) | flow magnitude the global model leaves unexplained: all / inside the "
    "moving area | global shift: mean (px/step) / largest net in 1 s (px) | global zoom at the edge, "
    "mean abs (px/step) | residual's frame-mean drift, mean / max (px/step) | worst quadrant's "
    "mean residual, mean / 90th percentile (px/step) |\n"
    "|---|---|---|---|---|---|---|---|---|---|")


def video_shots(at_most: int, size: str) -> Iterator[tuple[str, np.ndarray, float]]:
    """Every shot of every video source as the generator loads it (``size`` "WxH", at most
    ``at_most`` frames a shot): ("<id> (<split>) <start>-<end>", uint8 (N, H, W, 3), fps)."""
    w, h = (int(x) for x in size.lower().split("x"))
    for src in footage.find_sources():
        if src.kind != "video":
            continue
        for start, end in footage.shots(src):
            n = min(end - start, at_most)
            frames, fps = footage.load_video_shot(src, start, n, (w, h))
            yield f"{src.id} ({src.split}) {start}-{start + len(frames)}", frames, fps


def objects_main(args: argparse.Namespace) -> None:
    print(OBJECT_HEADER)
    ann = load_annotations(args.annotations).videos if args.annotations else {}
    if args.videos:
        for path in args.videos:
            frames, times = [], []
            for chunk in decode_video(path):
                keep = chunk.times < args.seconds
                frames.append(chunk.frames[keep])
                times.append(chunk.times[keep])
                if chunk.times[-1] >= args.seconds:
                    break
            t = np.concatenate(times)[:-1]  # (M-1,) s: each pair's first frame
            moving = None
            if Path(path).stem in ann:  # pairs inside an annotated camera motion
                moving = np.zeros(len(t), bool)
                for _, t0, t1 in ann[Path(path).stem].segments:
                    moving |= (t >= t0) & (t < t1)
            print(*object_rows(path, rgb_to_gray(np.concatenate(frames)), moving), sep="\n", flush=True)
        return
    for name, frames, fps in video_shots(args.frames, args.size):
        print(*object_rows(name, detector_view(frames, fps, full=args.view == "full")), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120, help="frames per shot, at most")
    ap.add_argument("--size", default="256x192", help="W x H the footage is loaded at")
    ap.add_argument("--objects", action="store_true", help="local vs global motion (TV-L1, 10 fps, 112 px)")
    ap.add_argument("--videos", nargs="+", help="with --objects: these video files instead of the footage")
    ap.add_argument("--view", choices=("crop", "full"), default="crop",
                    help="with --objects: the detector's centre crop of the footage, or all of it")
    ap.add_argument("--annotations", help="with --videos: ground truth (ActivityNet JSON); a video it "
                    "lists gets a row for the pairs where the camera moves and one for the rest")
    ap.add_argument("--seconds", type=float, default=20.0, help="with --videos: the first this many seconds")
    args = ap.parse_args()
    if args.objects:
        objects_main(args)
        return
    print("| source (split) shot (frames) | scale change at the frame's edge, mean / mean abs "
          "(px a frame) | pixels moving > 0.5 px a frame |")
    print("|---|---|---|")
    for name, frames, _ in video_shots(args.frames, args.size):
        scales, moving = shot_motion(frames)
        print(f"| {name} | {scales.mean():+.3f} / {np.abs(scales).mean():.3f} | "
              f"{100 * moving.mean():.0f} % |", flush=True)


if __name__ == "__main__":
    main()
