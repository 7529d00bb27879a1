"""The demo's camera-motion check (issue #31): choose it on validation, score it held-out, ship it.

    # features with their global motion (tal extract of this version), one folder per set
    python benchmarks/camera_check.py sweep  --set FEAT:ANNOTATIONS.json [--set ...]
    python benchmarks/camera_check.py score  --set FEAT:ANNOTATIONS.json [--set ...] [--model M]
    python benchmarks/camera_check.py write  --threshold 0.2 --scale 0 [--model weights/demo.pt]
    # the fit itself (issue #31, third session): extract once, caching each field's block medians,
    # then score each fit x threshold x scale without re-extracting
    python benchmarks/camera_check.py cache VIDEOS... -o FEAT [--threads 1]
    python benchmarks/camera_check.py fits --set FEAT:ANN [--set ...] [--lowtex FEAT:ANN] [--still FEAT]
    # candidate models (issue #31, fourth session: the retrain), each with the shipped check
    python benchmarks/camera_check.py models --candidate S=weights/demo.pt --candidate B=b.pt \
        --set FEAT:ANN [--set ...] --still FEAT [--choose]
    # the descriptor's cost: two clean worktrees of one commit, the second without the
    # extractor's fit_fields call (features.py), run from the first
    python benchmarks/camera_check.py speed  --against /tmp/nodesc [--seconds 60 --rounds 3]

``sweep`` runs the head once per video with the check off, then applies candidate checks
(threshold x scale) to the same detections and prints mAP@0.5, the average mAP (tIoU
0.3:0.7:0.1) and the worst class, over all videos and over the looping-video scenes: run it on
VALIDATION only. ``score`` prints the model's own check against none (per class, per scene kind).
``write`` re-saves the checkpoint with a ``motion_check`` (``global_motion.MotionCheck``) and
nothing else changed: every tensor ``torch.equal`` to the old one, every other key equal.
``cache`` is ``tal extract --backbone r3d_18_grid --weights seeded --streams flow --flow torch``
(the demo's extractor; ``jobs.ExtractJob``, the code path ``tal extract`` runs) that also saves
each video's per-field block medians (``global_motion.block_medians`` of the raw TV-L1 fields,
through ``FeatureExtractor.field_hook``) as ``FEAT/<id>.blocks.npz``; a video whose two files
exist is skipped. ``fits`` runs the head once per video with the check off, refits every video's
global motion from its cached blocks with each fit (``--fits``: ``none`` is today's median start,
a number is ``fit_fields``' ``zero_margin``), and scores each fit x threshold x scale: the
``--set`` videos' mAP (all, and the looping-video scenes), the ``--lowtex`` set's average and,
on ``--still`` (fixed-camera clips, no annotations), the detections at or above the console's
0.3 per clip. With ``--choose`` it applies the selection rule of docs/method.md (issue #31,
third session) against the model's own check with ``none``: run it on VALIDATION only.
``models`` scores each ``--candidate NAME=MODEL`` with the shipped model's check (whatever the
candidate itself declares): the ``--set`` videos' mAP (all, and looping-video scenes) and the
detections at or above 0.3 per ``--still`` clip; ``--choose`` applies the rule of
docs/method.md (issue #31, fourth session; the first candidate is the shipped model S, the
order of the rest breaks the last ties): run it on VALIDATION only.
``speed`` times ``tal detect`` of bench_detect's clip (demo model, a fresh process each, wall
time and the process's own peak RSS) with this checkout and with another one (its own code and
its own ``weights/demo.pt``), alternating.

Splits of issue #31 (declared in docs/method.md before they were generated):

    validation: python -m tal_pipeline.demo.camera --split train --videos 8 --seed 41 --val-fraction 0 --min-duration 30 --max-duration 60
                ... --videos 6 --seed 43 --scene-kind video (same otherwise)
    held-out:   python -m tal_pipeline.demo.camera --split heldout --videos 12 --seed 31 --min-duration 30 --max-duration 60
                ... --videos 6 --seed 33 --scene-kind video
    features:   tal extract DIR -o FEAT --backbone r3d_18_grid --weights seeded --streams flow --flow torch --threads 1
                (or `camera_check.py cache DIR -o FEAT`, the same features plus the block medians)
    third session's validation, beside the two sets above (the fit's second start):
                python -m tal_pipeline.demo.camera --split train --videos 4 --seed 47 --val-fraction 0 --min-duration 30 --max-duration 40 --contrast 0.4 --blur 1.5
                python benchmarks/static_camera.py --set val --make-only --cache DIR   (fixed-camera clips: --still)
                camera_check.py fits --set F41:A41 --set F43:A43 --lowtex F47:A47 --still FVAL --choose
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tal_pipeline.global_motion import (
    LabelMotion,
    MotionCheck,
    apply_check,
    block_centres,
    block_medians,
    fit_blocks,
    step_descriptor,
)

# each demo class's camera motion, read from the picture's flow (demo/camera.py's table)
DEMO_LABELS = {
    "pan_left": LabelMotion("tx", 1), "pan_right": LabelMotion("tx", -1),
    "tilt_up": LabelMotion("ty", 1), "tilt_down": LabelMotion("ty", -1),
    "zoom_in": LabelMotion("zoom", 1), "zoom_out": LabelMotion("zoom", -1),
}
THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)  # px per frame pair at 112 px
SCALES = (0.0, 0.25)  # 0: drop; else the failing detection's score factor
# the demo's extractor, as `tal extract --backbone r3d_18_grid --weights seeded --streams flow --flow torch`
EXTRACT = {"backbone": "r3d_18_grid", "weights": "seeded", "streams": ("flow",), "flow_backend": "torch",
           "device": "cpu", "chunk_frames": 64, "size": 0}
STILL_MAX_SCORE = 0.3  # the console summary's detection score (writers.SUBTITLE_MIN_SCORE)


@dataclass
class Video:
    vid: str
    scene: str  # the generator's scene kind ("video", "photo", ...)
    segments: list  # postprocess.Segment, check off
    motion: np.ndarray | None  # (T, K)
    times: np.ndarray  # (T,) s
    npy: Path | None = None  # its feature file (``cache``'s blocks lie beside it)
    meta: object = None  # featio.FeatureMeta


def run_head(sets: list[str], model: str) -> tuple[list[Video], dict]:
    """The head on every feature file of every ``FEAT:ANN`` set, check off; the ground truth."""
    from tal_pipeline.annotations import load_annotations
    from tal_pipeline.featio import list_feature_files, load_features
    from tal_pipeline.pipeline import Detector
    from tal_pipeline.postprocess import PostprocessConfig

    det = Detector.load(model, build_extractor=False, postprocess=PostprocessConfig(motion_check=False))
    videos, gts = [], {}
    for spec in sets:
        feat, _, ann_path = spec.partition(":")
        ann = load_annotations(ann_path)
        scenes = {k: v.get("scene", "?") for k, v in json.loads(Path(ann_path).read_text())["database"].items()}
        for npy in list_feature_files(feat):
            if npy.stem not in ann.videos:
                continue
            arr, meta = load_features(npy)
            if meta.motion is None:
                sys.exit(f"camera_check: {npy} has no global motion; extract it with this version")
            d = det.detect_features(arr, meta)
            videos.append(Video(npy.stem, scenes.get(npy.stem, "?"), d.segments, meta.motion, meta.times(),
                                npy, meta))
        gts[ann_path] = ann
    return videos, {"annotations": gts, "detector": det}


def _merge(gts: dict):
    from tal_pipeline.results import Annotations

    return Annotations({k: v for a in gts.values() for k, v in a.videos.items()}, " + ".join(gts))


def scores(videos: list[Video], gt, check: MotionCheck | None, scene: str | None = None):
    from tal_pipeline.evaluate import evaluate

    keep = [v for v in videos if scene is None or v.scene == scene]
    sub = replace(gt, videos={v.vid: gt.videos[v.vid] for v in keep})
    preds = {v.vid: (apply_check(v.segments, v.motion, v.times, check) if check else v.segments) for v in keep}
    return evaluate(sub, preds)


def _row(name: str, r) -> str:
    i5 = r.tiou.index(0.5)
    worst = min(r.per_class, key=lambda c: r.per_class[c][i5])
    return (f"| {name} | {100 * r.mAP[i5]:.1f} | {100 * r.average_mAP:.1f} | "
            f"{worst} {100 * r.per_class[worst][i5]:.1f} |")


def sweep(args) -> None:
    videos, ctx = run_head(args.set, args.model)
    gt = _merge(ctx["annotations"])
    kinds = sorted({v.scene for v in videos})
    print(f"{len(videos)} videos ({', '.join(f'{k} {sum(v.scene == k for v in videos)}' for k in kinds)})\n")
    print("| check | all @0.5 | all avg | worst class @0.5 | video @0.5 | video avg |")
    print("|---|---|---|---|---|---|")
    cands = [("none", None)] + [(f"thr {t:g} scale {s:g}", MotionCheck(DEMO_LABELS, t, s))
                               for s in SCALES for t in THRESHOLDS]
    for name, check in cands:
        r = scores(videos, gt, check)
        rv = scores(videos, gt, check, "video") if "video" in kinds else None
        video = f"{100 * rv.mAP[rv.tiou.index(0.5)]:.1f} | {100 * rv.average_mAP:.1f}" if rv else "- | -"
        print(_row(name, r) + f" {video} |")


def cache(args) -> None:
    """``tal extract`` of the demo's extractor, plus each video's block medians beside its features."""
    from tal_pipeline.featio import is_complete
    from tal_pipeline.features import auto_precision
    from tal_pipeline.inputs import select_inputs
    from tal_pipeline.jobs import ExtractJob

    out = Path(args.output)
    worker = ExtractJob(out, {**EXTRACT, "precision": auto_precision("cpu")}, threads=args.threads).setup()
    items = select_inputs(args.inputs)
    for i, (vid, path) in enumerate(sorted(items.items())):
        blocks = out / f"{vid}.blocks.npz"
        if blocks.exists() and is_complete(out, vid):
            continue
        got: list[np.ndarray] = []
        size: list[int] = []

        def hook(flow: np.ndarray, got=got, size=size) -> None:
            got.append(block_medians(flow)[0].astype(np.float32))  # medians of float32: exact
            size[:] = flow.shape[2:]

        worker.fx.field_hook = hook
        worker.process(vid, path)
        tmp = blocks.with_name(f".{blocks.name}.tmp.npz")
        np.savez(tmp, values=np.concatenate(got), size=np.array(size))
        tmp.replace(blocks)
        print(f"[{i + 1}/{len(items)}] {vid}: {sum(len(g) for g in got)} fields", flush=True)


def refit(v: Video, margin: float | None) -> np.ndarray:
    """``v``'s per-step global motion (T, K) refitted from its cached block medians."""
    z = np.load(v.npy.with_name(f"{v.vid}.blocks.npz"))
    h, w = (int(x) for x in z["size"])
    per_field = fit_blocks(z["values"], block_centres(h, w), w, margin)
    m = v.meta
    return step_descriptor(per_field, m.num_features, m.fps, m.t0, m.step)


