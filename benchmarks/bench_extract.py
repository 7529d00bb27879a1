"""Throughput and memory of ``tal extract``: per stage and end to end.

    python benchmarks/bench_extract.py                       # CPU, 60 s clip, all stages
    python benchmarks/bench_extract.py --device cuda         # one GPU (fp16, torch flow too)
    python benchmarks/bench_extract.py --rss 1 10            # + peak RSS, 1- and 10-min clips
    python benchmarks/bench_extract.py --skip-stages --against REV   # backbone: this tree vs a commit
    python benchmarks/bench_extract.py --skip-stages --tal-against REV   # `tal extract`: the same
    python benchmarks/bench_extract.py --skip-stages --time-slices       # bf16 time slices vs one call

Generates 640x360 30 fps clips of textured moving content (cached in --workdir), then prints
video-seconds processed per wall-second ("x real time") for: decode (10 fps, 112 px), TV-L1
flow (each backend asked for), the backbone (both streams, on precomputed inputs), and end to
end (``FeatureExtractor.extract`` with the CLI's default settings; ``--weights seeded`` has the
same cost as kinetics400 and needs no download). ``--rss`` runs ``tal extract`` on each clip
length in a subprocess and reads its own peak RSS (``memory.peak_rss_kib``).

``--clips`` adds the side-by-side with the extraction peers do (video_features, mmaction2's
tools): torchvision's ``r3d_18`` as published (temporal stride 2 in layer4, global average
pool) on 16-frame clips centred every 4 frames (our feature step), each clip a separate forward,
on the same frames and flow fields, with the same weights, precision and memory format, against
our fully convolutional pass (``FeatureExtractor.extract_frames``). It prints both wall times,
their ratio, and how close the two feature sets are (cosine and relative L2 per stream: they
differ by design, 16 frames against our 109-frame receptive field).

``--against REV`` times the backbone (both streams, the first 20 s of the clip at most, with
precomputed flow) of this working tree and of git revision REV in alternating fresh processes,
``--rounds`` each, and prints the best CPU and wall seconds of each side, their ratio, the
features' relative L2 per stream, and whether each side gave the same bytes on every run.

``--time-slices`` times the backbone (both streams, the whole clip, precomputed flow) with bf16
convs on small frames in time slices (``backbone.TIME_SLICE``, forced on whatever the CPU) and
in one call, alternating in this process, ``--rounds`` each: every wall time, the medians and
whether both gave the same bytes (where the slices pay: AMX; docs/design.md).

``--tal-against REV`` runs ``tal extract`` (the CLI's defaults, ``--weights seeded``) on the
``--seconds`` clip in fresh processes of this tree and of REV, alternating, ``--rounds`` each:
every run's wall time (start-up included) and own peak RSS, each side's median and the ratio.
Both sides run outside the checkout, so that each imports its own ``tal_pipeline``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

W, H, SRC_FPS = 640, 360, 30  # generated clip: pixels, frames per second


def make_clip(path: Path, seconds: float) -> Path:
    """Textured content panning and zooming, plus a moving bright square (libx264 ultrafast)."""
    import av

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (H // 8 + 40, W // 8 + 80, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(tex, 8, axis=0), 8, axis=1)  # 8 px blocks: trackable texture
    n = round(seconds * SRC_FPS)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(SRC_FPS))
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(n):
            t = i / SRC_FPS
            x = int(160 + 150 * np.sin(0.31 * t))
            y = int(80 + 60 * np.sin(0.23 * t))
            img = tex[y : y + H, x : x + W].copy()
            cx = int((W - 60) * (0.5 + 0.5 * np.sin(1.7 * t)))
            img[150:210, cx : cx + 60] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    os.replace(tmp, path)
    return path


CPU_S: dict[str, float] = {}  # stage -> process CPU seconds (all threads) of its last run


def timed(fn, label: str | None = None):
    """(fn(), wall seconds); the process CPU seconds go to ``CPU_S[label]``. CPU seconds are
    what a shared, busy machine distorts least: on an idle 2-core machine the wall time of a
    well-parallelised stage approaches cpu_s / 2."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if label:
        CPU_S[label] = time.process_time() - c
    return out, time.perf_counter() - t


