"""Camera-motion action videos: real footage filmed by a virtual camera, with exact labels.

Six classes (``CLASSES``), named after what the *camera* does:

| class | camera | crop window over the canvas | scene in the frame | optical flow |
|---|---|---|---|---|
| ``pan_left`` | turns left | moves left (cx decreases) | moves right | dx > 0 |
| ``pan_right`` | turns right | moves right | moves left | dx < 0 |
| ``tilt_up`` | turns up | moves up (cy decreases) | moves down | dy > 0 |
| ``tilt_down`` | turns down | moves down | moves up | dy < 0 |
| ``zoom_in`` | zooms in | shrinks (z grows) | grows | divergence > 0 |
| ``zoom_out`` | zooms out | grows | shrinks | divergence < 0 |

How a video is made (``plan_video`` then ``render_frames`` / ``write_video``):

1. Scene: ``footage.sample_scene`` picks footage of one split (a looping stabilised video shot,
   a photograph, a wall of photographs, or a shot inset in a photograph) and moving objects
   cut from other footage of that split, so content moves by itself in every kind of scene.
2. Timeline: a static stretch (1-6 s), then actions and static stretches alternating, the
   last static stretch at least 1 s. Action classes are drawn in shuffled rounds of all six
   (each class as frequent as any other), duration log-uniform in 1-20 s.
   Peak speeds: pans and tilts 4-16 % of the frame *width* per second (same pixel speed for
   both, as a real camera turning at the same angular speed), at least 10 % of the width in
   all; zooms 10-30 %/s in log-zoom (at 10 fps, 0.3-1 px a frame at 60 px from the centre of
   a 112-px crop: slower zooms are hard to tell from a static scene), the whole zoom a factor
   1.2-3; a zoom that reaches that factor before its time is up stops there (the rest of its
   time is static) rather than being slowed down. Speed ramps up and down
   with a raised cosine over 0.15-0.5 s (at most a fifth of the action) at each end. Pans and
   tilts carry a small perpendicular drift (up to 8 %). Where a move has no room left (a pan
   would leave the canvas, a zoom its range z = 0.5-3), the camera cuts to a new view from
   which it fits, in the middle of the static stretch before it (about every other action);
   other cuts happen at random (10 % of stretches). Cuts are not actions. Views prefer
   textured parts of the scene (best of 4 by ``footage.texture_map``).
3. Ground truth: the segment of an action is exactly the time span in which the camera moves
   for it, eases included (speed > 0), in seconds of the output video.
4. Camera: each output frame is the crop window (centre cx, cy, zoom z) resampled to the output
   size with ``cv2.warpAffine`` (bilinear); outside the canvas the picture is mirrored, so the
   longest pans never run out of room (the window is partly outside ~8 % of the time).
   Hand shake: a sum of three sinusoids (0.5-4 Hz), 0-0.5 px. Optional, for low-texture test
   sets: Gaussian defocus (``blur_px``) and contrast reduced around mid-grey (``contrast``);
   for training data, ``soft_fraction`` of the videos get both drawn per video.
5. Sensor: global gain (slow exposure drift, per-frame flicker, up to two lighting steps),
   white balance, Gaussian noise (sigma 0-4 grey levels, fresh every frame), h264 (libx264,
   CRF 23-32, preset superfast) at a frame rate from ``FPS_CHOICES`` (12 to 60 fps).

Everything is a function of a seed tuple through numpy's PCG64, and of the set of sources
found (``footage.find_sources``): same seed and same install, same video.

Command line::

    python -m tal_pipeline.demo.camera --out DIR --split train --videos 80 --seed 0 --jobs 2

writes ``DIR/<video_id>.mp4`` and ``DIR/annotations.json`` (ActivityNet format).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import av
import cv2
import numpy as np

from tal_pipeline.demo import footage
from tal_pipeline.demo.footage import SceneSpec, Source

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in",
                            "zoom_out")
STATIC = "static"
FPS_CHOICES: tuple[float, ...] = (12.0, 15.0, 24.0, 25.0, 30000 / 1001, 30.0, 60.0)  # frames/s
VERSION = "tal-pipeline-camera/1"
ENCODER_PRESET = "superfast"  # libx264: fast to write; the files are small either way
SUBSETS = {"train": "training", "heldout": "testing"}  # split -> ActivityNet subset


@dataclass(frozen=True)
class CameraOptions:
    """How videos are generated. Ranges are (low, high), sampled per video or per action."""

    width: int = 256  # output pixels
    height: int = 192  # output pixels
    fps_choices: tuple[float, ...] = FPS_CHOICES  # output (= "source") frames per second
    fps: float | None = None  # force this output rate (still drawn: the plan stays the same)
    duration_s: tuple[float, float] = (30.0, 90.0)  # whole video, seconds
    static_s: tuple[float, float] = (1.0, 6.0)  # static stretch between actions, seconds
    action_s: tuple[float, float] = (1.0, 20.0)  # action duration, seconds (log-uniform)
    pan_speed: tuple[float, float] = (0.04, 0.16)  # peak, frame widths per second (log-unif.)
    min_pan: float = 0.10  # frame widths: least total displacement of a pan or tilt
    off_axis: float = 0.08  # largest perpendicular drift, fraction of the main displacement
    zoom_rate: tuple[float, float] = (0.10, 0.30)  # peak d(ln z)/dt, 1/s (log-uniform)
    zoom_total: tuple[float, float] = (1.2, 3.0)  # zoom factor of one whole zoom action
    zoom_limits: tuple[float, float] = (0.5, 3.0)  # z range (z = 1: canvas px = output px)
    ease_s: tuple[float, float] = (0.15, 0.5)  # speed ramp at each end, seconds (<= 20 %)
    cut_prob: float = 0.1  # chance of a cut to a new view inside a static stretch
    shake_px: tuple[float, float] = (0.0, 0.5)  # hand-shake amplitude, output pixels
    tripod_prob: float = 0.3  # chance of no shake at all
    noise_sigma: tuple[float, float] = (0.0, 4.0)  # Gaussian sensor noise, grey levels
    flicker: tuple[float, float] = (0.0, 0.02)  # per-frame gain std
    drift: tuple[float, float] = (0.0, 0.06)  # slow exposure drift amplitude (gain)
    light_steps: int = 2  # at most this many sudden lighting changes per video
    crf: tuple[int, int] = (23, 32)  # libx264 constant rate factor, inclusive
    objects: bool = True  # moving objects in the scene
    scene_kind: str | None = None  # force a footage.SCENE_KINDS kind (None: sampled)
    contrast: float = 1.0  # picture contrast around mid-grey; < 1 with blur_px: low texture
    blur_px: float = 0.0  # Gaussian defocus of the picture (sigma, output pixels); 0: none
    # Training data for soft footage (held-out video footage is 176x144, upscaled 2-4x): this
    # fraction of videos gets a defocus and a contrast drawn from the ranges below, from a random
    # stream of its own, so that every other video stays the same bytes as with 0.
    soft_fraction: float = 0.0
    soft_blur_px: tuple[float, float] = (0.6, 3.0)  # sigma, output pixels (log-uniform)
    soft_contrast: tuple[float, float] = (0.3, 0.9)  # contrast around mid-grey (uniform)


@dataclass(frozen=True)
class Move:
    """One action: the crop window moves by (dx, dy) canvas pixels and ln z by dlogz."""

    label: str  # one of CLASSES
    start: float  # seconds: the camera starts moving
    end: float  # seconds: the camera stops
    ease: float  # seconds of speed ramp at each end
    dx: float  # canvas pixels, window centre, whole action (< 0: window goes left)
    dy: float  # canvas pixels (< 0: window goes up)
    dlogz: float  # change of ln z (> 0: zoom in)

    def progress(self, t: np.ndarray) -> np.ndarray:
        """Fraction of the move done at times ``t`` (s), 0 before, 1 after; (N,) -> (N,)."""
        d, e = self.end - self.start, self.ease
        tau = np.clip(np.asarray(t, np.float64) - self.start, 0.0, d)
        total = d - e  # area under the speed profile (peak 1)

        def ramp(x: np.ndarray) -> np.ndarray:  # integral of (1 - cos(pi x / e)) / 2
            if e <= 0:
                return np.zeros_like(x)
            return 0.5 * x - e / (2 * math.pi) * np.sin(math.pi * x / e)

        s = np.where(tau < e, ramp(tau),
                     np.where(tau <= d - e, 0.5 * e + (tau - e), total - ramp(d - tau)))
        return np.clip(s / total, 0.0, 1.0)


@dataclass(frozen=True)
class Cut:
    """The camera jumps to a new view (an editing cut), not an action."""

    time: float  # seconds
    cx: float  # canvas pixels
    cy: float  # canvas pixels
    z: float  # zoom


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video and its ground truth (pure data, picklable)."""

    video_id: str
    seed: tuple[int, ...]  # PCG64 seed of this video (SeedSequence entropy)
    split: str  # "train" or "heldout": which sources
    subset: str  # ActivityNet subset: "training", "validation" or "testing"
    fps: float  # output frames per second
    num_frames: int
    width: int  # output pixels
    height: int  # output pixels
    scene: SceneSpec
    start: tuple[float, float, float]  # (cx, cy, z) at t = 0
    moves: tuple[Move, ...]
    cuts: tuple[Cut, ...]
    shake: tuple[tuple[float, float, float], ...]  # (amplitude px, Hz, phase) per x/y term
    noise_sigma: float  # grey levels
    flicker: float  # per-frame gain std
    drift: tuple[float, float, float]  # (amplitude, Hz, phase) of the exposure drift
    light_steps: tuple[tuple[float, float], ...]  # (time s, gain factor) from then on
    crf: int
    sources: tuple[str, ...] = field(default=())  # ids of the footage used
    contrast: float = 1.0  # picture contrast around mid-grey (CameraOptions.contrast)
    blur_px: float = 0.0  # Gaussian defocus sigma, output pixels (CameraOptions.blur_px)

    @property
    def duration(self) -> float:
        """Seconds: num_frames / fps (what a decoder reports)."""
        return self.num_frames / self.fps

    def annotations(self) -> list[dict]:
        """ActivityNet annotations: ``[{"label", "segment": [t0, t1], "label_id"}]``."""
        return [{"label": m.label, "segment": [round(m.start, 3), round(m.end, 3)],
                 "label_id": CLASSES.index(m.label)} for m in self.moves]

    def database_entry(self) -> dict:
        return {"subset": self.subset, "duration": round(self.duration, 6),
                "fps": self.fps, "annotations": self.annotations(),
                "resolution": [self.width, self.height], "scene": self.scene.kind,
                "sources": list(self.sources), "seed": list(self.seed),
                **({"contrast": self.contrast} if self.contrast != 1.0 else {}),
                **({"blur_px": self.blur_px} if self.blur_px > 0 else {})}


