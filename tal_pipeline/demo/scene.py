"""The scenes (canvases) the virtual camera films, made of real footage (``footage``).

Scenes: a :class:`SceneSpec` (sampled by :func:`sample_scene`, pure data) says what the camera
looks at; :func:`build_scene` turns it into a :class:`Scene` whose ``frame(t)`` gives the RGB
canvas at time ``t``. Kinds: ``video`` (a looping shot), ``photo`` (one photograph with moving
objects), ``mosaic`` (a wall of 2-6 photographs with moving objects), ``video_in_photo`` (a
shot inset in a photograph, like a screen or a window). Moving objects are patches cut from
other sources of the same split, drifting, wandering, bouncing, looming and blinking on their
own, so "something moves" is never the same as "the camera moves".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tal_pipeline.demo.footage import (
    Source,
    load_photo,
    load_picture,
    load_video_shot,
    probe_size,
    shots,
)

SCENE_KINDS: tuple[str, ...] = ("video", "photo", "mosaic", "video_in_photo")


# ---------------------------------------------------------------------------------------------
# Scene specification (pure data, sampled from a Generator)


@dataclass(frozen=True)
class SpriteSpec:
    """A patch of real footage moving by itself over the canvas."""

    source: str  # source id the patch is cut from
    crop: tuple[float, float, float, float]  # (x0, y0, w, h) in fractions of that picture
    height: float  # canvas pixels, at scale 1
    ellipse: bool  # soft elliptical mask (else a soft-edged rectangle)
    pos: tuple[float, float]  # (x, y) centre at t = 0, canvas pixels
    vel: tuple[float, float]  # (vx, vy) drift, canvas pixels per second; bounces off the edges
    wander: tuple[float, float, float]  # (amplitude px, frequency Hz, phase rad) of a wobble
    loom: tuple[float, float, float]  # (log-scale amplitude, frequency Hz, phase rad)
    blink: tuple[float, float]  # (frequency Hz, duty in (0, 1]); frequency 0: always shown
    flip: bool  # mirror the patch left-right


@dataclass(frozen=True)
class SceneSpec:
    """What the virtual camera looks at; ``build_scene`` makes it a :class:`Scene`."""

    kind: str  # one of SCENE_KINDS
    canvas_hw: tuple[int, int]  # (H, W) canvas pixels
    photos: tuple[str, ...]  # background photo ids (mosaic: one per cell, row-major)
    grid: tuple[int, int]  # (rows, cols) of the background photos
    video: str | None  # video source id (kinds video, video_in_photo)
    video_box: tuple[int, int, int, int]  # (x, y, w, h) of the video in canvas pixels
    shot: tuple[int, int]  # (start frame, frame count) of the video footage
    video_rate: float  # playback speed (1 = real time); the shot loops forward, a cut at its end
    flip: bool  # mirror the background left-right
    tint: tuple[float, float, float]  # RGB gains (white balance, tints grey photos; applied
    #                                   by the camera's sensor stage, not by the Scene)
    sprites: tuple[SpriteSpec, ...]

    def source_ids(self) -> tuple[str, ...]:
        ids = list(self.photos) + ([self.video] if self.video else [])
        ids += [s.source for s in self.sprites]
        return tuple(dict.fromkeys(ids))


MAX_VIDEO_BYTES = 96 * 2**20  # bytes: a loaded shot is shortened to stay under this


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


SCENE_WEIGHTS = {"video": 0.35, "photo": 0.25, "mosaic": 0.2, "video_in_photo": 0.2}  # chances


def sample_scene(rng: np.random.Generator, sources: Sequence[Source],
                 out_hw: tuple[int, int], kind: str | None = None,
                 objects: bool = True) -> SceneSpec:
    """Sample a scene from ``sources`` (one split) for output frames of ``out_hw`` (H, W).

    The canvas is 1.3-2.0 times the output frame in each direction at least, so that the camera
    at zoom 1 sees a part of it. ``kind`` forces a scene kind; ``objects=False`` adds no
    moving objects.
    """
    kind = _scene_kind(rng, sources, kind)
    # canvas / output frame, at least, per direction: room to pan (videos: less, for memory)
    k = rng.uniform(1.3, 2.0) if kind == "video" else rng.uniform(1.4, 2.5)
    layout = _scene_layout(rng, sources, out_hw, kind, k)
    ch, cw = layout["canvas_hw"]
    sprites: list[SpriteSpec] = []
    if objects:
        n_obj = {"video": int(rng.choice([0, 0, 1, 2])), "photo": int(rng.integers(1, 6)),
                 "mosaic": int(rng.integers(1, 6)),
                 "video_in_photo": int(rng.integers(0, 4))}[kind]
        big = kind in ("photo", "mosaic") and rng.random() < 0.35
        for i in range(n_obj + int(big)):
            src = sources[int(rng.integers(len(sources)))]
            sprites.append(sample_sprite(rng, src, (ch, cw), out_hw, big=big and i == n_obj))
    tint = (1.0, 1.0, 1.0) if rng.random() < 0.3 else tuple(
        float(g) for g in rng.uniform(0.88, 1.12, size=3))
    return SceneSpec(kind=kind, tint=tint, sprites=tuple(sprites),  # type: ignore[arg-type]
                     flip=bool(rng.random() < 0.5), **layout)


def _scene_kind(rng: np.random.Generator, sources: Sequence[Source], kind: str | None) -> str:
    """``kind``, checked against the footage, or one drawn by ``SCENE_WEIGHTS`` among those the
    footage allows."""
    has = {s.kind for s in sources}
    if not has & {"photo", "video"}:
        raise ValueError("no footage sources to sample a scene from")
    needs = {"video": {"video"}, "photo": {"photo"}, "mosaic": {"photo"},
             "video_in_photo": {"photo", "video"}}
    weights = {k: w if needs[k] <= has else 0.0 for k, w in SCENE_WEIGHTS.items()}
    if kind is None:
        names = list(weights)
        p = np.array([weights[k] for k in names])
        return names[int(rng.choice(len(names), p=p / p.sum()))]
    if weights.get(kind, 0.0) == 0.0:
        raise ValueError(f"scene kind {kind!r} impossible with these sources")
    return kind


def _scene_layout(rng: np.random.Generator, sources: Sequence[Source], out_hw: tuple[int, int],
                  kind: str, k: float) -> dict:
    """The canvas of a scene of ``kind``, at least ``k`` times the output frame: the
    ``SceneSpec`` fields canvas_hw, photos, grid, video, video_box, shot, video_rate."""
    photos = [s for s in sources if s.kind == "photo"]
    videos = [s for s in sources if s.kind == "video"]
    oh, ow = out_hw

    def cover(aspect: float) -> tuple[int, int]:  # canvas (H, W) of a picture of that aspect
        scale = k * max(ow / aspect, oh)
        return round(scale), round(scale * aspect)

    video_id: str | None = None
    shot = (0, 0)
    video_box = (0, 0, 0, 0)
    rate = 1.0
    photo_ids: tuple[str, ...] = ()
    grid = (0, 0)
    if kind in ("video", "video_in_photo"):
        vsrc = videos[int(rng.integers(len(videos)))]
        video_id = vsrc.id
        vw, vh, _, _ = probe_size(vsrc.path, "video")
        s0, s1 = (shots(vsrc))[int(rng.integers(len(shots(vsrc))))]
        rate = rng.uniform(0.7, 1.3)
    if kind == "video":
        ch, cw = cover(vw / vh)
        video_box = (0, 0, cw, ch)
    elif kind in ("photo", "video_in_photo"):
        p = photos[int(rng.integers(len(photos)))]
        pw, ph, _, _ = probe_size(p.path, "photo")
        ch, cw = cover(pw / ph)
        photo_ids, grid = (p.id,), (1, 1)
        if kind == "video_in_photo":
            bw = round(cw * rng.uniform(0.3, 0.6))
            bh = min(round(bw * vh / vw), ch - 2)
            bx = int(rng.integers(0, cw - bw + 1))
            by = int(rng.integers(0, ch - bh + 1))
            video_box = (bx, by, bw, bh)
    else:  # mosaic
        rows, cols = (1, int(rng.integers(2, 4))) if rng.random() < 0.6 else (2, 2)
        cell = rng.uniform(0.8, 1.3)
        cw, ch = round(ow * cell * cols), round(oh * cell * rows)
        sc = max(k * ow / cw, k * oh / ch, 1.0)
        cw, ch = round(cw * sc), round(ch * sc)
        photo_ids = tuple(photos[int(rng.integers(len(photos)))].id for _ in range(rows * cols))
        grid = (rows, cols)
    if video_id is not None:
        nbytes = video_box[2] * video_box[3] * 3
        count = min(s1 - s0, max(8, MAX_VIDEO_BYTES // max(nbytes, 1)))
        start = s0 + int(rng.integers(0, s1 - s0 - count + 1))
        shot = (start, count)
    return {"canvas_hw": (int(ch), int(cw)), "photos": photo_ids, "grid": grid,
            "video": video_id, "video_box": tuple(int(v) for v in video_box), "shot": shot,
            "video_rate": float(rate)}


def sample_sprite(rng: np.random.Generator, src: Source, canvas_hw: tuple[int, int],
                  out_hw: tuple[int, int], big: bool) -> SpriteSpec:
    """A patch of ``src`` moving over a ``canvas_hw`` canvas; ``big``: 0.45-0.8 of the output
    frame's height, crossing sideways like a passing vehicle (else small, drifting anywhere)."""
    ch, cw = canvas_hw
    oh, _ = out_hw
    fw, fh = rng.uniform(0.15, 0.5), rng.uniform(0.15, 0.5)
    crop = (float(rng.uniform(0, 1 - fw)), float(rng.uniform(0, 1 - fh)), float(fw), float(fh))
    height = oh * (rng.uniform(0.45, 0.8) if big else _loguniform(rng, 0.08, 0.35))
    speed = rng.uniform(20.0, 80.0) if big else _loguniform(rng, 3.0, 90.0)  # canvas px/s
    if rng.random() < 0.15 and not big:
        speed = 0.0  # stays put (may still blink or loom)
    if big:  # crosses the scene sideways, like a passing vehicle
        ang = rng.choice([0.0, math.pi]) + rng.normal(0, 0.2)
    else:
        ang = rng.uniform(0, 2 * math.pi)
    wander = (float(rng.uniform(0, 0.3 * height)) if rng.random() < 0.5 else 0.0,
              float(rng.uniform(0.1, 1.0)), float(rng.uniform(0, 2 * math.pi)))
    loom = ((float(rng.uniform(0.1, 0.45)) if rng.random() < 0.3 else 0.0),
            float(rng.uniform(0.05, 0.4)), float(rng.uniform(0, 2 * math.pi)))
    blink = ((float(rng.uniform(0.2, 1.5)), float(rng.uniform(0.3, 0.8)))
             if rng.random() < 0.2 else (0.0, 1.0))
    return SpriteSpec(source=src.id, crop=crop, height=float(height),
                      ellipse=bool(rng.random() < 0.6),
                      pos=(float(rng.uniform(0, cw)), float(rng.uniform(0, ch))),
                      vel=(float(speed * math.cos(ang)), float(speed * math.sin(ang))),
                      wander=wander, loom=loom, blink=blink, flip=bool(rng.random() < 0.5))


