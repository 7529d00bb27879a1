"""`tal plot`: lane stacking, and bars in the PNG exactly where the segments are."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tal_pipeline.cli import main
from tal_pipeline.errors import InputError
from tal_pipeline.plot import (
    MIN_ALPHA,
    PALETTE,
    PlotOptions,
    actionness_curve,
    assign_lanes,
    class_colors,
    draw_timeline,
    format_seconds,
    plot_timeline,
)

WHITE = np.array([255, 255, 255])


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[k : k + 2], 16) for k in (1, 3, 5)])


def _results(per_video: dict, durations: dict, curves: dict | None = None) -> dict:
    videos = {
        vid: {"path": f"{vid}.mp4", "duration": d, "fps": 10.0} for vid, d in durations.items()
    }
    for vid, curve in (curves or {}).items():
        videos[vid]["actionness"] = curve
    return {
        "version": "tal-pipeline/0.1",
        "results": {
            vid: [{"label": lab, "score": sc, "segment": [t0, t1]} for lab, sc, t0, t1 in segs]
            for vid, segs in per_video.items()
        },
        "external_data": {},
        "videos": videos,
    }


def _pixel(png: np.ndarray, ax, t: float, y: float) -> np.ndarray:
    """RGB of the PNG at data point (t, y) of ``ax`` (display origin is bottom-left)."""
    x_px, y_px = ax.transData.transform((t, y))
    return png[round(png.shape[0] - y_px), round(x_px), :3].astype(int)


def _expected(color: str, score: float) -> np.ndarray:
    alpha = MIN_ALPHA + (1 - MIN_ALPHA) * score
    return alpha * _rgb(color) + (1 - alpha) * WHITE


# ---------------------------------------------------------------- lanes and helpers


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0.01, 20, allow_nan=False)),
        max_size=40,
    )
)
def test_assign_lanes_no_overlap_and_minimal(pairs):
    intervals = [(t0, t0 + d) for t0, d in pairs]
    lanes, n = assign_lanes(intervals, max_lanes=1000)
    assert len(lanes) == len(intervals)
    for k in range(n):  # no two intervals of a lane overlap
        mine = sorted(iv for iv, lane in zip(intervals, lanes) if lane == k)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(mine))
    # as many lanes as the deepest overlap (greedy interval partitioning is optimal)
    events = sorted(
        [(t0, 1) for t0, _ in intervals] + [(t1, -1) for _, t1 in intervals],
        key=lambda e: (e[0], e[1]),
    )
    depth = best = 0
    for _, d in events:
        depth += d
        best = max(best, depth)
    assert n == best


def test_assign_lanes_cap():
    intervals = [(0.0, 10.0)] * 30
    lanes, n = assign_lanes(intervals, max_lanes=5)
    assert n == 5
    assert sorted(set(lanes)) == [0, 1, 2, 3, 4]
    assert assign_lanes([], 3) == ([], 0)


def test_class_colors_stable_and_distinct():
    names = [f"c{k}" for k in range(45)]
    a = class_colors(names)
    b = class_colors(list(reversed(names)) + names)
    assert a == b
    assert len(set(a.values())) == 45
    assert class_colors(["b", "a"]) == {"a": PALETTE[0], "b": PALETTE[1]}


def test_actionness_curve_forms():
    assert actionness_curve({"actionness": {"t0": 0.2, "step": 0.4, "values": [0, 1, 0.5]}}) == (
        [0.2, 0.6000000000000001, 1.0],
        [0.0, 1.0, 0.5],
    )
    assert actionness_curve({"actionness": {"times": [1, 2], "values": [0.1, 0.2]}}) == (
        [1.0, 2.0],
        [0.1, 0.2],
    )
    assert actionness_curve({"actionness": {"times": [1], "values": [0.1, 0.2]}}) is None
    assert actionness_curve({"duration": 3}) is None
    assert actionness_curve(None) is None


def test_format_seconds():
    assert format_seconds(0) == "0:00"
    assert format_seconds(75.4) == "1:15"
    assert format_seconds(7200) == "2:00:00"


# ---------------------------------------------------------------- the PNG


def test_png_size_and_bars_where_segments_are(tmp_path):
    segs = [
        ("walk", 1.0, 10.0, 20.0),  # lane 0
        ("run", 1.0, 15.0, 30.0),  # overlaps walk: lane 1
        ("walk", 0.5, 50.0, 60.0),  # lane 0, half opacity
        ("run", 0.05, 70.0, 80.0),  # below --min-score: not drawn
    ]
    res = _results({"v1": segs}, {"v1": 100.0})
    gt = {
        "database": {
            "v1": {"duration": 100.0, "annotations": [{"label": "walk", "segment": [40.0, 45.0]}]}
        }
    }
    out = tmp_path / "timeline.png"
    opts = PlotOptions(min_score=0.1, width_in=10.0, dpi=80)
    tl = plot_timeline(res, out, annotations=gt, options=opts)

    png = np.asarray(Image.open(out).convert("RGB"))
    w, h = tl.figure.get_size_inches() * opts.dpi
    assert png.shape[:2] == (round(h), round(w))
    assert png.shape[1] == 800
    ax = tl.axes["v1"]
    bars = {(b.kind, b.label, b.start): b for b in tl.bars["v1"]}
    assert len(bars) == 4  # 3 detections above min_score + 1 ground truth
    walk, run = bars[("pred", "walk", 10.0)], bars[("pred", "run", 15.0)]
    assert walk.y0 != run.y0  # overlapping: stacked in two lanes
    colors = tl.colors
    for b in (walk, run, bars[("pred", "walk", 50.0)], bars[("gt", "walk", 40.0)]):
        for t in np.linspace(b.start + 0.2 * (b.end - b.start), b.end - 0.2 * (b.end - b.start), 5):
            got = _pixel(png, ax, t, 0.5 * (b.y0 + b.y1))
            want = _expected(colors[b.label], b.score)
            assert np.abs(got - want).max() <= 6, (b, t, got, want)
    # no bar: background in the lane of the walk bars (between segments, and the dropped one)
    for t in (37.0, 74.0, 93.0):  # (grid lines at multiples of 10 s)
        assert np.abs(_pixel(png, ax, t, 0.5 * (walk.y0 + walk.y1)) - WHITE).max() <= 6
    # the rows ask for a legend entry per class: "run" and "walk" colours appear in the image
    assert set(colors) == {"run", "walk"}


def test_long_video_many_segments_readable(tmp_path):
    rng = np.random.default_rng(0)
    duration = 7200.0  # 2 hours
    t0 = np.sort(rng.uniform(0, duration - 60, 400))
    segs = [
        (f"class{k % 7}", float(rng.uniform(0.3, 1)), float(a), float(a + rng.uniform(1, 60)))
        for k, a in enumerate(t0)
    ]
    segs.append(("tiny", 1.0, 3600.0, 3600.5))  # half a second in two hours: still visible
    curve = {"t0": 2.0, "step": 4.0, "values": [0.5 + 0.5 * math.sin(k / 20) for k in range(1800)]}
    res = _results({"long": segs}, {"long": duration}, {"long": curve})
    out = tmp_path / "long.png"
    opts = PlotOptions(max_lanes=10)
    tl = plot_timeline(res, out, options=opts)
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape[1] == int(opts.width_in * opts.dpi)
    lanes = {b.y0 for b in tl.bars["long"]}
    assert len(lanes) <= 10
    tiny = next(b for b in tl.bars["long"] if b.label == "tiny")
    got = _pixel(png, tl.axes["long"], tiny.start, 0.5 * (tiny.y0 + tiny.y1))
    assert np.abs(got - WHITE).max() > 30  # drawn (widened to min_bar_px)
    # actionness strip: its own axes, filled under the curve near its maximum
    strip = tl.strips["long"]
    k = int(np.argmax(curve["values"]))
    t = curve["t0"] + k * curve["step"]
    assert np.abs(_pixel(png, strip, t, 0.3) - WHITE).max() > 30
    k = int(np.argmin(curve["values"]))  # near 0: empty above it
    t = curve["t0"] + k * curve["step"]
    assert np.abs(_pixel(png, strip, t, 0.6) - WHITE).max() <= 6


def test_several_videos_and_video_id(tmp_path):
    res = _results(
        {"a": [("x", 0.9, 1, 2)], "b": [("y", 0.8, 3, 4)], "c": []}, {"a": 10, "b": 10, "c": 5}
    )
    tl = draw_timeline(res)
    assert list(tl.axes) == ["a", "b", "c"]
    tl = draw_timeline(res, video_ids=["b"])
    assert list(tl.axes) == ["b"]
    with pytest.raises(InputError, match="zzz"):
        draw_timeline(res, video_ids=["zzz"])
    tl = draw_timeline(res, options=PlotOptions(max_videos=2))
    assert list(tl.axes) == ["a", "b"]


def test_cli_plot(tmp_path):
    res = _results({"a": [("x", 0.9, 1, 2), ("y", 0.2, 1.5, 3)]}, {"a": 10})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(res))
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "database": {
                    "a": {"duration": 10, "annotations": [{"label": "x", "segment": [1, 2]}]}
                }
            }
        )
    )
    out = tmp_path / "t.png"
    r = CliRunner().invoke(
        main,
        [
            "plot",
            str(pred),
            "-a",
            str(gt),
            "--min-score",
            "0.5",
            "--dpi",
            "50",
            "--width",
            "8",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert Image.open(out).size[0] == 400
    r = CliRunner().invoke(main, ["plot", str(pred), "--video-id", "nope", "-o", str(out)])
    assert r.exit_code == 1
    assert "tal: error:" in r.output and "nope" in r.output
