"""Writers: every format from one results object; WebVTT and SubRip checked against their
grammars (validators written here from the specs), CSV/TSV read back equal the JSON, cue
merging, output naming, atomic writes, and ``tal convert``."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tal_pipeline.annotations import load_annotations
from tal_pipeline.cli import main
from tal_pipeline.errors import InputError
from tal_pipeline.postprocess import Segment
from tal_pipeline.results import load_results, make_results
from tal_pipeline.writers import (
    FORMATS,
    SUBTITLE_MIN_SCORE,
    WriterOptions,
    cue_text,
    format_of,
    output_files,
    parse_formats,
    render,
    subtitle_cues,
    video_files,
    write,
    write_all,
)

# ---------------------------------------------------------------- validators from the specs

# WebVTT (W3C WebVTT: The Web Video Text Tracks Format, sections 4.1 and 6.1): a file is an
# optional BOM, "WEBVTT" then a space, tab or line end, a header that ends at the first blank
# line, then blocks separated by one or more blank lines. A block is a NOTE comment (no "-->")
# or a cue: an optional identifier line (no "-->"), a timings line "start --> end", then payload
# lines (no "-->", none empty). A timestamp is [hh+:]mm:ss.ttt with mm, ss < 60. Cue start times
# never decrease through the file and each cue ends after it starts. In the payload "<" opens a
# tag and "&" a character reference; we emit plain text, so only &amp; &lt; &gt; may appear.
_VTT_TS = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_VTT_TIMING = re.compile(rf"^{_VTT_TS}[ \t]+-->[ \t]+{_VTT_TS}(?:[ \t]+.*)?$")


def _vtt_seconds(groups) -> float:
    h, m, s, ms = groups
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _plain_cue_text(line: str) -> bool:
    return "<" not in line and ">" not in line and not re.search(r"&(?!(amp|lt|gt);)", line)


def validate_webvtt(text: str) -> list[tuple[float, float, str]]:
    """(start s, end s, payload) of each cue; AssertionError on any violation of the grammar."""
    assert "\r" not in text and "\0" not in text
    text = text.removeprefix("\ufeff")
    assert re.match(r"WEBVTT([ \t\n]|$)", text), "signature"
    blocks = re.split(r"\n{2,}", text.rstrip("\n"))
    assert "-->" not in blocks[0], "header holds a cue"
    cues = []
    for block in blocks[1:]:
        lines = block.split("\n")
        if lines[0].startswith("NOTE") and (len(lines[0]) == 4 or lines[0][4] in " \t"):
            assert "-->" not in block, "NOTE with -->"
            continue
        if "-->" not in lines[0]:  # identifier
            lines = lines[1:]
        assert lines, f"block without timings: {block!r}"
        m = _VTT_TIMING.match(lines[0])
        assert m, f"bad timings line {lines[0]!r}"
        t0, t1 = _vtt_seconds(m.groups()[:4]), _vtt_seconds(m.groups()[4:])
        assert t1 > t0, f"cue ends before it starts: {lines[0]!r}"
        assert not cues or t0 >= cues[-1][0], "cue start times decrease"
        payload = lines[1:]
        assert payload and all(line and "-->" not in line for line in payload), block
        assert all(_plain_cue_text(line) for line in payload), payload
        cues.append((t0, t1, "\n".join(payload)))
    return cues


# SubRip (no formal standard; the format as players read it): numbered blocks separated by a
# blank line; the number counts from 1; then "HH:MM:SS,mmm --> HH:MM:SS,mmm"; then one or more
# non-empty text lines.
_SRT_TS = r"(\d{2}):([0-5]\d):([0-5]\d),(\d{3})"
_SRT_TIMING = re.compile(rf"^{_SRT_TS} --> {_SRT_TS}$")


def validate_srt(text: str) -> list[tuple[float, float, str]]:
    if not text:
        return []
    assert text.endswith("\n") and not text.endswith("\n\n\n")
    cues = []
    for k, block in enumerate(text.rstrip("\n").split("\n\n"), 1):
        lines = block.split("\n")
        assert lines[0] == str(k), f"block {k} numbered {lines[0]!r}"
        m = _SRT_TIMING.match(lines[1])
        assert m, f"bad timings line {lines[1]!r}"
        t0, t1 = _vtt_seconds(m.groups()[:4]), _vtt_seconds(m.groups()[4:])
        assert t1 > t0
        assert len(lines) >= 3 and all(lines[2:]), block
        cues.append((t0, t1, "\n".join(lines[2:])))
    return cues


@pytest.mark.parametrize(
    "bad",
    [
        "WEBVT\n\n00:00.000 --> 00:01.000\nx\n",
        "WEBVTT\n\n00:00.000 --> 00:01.00\nx\n",  # ms need three digits
        "WEBVTT\n\n00:60.000 --> 01:01.000\nx\n",  # seconds < 60
        "WEBVTT\n\n00:02.000 --> 00:01.000\nx\n",  # ends before it starts
        "WEBVTT\n\n00:02.000 --> 00:03.000\nx\n\n00:01.000 --> 00:03.000\ny\n",  # out of order
        "WEBVTT\n\n00:00.000 --> 00:01.000\na <b & c\n",  # raw < and &
    ],
)
def test_webvtt_validator_rejects(bad):
    with pytest.raises(AssertionError):
        validate_webvtt(bad)


# ---------------------------------------------------------------- fixtures

SEGS = [  # ranked, as the detector writes them: near-duplicates of one label overlap
    Segment("pan_left", 0.97, 2.958, 8.130),
    Segment("tilt_up", 0.95, 10.7254, 15.0381),
    Segment("pan_left", 0.62, 7.5, 9.25),  # overlaps the first: one cue 2.958-9.25 (0.97)
    Segment("pan_left", 0.20, 3.05, 8.01),  # below the subtitle score: JSON/CSV only
    Segment("zoom_in", 0.80, 3600 * 1 + 61.5, 3600 * 1 + 65.0),  # past an hour
    Segment('a<b> & "c", d', 0.50, 20.0, 21.0),  # hostile label: escaped, quoted
    Segment("tilt_up", 0.40, 30.0, 30.0),  # zero length: no cue
]


def _results(segs=SEGS, vid="clip"):
    return make_results({vid: segs}, {vid: {"path": f"{vid}.mp4", "duration": 3700.0, "fps": 10.0}},
                        {"model": "demo"})


# ---------------------------------------------------------------- subtitles


def test_vtt_cues_thresholded_merged_sorted():
    cues = validate_webvtt(render(_results(), "vtt"))
    assert cues == [
        (2.958, 9.25, "pan_left (0.97)"),
        (10.725, 15.038, "tilt_up (0.95)"),
        (20.0, 21.0, "a&lt;b&gt; &amp; \"c\", d (0.50)"),
        (3661.5, 3665.0, "zoom_in (0.80)"),
    ]
    text = render(_results(), "vtt")
    assert "01:01:01.500 --> 01:01:05.000" in text
    assert "NOTE" in text and "clip" in text


def test_srt_matches_vtt_cues():
    """The same cues; SubRip text is the label raw (no entities: players show them literally),
    WebVTT's the same text escaped."""
    import html

    vtt = validate_webvtt(render(_results(), "vtt"))
    srt = validate_srt(render(_results(), "srt"))
    assert srt == [(t0, t1, html.unescape(text)) for t0, t1, text in vtt]
    assert 'a<b> & "c", d (0.50)' in render(_results(), "srt")
    assert "&amp;" not in render(_results(), "srt")
    assert "00:00:02,958 --> 00:00:09,250" in render(_results(), "srt")