# ---------------------------------------------------------------------------------------------
# Scene (the canvas provider)


def _bounce(x: float, lo: float, hi: float) -> float:
    """``x`` folded into [lo, hi] like a ball bouncing between two walls."""
    span = hi - lo
    if span <= 0:
        return lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def _loop(u: float, n: int) -> int:
    """Frame index at playback position ``u`` (frames) of an ``n``-frame shot looped forward
    (0, 1, ..., n-1, 0, 1, ...): a cut back to the start, as an edit would. Played forth and back
    (issue #31), every object reversed its motion at each end, which no footage does."""
    return math.floor(u) % n if n > 1 else 0


class _Sprite:
    def __init__(self, spec: SpriteSpec, picture: np.ndarray, canvas_hw: tuple[int, int]):
        self.spec = spec
        ph, pw = picture.shape[:2]
        x0, y0, fw, fh = spec.crop
        xa, ya = int(x0 * pw), int(y0 * ph)
        xb, yb = max(xa + 2, int((x0 + fw) * pw)), max(ya + 2, int((y0 + fh) * ph))
        patch = picture[ya:yb, xa:xb]
        if spec.flip:
            patch = patch[:, ::-1]
        h = max(4, round(spec.height))
        w = max(4, round(h * patch.shape[1] / patch.shape[0]))
        patch = cv2.resize(np.ascontiguousarray(patch), (w, h), interpolation=cv2.INTER_AREA)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u, v = (xx + 0.5) / w * 2 - 1, (yy + 0.5) / h * 2 - 1  # [-1, 1]
        if spec.ellipse:
            r = np.sqrt(u**2 + v**2)
            alpha = np.clip((1.0 - r) / 0.15, 0, 1)
        else:
            alpha = np.clip((1.0 - np.maximum(np.abs(u), np.abs(v))) / 0.08, 0, 1)
        rgba = np.empty((h, w, 4), np.float32)
        rgba[..., :3] = patch.astype(np.float32) * alpha[..., None]  # premultiplied
        rgba[..., 3] = alpha
        self.rgba = rgba
        self.hw = (h, w)
        self.canvas_hw = canvas_hw

    def draw(self, canvas: np.ndarray, t: float) -> None:
        s = self.spec
        f, duty = s.blink
        if f > 0 and ((f * t) % 1.0) >= duty:
            return
        ch, cw = self.canvas_hw
        h, w = self.hw
        scale = math.exp(s.loom[0] * math.sin(2 * math.pi * s.loom[1] * t + s.loom[2]))
        wa, wf, wp = s.wander
        x = s.pos[0] + s.vel[0] * t + wa * math.sin(2 * math.pi * wf * t + wp)
        y = s.pos[1] + s.vel[1] * t + wa * math.cos(2 * math.pi * wf * 0.7 * t + wp)
        x = _bounce(x, 0.0, float(cw))
        y = _bounce(y, 0.0, float(ch))
        hw_, hh_ = 0.5 * w * scale, 0.5 * h * scale
        xa, xb = max(0, math.floor(x - hw_) - 1), min(cw, math.ceil(x + hw_) + 2)
        ya, yb = max(0, math.floor(y - hh_) - 1), min(ch, math.ceil(y + hh_) + 2)
        if xb - xa < 2 or yb - ya < 2:
            return
        # patch pixel centre (w-1)/2 -> (x - xa, y - ya) in the region of interest
        m = np.array([[scale, 0.0, x - xa - scale * (w - 1) / 2],
                      [0.0, scale, y - ya - scale * (h - 1) / 2]], np.float32)
        warped = cv2.warpAffine(self.rgba, m, (xb - xa, yb - ya), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        roi = canvas[ya:yb, xa:xb].astype(np.float32)
        a = warped[..., 3:4]
        roi = roi * (1.0 - a) + warped[..., :3]
        canvas[ya:yb, xa:xb] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


class Scene:
    """Canvas provider: ``frame(t)`` is the scene at ``t`` seconds, uint8 (H, W, 3) RGB.

    ``hw`` is the canvas size (H, W) in pixels. The returned array may be shared with later
    calls: copy it to keep it.
    """

    def __init__(self, spec: SceneSpec, background: np.ndarray | None,
                 video: np.ndarray | None, video_fps: float, sprites: list[_Sprite]):
        self.spec = spec
        self.hw = spec.canvas_hw
        self.background = background  # uint8 (H, W, 3) or None
        self.video = video  # uint8 (N, h, w, 3) or None
        self.video_fps = video_fps  # frames per second of the footage
        self.sprites = sprites
        self._buf = np.empty((*self.hw, 3), np.uint8)

    def frame(self, t: float) -> np.ndarray:
        spec = self.spec
        if self.video is not None:
            i = _loop(t * self.video_fps * spec.video_rate, len(self.video))
            vid = self.video[i]
        if self.background is None:
            if not self.sprites:
                return vid
            np.copyto(self._buf, vid)
        else:
            np.copyto(self._buf, self.background)
            if self.video is not None:
                x, y, w, h = spec.video_box
                self._buf[y:y + h, x:x + w] = vid
        for s in self.sprites:
            s.draw(self._buf, t)
        return self._buf


def _cover_resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize keeping the aspect ratio so that (w, h) is covered, then centre-crop to it."""
    ih, iw = img.shape[:2]
    s = max(w / iw, h / ih)
    rw, rh = max(w, round(iw * s)), max(h, round(ih * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    r = cv2.resize(img, (rw, rh), interpolation=interp)
    x, y = (rw - w) // 2, (rh - h) // 2
    return r[y:y + h, x:x + w]


def _background(spec: SceneSpec, by_id: dict[str, Source], scale: float = 1.0) -> np.ndarray:
    """The photo(s) of a scene laid out on the canvas (``scale`` times its size), uint8 RGB."""
    ch, cw = (max(1, round(v * scale)) for v in spec.canvas_hw)
    rows, cols = spec.grid
    background = np.empty((ch, cw, 3), np.uint8)
    xs = np.linspace(0, cw, cols + 1).round().astype(int)
    ys = np.linspace(0, ch, rows + 1).round().astype(int)
    for j, pid in enumerate(spec.photos):
        r, c = divmod(j, cols)
        cell = _cover_resize(load_photo(by_id[pid].path), max(1, xs[c + 1] - xs[c]),
                             max(1, ys[r + 1] - ys[r]))
        background[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = cell
    if spec.flip:
        background = background[:, ::-1]
    return np.ascontiguousarray(background)


TEXTURE_SCALE = 0.125  # texture maps are computed at this fraction of the canvas size


def texture_map(spec: SceneSpec, sources: Sequence[Source]) -> np.ndarray | None:
    """Local texture (smoothed squared gradient) of a scene's photo background.

    float32 (H * TEXTURE_SCALE, W * TEXTURE_SCALE), or None for a video-only scene. The camera
    uses it to avoid pointing at featureless areas (night sky, plain walls), where no camera
    motion can be seen, for it nor for a detector.
    """
    if not spec.photos:
        return None
    by_id = {s.id: s for s in sources}
    img = _background(spec, by_id, TEXTURE_SCALE * 2)
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    e = cv2.resize(np.minimum(gx * gx + gy * gy, 400.0**2), None, fx=0.5, fy=0.5,
                   interpolation=cv2.INTER_AREA)
    e = cv2.GaussianBlur(e, (0, 0), 1.0)
    if spec.video is not None:  # the inset video is worth looking at
        x, y, w, h = (round(v * TEXTURE_SCALE) for v in spec.video_box)
        e[y:y + max(h, 1), x:x + max(w, 1)] = max(float(np.percentile(e, 90)), 1.0)
    return e


def build_scene(spec: SceneSpec, sources: Sequence[Source]) -> Scene:
    """Load the footage a :class:`SceneSpec` names and return its :class:`Scene`."""
    by_id = {s.id: s for s in sources}
    missing = [i for i in spec.source_ids() if i not in by_id]
    if missing:
        raise ValueError(f"scene needs sources that are not available: {missing}")
    background = _background(spec, by_id) if spec.photos else None
    video, vfps = None, 0.0
    if spec.video is not None:
        _, _, w, h = spec.video_box
        video, vfps = load_video_shot(by_id[spec.video], spec.shot[0], spec.shot[1], (w, h),
                                      flip=spec.flip)
    sprites = [_Sprite(s, load_picture(by_id[s.source]), spec.canvas_hw) for s in spec.sprites]
    return Scene(spec, background, video, vfps, sprites)
