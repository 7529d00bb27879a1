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

How a video is made (``plan.plan_video`` then ``render.render_frames`` /
``render.write_video``; this module makes data sets of them and re-exports both):

1. Scene: ``scene.sample_scene`` picks footage of one split (a looping stabilised video shot,
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
   textured parts of the scene (best of 4 by ``scene.texture_map``).
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
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

import cv2

from tal_pipeline.demo import footage
from tal_pipeline.demo.footage import Source
from tal_pipeline.demo.plan import (
    CLASSES,
    FPS_CHOICES,
    STATIC,
    CameraOptions,
    Cut,
    Move,
    VideoPlan,
    plan_video,
)
from tal_pipeline.demo.render import camera_path, frame_gains, render_frames, write_video
from tal_pipeline.demo.scene import SCENE_KINDS

__all__ = [
    "CLASSES",
    "FPS_CHOICES",
    "STATIC",
    "CameraOptions",
    "Cut",
    "Move",
    "VideoPlan",
    "annotation_json",
    "camera_path",
    "frame_gains",
    "generate",
    "main",
    "plan_dataset",
    "plan_video",
    "render_frames",
    "video_id",
    "write_video",
]

log = logging.getLogger(__name__)

VERSION = "tal-pipeline-camera/1"
SUBSETS = {"train": "training", "heldout": "testing"}  # split -> ActivityNet subset
DEFAULTS = CameraOptions()  # the options of a data set unless told (frozen: one shared)


def video_id(split: str, seed: int, index: int) -> str:
    return f"cam_{split}_s{seed}_{index:04d}"


def plan_dataset(split: str, n_videos: int, seed: int, options: CameraOptions = DEFAULTS,
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
             options: CameraOptions = DEFAULTS, *, val_fraction: float = 0.0,
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
    ap.add_argument("--scene-kind", choices=SCENE_KINDS, default=None,
                    help="force one kind of scene (default: drawn)")
    ap.add_argument("--contrast", type=float, default=1.0,
                    help="picture contrast around mid-grey (low-texture scenes: e.g. 0.4)")
    ap.add_argument("--soft-fraction", type=float, default=0.0,
                    help="fraction of videos with a defocus and contrast drawn per video "
                         "(training data for soft, low-resolution footage; default 0)")
    ap.add_argument("--blur", type=float, default=0.0,
                    help="Gaussian defocus sigma in output pixels (low-texture scenes: e.g. 1.5)")
    ap.add_argument("--big-objects", type=int, default=0,
                    help="large objects (0.6-1.0 of the frame's height) crossing every scene, and "
                         "static stretches of 2-12 s (training data: a large moving object is no "
                         "camera motion; default 0)")
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
    if a.big_objects < 0:
        ap.error("need --big-objects >= 0")
    if a.big_objects:
        opt = replace(opt, big_objects=a.big_objects, static_s=(2.0, 12.0))
    ann = generate(a.out, a.split, a.videos, a.seed, opt, val_fraction=a.val_fraction,
                   jobs=a.jobs, overwrite=a.overwrite, progress=not a.quiet)
    n_act = sum(len(v["annotations"]) for v in ann["database"].values())
    print(f"{len(ann['database'])} videos, {n_act} actions -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