def _rng(seed: Sequence[int]) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(seed))))


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _script_from_rng(rng: np.random.Generator, opt: CameraOptions,
                     duration: float) -> list[tuple[str, float]]:
    """Alternating (static, action) durations filling ``duration`` seconds."""
    s_lo, s_hi = opt.static_s
    a_lo, a_hi = opt.action_s
    items: list[tuple[str, float]] = []
    bag: list[str] = []  # classes drawn without replacement, so every class is as frequent
    t = rng.uniform(s_lo, s_hi)
    items.append((STATIC, t))
    while True:
        room = duration - t - s_lo  # the video ends with >= s_lo seconds of static
        if room < a_lo:
            break
        d = min(_loguniform(rng, a_lo, a_hi), room)
        if not bag:
            bag = [CLASSES[i] for i in rng.permutation(len(CLASSES))]
        items.append((bag.pop(), d))
        t += d
        gap = rng.uniform(s_lo, s_hi)
        if t + gap + a_lo + s_lo > duration:
            items.append((STATIC, duration - t))
            break
        items.append((STATIC, gap))
        t += gap
    return items


def _view(rng: np.random.Generator, canvas_hw: tuple[int, int], out_wh: tuple[int, int],
          z_range: tuple[float, float], texture: np.ndarray | None = None,
          shift: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0,
          tries: int = 4) -> tuple[float, float, float]:
    """A random view (cx, cy, z), z log-uniform in ``z_range``, for the move that follows.

    The window stays inside the canvas, if it can, all along a move of ``shift`` output
    pixels (pan, tilt) or of a zoom by the factor ``zoom``. With a ``texture`` map
    (``footage.texture_map``): the most textured of ``tries`` views.
    """
    ch, cw = canvas_hw
    w, h = out_wh
    best, best_score = (0.0, 0.0, 1.0), -1.0
    for _ in range(tries if texture is not None else 1):
        z = _loguniform(rng, *z_range)
        zmin = min(z, z * zoom)  # the largest window of the move
        hw, hh = 0.5 * w / zmin, 0.5 * h / zmin
        c = []
        for half, size, move in ((hw, cw, shift[0] / z), (hh, ch, shift[1] / z)):
            lo, hi = half + max(0.0, -move), size - half - max(0.0, move)
            if lo <= hi:
                c.append(rng.uniform(lo, hi))
            elif 2 * half + abs(move) > size and 2 * half < size:  # too long: start at the end
                c.append(size - half if move < 0 else half)
            else:
                c.append(0.5 * size)
        cx, cy = c
        score = 0.0
        if texture is not None:
            f = texture.shape[0] / ch
            xa, xb = max(0, int((cx - hw) * f)), max(1, math.ceil((cx + hw) * f))
            ya, yb = max(0, int((cy - hh) * f)), max(1, math.ceil((cy + hh) * f))
            score = float(texture[ya:yb, xa:xb].mean()) if texture[ya:yb, xa:xb].size else 0.0
        if score > best_score:
            best, best_score = (float(cx), float(cy), float(z)), score
    return best


