"""`tal report`: a self-contained, escaped HTML page holding every segment; keyframes from PyAV."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from videogen import write_video

from tal_pipeline.cli import main
from tal_pipeline.evaluate import evaluate
from tal_pipeline.report import (
    ReportOptions,
    find_videos,
    keyframes,
    relative_src,
    render_report,
    write_report,
)
from tal_pipeline.results import load_annotations

FPS = 10


def _grey_video(path: Path, num_frames: int = 40, size=(64, 48)) -> Path:
    """Frame i is uniformly grey at level 20 + 5 i: a decoded picture tells its own time."""
    w, h = size
    return write_video(
        path,
        lambda i: np.full((h, w, 3), 20 + 5 * i, np.uint8),
        FPS,
        num_frames=num_frames,
        codec="libvpx-vp9",
        options={"deadline": "realtime", "cpu-used": "8"},
    )


def _results(per_video: dict, durations: dict) -> dict:
    return {
        "version": "tal-pipeline/0.1",
        "results": {
            vid: [{"label": lab, "score": sc, "segment": [t0, t1]} for lab, sc, t0, t1 in segs]
            for vid, segs in per_video.items()
        },
        "external_data": {"model": "demo"},
        "videos": {
            vid: {"path": f"/nonexistent/{vid}.mp4", "duration": d, "fps": 10.0}
            for vid, d in durations.items()
        },
    }


class _Page(HTMLParser):
    """Collects every start tag with its attributes, and the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag, **match) -> list[dict]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in match.items())
        ]

    def with_class(self, tag, cls) -> list[dict]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    p.close()
    return p