def still_videos(feat: str, det) -> list[Video]:
    """The head, check off, on every feature file of ``feat`` (fixed-camera clips: no annotations)."""
    from tal_pipeline.featio import list_feature_files, load_features

    out = []
    for npy in list_feature_files(feat):
        arr, meta = load_features(npy)
        d = det.detect_features(arr, meta)
        out.append(Video(npy.stem, "still", d.segments, meta.motion, meta.times(), npy, meta))
    return out


def _fit_name(margin: float | None) -> str:
    return "(a) median start" if margin is None else f"(b) zero start, margin {margin:g}"


def fits(args) -> None:
    margins = [None if f == "none" else float(f) for f in args.fits.split(",")]
    checks = ([tuple(float(x) for x in c.split(":")) for c in args.checks.split(",")] if args.checks
              else [(t, s) for s in SCALES for t in THRESHOLDS])
    videos, ctx = run_head(args.set, args.model)
    gt = _merge(ctx["annotations"])
    det, today = ctx["detector"], ctx["detector"].meta.motion_check
    low, low_gt = ([], None)
    if args.lowtex:
        low, low_ctx = run_head([args.lowtex], args.model)
        low_gt = _merge(low_ctx["annotations"])
    still = still_videos(args.still, det) if args.still else []
    drift = max(float(np.abs(refit(v, None) - v.motion).max()) for v in videos + low + still)
    print(f"{len(videos)} videos ({sum(v.scene == 'video' for v in videos)} looping-video scenes), "
          f"{len(low)} low-texture, {len(still)} fixed-camera ({', '.join(v.vid for v in still)}); "
          f"today's fit from the cached blocks vs the stored descriptor: max |diff| {drift:.1e}\n")
    print("| fit | check | all @0.5 | all avg | video @0.5 | video avg | low-texture avg | "
          f"fixed-camera >= {STILL_MAX_SCORE:g} | qualifies |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []

    def row(fit: str, name: str, vids, lows, stills, check) -> dict:
        r, rv = scores(vids, gt, check), scores(vids, gt, check, "video")
        rl = scores(lows, low_gt, check) if lows else None
        counts = [sum(s.score >= STILL_MAX_SCORE for s in (apply_check(v.segments, v.motion, v.times, check)
                                                          if check else v.segments)) for v in stills]
        i5 = r.tiou.index(0.5)
        return {"fit": fit, "check": name, "at5": 100 * r.mAP[i5], "avg": 100 * r.average_mAP,
                "v5": 100 * rv.mAP[i5], "vavg": 100 * rv.average_mAP,
                "low": 100 * rl.average_mAP if rl else float("nan"), "still": counts}

    def show(d: dict, verdict: str = "") -> None:
        print(f"| {d['fit']} | {d['check']} | {d['at5']:.2f} | {d['avg']:.2f} | {d['v5']:.2f} | {d['vavg']:.2f} | "
              f"{d['low']:.2f} | {sum(d['still'])} ({' '.join(map(str, d['still']))}) | {verdict} |")

    show(row("-", "none", videos, low, still, None))
    for k, margin in enumerate(margins):
        def moved(vs, margin=margin):
            return [replace(v, motion=refit(v, margin)) for v in vs]
        fv, fl, fs = moved(videos), moved(low), moved(still)
        for t, sc in checks:
            d = row(_fit_name(margin), f"thr {t:g} scale {sc:g}", fv, fl, fs, MotionCheck(DEMO_LABELS, t, sc))
            d.update(order=k, margin=margin, threshold=t, scale=sc)
            rows.append(d)
    base = next((d for d in rows if d["margin"] is None and today is not None
                 and (d["threshold"], d["scale"]) == (today.threshold, today.scale)), None)
    for d in rows:
        d["ok"] = base is not None and (sum(d["still"]) == 0 and d["avg"] >= base["avg"] - 0.3
                                        and not d["low"] < base["low"] - 0.3)
        show(d, ("yes" if d["ok"] else "no") if args.choose else "-")
    if not args.choose:
        return
    if base is None:
        sys.exit("camera_check: --choose needs 'none' in --fits and the model's own check among --checks")
    ok = [d for d in rows if d["ok"]]
    print(f"\ntoday's (fit (a), thr {today.threshold:g} scale {today.scale:g}): average {base['avg']:.2f}, "
          f"low-texture {base['low']:.2f}, fixed-camera {sum(base['still'])}")
    if not ok:
        print("rule: no candidate qualifies; today's fit and check stay")
        return
    best = max(d["avg"] for d in ok)
    tied = [d for d in ok if d["avg"] >= best - 0.1]
    # ties: the smaller margin (the order of --fits: none, 0, 0.05, 0.1), the larger threshold, scaling
    win = min(tied, key=lambda d: (d["order"], -d["threshold"], d["scale"] == 0))
    print(f"rule: {len(ok)} qualify, best average {best:.2f}; chosen: {win['fit']}, {win['check']} "
          f"(average {win['avg']:.2f}, low-texture {win['low']:.2f})")


def score(args) -> None:
    videos, ctx = run_head(args.set, args.model)
    gt = _merge(ctx["annotations"])
    check = ctx["detector"].meta.motion_check
    if check is None:
        sys.exit(f"camera_check: {args.model} declares no motion_check")
    print(f"check: threshold {check.threshold:g} px, scale {check.scale:g}; {len(videos)} videos\n")
    for name, c in (("without the check", None), ("with the check", check)):
        r = scores(videos, gt, c)
        print(f"## {name}\n\n{r.table()}\n")
        for kind in sorted({v.scene for v in videos}):
            rk = scores(videos, gt, c, kind)
            print(f"- scene {kind} ({sum(v.scene == kind for v in videos)} videos): "
                  f"@0.5 {100 * rk.mAP[rk.tiou.index(0.5)]:.1f}, average {100 * rk.average_mAP:.1f}")
        print()


def models(args) -> None:
    from tal_pipeline.checkpoint import load_head
    from tal_pipeline.pipeline import demo_checkpoint_path

    check = load_head(demo_checkpoint_path())[1].motion_check  # the shipped check, for every candidate
    rows = []
    for spec in args.candidate:
        name, _, path = spec.partition("=")
        videos, ctx = run_head(args.set, path)
        gt = _merge(ctx["annotations"])
        r = scores(videos, gt, check)
        rv = scores(videos, gt, check, "video") if any(v.scene == "video" for v in videos) else None
        still = {}
        if args.still:
            for v in still_videos(args.still, ctx["detector"]):
                segs = apply_check(v.segments, v.motion, v.times, check)
                still[v.vid] = sum(s.score >= STILL_MAX_SCORE for s in segs)
        rows.append({"name": name, "model": path, "avg": 100 * r.average_mAP, "at05": 100 * r.mAP[r.tiou.index(0.5)],
                     "video05": 100 * rv.mAP[rv.tiou.index(0.5)] if rv else float("nan"),
                     "still": sum(still.values()), "per_still": still, "result": r})
    print(f"check: threshold {check.threshold:g} px, scale {check.scale:g}; sets {', '.join(args.set)}"
          f"{'; still ' + args.still if args.still else ''}\n")
    print(f"| candidate | avg mAP | mAP@0.5 | video scenes @0.5 | still detections >= {STILL_MAX_SCORE:g} (per clip) |")
    print("|---|---|---|---|---|")
    for w in rows:
        per = ", ".join(f"{k} {n}" for k, n in sorted(w["per_still"].items()))
        print(f"| {w['name']} | {w['avg']:.2f} | {w['at05']:.2f} | {w['video05']:.2f} | {w['still']} ({per}) |")
    for w in rows:
        print(f"\n## {w['name']} ({w['model']})\n\n{w['result'].table()}")
    if args.choose:
        shipped = rows[0]
        ok = [w for w in rows if w["still"] <= shipped["still"]]
        best = max(w["avg"] for w in ok)
        order = {w["name"]: i for i, w in enumerate(rows)}  # S first, then the given order
        tied = sorted((w for w in ok if w["avg"] >= best - 0.1), key=lambda w: (w["still"], order[w["name"]]))
        print(f"\nqualify (still detections <= {shipped['name']}'s {shipped['still']}): "
              f"{', '.join(w['name'] for w in ok)}; chosen: **{tied[0]['name']}** ({tied[0]['model']})")


def write(args) -> None:
    import torch

    from tal_pipeline.checkpoint import read_checkpoint, save_checkpoint

    path = Path(args.model)
    old = read_checkpoint(path)
    new = dict(old)
    new["motion_check"] = MotionCheck(DEMO_LABELS, args.threshold, args.scale).to_json()
    save_checkpoint(path, new)
    back = read_checkpoint(path)
    assert back.keys() == old.keys() | {"motion_check"}
    assert back["state_dict"].keys() == old["state_dict"].keys()
    for k, v in old["state_dict"].items():  # the head, bitwise
        assert torch.equal(back["state_dict"][k], v) and back["state_dict"][k].dtype == v.dtype, k
    for k in old:
        if k != "state_dict":
            assert back[k] == old[k], k
    print(f"{path}: motion_check {back['motion_check']}; {len(old['state_dict'])} tensors unchanged")


def speed(args) -> None:
    import os
    import subprocess
    import tempfile
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_extract import TAL_OWN_PEAK, make_clip

    cache = Path(tempfile.gettempdir()) / "tal_bench"
    cache.mkdir(exist_ok=True)
    clip = make_clip(cache / f"clip_{int(args.seconds)}s.mp4", args.seconds)
    here = Path(__file__).resolve().parents[1]
    trees = {"before": Path(args.against).resolve(), "this": here}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            with tempfile.TemporaryDirectory() as out, tempfile.NamedTemporaryFile(suffix=".peak") as peak:
                t = time.perf_counter()  # cwd = the tree: `python -c` imports tal_pipeline from there
                subprocess.run([*TAL_OWN_PEAK, "detect", str(clip), "-o", f"{out}/o.json", "--model",
                                str(tree / "weights" / "demo.pt"), "--no-progress", "-q"], cwd=tree, check=True,
                               stdout=subprocess.DEVNULL, env={**os.environ, "TAL_BENCH_PEAK": peak.name})
                dt = time.perf_counter() - t
                mb = int(Path(peak.name).read_text() or 0) / 1024
            runs[name].append((dt, mb))
            print(f"round {r} {name:6s} wall {dt:6.2f} s  peak RSS {mb:.0f} MB", flush=True)
    med = {k: np.median(np.array(v), axis=0) for k, v in runs.items()}
    print(f"median wall: this {med['this'][0]:.2f} s, before {med['before'][0]:.2f} s "
          f"(ratio {med['this'][0] / med['before'][0]:.3f}); peak RSS {med['this'][1]:.0f} vs {med['before'][1]:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("verb", choices=("sweep", "score", "write", "speed", "cache", "fits", "models"))
    ap.add_argument("inputs", nargs="*", help="cache: videos, folders or .txt lists")
    ap.add_argument("-o", "--output", default=None, help="cache: the features folder")
    ap.add_argument("--threads", type=int, default=1, help="cache: torch threads")
    ap.add_argument("--fits", default="none,0,0.05,0.1",
                    help="fits: comma-separated; none = today's median start, a number = zero_margin")
    ap.add_argument("--checks", default=None, help="fits: THRESHOLD:SCALE,... (default: the sweep's grid)")
    ap.add_argument("--lowtex", default=None, help="fits: FEAT:ANN of the low-texture set")
    ap.add_argument("--still", default=None, help="fits: a folder of fixed-camera clips' features")
    ap.add_argument("--choose", action="store_true", help="fits, models: apply the declared selection rule")
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=MODEL",
                    help="models: a checkpoint to score (the first: the shipped one)")
    ap.add_argument("--set", action="append", default=[], help="FEATURE_FOLDER:ANNOTATIONS.json")
    ap.add_argument("--model", default="weights/demo.pt")
    ap.add_argument("--threshold", type=float, default=None, help="write: px per frame pair at 112 px")
    ap.add_argument("--scale", type=float, default=0.0, help="write: score factor of a failing detection (0: drop)")
    ap.add_argument("--against", default=None, help="speed: another checkout (e.g. a git worktree)")
    ap.add_argument("--seconds", type=float, default=60.0, help="speed: clip length")
    ap.add_argument("--rounds", type=int, default=2, help="speed: runs of each checkout, alternating")
    args = ap.parse_intermixed_args()
    if args.verb in ("sweep", "score", "fits", "models") and not args.set:
        ap.error("give at least one --set FEAT:ANN")
    if args.verb == "write" and args.threshold is None:
        ap.error("write needs --threshold")
    if args.verb == "speed" and not args.against:
        ap.error("speed needs --against CHECKOUT")
    if args.verb == "cache" and not (args.inputs and args.output):
        ap.error("cache needs VIDEOS... and -o FEAT")
    {"sweep": sweep, "score": score, "write": write, "speed": speed, "cache": cache, "fits": fits,
     "models": models}[args.verb](args)


if __name__ == "__main__":
    main()