def _fits(view: tuple[float, float, float], canvas_hw: tuple[int, int],
          out_wh: tuple[int, int], shift: tuple[float, float], zoom: float) -> bool:
    """Does the window stay inside the canvas during the move (see ``_view``)?"""
    cx, cy, z = view
    zmin = min(z, z * zoom)
    hw, hh = 0.5 * out_wh[0] / zmin, 0.5 * out_wh[1] / zmin
    ok = True
    for c, half, size, move in ((cx, hw, canvas_hw[1], shift[0] / z),
                                (cy, hh, canvas_hw[0], shift[1] / z)):
        ok &= min(c, c + move) >= half - 1e-6 and max(c, c + move) <= size - half + 1e-6
    return ok


def plan_video(video_id: str, seed: Sequence[int], sources: Sequence[Source],
               options: CameraOptions = CameraOptions(), subset: str = "training",
               script: Sequence[tuple[str, float]] | None = None,
               fps: float | None = None) -> VideoPlan:
    """Sample one video: scene, timeline, camera moves, sensor; no pixel is made here.

    ``sources``: the footage to draw from (one split). ``script``: a fixed timeline, a list of
    ``(label or "static", seconds)`` (speeds and everything else still sampled); default: a
    random timeline of ``options.duration_s``. ``fps``: force the output frame rate.
    """
    opt = options
    rng = _rng(seed)
    split = {s.split for s in sources}
    if fps is None:
        fps = opt.fps_choices[int(rng.integers(len(opt.fps_choices)))]
        fps = opt.fps or fps  # robustness splits: the same videos at another frame rate
    fps = float(fps)
    scene = footage.sample_scene(rng, sources, (opt.height, opt.width), kind=opt.scene_kind,
                                 objects=opt.objects)
    if script is None:
        script = _script_from_rng(rng, opt, rng.uniform(*opt.duration_s))
    for label, d in script:
        if label != STATIC and label not in CLASSES:
            raise ValueError(f"unknown action {label!r} (classes: {', '.join(CLASSES)})")
        if d <= 0:
            raise ValueError(f"{label}: duration must be > 0 s, got {d}")
    num_frames = max(1, round(sum(d for _, d in script) * fps))

    path = _CameraPath(rng, opt, scene.canvas_hw, footage.texture_map(scene, sources))
    for label, d in script:
        if label == STATIC:
            path.hold(d)
        else:
            path.move(label, d)
    duration = num_frames / fps
    moves = [replace(m, end=min(m.end, duration)) for m in path.moves
             if m.start < duration - 0.1]
    return VideoPlan(
        video_id=video_id, seed=tuple(int(s) for s in seed), split="+".join(sorted(split)),
        subset=subset, fps=fps, num_frames=num_frames, width=opt.width, height=opt.height,
        scene=scene, start=path.start, moves=tuple(moves), cuts=tuple(path.cuts),
        sources=scene.source_ids(), **_sample_softness(seed, opt),
        **_sample_sensor(rng, opt, duration))