def line(label: str, wall: float, seconds: float, note: str = "") -> dict:
    cpu = CPU_S.get(label, float("nan"))
    print(f"{label:22s} wall {wall:7.2f} s  {seconds / wall:6.2f}x real time   cpu {cpu:7.2f} s  "
          f"({seconds / cpu:5.2f} video-s per cpu-s) {note}", flush=True)
    return {"wall_s": wall, "x_realtime": seconds / wall, "cpu_s": cpu}


def bench_stages(clip: Path, seconds: float, device: str, flow_backends: list[str]) -> dict:
    import torch

    from tal_pipeline.decode import decode_video, rgb_to_gray
    from tal_pipeline.features import FeatureExtractor
    from tal_pipeline.flow import compute_flow

    res: dict = {"device": device, "torch_threads": torch.get_num_threads(), "clip_s": seconds}
    frames, dt = timed(lambda: np.concatenate([c.frames for c in decode_video(clip)]), "decode")
    res["decode"] = line("decode", dt, seconds, f"({len(frames)} frames)")

    gray = rgb_to_gray(frames)
    flow = None
    for backend in flow_backends:
        def run_flow(backend=backend):
            parts = [compute_flow(gray[i : i + 65], backend=backend, device=device)
                     for i in range(0, len(gray) - 1, 64)]
            return np.concatenate(parts)
        f, dt = timed(run_flow, f"flow_{backend}")
        flow = f if flow is None else flow
        res[f"flow_{backend}"] = line(f"flow_{backend}", dt, seconds, f"({len(f)} pairs)")
    flow = np.concatenate([flow, flow[-1:]])  # (N, 2, H, W): the last field repeated

    fx = FeatureExtractor(weights="seeded", device=device)
    fx.extract_frames(frames[:24], flow[:24])  # warm-up (oneDNN / cuDNN plans)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    feats, dt = timed(lambda: fx.extract_frames(frames, flow), "backbone_2streams")
    res["backbone_2streams"] = line("backbone_2streams", dt, seconds, f"(T={len(feats)}, {fx.options.precision})")
    for backend in flow_backends:
        fx = FeatureExtractor(weights="seeded", device=device, flow_backend=backend)
        _, dt = timed(lambda fx=fx: fx.extract(clip), f"end_to_end_{backend}")
        res[f"end_to_end_{backend}"] = line(f"end_to_end_{backend}", dt, seconds)
    return res


CLIP_FRAMES = 16  # frames per clip of the clip-based baseline (r3d_18's training clips)


def clip_net(fx, channels: int):
    """torchvision ``r3d_18`` as published (avgpool kept, fc dropped) with ``fx``'s seeded
    weights for a ``channels``-input stream (the flow stem as ours: weights.flow_state_dict)."""
    import torch
    from torchvision.models.video import r3d_18

    from tal_pipeline.weights import flow_state_dict, seeded_state_dict

    sd = seeded_state_dict(fx.backbone_id)
    if channels != 3:
        sd = flow_state_dict(sd, fx.spec.stem_key, channels, independent=True)
    net = r3d_18(weights=None)
    if channels != 3:
        net.stem[0] = torch.nn.Conv3d(channels, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False)
    net.fc = torch.nn.Identity()
    net.load_state_dict({**net.state_dict(), **sd})
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last_3d)