def test_subtitle_min_score_and_no_merge():
    opts = WriterOptions(min_score=0.1, merge_cues=False)
    cues = validate_webvtt(render(_results(), "vtt", opts))
    assert [c[2] for c in cues].count("pan_left (0.97)") == 1
    assert len([c for c in cues if c[2].startswith("pan_left")]) == 3  # no merging
    assert validate_webvtt(render(_results(), "vtt", WriterOptions(min_score=1.0))) == []
    assert validate_srt(render(_results(), "srt", WriterOptions(min_score=1.0))) == []
    with pytest.raises(InputError, match="within"):
        render(_results(), "vtt", WriterOptions(min_score=1.5))


def test_subtitle_needs_one_video():
    two = make_results({"a": SEGS[:1], "b": SEGS[1:2]})
    for fmt in ("vtt", "srt"):
        with pytest.raises(InputError, match=r"one video.*-o DIR/"):
            render(two, fmt)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.floats(0, 1),
            st.floats(0, 5000, allow_nan=False),
            st.floats(0, 60, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_cues_property(items):
    """Any segments: valid WebVTT/SRT; every kept segment lies inside a cue of its label; cues of
    one label never overlap (a player shows at most one line per label at a time)."""
    segs = [Segment(lab, sc, t0, t0 + d) for lab, sc, t0, d in items]
    res = make_results({"v": segs})
    cues = validate_webvtt(render(res, "vtt"))
    assert validate_srt(render(res, "srt")) == cues
    for s in segs:
        if s.score >= SUBTITLE_MIN_SCORE and round(s.end * 1000) > round(s.start * 1000):
            assert any(
                c[2].startswith(s.label + " (") and c[0] <= s.start + 5e-4 and s.end - 5e-4 <= c[1]
                for c in cues
            ), s
    for lab in "abc":
        mine = sorted((c for c in subtitle_cues(segs) if c.label == lab), key=lambda c: c.start)
        assert all(a.end < b.start for a, b in itertools.pairwise(mine))


def test_cue_text_one_line():
    assert cue_text(Segment("two\nlines", 0.5, 0, 1)) == "two lines (0.50)"
    assert "-->" not in cue_text(Segment("a-->b", 0.5, 0, 1))


# ---------------------------------------------------------------- tables


def test_csv_tsv_layout():
    text = render(_results(), "csv")
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["video_id", "label", "start", "end", "score"]
    assert rows[1] == ["clip", "pan_left", "2.958", "8.130", "0.9700"]
    assert rows[2][2:4] == ["10.725", "15.038"]  # 3 decimals
    assert len(rows) == 1 + len(SEGS)  # every segment, no threshold
    tsv = render(_results(), "tsv")
    assert [r.split("\t") for r in tsv.splitlines()][1] == rows[1]
    assert list(csv.reader(tsv.splitlines(), delimiter="\t")) == rows


def test_csv_round_trip_equals_json(tmp_path):
    """results JSON -> CSV -> read back (as annotations, as tal train would) equals the JSON's
    segments, in order, to the millisecond; the score column to 4 decimals."""
    res = make_results({"v1": SEGS, "v2": SEGS[:2], "v3": []})
    write(tmp_path / "r.json", res)
    write(tmp_path / "r.csv", res)
    back = load_results(tmp_path / "r.json")
    ann = load_annotations(tmp_path / "r.csv")
    assert list(ann.videos) == ["v1", "v2"]  # v3 has no rows
    for vid, segs in ann.videos.items():
        want = back.detections[vid]
        assert [s[0] for s in segs.segments] == [s.label for s in want]
        assert all(abs(a - b) <= 5e-4 for (_, t0, t1), s in zip(segs.segments, want)
                   for a, b in ((t0, s.start), (t1, s.end)))
    with open(tmp_path / "r.csv", newline="") as f:
        scores = [float(r["score"]) for r in csv.DictReader(f)]
    assert scores == pytest.approx([s.score for v in ("v1", "v2") for s in back.detections[v]], abs=5e-5)


def test_json_is_results_writer_output(tmp_path):
    from tal_pipeline.results import write_results

    res = _results()
    write_results(tmp_path / "a.json", res)
    write(tmp_path / "b.json", res)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert json.loads(render(res, "json")) == res


# ---------------------------------------------------------------- naming, atomicity


def test_formats_and_names(tmp_path):
    assert format_of("x.VTT") == "vtt" and format_of("x.txt") is None
    assert parse_formats(" vtt, csv ,vtt") == ("vtt", "csv") and parse_formats(None) is None
    with pytest.raises(InputError, match="unknown format xml"):
        parse_formats("vtt,xml")
    assert output_files("o/out.vtt", None) == {"vtt": Path("o/out.vtt")}
    assert output_files("out", None) == {"json": Path("out")}
    assert output_files("out.json", ("json", "vtt")) == {"json": Path("out.json"), "vtt": Path("out.vtt")}
    assert output_files("out.vtt", ("csv",)) == {"csv": Path("out.csv")}
    assert output_files("res.v2", ("csv",)) == {"csv": Path("res.v2.csv")}
    assert video_files("d", "a.b", ("vtt", "srt")) == {"vtt": Path("d/a.b.vtt"), "srt": Path("d/a.b.srt")}
    assert set(FORMATS) == {"json", "vtt", "srt", "csv", "tsv"}


def test_write_all_refuses_before_writing(tmp_path):
    two = make_results({"a": SEGS[:1], "b": SEGS[:1]})
    files = {f: tmp_path / f"x.{f}" for f in ("json", "csv", "vtt")}
    with pytest.raises(InputError):
        write_all(files, two)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    written = write_all({f: files[f] for f in ("json", "csv")}, two)
    assert [p.suffix for p in written] == [".csv", ".json"]  # JSON last: it marks completion
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert oct(os.stat(written[0]).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    from tal_pipeline import fsutil

    target = tmp_path / "x.vtt"
    target.write_text("WEBVTT\n\nold\n")  # a WebVTT: one a write may replace

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", boom)
    with pytest.raises(OSError):
        write(target, _results())
    assert target.read_text() == "WEBVTT\n\nold\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.vtt"]


# ---------------------------------------------------------------- tal convert


def test_cli_convert(tmp_path):
    src = tmp_path / "r.json"
    write(src, _results())
    run = CliRunner().invoke
    res = run(main, ["convert", str(src), "-o", str(tmp_path / "o.vtt")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o.vtt").read_text() == render(_results(), "vtt")
    res = run(main, ["convert", str(src), "-o", str(tmp_path / "subs") + "/", "--format", "vtt,srt,csv",
                     "--min-score", "0.9"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["clip.csv", "clip.srt", "clip.vtt"]
    assert [c[2] for c in validate_webvtt((tmp_path / "subs" / "clip.vtt").read_text())] == [
        "pan_left (0.97)", "tilt_up (0.95)"]
    assert len(validate_srt((tmp_path / "subs" / "clip.srt").read_text())) == 2
    converted = json.loads((src).read_text())
    res = run(main, ["convert", str(src), "-o", str(tmp_path / "again.json")])
    assert json.loads((tmp_path / "again.json").read_text()) == converted  # version kept


def test_cli_convert_errors(tmp_path):
    two = tmp_path / "two.json"
    write(two, make_results({"a": SEGS[:1], "b": SEGS[:1]}))
    run = CliRunner().invoke
    res = run(main, ["convert", str(two), "-o", str(tmp_path / "o.vtt")])
    assert res.exit_code == 1 and "one video" in res.output and not (tmp_path / "o.vtt").exists()
    res = run(main, ["convert", str(two), "-o", str(tmp_path / "o.vtt"), "--video-id", "b"])
    assert res.exit_code == 0 and (tmp_path / "o.vtt").is_file()
    res = run(main, ["convert", str(two), "-o", str(tmp_path / "o.x"), "--format", "pdf"])
    assert res.exit_code == 2 and "unknown format pdf" in res.output  # an option value: usage
    res = run(main, ["convert", str(two), "-o", str(tmp_path / "o.vtt"), "--video-id", "zz"])
    assert res.exit_code == 1 and "zz" in res.output
    assert math.isfinite(SUBTITLE_MIN_SCORE)


# ---------------------------------------------------------------- tal detect: formats, resume


@pytest.fixture(scope="module")
def feats_model(tmp_path_factory):
    """Two synthetic feature files and a head trained on them for one epoch (fast)."""
    from benchmarks.synthetic import SyntheticConfig, make_benchmark, write_benchmark

    root = tmp_path_factory.mktemp("fmt")
    cfg = SyntheticConfig(num_classes=2, dim=16, num_train=2, num_test=0, min_steps=60, max_steps=80,
                          max_instances=2, min_len=8, max_len=24, distractors=1, signal=0.8, seed=3)
    feats, ann = write_benchmark(make_benchmark(cfg), root)
    model = root / "m.pt"
    r = CliRunner().invoke(main, ["train", str(feats), "--annotations", str(ann), "-o", str(model), "--epochs",
                                  "1", "--hidden-dim", "16", "--window", "128", "--batch-size", "32", "-q"])
    assert r.exit_code == 0, r.output
    return sorted(feats.glob("*.npy")), model


def _detect(feats_model, inputs, *args):
    _, model = feats_model
    return CliRunner().invoke(main, ["detect", *map(str, inputs), "--features", "--model", str(model), "-q",
                                     *map(str, args)])


@pytest.mark.usefixtures("one_torch_thread")
def test_detect_formats_merged(feats_model, tmp_path):
    (a, b), _ = feats_model
    r = _detect(feats_model, [a], "-o", tmp_path / "out.vtt")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.vtt.json", "out.vtt"]  # hidden record
    record = load_results(tmp_path / ".out.vtt.json")
    vtt = (tmp_path / "out.vtt").read_text()
    assert vtt == render(make_results(record.detections), "vtt")
    assert all(c[2].endswith(")") for c in validate_webvtt(vtt))
    # resume: nothing redone; a deleted subtitle file comes back from the record
    (tmp_path / "out.vtt").unlink()
    r = _detect(feats_model, [a], "-o", tmp_path / "out.vtt")
    assert r.exit_code == 0 and "0 done, 1 skipped" in r.output, r.output
    assert (tmp_path / "out.vtt").read_text() == vtt

    # several formats at once, from one result; subtitles hold one video, refused before work
    r = _detect(feats_model, [a], "-o", tmp_path / "x.json", "--format", "json,vtt,csv,srt,tsv")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "x.json").read_text())
    for fmt in ("vtt", "csv", "srt", "tsv"):
        assert (tmp_path / f"x.{fmt}").read_text() == render(res, fmt)
    assert len(list(csv.reader((tmp_path / "x.csv").read_text().splitlines()))) == 1 + len(
        res["results"][a.stem])
    r = _detect(feats_model, [a, b], "-o", tmp_path / "two.srt")
    assert r.exit_code == 2 and "holds one video" in r.output and "-o DIR/" in r.output
    assert not list(tmp_path.glob("*two*"))


@pytest.mark.usefixtures("one_torch_thread")
def test_detect_formats_per_video_resume_and_provenance(feats_model, tmp_path):
    (a, b), _ = feats_model
    out = tmp_path / "subs"
    r = _detect(feats_model, [a, b], "-o", f"{out}/", "--format", "vtt,csv")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == sorted(f"{v.stem}.{f}" for v in (a, b) for f in ("vtt", "csv"))
    assert sorted(p.name for p in (out / ".tal").glob("*.json")) == [f"{a.stem}.json", f"{b.stem}.json"]
    for v in (a, b):
        one = json.loads((out / ".tal" / f"{v.stem}.json").read_text())
        assert (out / f"{v.stem}.vtt").read_text() == render(one, "vtt")
    # resume covers every requested format: a missing one is redone, the other video skipped
    (out / f"{a.stem}.csv").unlink()
    r = _detect(feats_model, [a, b], "-o", f"{out}/", "--format", "vtt,csv")
    assert r.exit_code == 0 and "1 done, 1 skipped" in r.output, r.output
    assert (out / f"{a.stem}.csv").is_file()
    # other settings: the hidden record's provenance refuses a silent mix, naming --overwrite
    r = _detect(feats_model, [a, b], "-o", f"{out}/", "--format", "vtt,csv", "--top-k", "3")
    assert r.exit_code != 0 and "--overwrite" in r.output, r.output
    r = _detect(feats_model, [a], "-o", f"{out}/", "--format", "vtt", "--top-k", "3", "--overwrite",
                "--min-score", "0.0")
    assert r.exit_code == 0, r.output
    one = json.loads((out / ".tal" / f"{a.stem}.json").read_text())
    assert len(one["results"][a.stem]) <= 3
    assert (out / f"{a.stem}.vtt").read_text() == render(one, "vtt", WriterOptions(min_score=0.0))