def _sample_softness(seed: Sequence[int], opt: CameraOptions) -> dict:
    """The ``VideoPlan`` fields contrast and blur_px: the options', or for a ``soft_fraction``
    of videos drawn from ``soft_blur_px`` and ``soft_contrast``. Own stream (seed + (3,)): the
    plan's other draws do not depend on it."""
    rng = _rng((*seed, 3))  # (seed, 1) and (seed, 2) are the renderer's
    if opt.soft_fraction <= 0.0 or rng.random() >= opt.soft_fraction:
        return {"contrast": opt.contrast, "blur_px": opt.blur_px}
    return {"blur_px": _loguniform(rng, *opt.soft_blur_px),
            "contrast": float(rng.uniform(*opt.soft_contrast))}


class _CameraPath:
    """The camera's moves and cuts, built action by action (``plan_video``'s timeline)."""

    def __init__(self, rng: np.random.Generator, opt: CameraOptions, canvas_hw: tuple[int, int],
                 texture: np.ndarray | None) -> None:
        self.rng, self.opt, self.canvas_hw, self.texture = rng, opt, canvas_hw, texture
        self.out_wh = (opt.width, opt.height)
        ch, cw = canvas_hw
        z_fit = max(opt.width / cw, opt.height / ch)  # the window still inside the canvas
        self.z_lo, self.z_hi = z_lo, z_hi = max(opt.zoom_limits[0], z_fit), opt.zoom_limits[1]
        # views for pans, tilts
        self.z_pan = (max(z_lo, 0.7), max(min(z_hi, 1.6), max(z_lo, 0.7)))
        self.view = self.start = self._new_view(self.z_pan)  # (cx, cy, z)
        self.moves: list[Move] = []
        self.cuts: list[Cut] = []
        self.t = 0.0  # seconds
        self.prev_static: tuple[float, float] | None = None  # (start, end) of the last static

    def _new_view(self, z_range: tuple[float, float], shift: tuple[float, float] = (0.0, 0.0),
                  zoom: float = 1.0) -> tuple[float, float, float]:
        return _view(self.rng, self.canvas_hw, self.out_wh, z_range, self.texture, shift, zoom)

    def hold(self, d: float) -> None:
        """A static stretch of ``d`` seconds (sometimes with a cut in its middle)."""
        t, prev = self.t, self.prev_static
        self.prev_static = (prev[0], t + d) if prev is not None and prev[1] == t else (t, t + d)
        if self.rng.random() < self.opt.cut_prob and d >= 1.0 and (self.moves or self.cuts):
            self.view = self._new_view((self.z_lo, min(self.z_hi, 2.0)))
            self.cuts.append(Cut(t + 0.5 * d, *self.view))
        self.t += d

    def _cut_to(self, view: tuple[float, float, float]) -> bool:
        """Jump to ``view`` before the coming action (at t = 0 or in the static before it)."""
        prev = self.prev_static
        if not self.moves and not self.cuts:
            self.start = view
        elif prev is not None and prev[1] == self.t:
            if self.cuts and self.cuts[-1].time >= prev[0]:
                self.cuts.pop()  # one cut per stretch is enough
            self.cuts.append(Cut(0.5 * (prev[0] + prev[1]), *view))
        else:
            return False
        return True

    def move(self, label: str, d: float) -> None:
        """An action of ``d`` seconds: speed and extent drawn, a cut before it if no room."""
        opt, rng, t = self.opt, self.rng, self.t
        cx, cy, z = self.view
        ease = min(rng.uniform(*opt.ease_s), 0.2 * d)
        eff = d - ease  # seconds at peak speed equivalent
        shift, zoom, lz, sign, rate = (0.0, 0.0), 1.0, 0.0, 1.0, 0.0
        if label.startswith(("pan", "tilt")):
            v = _loguniform(rng, *opt.pan_speed)  # frame widths per second
            dist = max(v * eff, opt.min_pan) * opt.width  # output pixels
            side = float(rng.uniform(-opt.off_axis, opt.off_axis)) * dist
            sign = -1.0 if label in ("pan_left", "tilt_up") else 1.0
            shift = (sign * dist, side) if label.startswith("pan") else (side, sign * dist)
            z_range, z_ok = self.z_pan, (self.z_lo, self.z_hi)  # new views in z_range; z_ok do
        else:
            rate = _loguniform(rng, *opt.zoom_rate)
            lz = float(np.clip(rate * eff, math.log(opt.zoom_total[0]),
                               math.log(opt.zoom_total[1])))
            sign = 1.0 if label == "zoom_in" else -1.0
            z_lo, z_hi = self.z_lo, self.z_hi
            lo, hi = (z_lo, z_hi / math.exp(lz)) if sign > 0 else (z_lo * math.exp(lz), z_hi)
            if lo > hi:  # the zoom is larger than the whole range: shrink it
                lz = math.log(z_hi / z_lo)
                lo = hi = z_lo if sign > 0 else z_hi
            zoom = math.exp(sign * lz)
            z_range = z_ok = (lo, hi)
        in_range = z_ok[0] - 1e-9 <= z <= z_ok[1] + 1e-9
        if not (in_range and _fits((cx, cy, z), self.canvas_hw, self.out_wh, shift, zoom)):
            # no room from here: cut to a view from which the move fits, if there is a place
            view = self._new_view(z_range, shift, zoom)
            if self._cut_to(view):
                cx, cy, z = view
            elif not in_range:  # scripted back-to-back actions: zoom as far as there is room
                lz = max(0.0, math.log(self.z_hi / z) if sign > 0 else math.log(z / self.z_lo))
        dlogz = sign * lz if zoom != 1.0 else 0.0
        dx, dy = shift[0] / z, shift[1] / z  # canvas pixels
        d_move = d
        if label.startswith("zoom") and rate * eff > lz + 1e-9 and lz > 0:
            # the zoom range ran out before the time did: keep the drawn speed and stop early
            # (the rest of the stretch is static); slowing down instead made long zooms too
            # slow for TV-L1 at 10 fps. Actions last at least action_s[0] all the same.
            d_move = min(d, max(lz / rate + ease, opt.action_s[0]))
            self.prev_static = (t + d_move, t + d)
        self.moves.append(Move(label, t, t + d_move, ease, dx, dy, dlogz))
        self.view = (cx + dx, cy + dy, z * math.exp(dlogz))
        self.t += d


