"""What one camera-motion video will show, drawn from a seed: its scene, timeline, camera
moves and cuts, and sensor (steps 1-3 of ``camera``'s recipe, and the draws of 4-5); no
pixel is made here (``render``). A :class:`VideoPlan` is pure data: picklable, and the same
plan for the same seed and sources."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from tal_pipeline.demo.footage import Source
from tal_pipeline.demo.scene import SceneSpec, sample_scene, sample_sprite, texture_map

CLASSES: tuple[str, ...] = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in",
                            "zoom_out")
STATIC = "static"
FPS_CHOICES: tuple[float, ...] = (12.0, 15.0, 24.0, 25.0, 30000 / 1001, 30.0, 60.0)  # frames/s


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
    scene_kind: str | None = None  # force a scene.SCENE_KINDS kind (None: sampled)
    contrast: float = 1.0  # picture contrast around mid-grey; < 1 with blur_px: low texture
    blur_px: float = 0.0  # Gaussian defocus of the picture (sigma, output pixels); 0: none
    # Training data for soft footage (held-out video footage is 176x144, upscaled 2-4x): this
    # fraction of videos gets a defocus and a contrast drawn from the ranges below, from a random
    # stream of its own, so that every other video stays the same bytes as with 0.
    soft_fraction: float = 0.0
    soft_blur_px: tuple[float, float] = (0.6, 3.0)  # sigma, output pixels (log-uniform)
    soft_contrast: tuple[float, float] = (0.3, 0.9)  # contrast around mid-grey (uniform)
    # Large objects added to every scene (issue #31): a figure over half of the detector's crop,
    # crossing while the camera holds, is no camera motion, and the footage has few. From a
    # stream of their own, so every other draw of a video stays the same.
    big_objects: int = 0  # objects per video
    big_height: tuple[float, float] = (0.6, 1.0)  # output frame heights (at zoom 1)
    big_speed: tuple[float, float] = (8.0, 60.0)  # canvas px/s (log-uniform)


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


def seed_rng(seed: Sequence[int]) -> np.random.Generator:
    """numpy's PCG64 seeded with the tuple ``seed`` (version-stable)."""
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
    (``scene.texture_map``): the most textured of ``tries`` views.
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
    rng = seed_rng(seed)
    split = {s.split for s in sources}
    if fps is None:
        fps = opt.fps_choices[int(rng.integers(len(opt.fps_choices)))]
        fps = opt.fps or fps  # robustness splits: the same videos at another frame rate
    fps = float(fps)
    scene = sample_scene(rng, sources, (opt.height, opt.width), kind=opt.scene_kind,
                                 objects=opt.objects)
    if opt.big_objects:
        scene = _with_big_objects(scene, seed, opt, sources)
    if script is None:
        script = _script_from_rng(rng, opt, rng.uniform(*opt.duration_s))
    for label, d in script:
        if label != STATIC and label not in CLASSES:
            raise ValueError(f"unknown action {label!r} (classes: {', '.join(CLASSES)})")
        if d <= 0:
            raise ValueError(f"{label}: duration must be > 0 s, got {d}")
    num_frames = max(1, round(sum(d for _, d in script) * fps))

    path = _CameraPath(rng, opt, scene.canvas_hw, texture_map(scene, sources))
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


def _with_big_objects(scene: SceneSpec, seed: Sequence[int], opt: CameraOptions,
                      sources: Sequence[Source]) -> SceneSpec:
    """``scene`` with ``opt.big_objects`` more objects, each ``big_height`` output frames tall,
    crossing the scene sideways at ``big_speed`` and bobbing as a walker does. Own stream
    (seed + (4,))."""
    rng = seed_rng((*seed, 4))
    out_h = opt.height
    extra = []
    for _ in range(opt.big_objects):
        src = sources[int(rng.integers(len(sources)))]
        spec = sample_sprite(rng, src, scene.canvas_hw, (opt.height, opt.width), big=True)
        height = out_h * rng.uniform(*opt.big_height)
        speed = _loguniform(rng, *opt.big_speed) * (1 if rng.random() < 0.5 else -1)
        bob = (float(rng.uniform(0.0, 0.05) * height), float(rng.uniform(0.5, 2.0)), float(rng.uniform(0, 2 * math.pi)))
        extra.append(replace(spec, height=float(height), vel=(float(speed), float(rng.normal(0, 0.05) * speed)),
                             wander=bob, blink=(0.0, 1.0)))
    return replace(scene, sprites=scene.sprites + tuple(extra))


def _sample_softness(seed: Sequence[int], opt: CameraOptions) -> dict:
    """The ``VideoPlan`` fields contrast and blur_px: the options', or for a ``soft_fraction``
    of videos drawn from ``soft_blur_px`` and ``soft_contrast``. Own stream (seed + (3,)): the
    plan's other draws do not depend on it."""
    rng = seed_rng((*seed, 3))  # (seed, 1) and (seed, 2) are the renderer's
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