def clip_features(net, x, step: int, precision: str) -> np.ndarray:
    """Clip-based features of one stream: ``x (C, N, H, W)`` normalised input -> ``(T, 512)``,
    ``T = ceil(N / step)``; clip j covers frames ``step j - 8 .. step j + 7`` (zero frames beyond
    the ends, like our zero padding), one forward each."""
    import torch

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    half = CLIP_FRAMES // 2
    n = x.shape[1]
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0, half, half))  # (C, N + 16, H, W)
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        for j in range(-(-n // step)):
            clip = padded[:, step * j : step * j + CLIP_FRAMES][None]  # (1, C, 16, H, W)
            out.append(net(clip.contiguous(memory_format=torch.channels_last_3d)).float())
    return torch.cat(out).numpy()  # (T, 512)


def bench_clips(frames: np.ndarray, flow: np.ndarray, precision: str = "auto", repeats: int = 1) -> dict:
    """Ours (fully convolutional, both streams) against clip-based r3d_18, same inputs."""
    from tal_pipeline.features import FeatureExtractor

    fx = FeatureExtractor(weights="seeded", precision=precision)
    precision = fx.options.precision
    fx.extract_frames(frames[:24], flow[:24])  # warm-up (oneDNN kernels)
    inputs = {"rgb": fx._rgb_tensor(frames), "flow": fx._flow_tensor(flow)}  # (C, N, H, W) each
    nets = {s: clip_net(fx, x.shape[0]) for s, x in inputs.items()}
    step = fx.feature_stride
    for s, x in inputs.items():
        clip_features(nets[s], x[:, :4], step, precision)  # warm-up (oneDNN kernels)
    best = {"ours": float("inf"), "clips": float("inf")}
    for _ in range(repeats):  # interleaved: both see the same load
        ours, dt = timed(lambda: fx.extract_frames(frames, flow), "ours_fully_conv")
        best["ours"] = min(best["ours"], dt)
        clips = {}
        t = time.perf_counter()
        for s in ("rgb", "flow"):
            clips[s] = clip_features(nets[s], inputs[s], step, precision)
        best["clips"] = min(best["clips"], time.perf_counter() - t)
    res = {"precision": precision, "frames": len(frames), "ours_s": best["ours"], "clips_s": best["clips"],
           "speedup": best["clips"] / best["ours"]}
    for i, s in enumerate(("rgb", "flow")):
        a, b = ours.array[:, 512 * i : 512 * (i + 1)], clips[s]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        res[f"{s}_cosine_mean"] = float(cos.mean())
        res[f"{s}_rel_l2"] = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    print(f"clip-based r3d_18 ({CLIP_FRAMES}-frame clips every {fx.feature_stride} frames, one forward each, "
          f"{precision}): {best['clips']:.2f} s; ours (fully convolutional): {best['ours']:.2f} s; "
          f"ours {res['speedup']:.2f}x faster (goal >= 1.7x) on {len(frames)} frames", flush=True)
    print(f"feature closeness: rgb cosine {res['rgb_cosine_mean']:.3f} rel. L2 {res['rgb_rel_l2']:.3f}; "
          f"flow cosine {res['flow_cosine_mean']:.3f} rel. L2 {res['flow_rel_l2']:.3f}", flush=True)
    return res


def both_streams(fx, frames: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Both streams' backbone as ``fx`` (a ``FeatureExtractor``) runs it, ``StreamPipeline`` fed
    64-frame pieces: ``frames`` (N, H, W, 3), ``flow`` (N, 2, H, W) -> features (2 * dim, T)."""
    import torch

    from tal_pipeline.backbone import StreamPipeline

    out = []
    with torch.inference_mode():
        for s, src, tensor in (("rgb", frames, fx._rgb_tensor), ("flow", flow, fx._flow_tensor)):
            pipe = StreamPipeline(fx.nets[s], fx._stage_chunks(), fx.options.batch_chunks, fx._wrap)
            ys = [pipe.push(tensor(src[i : i + 64])) for i in range(0, len(src), 64)] + [pipe.finish()]
            out.append(torch.cat([y for y in ys if y is not None], dim=1).float().numpy())
    return np.concatenate(out)


def clip_inputs(clip: Path, frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``frames`` decoded frames of ``clip`` (all: None) and their torch TV-L1 flow,
    the last field repeated so that there is one per frame."""
    from tal_pipeline.decode import decode_video, rgb_to_gray
    from tal_pipeline.flow import compute_flow

    rgb = np.concatenate([c.frames for c in decode_video(clip)])[:frames]
    flow = compute_flow(rgb_to_gray(rgb), backend="torch")
    return rgb, np.concatenate([flow, flow[-1:]])


def backbone_worker(inputs: Path, out: Path, precision: str, repeats: int = 2) -> None:
    """``--against``'s child: both streams' backbone (``StreamPipeline`` as the extractor runs
    it, 64-frame pieces) on the frames and flow in ``inputs`` (.npz), with whichever
    ``tal_pipeline`` is first on the path; best wall and CPU seconds of ``repeats`` runs after a
    warm-up, the features (T, D) and whether the runs were bitwise equal, into ``out`` (.npz)."""
    from tal_pipeline.features import FeatureExtractor

    data = np.load(inputs)
    frames, flow = data["frames"], data["flow"]
    fx = FeatureExtractor(weights="seeded", precision=precision)

    def run() -> np.ndarray:
        return both_streams(fx, frames, flow).T  # (T, 2 * dim)

    run()  # warm-up: oneDNN kernels, folded weights
    walls, cpus, feats = [], [], []
    for _ in range(repeats):
        (y, dt) = timed(run, "backbone")
        walls.append(dt)
        cpus.append(CPU_S["backbone"])
        feats.append(y)
    stable = all(np.array_equal(feats[0], f) for f in feats[1:])
    np.savez(out, wall=min(walls), cpu=min(cpus), feats=feats[0], stable=stable, precision=fx.options.precision)


def bench_time_slices(frames: np.ndarray, flow: np.ndarray, rounds: int) -> dict:
    """``--time-slices``: the backbone (bf16, both streams) sliced and in one call, alternating."""
    from tal_pipeline import backbone
    from tal_pipeline.features import FeatureExtractor

    fx = FeatureExtractor(weights="seeded", precision="bf16")
    sides = {"sliced": backbone.TIME_SLICE, "one call": 10**9}
    walls: dict[str, list[float]] = {k: [] for k in sides}
    feats: dict[str, np.ndarray] = {}
    amx, before = backbone._cpu_has_amx, backbone.TIME_SLICE
    backbone._cpu_has_amx = lambda: True  # sliced wherever TIME_SLICE allows, AMX or not
    try:
        for r in range(rounds + 1):  # round 0 warms both up
            for name, steps in sides.items():
                backbone.TIME_SLICE = steps
                t = time.perf_counter()
                feats[name] = both_streams(fx, frames, flow)
                if r:
                    walls[name].append(time.perf_counter() - t)
    finally:
        backbone._cpu_has_amx, backbone.TIME_SLICE = amx, before
    med = {k: float(np.median(v)) for k, v in walls.items()}
    same = bool(np.array_equal(feats["sliced"], feats["one call"]))
    for k, v in walls.items():
        print(f"backbone {k:>8s}: {' '.join(f'{x:.2f}' for x in v)} s, median {med[k]:.2f} s")
    print(f"one call / sliced: {med['one call'] / med['sliced']:.3f} (> 1: the slices pay here); same bytes: {same}")
    return {"walls": walls, "median": med, "same_bytes": same}


def bench_against(rev: str, clip: Path, seconds: float, precision: str, rounds: int) -> dict:
    """This tree's backbone against git revision ``rev``'s on the same inputs, in alternating
    fresh processes (both see the same load): best CPU and wall seconds, ratio, relative L2."""
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        other = _checkout(repo, rev, tmp / "rev")
        frames, flow = clip_inputs(clip, round(seconds * 10))
        np.savez(tmp / "inputs.npz", frames=frames, flow=flow)
        sides = {"this tree": str(repo), rev: str(other)}
        best: dict = {}
        for r in range(rounds):
            for i, (name, root) in enumerate(sides.items()):
                out = tmp / f"round{r}_side{i}.npz"
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
                code = ("import sys; sys.path.insert(0, sys.argv[1]); from bench_extract import backbone_worker;"
                        "from pathlib import Path; backbone_worker(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])")
                subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp / "inputs.npz"),
                                str(out), precision], env=env, check=True, cwd=tmp)
                got = dict(np.load(out))
                b = best.setdefault(name, got)
                b["wall"], b["cpu"] = min(b["wall"], got["wall"]), min(b["cpu"], got["cpu"])
                b["stable"] = bool(b["stable"]) and bool(got["stable"])
    new, old = best["this tree"], best[rev]
    d = new["feats"].shape[1] // 2
    res = {"precision": str(new["precision"]), "seconds": seconds, "load": os.getloadavg()[0],
           "cpu_ratio": float(old["cpu"] / new["cpu"]), "wall_ratio": float(old["wall"] / new["wall"])}
    for name, cols in (("rgb", slice(0, d)), ("flow", slice(d, None))):
        a, b = old["feats"][:, cols], new["feats"][:, cols]
        res[f"{name}_rel_l2"] = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    for name, b in best.items():
        print(f"backbone {name:>12s}: best of {rounds} rounds: wall {float(b['wall']):6.2f} s  cpu "
              f"{float(b['cpu']):6.2f} s  bitwise stable across runs: {bool(b['stable'])}", flush=True)
    print(f"this tree against {rev} ({res['precision']}, {seconds:g} s of video, load "
          f"{res['load']:.1f}): {res['cpu_ratio']:.2f}x in CPU seconds, {res['wall_ratio']:.2f}x in wall time; "
          f"features' relative L2: rgb {res['rgb_rel_l2']:.2e}, flow {res['flow_rel_l2']:.2e}", flush=True)
    return res