def _sample_sensor(rng: np.random.Generator, opt: CameraOptions, duration: float) -> dict:
    """Hand shake, noise, exposure and compression of a video of ``duration`` seconds: the
    ``VideoPlan`` fields shake, noise_sigma, flicker, drift, light_steps, crf."""
    shake_amp = 0.0 if rng.random() < opt.tripod_prob else rng.uniform(*opt.shake_px)
    shake = tuple((float(shake_amp / math.sqrt(1.5) * rng.uniform(0.5, 1.0)),
                   float(rng.uniform(0.5, 4.0)), float(rng.uniform(0, 2 * math.pi)))
                  for _ in range(6))  # three terms for x, then three for y
    steps = tuple(sorted((float(rng.uniform(0, duration)), float(rng.uniform(0.85, 1.15)))
                         for _ in range(int(rng.integers(0, opt.light_steps + 1)))))
    return {"shake": shake, "noise_sigma": float(rng.uniform(*opt.noise_sigma)),
            "flicker": float(rng.uniform(*opt.flicker)),
            "drift": (float(rng.uniform(*opt.drift)), float(rng.uniform(0.02, 0.2)),
                      float(rng.uniform(0, 2 * math.pi))),
            "light_steps": steps, "crf": int(rng.integers(opt.crf[0], opt.crf[1] + 1))}


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
    scene = footage.build_scene(plan.scene, sources)
    n = plan.num_frames if max_frames is None else min(max_frames, plan.num_frames)
    t = np.arange(n, dtype=np.float64) / plan.fps
    cx, cy, z = camera_path(plan, t)
    gains = frame_gains(plan, np.arange(plan.num_frames) / plan.fps, _rng((*plan.seed, 1)))
    rng = _rng((*plan.seed, 2))
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


