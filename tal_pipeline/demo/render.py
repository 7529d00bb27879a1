"""The pixels of a :class:`~tal_pipeline.demo.plan.VideoPlan`: the camera's path over the
scene, the sensor (gain, noise) and the h264 file (steps 4-5 of ``camera``'s recipe)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from tal_pipeline.demo.footage import Source
from tal_pipeline.demo.plan import Cut, Move, VideoPlan, seed_rng
from tal_pipeline.demo.scene import build_scene

ENCODER_PRESET = "superfast"  # libx264: fast to write; the files are small either way


def camera_path(plan: VideoPlan, t: np.ndarray, shake: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop window centre (cx, cy) in canvas pixels and zoom z at times ``t`` (s).

    (N,) -> three (N,) float64 arrays. Cuts set the view from their time on; each move adds
    its displacement times its progress.
    """
    t = np.asarray(t, np.float64)
    cx = np.full_like(t, plan.start[0])
    cy = np.full_like(t, plan.start[1])
    lz = np.full_like(t, math.log(plan.start[2]))
    events: list[tuple[float, int, Move | Cut]] = [(m.start, 1, m) for m in plan.moves]
    events += [(c.time, 0, c) for c in plan.cuts]
    for _, _, ev in sorted(events, key=lambda e: (e[0], e[1])):
        if isinstance(ev, Cut):
            after = t >= ev.time
            cx[after], cy[after], lz[after] = ev.cx, ev.cy, math.log(ev.z)
        else:
            g = ev.progress(t)
            cx += ev.dx * g
            cy += ev.dy * g
            lz += ev.dlogz * g
    z = np.exp(lz)
    if shake:
        sx = sum(a * np.sin(2 * math.pi * f * t + p) for a, f, p in plan.shake[:3])
        sy = sum(a * np.sin(2 * math.pi * f * t + p) for a, f, p in plan.shake[3:])
        cx = cx + sx / z  # output pixels -> canvas pixels
        cy = cy + sy / z
    return cx, cy, z


def frame_gains(plan: VideoPlan, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global gain per frame (exposure drift, flicker, lighting steps); (N,) -> (N,)."""
    a, f, p = plan.drift
    g = 1.0 + a * np.sin(2 * math.pi * f * t + p) + plan.flicker * rng.standard_normal(t.shape)
    for ts, k in plan.light_steps:
        g = np.where(t >= ts, g * k, g)
    return g.astype(np.float32)


def render_frames(plan: VideoPlan, sources: Sequence[Source], *, noise: bool = True,
                  max_frames: int | None = None) -> Iterator[np.ndarray]:
    """The plan's frames: uint8 (H, W, 3) RGB, one per 1/fps second, in order.

    ``noise=False`` leaves out the sensor (gain, noise) for measurements.
    """
    scene = build_scene(plan.scene, sources)
    n = plan.num_frames if max_frames is None else min(max_frames, plan.num_frames)
    t = np.arange(n, dtype=np.float64) / plan.fps
    cx, cy, z = camera_path(plan, t)
    gains = frame_gains(plan, np.arange(plan.num_frames) / plan.fps, seed_rng((*plan.seed, 1)))
    rng = seed_rng((*plan.seed, 2))
    w, h = plan.width, plan.height
    ch, cw = scene.hw
    pad = 16  # pixels: noise fields are cut from a few larger ones at random offsets
    bank = np.round(rng.standard_normal((4, h + pad, w + pad, 3)) * plan.noise_sigma)
    bank = bank.astype(np.int16)  # (4, H + pad, W + pad, 3) grey levels
    period_x, period_y = 2.0 * (cw - 1), 2.0 * (ch - 1)  # BORDER_REFLECT_101 repeats with these
    tint = np.asarray(plan.scene.tint, np.float64)  # (3,) RGB white balance
    for i in range(n):
        canvas = scene.frame(float(t[i]))
        s = 1.0 / z[i]
        # inverse map: canvas = s * (output - output centre) + window centre
        tx = cx[i] - s * (w - 1) / 2
        ty = cy[i] - s * (h - 1) / 2
        tx -= period_x * math.floor(tx / period_x)  # fold: same picture, cheaper border lookups
        ty -= period_y * math.floor(ty / period_y)
        m = np.array([[s, 0.0, tx], [0.0, s, ty]], np.float32)
        frame = cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101)
        if plan.blur_px > 0:  # defocus before the sensor: the noise stays sharp
            frame = cv2.GaussianBlur(frame, (0, 0), plan.blur_px)
        if plan.contrast != 1.0:  # c * x + 128 (1 - c): mid-grey stays
            frame = cv2.convertScaleAbs(frame, alpha=plan.contrast,
                                        beta=128.0 * (1.0 - plan.contrast))
        if not noise:
            yield frame
            continue
        g = gains[i] * tint
        frame = cv2.multiply(frame, (float(g[0]), float(g[1]), float(g[2]), 0.0))  # saturates
        if plan.noise_sigma > 0:
            k, oy, ox = rng.integers(4), rng.integers(pad), rng.integers(pad)
            frame = cv2.add(frame, bank[k, oy:oy + h, ox:ox + w], dtype=cv2.CV_8U)
        yield frame


def write_video(plan: VideoPlan, path: str | os.PathLike, sources: Sequence[Source]) -> Path:
    """Render ``plan`` to an h264 mp4 at ``path`` (written to a temp file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(name)  # fsutil.remove_stale_temps() cleans these up after a killed run
    try:
        with av.open(str(tmp), mode="w", format="mp4") as c:
            stream = c.add_stream("libx264", rate=Fraction(plan.fps).limit_denominator(1001))
            stream.width, stream.height = plan.width, plan.height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(plan.crf), "preset": ENCODER_PRESET, "threads": "1"}
            for frame in render_frames(plan, sources):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(packet)
            for packet in stream.encode():
                c.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