def _checkout(repo: Path, rev: str, where: Path) -> Path:
    """``rev``'s ``tal_pipeline`` package, unpacked under ``where`` (the folder to put on the path)."""
    where.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "tal_pipeline"], capture_output=True,
                             check=False)
    if archive.returncode != 0:
        raise SystemExit(f"revision {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def bench_tal_against(rev: str, clip: Path, seconds: float, rounds: int, device: str) -> dict:
    """``tal extract`` of this tree against git revision ``rev``'s, alternating fresh processes."""
    repo = Path(__file__).resolve().parent.parent
    runs: dict[str, list[tuple[float, float]]] = {"this tree": [], rev: []}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"this tree": repo, rev: _checkout(repo, rev, Path(tmp) / "rev")}
        for _ in range(rounds):
            for name, root in roots.items():
                with tempfile.TemporaryDirectory() as out:
                    # cwd outside the checkout: `python -c` puts the cwd first on sys.path
                    dt, mb = run_tal(["extract", str(clip), "-o", out, "--weights", "seeded", "--device", device,
                                      "--no-progress"], quiet=True, root=root, cwd=tmp)
                runs[name].append((dt, mb))
                print(f"tal extract {name:>12s}: {dt:6.2f} s ({seconds / dt:.2f}x real time), "
                      f"peak {mb:.0f} MB", flush=True)
    med = {name: (float(np.median([d for d, _ in r])), float(np.median([m for _, m in r]))) for name, r in runs.items()}
    res = {"runs": runs, "median_s": {k: v[0] for k, v in med.items()}, "median_peak_mb": {k: v[1] for k, v in med.items()},
           "ratio": med[rev][0] / med["this tree"][0], "load": os.getloadavg()[0]}
    print(f"tal extract, medians of {rounds}: this tree {med['this tree'][0]:.2f} s / {med['this tree'][1]:.0f} MB, "
          f"{rev} {med[rev][0]:.2f} s / {med[rev][1]:.0f} MB: {res['ratio']:.2f}x faster", flush=True)
    return res