# ---------------------------------------------------------------------------------------------
# Data sets


def video_id(split: str, seed: int, index: int) -> str:
    return f"cam_{split}_s{seed}_{index:04d}"


def plan_dataset(split: str, n_videos: int, seed: int, options: CameraOptions = CameraOptions(),
                 val_fraction: float = 0.0,
                 sources: Sequence[Source] | None = None) -> list[VideoPlan]:
    """Plans of ``n_videos`` videos of one split. Video ``i`` has seed ``(seed, split, i)``.

    ``train``: train sources, subset "training", the last ``round(val_fraction * n)`` videos
    "validation". ``heldout``: held-out sources, subset "testing".
    """
    if split not in footage.SPLITS:
        raise ValueError(f"split must be one of {footage.SPLITS}, not {split!r}")
    sources = footage.find_sources(split) if sources is None else sources
    if any(s.split != split for s in sources):
        raise ValueError(f"sources of another split given for {split!r}")
    n_val = round(val_fraction * n_videos) if split == "train" else 0
    plans = []
    for i in range(n_videos):
        subset = SUBSETS[split] if i < n_videos - n_val else "validation"
        plans.append(plan_video(video_id(split, seed, i), (seed, footage.SPLITS.index(split), i),
                                sources, options, subset=subset))
    return plans


