"""Output safety (issue #28): every writer goes through ``safety``; each rule with its own input.

Names from video ids stay in the output folder (a property test over generated ids through
``tal convert`` and the library functions ``tal detect``/``tal extract`` name files with);
links are written through, devices/FIFOs/sockets refused; an input is never an output; a file
is replaced only by one of its own kind, recognised by content; CSV cells neutralised; SRT text
raw; subtitles/tables refuse impossible segments; plots in the format their extension names;
results readers find the hidden record; a truncated merged results file is redone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
from batchrun import demo_dim, plain_model
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tal_pipeline import safety
from tal_pipeline.checkpoint import read_checkpoint, save_checkpoint
from tal_pipeline.cli import main
from tal_pipeline.errors import InputError, UsageError
from tal_pipeline.featio import feature_paths
from tal_pipeline.pipeline import demo_checkpoint_path
from tal_pipeline.results import load_results, make_results, write_results
from tal_pipeline.writers import render, video_files, write

FEATS = ["--features", "--model", str(plain_model()), "--fps", "10", "--feature-stride", "4", "--no-progress"]
SEG = {"label": "pan_left", "score": 0.9, "segment": [1.0, 3.0]}


def _tal(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("tal: ")]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output
    return lines[0]


def _pred(path: Path, ids=("clip",), segs=(SEG,)) -> Path:
    return write_results(path, make_results({v: list(segs) for v in ids}))


def _feats(folder: Path, names=("f0",), rows: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        np.save(folder / f"{n}.npy", rng.standard_normal((rows, demo_dim())).astype(np.float32))
    return folder


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (links as their target text) -> content: what a run changed."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = os.readlink(p) if p.is_symlink() else ("<dir>" if p.is_dir() else p.read_bytes())
    return out


# ---------------------------------------------------------------- 1. names from ids


@pytest.mark.parametrize("vid", ["../../x", "/abs/x", "a/b", "", ".", "..", ".hidden", "nul\0x",
                                 "ünï cödé", "x" * 300])
def test_convert_names_every_id_inside_the_folder(tmp_path, vid):
    src = _pred(tmp_path / "src" / "r.json", ids=(vid,))
    out = tmp_path / "deep" / "out"
    before = _tree(tmp_path)
    r = _tal("convert", src, "-o", f"{out}/", "--format", "json,vtt,csv")
    after = _tree(tmp_path)
    new = set(after) - set(before)
    assert all(n.startswith("deep") for n in new), new  # nothing outside -o DIR
    assert all(after[k] == before[k] for k in before)  # nothing replaced
    if len(safety.safe_name(vid) + ".json") > 255:
        assert r.exit_code == 1 and "255-byte limit" in _one_error(r)
        return
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    stem = safety.safe_name(vid)
    assert names == sorted(f"{stem}.{f}" for f in ("json", "vtt", "csv"))
    assert load_results(out).detections.keys() == {vid}  # the id itself is kept in the record


def test_convert_refuses_ids_that_make_one_name(tmp_path):
    src = _pred(tmp_path / "r.json", ids=("a/b", "a_b", "a:b"))
    r = _tal("convert", src, "-o", f"{tmp_path / 'out'}/")
    assert r.exit_code == 1 and "shared by several video ids" in _one_error(r)
    assert not (tmp_path / "out").exists()  # refused before the first write


def test_safe_name_is_the_rule_detect_uses():
    from tal_pipeline.inputs import video_id

    for stem in ("with space ü $(x) ;", "..a", "a.b", "=1+1", "日本", "a\\b"):
        assert safety.safe_name(stem) == video_id(f"/x/{stem}.mp4")
        assert safety.safe_name(safety.safe_name(stem)) == safety.safe_name(stem)  # idempotent


def test_a_link_in_the_folder_that_leads_out_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "victim.json"
    outside.write_text("{}")
    (out / "v.json").symlink_to(outside)
    with pytest.raises(InputError, match="leads out of the output folder"):
        safety.file_in(out, "v", ".json")
    r = _tal("convert", _pred(tmp_path / "r.json", ids=("v",)), "-o", f"{out}/")
    assert r.exit_code == 1 and "leads out" in _one_error(r)
    assert outside.read_text() == "{}"


_SHORT = st.one_of(
    st.text(min_size=0, max_size=40),  # any Unicode, NUL and surrogates included
    st.text(alphabet=st.sampled_from(["/", ".", "\\", "\0", "a", "~", "-", "ü", "\n", " "]), max_size=30),
    st.builds(lambda parts: "/".join(parts), st.lists(st.sampled_from(["..", ".", "", "x", "etc"]), max_size=6)),
)
_IDS = st.one_of(_SHORT, _SHORT, _SHORT, st.text(min_size=200, max_size=300))  # long: 1 in 4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(_SHORT, min_size=1, max_size=60, unique_by=safety.safe_name),
       long=st.lists(st.text(min_size=120, max_size=300), max_size=1))
def test_property_convert_never_writes_outside_the_folder(tmp_path_factory, ids, long):
    """Thousands of generated ids (60 runs of up to 60): ``tal convert -o DIR/`` creates files
    only in DIR, each named by the safe name of an id, or refuses the whole run in one line
    (names past 255 bytes; collisions are tested on their own)."""
    ids = list(dict.fromkeys(ids + long))
    root = tmp_path_factory.mktemp("prop")
    src = _pred(root / "in" / "r.json", ids=ids)
    before = _tree(root)
    r = _tal("convert", src, "-o", f"{root / 'a' / 'out'}/", "--format", "json,srt,tsv")
    after = _tree(root)
    assert all(after[k] == before[k] for k in before)
    new = set(after) - set(before)
    assert all(n == "a" or n.startswith(os.path.join("a", "out")) for n in new), new
    event("refused" if r.exit_code else "written")  # --hypothesis-show-statistics
    if r.exit_code != 0:
        assert r.exit_code == 1 and not new - {"a"}, r.output  # refused before writing
        _one_error(r)
        return
    names = {Path(n).name for n in new if n.startswith(os.path.join("a", "out", ""))}
    assert names == {f"{safety.safe_name(v)}.{f}" for v in ids for f in ("json", "srt", "tsv")}


@settings(max_examples=2000, deadline=None)
@given(vid=_IDS)
def test_property_library_names_stay_in_the_folder(vid):
    """The functions ``tal detect`` and ``tal extract`` name per-video files with (features,
    per-format files, the JSON record): a plain name in the folder, or refused."""
    folder = Path("/nonexistent/out")
    try:
        paths = [*feature_paths(folder, vid), *video_files(folder, vid, ("vtt", "srt", "csv")).values()]
    except InputError as err:
        assert "255-byte limit" in str(err)
        return
    for p in paths:
        assert p.parent == folder and p.name not in (".", "..") and not p.name.startswith(".")
        assert "/" not in p.name and "\0" not in p.name and len(os.fsencode(p.name)) <= 255
        assert os.path.normpath(p) == str(p)


# ---------------------------------------------------------------- 2. not a regular file


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    real = tmp_path / "store" / "r.vtt"
    real.parent.mkdir()
    real.write_text("WEBVTT\n\nold\n")
    link = tmp_path / "r.vtt"
    link.symlink_to(real)
    write(link, make_results({"v": [SEG]}))
    assert link.is_symlink() and os.readlink(link) == str(real)  # still a link
    assert real.read_text() == render(make_results({"v": [SEG]}), "vtt")
    assert not [p for p in (tmp_path, real.parent) for q in p.iterdir() if q.name.endswith(".part")]


def test_broken_link_fifo_socket_device_and_stdout_are_refused(tmp_path):
    res = make_results({"v": [SEG]})
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"not a regular file \(a named pipe\)"):
        write(fifo, res)
    broken = tmp_path / "broken.json"
    broken.symlink_to(tmp_path / "nowhere" / "x.json")
    with pytest.raises(InputError, match="broken symbolic link"):
        write(broken, res)
    assert broken.is_symlink() and not (tmp_path / "nowhere").exists()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.json"))
        with pytest.raises(InputError, match="a socket"):
            write(tmp_path / "s.json", res)
    finally:
        sock.close()
    try:  # a device node of our own (a copy of /dev/null), never the system's
        os.mknod(tmp_path / "null.json", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pass
    else:
        with pytest.raises(InputError, match="a character device"):
            write(tmp_path / "null.json", res)
        assert stat.S_ISCHR(os.lstat(tmp_path / "null.json").st_mode)
    with pytest.raises(UsageError, match="standard output"):
        safety.check_target("-", "results")
    # the primitive itself (every atomic write, even failure lists) refuses the FIFO too
    from tal_pipeline.fsutil import atomic_write_text

    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_cli_refuses_fifo_and_dash_in_one_line(tmp_path):
    src = _pred(tmp_path / "r.json")
    fifo = tmp_path / "o.vtt"
    os.mkfifo(fifo)
    r = _tal("convert", src, "-o", fifo)
    assert r.exit_code == 1 and "named pipe" in _one_error(r)
    r = _tal("convert", src, "-o", "-")
    assert r.exit_code == 2 and "standard output" in _one_error(r)
    os.chdir(tmp_path)  # -o '' would otherwise mean the current folder
    for verb, args in (("convert", [src]), ("detect", [*_feats(tmp_path / "feats").glob("*.npy"), *FEATS])):
        r = _tal(verb, *args, "-o", "")
        assert r.exit_code == 2 and "-o '': empty" in _one_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats", "o.vtt", "r.json"]
    r = _tal("plot", src, "-o", fifo.with_suffix(".png"))
    assert r.exit_code == 0  # a new file is fine
    os.mkfifo(tmp_path / "p.svg")
    r = _tal("plot", src, "-o", tmp_path / "p.svg")
    assert r.exit_code == 1 and "named pipe" in _one_error(r)


# ---------------------------------------------------------------- 3. inputs and kinds


def test_convert_never_writes_over_its_input(tmp_path):
    src = _pred(tmp_path / "r.json")
    before = src.read_bytes()
    r = _tal("convert", src, "-o", src)
    assert r.exit_code == 1 and "is an input of this run" in _one_error(r)
    link = tmp_path / "alias.json"
    link.symlink_to(src)
    r = _tal("convert", src, "-o", link)  # another name of the same file
    assert r.exit_code == 1 and "is an input of this run" in _one_error(r)
    folder = tmp_path / "per"
    _pred(folder / "a.json", ids=("a",))
    r = _tal("convert", folder, "-o", f"{folder}/")  # each record would rewrite itself
    assert r.exit_code == 1 and "is an input of this run" in _one_error(r)
    assert src.read_bytes() == before


def test_detect_never_writes_over_an_input_or_another_kind(tmp_path):
    feats = _feats(tmp_path / "feats")
    npy = feats / "f0.npy"
    before = npy.read_bytes()
    r = _tal("detect", npy, *FEATS, "-o", npy, "--overwrite")
    assert r.exit_code == 1 and "is an input of this run" in _one_error(r)
    assert npy.read_bytes() == before
    out = tmp_path / "out.json"
    r = _tal("detect", npy, *FEATS, "-o", out, "--report", out)
    assert r.exit_code == 2 and "also an output" in _one_error(r)
    assert not out.exists()
    r = _tal("detect", npy, *FEATS, "-o", out, "--report", npy)
    assert r.exit_code == 1 and "is an input of this run" in _one_error(r)
    assert npy.read_bytes() == before and not out.exists()  # refused before any work


@pytest.mark.parametrize("existing, verb", [
    ("features", "convert"), ("annotations", "convert"), ("report", "convert"),
    ("results", "report"), ("npy", "report"), ("results", "plot"), ("checkpoint", "plot"),
])
def test_a_file_of_another_kind_is_never_replaced(tmp_path, existing, verb):
    pred = _pred(tmp_path / "pred.json")
    target = {"convert": tmp_path / "t.json", "report": tmp_path / "t.html", "plot": tmp_path / "t.png"}[verb]
    if existing == "features":
        target.write_text(json.dumps({"format": "tal-pipeline/features-1", "video": "v", "dim": 4,
                                      "num_features": 2, "feature_stride": 4}))
    elif existing == "annotations":
        target.write_text(json.dumps({"database": {"v": {"duration": 3.0, "annotations": []}}}))
    elif existing == "report":
        r = _tal("report", pred, "-o", target.with_suffix(".html"))
        assert r.exit_code == 0, r.output
        target.write_bytes(target.with_suffix(".html").read_bytes())
    elif existing == "results":
        _pred(target)
    elif existing == "npy":
        np.save(target.with_suffix(".npy"), np.zeros((2, 3), np.float32))
        target.write_bytes(target.with_suffix(".npy").read_bytes())
    elif existing == "checkpoint":
        save_checkpoint(tmp_path / "c.pt", read_checkpoint(demo_checkpoint_path()))
        target.write_bytes((tmp_path / "c.pt").read_bytes())
    before = target.read_bytes()
    assert safety.sniff(target) == existing
    r = _tal(verb, pred, "-o", target)
    assert r.exit_code == 1 and "tal never replaces a file of another kind" in _one_error(r)
    assert target.read_bytes() == before


def test_each_writer_replaces_its_own_kind(tmp_path):
    """What each verb writes is recognised as its kind, so a rerun replaces it."""
    pred = _pred(tmp_path / "pred.json")
    for out, kind in (("o.json", "results"), ("o.vtt", "vtt"), ("o.srt", "srt"), ("o.csv", "table"),
                      ("o.tsv", "table")):
        for _ in range(2):
            r = _tal("convert", pred, "-o", tmp_path / out)
            assert r.exit_code == 0, r.output
        assert safety.sniff(tmp_path / out) == kind
    for verb, out, kind in (("report", "o.html", "report"), ("plot", "o.png", "plot"),
                            ("plot", "o.svg", "plot"), ("plot", "o.pdf", "plot"), ("plot", "o.jpg", "plot")):
        for _ in range(2):
            r = _tal(verb, pred, "-o", tmp_path / out)
            assert r.exit_code == 0, r.output
        assert safety.sniff(tmp_path / out) == kind
    save_checkpoint(tmp_path / "m.pt", read_checkpoint(demo_checkpoint_path()))
    save_checkpoint(tmp_path / "m.pt", read_checkpoint(demo_checkpoint_path()))
    assert safety.sniff(tmp_path / "m.pt") == "checkpoint"
    with pytest.raises(InputError, match="another kind"):
        save_checkpoint(tmp_path / "pred.json", read_checkpoint(demo_checkpoint_path()))
    assert safety.sniff(tmp_path / "pred.json") == "results"


def test_a_foreign_or_unparsable_file_is_never_replaced(tmp_path):
    pred = _pred(tmp_path / "pred.json")
    for name, content in (("notes.json", b'{"half": '), ("data.csv", b"a,b\n1,2\n"),
                          ("movie.srt", b"not subtitles"), ("page.html", b"<!DOCTYPE html><p>mine")):
        (tmp_path / name).write_bytes(content)
        r = _tal("convert" if name != "page.html" else "report", pred, "-o", tmp_path / name)
        assert r.exit_code == 1 and "another kind" in _one_error(r), name
        assert (tmp_path / name).read_bytes() == content


# ---------------------------------------------------------------- 6. CSV/TSV formula injection


@pytest.mark.parametrize("fmt, delim", [("csv", ","), ("tsv", "\t")])
def test_formula_cells_are_neutralised_and_numbers_are_not(fmt, delim):
    labels = ["=HYPERLINK(\"http://x\")", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'=x", "plain", "a=b"]
    res = make_results({"=cmd|' /C calc'!A0": [{"label": lab, "score": 0.5, "segment": [0.0, 1.0]}
                                               for lab in labels]})
    rows = list(csv.reader(io.StringIO(render(res, fmt), newline=""), delimiter=delim))[1:]
    assert [r[1] for r in rows] == ["'" + x if x[0] in "=+-@\t\r" or x.startswith("'=") else x
                                    for x in labels]
    assert all(r[0] == "'=cmd|' /C calc'!A0" for r in rows)
    for r in rows:  # numbers stay numbers: a spreadsheet reads them as such
        assert all(not c.startswith("'") and float(c) >= 0 for c in r[2:])


def test_convert_csv_read_back_as_annotations_is_exact(tmp_path):
    labels = ["=1+1", "-pan", "@x", "+zoom", "'=quoted", "''-two", "plain", "'", "\tlead"]
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {vid: [{"label": lab, "score": 0.5, "segment": [k, k + 1.0]}
                                                   for k, lab in enumerate(labels)]
                                            for vid in ("-v1", "=v2", "v3")}}))
    for fmt in ("csv", "tsv"):
        assert _tal("convert", pred, "-o", tmp_path / f"p.{fmt}").exit_code == 0
        from tal_pipeline.annotations import load_annotations

        ann = load_annotations(tmp_path / f"p.{fmt}")
        assert list(ann.videos) == ["-v1", "=v2", "v3"]
        assert all([s[0] for s in v.segments] == labels for v in ann.videos.values())


@given(st.text(max_size=20))
def test_neutralise_is_undone_exactly(text):
    cell = safety.neutralise_cell(text)
    assert safety.restore_cell(cell) == text
    assert cell[:1] not in safety.FORMULA_STARTS


# ---------------------------------------------------------------- 10, 11: records, truncation


def test_results_verbs_read_what_detect_wrote_in_every_format(tmp_path):
    feats = _feats(tmp_path / "feats", ("f0", "f1"))
    per = tmp_path / "per"
    assert _tal("detect", feats, *FEATS, "-o", f"{per}/", "--format", "vtt").exit_code == 0
    assert sorted(p.name for p in per.iterdir()) == [".tal", "f0.vtt", "f1.vtt"]  # records hidden
    one = tmp_path / "one.vtt"
    assert _tal("detect", feats / "f0.npy", *FEATS, "-o", one).exit_code == 0
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"database": {f: {"subset": "test", "duration": 9.6, "annotations": [
        {"label": "pan_left", "segment": [1.0, 3.0]}]} for f in ("f0", "f1")}}))
    for pred, vids in ((per, {"f0", "f1"}), (per / "f1.vtt", {"f1"}), (one, {"f0"})):
        assert load_results(pred).detections.keys() == vids
        r = _tal("convert", pred, "-o", tmp_path / f"c_{pred.name}.csv")
        assert r.exit_code == 0, r.output
        r = _tal("eval", pred, "--annotations", ann)
        assert r.exit_code == 0, r.output
        r = _tal("plot", pred, "-o", tmp_path / f"p_{pred.name}.png")
        assert r.exit_code == 0, r.output
        r = _tal("report", pred, "-o", tmp_path / f"r_{pred.name}.html")
        assert r.exit_code == 0, r.output


def test_a_truncated_merged_results_file_is_redone(tmp_path, caplog):
    feats = _feats(tmp_path / "feats", ("f0", "f1"))
    out = tmp_path / "out.json"
    assert _tal("detect", feats, *FEATS, "-o", out).exit_code == 0
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) // 2])
    r = _tal("detect", feats, *FEATS, "-o", out)
    assert r.exit_code == 0 and "2 done" in r.stderr, r.output
    assert f"{out}: cut short (not complete JSON); its results are redone" in caplog.text
    assert load_results(out).detections.keys() == {"f0", "f1"}
    out.write_bytes(b'{"mine": ')  # not ours: never replaced, even with --overwrite
    r = _tal("detect", feats, *FEATS, "-o", out, "--overwrite")
    assert r.exit_code == 1 and "another kind" in _one_error(r)


# ---------------------------------------------------------------- 12, 13, 14


def test_srt_text_is_raw_and_vtt_escaped(tmp_path):
    res = make_results({"v": [{"label": "<b>a & b</b> --> c", "score": 0.9, "segment": [0.0, 1.0]}]})
    srt, vtt = render(res, "srt"), render(res, "vtt")
    assert "<b>a & b</b> -> c (0.90)" in srt and "&amp;" not in srt and "-->" not in srt.split("\n")[2]
    assert "&lt;b&gt;a &amp; b&lt;/b&gt;" in vtt


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF"),
                                        (".jpg", b"\xff\xd8\xff"), (".jpeg", b"\xff\xd8\xff")])
def test_plot_writes_the_format_its_extension_names(tmp_path, ext, magic):
    r = _tal("plot", _pred(tmp_path / "r.json"), "-o", tmp_path / f"t{ext.upper()}")
    assert r.exit_code == 0, r.output
    assert (tmp_path / f"t{ext.upper()}").read_bytes().startswith(magic)


@pytest.mark.parametrize("out, words", [("t.gif", "unknown image format .gif"), ("t", "no extension"),
                                        ("", "is a folder")])
def test_plot_refuses_other_names_in_one_line(tmp_path, out, words):
    pred = _pred(tmp_path / "r.json")
    os.chdir(tmp_path)
    r = _tal("plot", pred, "-o", out)
    assert r.exit_code in (1, 2) and words in _one_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.parametrize("seg, words", [
    ([-1.0, 2.0], "not within [0, 259200] s"), ([1.0, 1e300], "not within"),
    ([0.0, 1.0, 1.5], "score 1.5 is not within [0, 1]"), ([0.0, 1.0, -0.1], "score -0.1"),
])
def test_subtitles_and_tables_refuse_impossible_segments(tmp_path, seg, words):
    src = tmp_path / "r.json"
    score = seg[2] if len(seg) == 3 else 0.5
    src.write_text(json.dumps({"results": {"v": [{"label": "a", "score": score, "segment": seg[:2]}]}}))
    for fmt in ("vtt", "srt", "csv", "tsv"):
        r = _tal("convert", src, "-o", tmp_path / f"o.{fmt}")
        assert r.exit_code == 1 and words in _one_error(r) and str(src) in _one_error(r)
        assert not (tmp_path / f"o.{fmt}").exists()
    assert _tal("convert", src, "-o", tmp_path / "o.json").exit_code == 0  # JSON: any number


def test_max_time_is_the_decoder_limit():
    from tal_pipeline.decode import MAX_DURATION_S
    from tal_pipeline.writers import MAX_TIME_S

    assert MAX_TIME_S == MAX_DURATION_S