def _assert_self_contained(text: str, page: _Page) -> None:
    assert not re.search(r"https?:", text, re.IGNORECASE)
    for _, attrs in page.tags:
        for key in ("src", "href"):
            v = attrs.get(key)
            if v is not None:
                assert not v.startswith("//"), v
                assert re.match(r"^(data:|#|[^:]*$)", v), v  # data URI, anchor or relative path
    assert not page.find("link") and not page.find("iframe")
    assert all("src" not in a for a in page.find("script"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    _grey_video(root / "clip_a.webm")
    _grey_video(root / "sub" / "clip b.webm", num_frames=30)
    return root


SEGS_A = [
    ("walk", 0.95, 0.5, 1.5),
    ("run", 0.40, 1.0, 2.9),
    ("walk", 0.70, 2.0, 3.5),
]
SEGS_B = [("jump", 0.8, 0.2, 1.0), ("run", 0.1, 1.5, 2.5)]


def test_report_holds_every_segment_and_is_self_contained(tmp_path, videos):
    res = _results(
        {"clip_a": SEGS_A, "clip b": SEGS_B, "no_video": [("run", 0.5, 1, 2)]},
        {"clip_a": 4.0, "clip b": 3.0, "no_video": 5.0},
    )
    out = tmp_path / "out" / "report.html"
    write_report(res, videos, out, options=ReportOptions(top_k=2))
    text = out.read_text(encoding="utf-8")
    page = _parse(text)
    _assert_self_contained(text, page)

    sections = page.with_class("section", "video")
    assert [s["id"] for s in sections] == ["v0", "v1", "v2"]
    assert len(page.find("a")) >= 3  # the index links to each section
    rows = page.with_class("tr", "seek")
    for k, segs in enumerate((SEGS_A, SEGS_B, [("run", 0.5, 1, 2)])):
        mine = [r for r in rows if r["data-seg"].startswith(f"{k}-")]
        assert sorted(float(r["data-start"]) for r in mine) == sorted(float(s[2]) for s in segs)
        assert sorted(float(r["data-score"]) for r in mine) == sorted(float(s[1]) for s in segs)
        bars = [b for b in page.with_class("div", "bar") if b["data-seg"].startswith(f"{k}-")]
        assert len(bars) == len(segs)
    body = "".join(page.text)
    for label in ("walk", "run", "jump"):
        assert label in body

    # players: relative paths from the report's folder, percent-encoded; the missing one says so
    srcs = [v["src"] for v in page.find("video")]
    assert srcs == [f"../../{videos.name}/clip_a.webm", f"../../{videos.name}/sub/clip%20b.webm"]
    for s in srcs:
        assert (out.parent / s.replace("%20", " ")).resolve().is_file()
    assert "video file not found" in body

    # thumbnails: top_k per video with a file, JPEG data URIs, small
    imgs = page.find("img")
    assert len(imgs) == 4
    for img in imgs:
        assert img["src"].startswith("data:image/jpeg;base64,")
        jpg = base64.b64decode(img["src"].split(",", 1)[1])
        assert jpg[:2] == b"\xff\xd8" and len(jpg) < 20_000
        assert Image.open(io.BytesIO(jpg)).size[0] == 64  # never upscaled past the video's width


def test_hostile_strings_are_escaped(tmp_path, videos):
    evil_label = '</script><script>alert(1)</script><img src=x onerror="alert(2)">'
    evil_id = '"><svg onload=alert(3)>'
    res = _results(
        {evil_id: [(evil_label, 0.9, 0.1, 0.5)], "clip_a": [("a'b\"c", 0.5, 1, 2)]},
        {evil_id: 1.0, "clip_a": 4.0},
    )
    res["external_data"]["model"] = "<b onclick=alert(4)>m</b>"
    gt = {
        "database": {
            evil_id: {
                "duration": 1.0,
                "annotations": [{"label": evil_label, "segment": [0.1, 0.4]}],
            }
        }
    }
    out = tmp_path / "r.html"
    write_report(res, {evil_id: videos / "clip_a.webm"}, out, annotations=gt)
    text = out.read_text(encoding="utf-8")
    page = _parse(text)
    _assert_self_contained(text, page)
    assert len(page.find("script")) == 1  # ours only
    assert not page.find("svg") and not page.find("b", onclick="alert(4)")
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/jpeg")
    body = "".join(page.text)
    assert evil_label in body and evil_id in body and "a'b\"c" in body  # shown as text


def test_ground_truth_and_ap(tmp_path, videos):
    res = _results({"clip_a": SEGS_A}, {"clip_a": 4.0})
    gt_obj = {
        "database": {
            "clip_a": {
                "subset": "test",
                "duration": 4.0,
                "annotations": [
                    {"label": "walk", "segment": [0.5, 1.4]},
                    {"label": "run", "segment": [3.0, 3.9]},
                ],
            },
            "missed": {
                "subset": "test",
                "duration": 9.0,
                "annotations": [{"label": "run", "segment": [1, 2]}],
            },
        }
    }
    out = tmp_path / "r.html"
    write_report(
        res, videos, out, annotations=gt_obj, options=ReportOptions(tiou_thresholds=(0.3, 0.5))
    )
    page = _parse(out.read_text(encoding="utf-8"))
    gt_bars = page.with_class("div", "gt")
    assert sorted(float(b["data-start"]) for b in gt_bars) == [0.5, 3.0]
    assert len(page.find("table", **{"class": "gt"})) == 1
    ap = evaluate(
        load_annotations(gt_obj),
        {
            "clip_a": [
                {"label": lab, "score": sc, "segment": [t0, t1]} for lab, sc, t0, t1 in SEGS_A
            ]
        },
        (0.3, 0.5),
    )
    body = " ".join(page.text)
    assert len(page.with_class("section", "video")) == 1  # the missed video is counted, not shown
    assert "1 ground-truth video without detections" in body
    assert "AP@0.3" in body and "AP@0.5" in body
    assert f"{100 * ap.average_mAP:.1f}" in body
    for label, aps in ap.per_class.items():
        assert label in body and f"{100 * aps[0]:.1f}" in body


@pytest.mark.parametrize(
    "codec, options",
    [
        ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),  # one key frame: decodes forward
        ("libx264", {"g": "4", "bf": "2"}),  # key frame every 0.4 s, B-frames: seeks
    ],
)
def test_keyframes_decode_the_right_frame(tmp_path, codec, options):
    path = write_video(
        tmp_path / f"grey.{'webm' if 'vpx' in codec else 'mp4'}",
        lambda i: np.full((48, 64, 3), 20 + 5 * i, np.uint8),
        FPS,
        num_frames=40,
        codec=codec,
        options=options,
    )
    times = [2.55, 0.05, 1.25, 1.25, 3.95, 0.0, 3.1, 99.0]  # any order, repeats
    jpgs = keyframes(path, times, width=32)
    for t, jpg in zip(times[:-1], jpgs):
        img = Image.open(io.BytesIO(jpg)).convert("L")
        assert img.size == (32, 24)
        level = np.asarray(img, float).mean()
        assert abs(level - (20 + 5 * int(t * FPS))) <= 3, (
            t,
            level,
        )  # frame k shows k/10..(k+1)/10 s
    # past the end: the last frame or nothing, never an exception
    assert jpgs[-1] is None or jpgs[-1][:2] == b"\xff\xd8"
    assert keyframes(tmp_path / "nope.webm", [1.0]) == [None]


@pytest.mark.timeout(30)
def test_keyframes_go_through_the_decoders_checks(tmp_path):
    """A FIFO named like a video is never opened (opening it would block for ever) and an
    empty file is no video: no thumbnail, no exception, the report goes on."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert keyframes(fifo, [0.5]) == [None]
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert keyframes(tmp_path / "empty.mp4", [0.5, 1.0]) == [None, None]


def test_find_videos(tmp_path, videos):
    ids = ["clip_a", "clip b", "gone"]
    found = find_videos(ids, videos)
    assert (
        found["clip_a"] == videos / "clip_a.webm"
        and found["clip b"] == videos / "sub" / "clip b.webm"
    )
    assert found["gone"] is None
    assert find_videos(["x"], videos / "clip_a.webm") == {
        "x": videos / "clip_a.webm"
    }  # one file, one id
    assert find_videos(["clip_a", "y"], videos / "clip_a.webm")["y"] is None
    meta = {"y": {"path": str(videos / "sub" / "clip b.webm")}}
    assert find_videos(["y"], None, meta) == {"y": videos / "sub" / "clip b.webm"}
    assert find_videos(["y"], {"y": videos / "clip_a.webm"}, meta) == {"y": videos / "clip_a.webm"}
    rel = {"y": {"path": "sub/clip b.webm"}}  # relative to the results' folder
    assert find_videos(["y"], None, rel, base=videos) == {"y": videos / "sub" / "clip b.webm"}
    assert find_videos(["y"], None, rel) == {"y": None}
    assert relative_src(videos / "sub" / "clip b.webm", videos) == "sub/clip%20b.webm"
    assert (
        relative_src(tmp_path / "a:b#c.mp4", tmp_path) == "a%3Ab%23c.mp4"
    )  # never a scheme/fragment


def test_render_accepts_path_results_and_folder(tmp_path, videos):
    res = _results({"clip_a": SEGS_A}, {"clip_a": 4.0})
    (tmp_path / "per").mkdir()
    (tmp_path / "per" / "clip_a.json").write_text(json.dumps(res))
    from tal_pipeline.results import load_results

    a = render_report(tmp_path / "per", videos, tmp_path, options=ReportOptions(top_k=0))
    b = render_report(load_results(res), videos, tmp_path, options=ReportOptions(top_k=0))
    c = render_report(res, videos, tmp_path, options=ReportOptions(top_k=0))
    strip = lambda s: re.sub(r", source [^<,]*", "", s)
    assert strip(a) == strip(b) == strip(c)
    assert "<img" not in a


def test_min_score_and_long_video(tmp_path):
    rng = np.random.default_rng(1)
    segs = [
        (f"c{k % 5}", float(rng.random()), float(t), float(t + rng.uniform(1, 90)))
        for k, t in enumerate(np.sort(rng.uniform(0, 7000, 500)))
    ]
    res = _results({"long": segs}, {"long": 7200.0})
    out = tmp_path / "r.html"
    write_report(res, None, out, options=ReportOptions(min_score=0.5, max_lanes=8))
    page = _parse(out.read_text(encoding="utf-8"))
    rows = page.with_class("tr", "seek")
    assert len(rows) == sum(s[1] >= 0.5 for s in segs)
    tops = {re.search(r"top:(\d+)px", b["style"]).group(1) for b in page.with_class("div", "bar")}
    assert len(tops) <= 8
    assert os.path.getsize(out) < 400_000


def test_page_opens_at_the_subtitle_threshold_with_its_segments_on_top(tmp_path):
    """The min-score slider starts where the console summary and subtitles cut
    (``SUBTITLE_MIN_SCORE``); the segments at least that good take the top timeline lanes, the
    rest (still in the page, for the slider) stack below; every score is written exactly, so
    the page splits at the threshold as the writers do."""
    from tal_pipeline.writers import SUBTITLE_MIN_SCORE

    t = SUBTITLE_MIN_SCORE
    segs = [("a", t, 0.0, 4.0), ("a", 0.9, 2.0, 6.0), ("b", t - 1e-4, 1.0, 3.0),
            ("b", 0.05, 0.5, 5.0), ("a", 0.2, 3.0, 7.0)]
    page = _parse(render_report(_results({"v": segs}, {"v": 8.0}), None, tmp_path))
    (slider,) = page.find("input", id="minscore")
    assert float(slider["value"]) == SUBTITLE_MIN_SCORE
    bars = page.with_class("div", "bar")
    lane = {float(b["data-score"]): int(re.search(r"top:(\d+)px", b["style"]).group(1)) for b in bars}
    assert set(lane) == {s[1] for s in segs}  # exact scores; nothing left out of the page
    shown = [v for k, v in lane.items() if k >= t]
    hidden = [v for k, v in lane.items() if k < t]
    assert sorted(shown) == sorted(set(shown)) and len(shown) == 2  # two overlapping: two lanes
    assert max(shown) < min(hidden)
    opened = _parse(render_report(_results({"v": segs}, {"v": 8.0}), None, tmp_path,
                                  options=ReportOptions(shown_min_score=0.0)))
    assert float(opened.find("input", id="minscore")[0]["value"]) == 0.0


def test_cli_report(tmp_path, videos):
    res = _results({"clip_a": SEGS_A}, {"clip_a": 4.0})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(res))
    out = tmp_path / "r.html"
    r = CliRunner().invoke(
        main,
        [
            "report",
            str(pred),
            "--videos",
            str(videos / "clip_a.webm"),
            "-o",
            str(out),
            "--top-k",
            "1",
            "--tiou",
            "0.5",
        ],
    )
    assert r.exit_code == 0, r.output
    page = _parse(out.read_text(encoding="utf-8"))
    assert len(page.find("img")) == 1 and len(page.find("video")) == 1
    r = CliRunner().invoke(
        main, ["report", str(pred), "--videos", str(tmp_path / "nope"), "-o", str(out)]
    )
    assert r.exit_code != 0


def test_player_carries_captions_track(tmp_path, videos):
    """Each player holds one default captions <track>: a data: URI of the same WebVTT the
    vtt writer gives for the page's segments (valid against the grammar); segments below the
    track's score carry their end and cue text for the page's click handler, escaped."""
    from test_writers import validate_webvtt

    from tal_pipeline.writers import WriterOptions, render_vtt

    segs = [*SEGS_A, ("<b>&", 0.2, 3.0, 3.9)]
    res = _results({"clip_a": segs}, {"clip_a": 4.0})
    page = _parse(render_report(res, videos, tmp_path, options=ReportOptions(top_k=1, min_score=0.3)))
    (track,) = page.find("track")
    assert track["kind"] == "captions" and "default" in track
    head, data = track["src"].split(",", 1)
    assert head == "data:text/vtt;charset=utf-8;base64"
    vtt = base64.b64decode(data).decode("utf-8")
    kept = [s for s in SEGS_A if s[1] >= 0.3]  # the page's min_score (0.3) leaves the 0.2 one out
    want = render_vtt({"results": {"clip_a": _results({"clip_a": kept}, {})["results"]["clip_a"]}},
                      WriterOptions(min_score=0.3))
    assert vtt == want
    assert [c[2] for c in validate_webvtt(vtt)] == ["walk (0.95)", "run (0.40)", "walk (0.70)"]

    page = _parse(render_report(res, videos, tmp_path, options=ReportOptions(top_k=1)))
    (track,) = page.find("track")
    cues = validate_webvtt(base64.b64decode(track["src"].split(",", 1)[1]).decode())
    assert [c[2] for c in cues] == ["walk (0.95)", "run (0.40)", "walk (0.70)"]  # 0.3 by default
    low = [r for r in page.with_class("tr", "seek") if "data-cue" in r]
    assert [(r["data-start"], r["data-end"], r["data-cue"]) for r in low] == [
        ("3", "3.9", "&lt;b&gt;&amp; (0.20)")]  # WebVTT-escaped cue text (HTML-unescaped here)