def annotation_json(plans: Sequence[VideoPlan], options: CameraOptions | None = None) -> dict:
    """ActivityNet ground truth for ``plans`` (plus the generator's options)."""
    taxonomy = [{"nodeId": 0, "nodeName": "camera_motion", "parentId": None,
                 "parentName": None}]
    taxonomy += [{"nodeId": i + 1, "nodeName": c, "parentId": 0, "parentName": "camera_motion"}
                 for i, c in enumerate(CLASSES)]
    out = {"version": VERSION, "taxonomy": taxonomy,
           "database": {p.video_id: p.database_entry() for p in plans}}
    if options is not None:
        out["generator"] = asdict(options)
    return out


def _render_job(args: tuple[VideoPlan, str, tuple[Source, ...]]) -> str:
    plan, out_dir, sources = args
    write_video(plan, Path(out_dir) / f"{plan.video_id}.mp4", sources)
    return plan.video_id


def _init_worker() -> None:
    cv2.setNumThreads(1)


def generate(out_dir: str | os.PathLike, split: str, n_videos: int, seed: int,
             options: CameraOptions = CameraOptions(), *, val_fraction: float = 0.0,
             jobs: int = 1, overwrite: bool = False, progress: bool = True) -> dict:
    """Write ``n_videos`` videos and ``annotations.json`` to ``out_dir``; returns the JSON.

    Videos already there are kept (the plans are deterministic) unless ``overwrite``.
    """
    from tqdm import tqdm

    from tal_pipeline.fsutil import atomic_write_json, remove_stale_temps

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir, min_age_s=600.0)  # not a concurrent run's live temps
    sources = tuple(footage.find_sources(split))
    log.info("%s sources: %s", split, ", ".join(s.id for s in sources))
    plans = plan_dataset(split, n_videos, seed, options, val_fraction, sources)
    todo = [p for p in plans if overwrite or not (out_dir / f"{p.video_id}.mp4").is_file()]
    jobs_args = [(p, str(out_dir), sources) for p in todo]
    bar = tqdm(total=len(todo), desc=f"camera {split}", unit="video", disable=not progress)
    try:
        if jobs <= 1:
            _init_worker()
            for a in jobs_args:
                _render_job(a)
                bar.update()
        else:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"),
                                     initializer=_init_worker) as ex:
                for _ in ex.map(_render_job, jobs_args):
                    bar.update()
    finally:
        bar.close()
    ann = annotation_json(plans, options)
    atomic_write_json(out_dir / "annotations.json", ann)
    return ann


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tal_pipeline.demo.camera``: generate a camera-motion data set."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tal_pipeline.demo.camera", description=__doc__
                                 .split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", help="output folder (videos + annotations.json)")
    ap.add_argument("--split", choices=footage.SPLITS, default="train",
                    help="footage to use: train -> subset training (+ validation), "
                         "heldout -> subset testing")
    ap.add_argument("--videos", type=int, default=10, help="number of videos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-duration", type=float, default=30.0, help="seconds per video, least")
    ap.add_argument("--max-duration", type=float, default=90.0, help="seconds per video, most")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="train split: fraction of videos in subset 'validation' (default 0.1)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--fps", type=float, default=None,
                    help="output frame rate of every video (default: drawn from "
                         f"{', '.join(f'{f:g}' for f in FPS_CHOICES)}); the same seed gives the "
                         "same scene and timeline at any rate")
    ap.add_argument("--scene-kind", choices=footage.SCENE_KINDS, default=None,
                    help="force one kind of scene (default: drawn)")
    ap.add_argument("--contrast", type=float, default=1.0,
                    help="picture contrast around mid-grey (low-texture scenes: e.g. 0.4)")
    ap.add_argument("--soft-fraction", type=float, default=0.0,
                    help="fraction of videos with a defocus and contrast drawn per video "
                         "(training data for soft, low-resolution footage; default 0)")
    ap.add_argument("--blur", type=float, default=0.0,
                    help="Gaussian defocus sigma in output pixels (low-texture scenes: e.g. 1.5)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--overwrite", action="store_true", help="re-render existing videos")
    ap.add_argument("--list-sources", action="store_true",
                    help="print the footage found and its split, then exit")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.list_sources:
        print(footage.source_table())
        return 0
    if not a.out:
        ap.error("--out is required")
    if not 0 < a.min_duration <= a.max_duration:
        ap.error("need 0 < --min-duration <= --max-duration")
    if not 0 < a.contrast <= 1 or a.blur < 0 or (a.fps is not None and a.fps <= 0):
        ap.error("need 0 < --contrast <= 1, --blur >= 0, --fps > 0")
    if not 0 <= a.soft_fraction <= 1:
        ap.error("need 0 <= --soft-fraction <= 1")
    opt = replace(CameraOptions(), width=a.width, height=a.height,
                  duration_s=(a.min_duration, a.max_duration), scene_kind=a.scene_kind,
                  contrast=a.contrast, blur_px=a.blur, soft_fraction=a.soft_fraction)
    if a.fps is not None:
        opt = replace(opt, fps=a.fps)
    ann = generate(a.out, a.split, a.videos, a.seed, opt, val_fraction=a.val_fraction,
                   jobs=a.jobs, overwrite=a.overwrite, progress=not a.quiet)
    n_act = sum(len(v["annotations"]) for v in ann["database"].values())
    print(f"{len(ann['database'])} videos, {n_act} actions -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