# ``tal`` itself (its console script's code), writing its own peak RSS (``memory.peak_rss_kib``,
# KiB) to $TAL_BENCH_PEAK once the command is over. Not wait4's ru_maxrss: Linux keeps the
# high-water mark across exec and subprocess starts children with vfork, so a child's ru_maxrss
# is at least this benchmark's own peak (the in-process stages run before it).
TAL_OWN_PEAK = [sys.executable, "-c", (
    "import atexit, os, sys\n"
    "from tal_pipeline.memory import peak_rss_kib\n"
    "atexit.register(lambda: open(os.environ['TAL_BENCH_PEAK'], 'w').write(str(peak_rss_kib())))\n"
    "from tal_pipeline.cli import main\n"
    "sys.argv[0] = 'tal'\n"
    "sys.exit(main())\n")]


def run_tal(args: list[str], quiet: bool = False, root: Path | None = None,
            cwd: str | None = None) -> tuple[float, float]:
    """(wall s, the process's own peak RSS in MB) of a fresh ``tal ARGS`` process; ``root``: the
    folder whose ``tal_pipeline`` it imports (first on ``PYTHONPATH``)."""
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak:
        t = time.perf_counter()
        proc = subprocess.Popen([*TAL_OWN_PEAK, *args], stdout=subprocess.DEVNULL if quiet else None,
                                env={**env, "TAL_BENCH_PEAK": peak.name}, cwd=cwd)
        code = proc.wait()
        dt = time.perf_counter() - t
        kib = int(Path(peak.name).read_text() or 0)
    if code != 0:
        raise SystemExit(f"tal failed ({code}): tal {' '.join(args)}")
    return dt, kib / 1024.0


