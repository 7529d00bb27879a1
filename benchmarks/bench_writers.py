"""The output writers against `tal detect` itself, on the shipped demo clip, in one run.

    python benchmarks/bench_writers.py            # examples/camera_demo.mp4, demo model
    python benchmarks/bench_writers.py --repeats 50

Times the demo detector on the clip (decode, flow, backbone, head; model loaded before), then
rendering and atomically writing (temp file, fsync, rename) the same results once per format
(json, vtt, srt, csv, tsv), the median of ``--repeats`` runs each, and prints the writers'
total as a share of the detection.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=str(ROOT / "examples" / "camera_demo.mp4"))
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    from tal_pipeline.pipeline import Detector
    from tal_pipeline.results import make_results
    from tal_pipeline.writers import FORMATS, write

    det = Detector.load("demo")
    t0 = time.perf_counter()
    detection = det.detect_video(args.clip)
    t_detect = time.perf_counter() - t0
    vid = Path(args.clip).stem
    results = make_results({vid: detection.segments}, {vid: detection.video_meta()}, det.external_data())
    print(f"detect {args.clip}: {t_detect:.2f} s, {len(detection.segments)} segments")
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                write(Path(tmp) / f"{vid}.{fmt}", results, fmt)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            total += med
            print(f"  write {fmt:4s}: {1000 * med:7.3f} ms (median of {args.repeats})")
    print(f"all five writers: {1000 * total:.3f} ms = {100 * total / t_detect:.4f} % of detect")


if __name__ == "__main__":
    main()
