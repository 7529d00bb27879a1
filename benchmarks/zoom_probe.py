"""Where are zooms lost? A linear probe on the demo's flow features from three flow sources.

    python benchmarks/zoom_probe.py                      # 16 train-split videos, 30-45 s each
    python benchmarks/zoom_probe.py --videos 24 --json probe.json

The same generated videos (``tal_pipeline.demo.camera``, train footage, h264, decoded by
``decode_video`` as ``tal`` does) give flow fields three ways:

- ``true``: the virtual camera's own motion (``camera_flow``: the camera path is known exactly,
  so the field between two sampled frames is an affine map; moving objects in the scene and
  the scene's own motion are not in it);
- ``opencv``: OpenCV's DualTVL1 (the reference);
- ``torch``: our batched TV-L1 (``tal``'s default).

Each goes through the same frozen ``seeded`` flow stream (``FeatureExtractor`` with the flow
given, so only the flow differs) to ``(T, 512)`` features. A multinomial logistic regression
(L2, LBFGS) is fit on the positions of 70 % of the videos and tested on the others (whole
videos held out; the split is chosen from the labels alone so that every class is on both
sides), per position and on features averaged over 3 positions (1.2 s); positions
within 0.4 s of a label change are left out. The script prints per-class recall and the
confusion matrix for each source, and TV-L1's endpoint error against the true field on the
sampled frames inside zooms, near the crop's centre (< 24 px) and near its edge (> 40 px).

If ``true`` separates zoom in from zoom out and TV-L1 does not, the flow loses them; if none
does, the trunk (or the probe's protocol) does.

    python benchmarks/zoom_probe.py --clean-epe 10       # TV-L1 on zooms only, no probe

``--clean-epe N`` measures TV-L1 alone on N videos of a still scene (photographs, no moving
objects: the camera's field is then the whole truth), each a 5 s zoom in and a 5 s zoom out:
EPE centre / edge for OpenCV, torch, torch without the gain match, and torch with ``affine_tv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import cpu_model

from tal_pipeline.decode import decode_video, rgb_to_gray
from tal_pipeline.demo import camera, footage
from tal_pipeline.features import FeatureExtractor
from tal_pipeline.flow import TVL1Options, compute_flow

CLASSES = ["background", *camera.CLASSES]
CROP = 112  # the crop the decoder gives (pixels)
RESIZE_HW = (128, 171)  # the decoder's resize before the crop (rows, columns)
CROP_OFF = (8, 30)  # first row and column of the crop in the resized picture
MARGIN_S = 0.4  # seconds around a label change whose positions the probe leaves out


def camera_flow(plan, t: np.ndarray) -> np.ndarray:
    """The camera's flow between consecutive sampled frames, in crop pixels: ``(N-1, 2, 112, 112)``.

    ``t``: times of the sampled frames (s). The frame on screen at ``t`` is source frame
    ``floor(t * fps)``; its output pixel ``p`` shows canvas point ``(p - c) / z + (cx, cy)``
    (``render_frames``), so the same point sits at ``z_j / z_i (p - c) + z_j (centre_i -
    centre_j) + c`` in frame ``j``. The decoder's resize scales x and y by their own factors.
    """
    src_t = np.floor(np.asarray(t) * plan.fps + 1e-6) / plan.fps
    cx, cy, z = camera.camera_path(plan, src_t)
    h, w = plan.height, plan.width
    sy, sx = RESIZE_HW[0] / h, RESIZE_HW[1] / w
    rows = (np.arange(CROP) + CROP_OFF[0] + 0.5) / sy - 0.5  # crop pixel -> output pixel
    cols = (np.arange(CROP) + CROP_OFF[1] + 0.5) / sx - 0.5
    px, py = np.meshgrid(cols - (w - 1) / 2, rows - (h - 1) / 2)  # relative to the centre
    out = np.empty((len(t) - 1, 2, CROP, CROP), np.float32)
    for k in range(len(t) - 1):
        ratio = z[k + 1] / z[k]
        out[k, 0] = ((ratio - 1) * px + z[k + 1] * (cx[k] - cx[k + 1])) * sx
        out[k, 1] = ((ratio - 1) * py + z[k + 1] * (cy[k] - cy[k + 1])) * sy
    return out


def labels_at(plan, t: np.ndarray) -> np.ndarray:
    """Class index at times ``t`` (0 = background); -1 within ``MARGIN_S`` of a change."""
    y = np.zeros(len(t), np.int64)
    for a in plan.annotations():
        t0, t1 = a["segment"]
        c = CLASSES.index(a["label"])
        y[(t >= t0) & (t < t1)] = c
        y[np.abs(t - t0) < MARGIN_S] = -1
        y[np.abs(t - t1) < MARGIN_S] = -1
    return y


def with_last(flow: np.ndarray) -> np.ndarray:
    return np.concatenate([flow, flow[-1:]])  # the feature extractor's convention: N fields


def fit_probe(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features (LBFGS, full batch)."""
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    lin = torch.nn.Linear(x.shape[1], len(CLASSES))
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def pooled(x: np.ndarray, k: int = 3) -> np.ndarray:
    """Features averaged over a centred window of ``k`` positions: ``(T, D) -> (T, D)``."""
    if k <= 1:
        return x
    pad = np.pad(x, ((k // 2, k // 2), (0, 0)), mode="edge")
    return np.stack([pad[i : i + len(x)] for i in range(k)]).mean(0)


def probe(feats: dict, labels: dict, train_ids: list, test_ids: list, pool: int) -> dict:
    def stack(ids):
        xs = [pooled(feats[v], pool) for v in ids]
        ys = [labels[v] for v in ids]
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = y >= 0
        return x[keep], y[keep]

    xtr, ytr = stack(train_ids)
    xte, yte = stack(test_ids)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    lin = fit_probe((xtr - mu) / sd, ytr)
    with torch.no_grad():
        pred = lin(torch.from_numpy((xte - mu) / sd).float()).argmax(1).numpy()
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    np.add.at(conf, (yte, pred), 1)
    recall = {c: float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None
              for i, c in enumerate(CLASSES)}
    return {"recall": recall, "accuracy": float((pred == yte).mean()), "confusion": conf.tolist(),
            "test_positions": len(yte)}


def epe_zoom(true: np.ndarray, est: np.ndarray, zoom: np.ndarray) -> dict:
    """Endpoint error on zoom fields, centre (< 24 px from the crop centre) vs edge (> 40 px)."""
    yy, xx = np.mgrid[:CROP, :CROP]
    r = np.hypot(xx - (CROP - 1) / 2, yy - (CROP - 1) / 2)
    err = np.linalg.norm(est[zoom] - true[zoom], axis=1)  # (n, H, W) pixels
    mag = np.linalg.norm(true[zoom], axis=1)
    out = {}
    for name, m in (("centre", r < 24), ("edge", r > 40), ("all", r >= 0)):
        e, g = err[:, m], mag[:, m]
        out[name] = {"epe_mean": float(e.mean()), "epe_median": float(np.median(e)),
                     "true_mag_mean": float(g.mean())}
    return out


def split_videos(ids: list[str], labels: dict, test_share: float = 0.3, tries: int = 200
                 ) -> tuple[list[str], list[str]]:
    """Whole videos to train / test, every class in both where possible: of ``tries`` seeded
    shuffles, the one whose rarer side has the most positions of its rarest class (labels
    only: chosen before any probe is fit)."""
    n_test = max(1, round(test_share * len(ids)))
    rng = np.random.default_rng(0)
    best, best_score = None, -1
    for _ in range(tries):
        order = list(rng.permutation(len(ids)))
        test = [ids[i] for i in order[:n_test]]
        train = [ids[i] for i in order[n_test:]]
        score = min(
            min(int((np.concatenate([labels[v] for v in side]) == c).sum()) for side in (train, test))
            for c in range(len(CLASSES))
        )
        if score > best_score:
            best, best_score = (sorted(train), sorted(test)), score
    return best


def clean_zoom_epe(n_videos: int, seed: int) -> dict:
    """TV-L1's EPE on the sampled zoom frames of ``n_videos`` still scenes (see the docstring)."""
    sources = footage.find_sources("train")
    script = [("static", 1.0), ("zoom_in", 5.0), ("static", 1.0), ("zoom_out", 5.0), ("static", 1.0)]
    flows = {"opencv": ("opencv", None), "torch": ("torch", None),
             "torch, no gain match": ("torch", TVL1Options(match_gain=False)),
             "torch, affine_tv": ("torch", TVL1Options(affine_tv=True))}
    truth, est = [], {k: [] for k in flows}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n_videos):
            opt = camera.CameraOptions(objects=False, scene_kind=("photo", "mosaic")[i % 2])
            plan = camera.plan_video(f"z{i}", (77, seed, i), sources, opt, script=script)
            path = camera.write_video(plan, Path(tmp) / "z.mp4", sources)
            chunks = list(decode_video(path))
            t = np.concatenate([c.times for c in chunks])
            gray = rgb_to_gray(np.concatenate([c.frames for c in chunks]))
            y = labels_at(plan, t[:-1])
            zoom = np.isin(y, [CLASSES.index("zoom_in"), CLASSES.index("zoom_out")])
            truth.append(camera_flow(plan, t)[zoom])
            for name, (backend, options) in flows.items():
                est[name].append(compute_flow(gray, backend=backend, options=options)[zoom])
    tz = np.concatenate(truth)
    res = {"pairs": len(tz)}
    for name, parts in est.items():
        e = res[name] = epe_zoom(tz, np.concatenate(parts), np.ones(len(tz), bool))
        print(f"{name:22s} EPE centre {e['centre']['epe_mean']:.3f} px (median "
              f"{e['centre']['epe_median']:.3f}), edge {e['edge']['epe_mean']:.3f} px (median "
              f"{e['edge']['epe_median']:.3f}); true |flow| {e['centre']['true_mag_mean']:.2f} / "
              f"{e['edge']['true_mag_mean']:.2f} px; {len(tz)} pairs")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clean-epe", type=int, default=0, metavar="N",
                    help="only TV-L1's EPE on N still-scene zoom videos (no probe)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.clean_epe:
        res = {"cpu": cpu_model(), "clean_zoom_epe": clean_zoom_epe(args.clean_epe, args.seed)}
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return
    opts = camera.CameraOptions(duration_s=(30.0, 45.0))
    sources = footage.find_sources("train")
    plans = camera.plan_dataset("train", args.videos, args.seed, opts, sources=sources)
    fx = FeatureExtractor(weights="seeded", streams=("flow",), precision="fp32")
    feats: dict = {s: {} for s in ("true", "opencv", "torch")}
    labels: dict = {}
    zoom_true, zoom_est = [], {"opencv": [], "torch": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for plan in plans:
            path = camera.write_video(plan, Path(tmp) / f"{plan.video_id}.mp4", sources)
            chunks = list(decode_video(path))
            frames = np.concatenate([c.frames for c in chunks])
            t = np.concatenate([c.times for c in chunks])
            gray = rgb_to_gray(frames)
            flows = {"true": camera_flow(plan, t),
                     "opencv": compute_flow(gray, backend="opencv"),
                     "torch": compute_flow(gray, backend="torch")}
            for name, f in flows.items():
                res = fx.extract_frames(frames, with_last(f), video=plan.video_id)
                feats[name][plan.video_id] = res.array
            labels[plan.video_id] = labels_at(plan, res.times)
            frame_y = labels_at(plan, t[:-1])
            zoom = np.isin(frame_y, [CLASSES.index("zoom_in"), CLASSES.index("zoom_out")])
            zoom_true.append(flows["true"][zoom])
            for name, parts in zoom_est.items():
                parts.append(flows[name][zoom])
            print(f"{plan.video_id}: {len(t)} frames, {len(res.times)} positions "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    ids = [p.video_id for p in plans]
    train_ids, test_ids = split_videos(ids, labels)
    n_train = len(train_ids)
    res: dict = {"cpu": cpu_model(), "videos": len(ids), "train_videos": n_train,
                 "test_videos": len(ids) - n_train, "probe": {}, "epe_zoom": {}}
    for name, by_video in feats.items():
        for pool in (1, 3):
            r = probe(by_video, labels, train_ids, test_ids, pool)
            res["probe"][f"{name}/pool{pool}"] = r
            rec = " ".join(f"{c}={v:.2f}" for c, v in r["recall"].items() if v is not None)
            print(f"{name:6s} pool {pool}: acc {r['accuracy']:.3f}  recall {rec}")
    tz = np.concatenate(zoom_true)
    zoom_mask = np.ones(len(tz), bool)
    for name, parts in zoom_est.items():
        res["epe_zoom"][name] = epe_zoom(tz, np.concatenate(parts), zoom_mask)
        e = res["epe_zoom"][name]
        print(f"EPE on zoom frames, {name}: centre {e['centre']['epe_mean']:.3f} px "
              f"(true |flow| {e['centre']['true_mag_mean']:.3f}), edge {e['edge']['epe_mean']:.3f} px "
              f"(true |flow| {e['edge']['true_mag_mean']:.3f}), all {e['all']['epe_mean']:.3f} px")
    for name in feats:
        conf = res["probe"][f"{name}/pool3"]["confusion"]
        print(f"confusion ({name}, pool 3; rows true, columns predicted: {', '.join(CLASSES)}):")
        for c, row in zip(CLASSES, conf):
            print(f"  {c:10s} " + " ".join(f"{v:5d}" for v in row))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
