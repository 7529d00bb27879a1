"""Annotations from CSV/TSV tables: the same Annotations as the JSON, clear one-line refusals
naming the file, the line and the cause, and the round trip detect -> CSV -> edit -> train."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from benchmarks.synthetic import SyntheticConfig, make_benchmark, write_benchmark
from tal_pipeline.annotations import as_annotations, load_annotations, parse_time, read_table
from tal_pipeline.cli import main
from tal_pipeline.errors import InputError
from tal_pipeline.results import Annotations

CSV = """video_id,label,start,end,subset,duration
v1,jump,1.0,4.0,Validation,30
v1,clap,10.0,12.5,Validation,30
v2,jump,0,2,Test,20
v3,,,,Test,10
"""

JSON = {
    "database": {
        "v1": {"subset": "Validation", "duration": 30.0, "annotations": [
            {"label": "jump", "segment": [1.0, 4.0]}, {"label": "clap", "segment": [10.0, 12.5]}]},
        "v2": {"subset": "Test", "duration": 20.0, "annotations": [{"label": "jump", "segment": [0, 2]}]},
        "v3": {"subset": "Test", "duration": 10.0, "annotations": []},
    }
}


def _write(tmp_path, text, name="ann.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_equals_json(tmp_path):
    from_csv = load_annotations(_write(tmp_path, CSV))
    from_json = load_annotations(_write(tmp_path, json.dumps(JSON), "ann.json"))
    assert from_csv.videos == from_json.videos
    assert from_csv.source.endswith("ann.csv")
    assert list(load_annotations(tmp_path / "ann.csv", subset="test").videos) == ["v2", "v3"]
    tsv = _write(tmp_path, CSV.replace(",", "\t"), "ann.tsv")
    assert load_annotations(tsv).videos == from_json.videos
    assert as_annotations(str(tmp_path / "ann.csv")).videos == from_json.videos
    assert as_annotations(None) is None and isinstance(as_annotations(JSON), Annotations)


def test_csv_optional_columns_order_bom_and_time_forms(tmp_path):
    text = "\ufeffEnd,Start,Label,Video_ID,score\n0:04,1,jump,v1,0.9\n\n1:00:00.5,59:59.25,clap,v2,0.1\n"
    ann = load_annotations(_write(tmp_path, text))
    assert ann.videos["v1"].segments == (("jump", 1.0, 4.0),)
    assert ann.videos["v2"].segments == (("clap", 3599.25, 3600.5),)
    assert ann.videos["v1"].duration == 0.0 and ann.videos["v1"].subset == ""  # unknown / none
    with open(tmp_path / "q.csv", "w", newline="") as f:  # a label with a comma, quoted
        csv.writer(f).writerows([["video_id", "label", "start", "end"], ["v", "a, b", "1", "2"]])
    assert load_annotations(tmp_path / "q.csv").videos["v"].segments == (("a, b", 1.0, 2.0),)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("video,label,start,end\nv,a,1,2\n", r"line 1: unknown column\(s\) 'video'"),
        ("video_id,label,start\nv,a,1\n", r"line 1: missing column\(s\) 'end'"),
        ("video_id,label,start,end,start\nv,a,1,2,3\n", r"line 1: column\(s\) 'start' given twice"),
        ("video_id;label;start;end\nv;a;1;2\n", r"line 1: one column .*separated by commas"),
        ("video_id,label,start,end\nv,a,1,2\nv,a,1\n", r"line 3: 3 field\(s\), the header has 4"),
        ("video_id,label,start,end\nv,a,1,2\nv,a,one,2\n", r"line 3: start 'one' is not a time"),
        ("video_id,label,start,end\nv,a,1,nan\n", r"line 2: end 'nan' is not a time"),
        ("video_id,label,start,end\nv,a,1,inf\n", r"line 2: end 'inf' is not a time"),
        ("video_id,label,start,end\nv,a,-1,2\n", r"line 2: start '-1' is not a time"),
        ("video_id,label,start,end\nv,a,1,\n", r"line 2: end '' is not a time"),
        ("video_id,label,start,end\nv,a,4.0,3.2\n", r"line 2: end 3.2 is before start 4"),
        ("video_id,label,start,end\n,a,1,2\n", r"line 2: empty video_id"),
        ("video_id,label,start,end\nv,,1,2\n", r"line 2: empty label"),
        ("video_id,label,start,end,duration\nv,a,1,2,x\n", r"line 2: duration 'x' is not"),
        ("video_id,label,start,end,duration\nv,a,1,2,10\nv,b,3,4,11\n",
         r"line 3: duration '11' of video 'v' differs from 10.0 on line 2"),
        ("video_id,label,start,end,subset\nv,a,1,2,train\nv,b,3,4,test\n", r"line 3: subset 'test'"),
        ("video_id,label,start,end,duration\nv,a,1,12,10\n", r"video 'v': an action ends at 12 s, after"),
        ("video_id,label,start,end\n", r"no rows after the header"),
        ("", r"empty file"),
        ('video_id,label,start,end\nv,"a,1,2\n', r"not a valid table"),
    ],
)
def test_bad_rows_refused_with_file_line_cause(tmp_path, text, cause):
    path = _write(tmp_path, text, "bad.csv")
    with pytest.raises(InputError, match=cause) as info:
        load_annotations(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg


def test_unreadable(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "none.csv")
    (tmp_path / "bin.csv").write_bytes(b"video_id,label,start,end\n\xff\xfe,a,1,2\n")
    with pytest.raises(InputError, match="not UTF-8"):
        load_annotations(tmp_path / "bin.csv")


def test_parse_time():
    assert parse_time("12.5") == 12.5 and parse_time(" 1:02.5 ") == 62.5 and parse_time("1:00:00") == 3600
    for bad in ("", "1:60", "1.5:00", "a", "1::2", "-0:01", "nan", "1e999"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_cli_eval_plot_report_accept_csv(tmp_path):
    ann = _write(tmp_path, CSV)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {
        "v1": [{"label": "jump", "score": 0.9, "segment": [1.0, 4.0]}],
        "v2": [{"label": "jump", "score": 0.8, "segment": [10, 12]}]}}))
    run = CliRunner().invoke
    r = run(main, ["eval", str(pred), "--annotations", str(ann), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["mAP"][0] == pytest.approx(0.25)  # jump: 1 of 2 found (AP 0.5), clap missed (0)
    r = run(main, ["plot", str(pred), "--annotations", str(ann), "-o", str(tmp_path / "t.png")])
    assert r.exit_code == 0, r.output
    r = run(main, ["report", str(pred), "--annotations", str(ann), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "ground truth (2)" in (tmp_path / "r.html").read_text()
    bad = _write(tmp_path, "video_id,label,start,end\nv1,a,5,1\n", "bad.csv")
    for verb in (["eval", str(pred)], ["plot", str(pred), "-o", str(tmp_path / "u.png")],
                 ["report", str(pred), "-o", str(tmp_path / "u.html")]):
        r = run(main, [*verb, "--annotations", str(bad)])
        assert r.exit_code == 1
        assert r.output.strip() == f"tal: error: {bad}: line 2: end 1 is before start 5", verb


TINY = SyntheticConfig(num_classes=2, dim=16, num_train=6, num_test=0, min_steps=60, max_steps=100,
                       max_instances=2, min_len=8, max_len=24, distractors=1, signal=0.8, seed=7)


@pytest.mark.usefixtures("one_torch_thread")
def test_round_trip_detect_csv_edit_train(tmp_path):
    """tal train (JSON) -> tal detect -> tal convert to CSV -> edit in a spreadsheet's way
    (drop low scores, rename a class, fix a time) -> tal train on the CSV: no code written."""
    feats, ann_json = write_benchmark(make_benchmark(TINY), tmp_path / "syn")
    run = CliRunner().invoke
    quick = ["--epochs", "1", "--hidden-dim", "16", "--window", "128", "--batch-size", "32", "-q"]
    r = run(main, ["train", str(feats), "--annotations", str(ann_json), "-o", str(tmp_path / "m.pt"), *quick])
    assert r.exit_code == 0, r.output
    r = run(main, ["detect", str(feats), "--features", "--model", str(tmp_path / "m.pt"),
                   "-o", str(tmp_path / "pred.json"), "-q", "--top-k", "3"])
    assert r.exit_code == 0, r.output
    r = run(main, ["convert", str(tmp_path / "pred.json"), "-o", str(tmp_path / "pred.csv")])
    assert r.exit_code == 0, r.output
    with open(tmp_path / "pred.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"video_id", "label", "start", "end", "score"}
    keep = [r for r in rows if r["video_id"] != "syn_train_0000" or r is rows[0]]
    keep[0]["label"] = "renamed"
    keep[0]["start"] = "0.000"
    with open(tmp_path / "edited.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    ann = load_annotations(tmp_path / "edited.csv")
    assert ann.num_instances == len(keep) and "renamed" in ann.class_names
    r = run(main, ["train", str(feats), "--annotations", str(tmp_path / "edited.csv"),
                   "-o", str(tmp_path / "m2.pt"), *quick])
    assert r.exit_code == 0, r.output
    import torch

    ckpt = torch.load(tmp_path / "m2.pt", map_location="cpu", weights_only=True)
    assert "renamed" in json.dumps(ckpt, default=str)  # its classes come from the edited CSV


@pytest.mark.parametrize("text", ["1_000", "1_0.5", "١٢", "１２", "0x10", "1:0_5"])
def test_times_python_float_would_take_are_refused(tmp_path, text):
    """Python's float() reads "1_000" and other scripts' digits; no spreadsheet writes them,
    and a typo must not become a time."""
    p = _write(tmp_path, f"video_id,label,start,end\nv,jump,0,{text}\n")
    with pytest.raises(InputError, match=r"ann.csv: line 2: end .* is not a time .*ASCII digits"):
        load_annotations(p)
    with pytest.raises(ValueError):
        parse_time(text)
    q = _write(tmp_path, f"video_id,label,start,end,duration\nv,jump,0,1,{text}\n", "dur.csv")
    with pytest.raises(InputError, match="line 2: duration"):
        load_annotations(q)


@pytest.mark.parametrize("name, text", [
    ("ann.csv", "video_id,label,start,end\nv,jump,4,4\nv,clap,1,2\nw,jump,3,3\n"),
    ("ann.json", json.dumps({"database": {
        "v": {"subset": "", "duration": 9, "annotations": [{"label": "jump", "segment": [4, 4]},
                                                          {"label": "clap", "segment": [1, 2]}]},
        "w": {"subset": "", "duration": 9, "annotations": [{"label": "jump", "segment": [3, 3]}]}}})),
])
def test_zero_length_segments_are_named_once_and_left_out_of_training(tmp_path, caplog, name, text):
    """The documented rule (module docstring): read with one warning naming the file (eval counts
    them as missed, like the official code); training leaves them out."""
    from tal_pipeline.annotations import without_zero_length, zero_length

    with caplog.at_level("WARNING", logger="tal_pipeline.annotations"):
        ann = load_annotations(_write(tmp_path, text, name))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and name in warned[0] and "2 zero-length ground-truth segments" in warned[0]
    assert "video 'v', segment 0, jump at 4 s" in warned[0]
    assert zero_length(ann) == [("v", 0, "jump", 4.0), ("w", 0, "jump", 3.0)]
    kept = without_zero_length(ann)
    assert kept.videos["v"].segments == (("clap", 1.0, 2.0),) and kept.videos["w"].segments == ()
    assert zero_length(kept) == [] and kept.source == ann.source
