"""Decode stage throughput: ``decode_video`` against a bare PyAV decode loop on the same file.

    python benchmarks/bench_decode.py [--clip PATH] [--repeats 5] [--seconds 60]

Without ``--clip`` it makes (once, cached in the temp folder) a synthetic 640x360 30 fps h264
clip of ``--seconds`` seconds: a textured background panning under moving shapes, x264
defaults (preset medium, crf 23). Both loops run on the same file in the same process,
interleaved, best of ``--repeats``:

- bare: demux + decode every frame, ``thread_type = "AUTO"``, no conversion;
- decode_video: the same plus sampling to 10 fps, RGB conversion of the sampled frames, resize
  to 128x171 and the 112 centre crop.

Prints video-seconds decoded per second, frames per second and the ratio decode_video / bare
(the goal is >= 0.8) from the best wall times, the median per-run ratio, the ratio of CPU
times (all threads; steadier on a shared machine), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tal_pipeline.decode import decode_video

WIDTH, HEIGHT, RATE = 640, 360, 30  # pixels, pixels, frames per second


def make_clip(path: Path, seconds: float) -> Path:
    """A synthetic but codec-realistic clip: texture, motion, a moving bright square."""
    rng = np.random.default_rng(0)
    # smooth-ish texture (noise blurred by summing shifted copies), larger than the frame
    noise = rng.integers(0, 256, (HEIGHT + 200, WIDTH + 400, 3)).astype(np.float32)
    for axis in (0, 1):
        noise = (noise + np.roll(noise, 1, axis) + np.roll(noise, 2, axis)) / 3
    texture = noise.astype(np.uint8)
    tmp = path.with_suffix(".part.mp4")
    container = av.open(str(tmp), "w")
    stream = container.add_stream("libx264", rate=RATE)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    n = int(seconds * RATE)
    for i in range(n):
        t = i / RATE
        x = int(200 + 180 * np.sin(t / 3)) % 400
        y = int(100 + 90 * np.cos(t / 5)) % 200
        image = texture[y : y + HEIGHT, x : x + WIDTH].copy()
        sx = int((WIDTH - 80) * (0.5 + 0.5 * np.sin(t)))
        image[140:220, sx : sx + 80] = (240, 200, 40)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    os.replace(tmp, path)
    return path


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system), seconds."""
    t = os.times()
    return t.user + t.system


def bare_decode(path: Path) -> tuple[int, float, float]:
    """Frames decoded, wall seconds and CPU seconds of the plainest PyAV loop."""
    start, cpu = time.perf_counter(), cpu_seconds()
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            n += 1
    return n, time.perf_counter() - start, cpu_seconds() - cpu


def ours(path: Path) -> tuple[int, float, float]:
    """Output frames, wall seconds and CPU seconds of decode_video (10 fps, 112x112 RGB)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    n = 0
    for chunk in decode_video(path):
        n += len(chunk.frames)
    return n, time.perf_counter() - start, cpu_seconds() - cpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, help="video to decode (made if missing)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the made clip")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each loop; best kept")
    args = parser.parse_args()

    clip = (
        args.clip
        or Path(tempfile.gettempdir()) / f"tal_bench_{WIDTH}x{HEIGHT}_{RATE}_{args.seconds:g}s.mp4"
    )
    if not clip.exists():
        print(f"making {clip} ...", flush=True)
        make_clip(clip, args.seconds)
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        duration = float(s.duration * s.time_base) if s.duration else c.duration / av.time_base
        cc = s.codec_context
        desc = f"{cc.name} {cc.width}x{cc.height} {float(s.average_rate):g} fps"

    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}")
    print(f"PyAV {av.__version__}, numpy {np.__version__}, Python {platform.python_version()}")
    print(f"clip: {clip} ({desc}, {duration:.2f} s)")
    runs = []  # (bare wall, bare cpu, ours wall, ours cpu) seconds
    n_bare = n_ours = 0
    for r in range(args.repeats):
        n_bare, t, tc = bare_decode(clip)
        n_ours, u, uc = ours(clip)
        runs.append((t, tc, u, uc))
        print(
            f"  run {r + 1}: bare {t:.3f} s (cpu {tc:.2f} s),"
            f" decode_video {u:.3f} s (cpu {uc:.2f} s)"
        )
    t, tc, u, uc = (min(col) for col in zip(*runs))
    med = sorted(b / o for b, _, o, _ in runs)[len(runs) // 2]
    print(f"bare PyAV decode : {duration / t:8.1f} video-s/s  {n_bare / t:8.1f} source frames/s")
    print(
        f"decode_video     : {duration / u:8.1f} video-s/s  {n_ours / u:8.1f} output frames/s"
        f"  ({n_bare / u:.1f} source frames/s)"
    )
    print(f"ratio decode_video / bare, best wall times: {t / u:.3f}  (goal >= 0.8)")
    print(f"ratio, median of the per-run wall ratios  : {med:.3f}")
    print(f"ratio, best CPU times (all threads)       : {tc / uc:.3f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"output frames: {n_ours}, peak RSS of the process {rss:.0f} MiB")


if __name__ == "__main__":
    main()