def peak_rss(clip: Path, device: str, extra: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall s) of ``tal extract clip`` in a fresh subprocess (``run_tal``)."""
    with tempfile.TemporaryDirectory() as out:
        dt, mb = run_tal(["extract", str(clip), "-o", out, "--weights", "seeded", "--device", device,
                          "--no-progress", *extra])
    return mb, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length for the stage timings")
    ap.add_argument("--flow", nargs="+", default=None, help="flow backends (default: opencv torch)")
    ap.add_argument("--rss", nargs="*", type=float, default=None, metavar="MIN",
                    help="clip lengths in minutes for the peak-RSS runs (e.g. 1 10)")
    ap.add_argument("--rss-args", default="", help="extra `tal extract` options for the RSS runs")
    ap.add_argument("--skip-stages", action="store_true")
    ap.add_argument("--clips", type=float, default=None, metavar="SECONDS",
                    help="also compare with clip-based r3d_18 on the first SECONDS of the clip")
    ap.add_argument("--precision", default="auto", help="--clips, --against: backbone precision of both sides")
    ap.add_argument("--against", default=None, metavar="REV",
                    help="time this tree's backbone against git revision REV's (alternating processes)")
    ap.add_argument("--tal-against", default=None, metavar="REV",
                    help="time `tal extract` of this tree against git revision REV's (alternating processes)")
    ap.add_argument("--rounds", type=int, default=3, help="--against, --tal-against, --time-slices: runs per side")
    ap.add_argument("--time-slices", action="store_true",
                    help="time the backbone's bf16 time slices against one call (alternating, in-process)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tal_bench"))
    ap.add_argument("--json", default=None, help="write the numbers here")
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    # the fresh `tal extract` processes first: after the in-process stages this process's thread
    # pools and 1.3 GB stay alive beside the child and slowed it (22 s against 18 s for the 60 s clip)
    for minutes in args.rss or []:
        clip = make_clip(work / f"clip_{minutes * 60:g}s.mp4", minutes * 60)
        mb, dt = peak_rss(clip, args.device, args.rss_args.split())
        results[f"rss_{minutes:g}min"] = {"peak_rss_mb": mb, "wall_s": dt}
        print(f"peak RSS {minutes:g} min clip: {mb:7.0f} MB  ({dt:.0f} s, {minutes * 60 / dt:.2f}x real time)",
              flush=True)
    if not args.skip_stages:
        clip, dt = timed(lambda: make_clip(work / f"clip_{args.seconds:g}s.mp4", args.seconds))
        print(f"clip: {clip} ({args.seconds:g} s, {W}x{H} {SRC_FPS} fps; {dt:.1f} s to make)", flush=True)
        results["stages"] = bench_stages(clip, args.seconds, args.device, args.flow or ["opencv", "torch"])
    if args.clips:
        clip = make_clip(work / f"clip_{args.seconds:g}s.mp4", args.seconds)
        results["clips"] = bench_clips(*clip_inputs(clip, round(args.clips * 10)), args.precision)
    if args.time_slices:
        clip = make_clip(work / f"clip_{args.seconds:g}s.mp4", args.seconds)
        results["time_slices"] = bench_time_slices(*clip_inputs(clip), args.rounds)
    if args.against:
        clip = make_clip(work / f"clip_{args.seconds:g}s.mp4", args.seconds)
        results["against"] = bench_against(args.against, clip, min(args.seconds, 20.0), args.precision, args.rounds)
    if args.tal_against:
        clip = make_clip(work / f"clip_{args.seconds:g}s.mp4", args.seconds)
        results["tal_against"] = bench_tal_against(args.tal_against, clip, args.seconds, args.rounds, args.device)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
