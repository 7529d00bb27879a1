"""Batch machinery: inputs, ids, shards, per-item failures, failure list."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tal_pipeline.batch import BatchReport, run_batch, write_failures
from tal_pipeline.errors import InputError, UsageError, VideoDecodeError
from tal_pipeline.inputs import (
    check_unique_ids,
    collect_inputs,
    parse_shard,
    select_inputs,
    select_shard,
    video_id,
)


def touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_collect_folders_recursive_sorted_and_filtered(tmp_path):
    root = tmp_path / "videos"
    b = touch(root / "b.mp4")
    a = touch(root / "sub" / "a.MKV")
    c = touch(root / "a.webm")
    touch(root / "notes.md")
    touch(root / "sub" / "frame.png")
    assert collect_inputs([root]) == [c, b, a]  # sorted by relative path parts, recursive


def test_collect_files_and_list_files(tmp_path):
    v1 = touch(tmp_path / "d" / "one.mov")
    v2 = touch(tmp_path / "two.avi")
    odd = touch(tmp_path / "three.bin")  # named explicitly: taken whatever its extension
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my videos\nd/one.mov\n\n{v2}\n")
    assert collect_inputs([lst, odd, v1]) == [v1, v2, odd]  # duplicates kept once, in order
    with pytest.raises(InputError, match="no such file"):
        collect_inputs([tmp_path / "absent.mp4"])
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("missing.mp4\ngone.mkv\nd/one.mov\n")
    problems: list = []  # every missing entry is named; the rest of the list is taken
    assert collect_inputs([bad_list], problems=problems) == [v1]
    assert [(p.name, "no such file or folder (listed in" in c) for p, c in problems] == [
        ("missing.mp4", True), ("gone.mkv", True)]


def test_collect_takes_bad_entries_by_name_and_follows_folder_links(tmp_path):
    root = tmp_path / "videos"
    a = touch(root / "a.mp4")
    touch(tmp_path / "elsewhere" / "e.mkv")
    broken = root / "broken.mp4"
    broken.symlink_to(root / "gone.mp4")
    loop_a, loop_b = root / "loop_a.mp4", root / "loop_b.mp4"
    loop_a.symlink_to(loop_b.name)
    loop_b.symlink_to(loop_a.name)
    fifo = root / "pipe.avi"
    os.mkfifo(fifo)
    (root / "link").symlink_to(tmp_path / "elsewhere")  # a folder link: followed
    (root / "link2").symlink_to(tmp_path / "elsewhere")  # the same folder again: walked once
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..")  # a loop back to root: reported, not entered
    (root / "loop_dir").symlink_to("loop_dir")  # a link to itself, no video suffix: skipped
    (root / "empty").mkdir()
    problems = []
    got = collect_inputs([root], problems=problems)
    assert got == [a, broken, root / "link" / "e.mkv", loop_a, loop_b, fifo]  # sorted parts
    assert problems == [(root / "sub" / "up", f"symbolic link loop (leads back to the folder {root}); not entered")]
    assert collect_inputs([root], problems=[]) == got  # deterministic


def test_collect_reports_unlistable_folders(tmp_path, monkeypatch, caplog):
    root = tmp_path / "videos"
    a = touch(root / "a.mp4")
    touch(root / "locked" / "x.mp4")
    real = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    problems = []
    assert collect_inputs([root], problems=problems) == [a]
    assert problems == [(root / "locked", "cannot list the folder: permission denied")]
    with caplog.at_level("WARNING", logger="tal_pipeline.inputs"):  # no list: a warning each
        assert collect_inputs([root]) == [a]
    assert [r.getMessage() for r in caplog.records] == [f"{root / 'locked'}: cannot list the folder: permission denied"]
    with pytest.raises(InputError, match="locked: cannot list the folder: permission denied"):
        collect_inputs([root / "locked"])  # a named folder: an error before any work
    a.unlink()  # nothing left but the folder that cannot be listed: the error names it
    with pytest.raises(InputError, match=r"no inputs found \(videos\) in .*videos; .*locked: cannot list"):
        select_inputs([root], problems=[])


def test_collect_named_inputs_that_do_not_resolve(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.symlink_to(tmp_path / "gone.mp4")
    loop = tmp_path / "loop.mp4"
    loop.symlink_to("loop.mp4")
    with pytest.raises(InputError, match=rf"broken.mp4: broken symbolic link \(target {tmp_path}/gone.mp4"):
        collect_inputs([broken])
    with pytest.raises(InputError, match="loop.mp4: symbolic link loop"):
        collect_inputs([loop])
    fifo = tmp_path / "pipe.bin"  # named explicitly: taken, so that it fails by name
    os.mkfifo(fifo)
    assert collect_inputs([fifo]) == [fifo]


@pytest.mark.parametrize(
    "name, vid",
    [("clip.mp4", "clip"), ("my clip (1).mkv", "my_clip__1_"), (".hidden.mp4", "_hidden"),
     ("...mp4", "__"), ("a/b/../c.d.mp4", "c.d"), ("x:\\y.mp4", "x__y")],
)
def test_video_id_is_a_safe_stem(name, vid):
    got = video_id(name)
    assert got == vid
    assert "/" not in got and "\\" not in got and got not in ("", ".", "..")
    assert not got.startswith(".")


def test_duplicate_ids_refused_with_all_collisions(tmp_path):
    paths = [tmp_path / "a" / "x.mp4", tmp_path / "b" / "x.mkv", tmp_path / "y.mp4", tmp_path / "c" / "y.avi"]
    with pytest.raises(InputError) as err:
        check_unique_ids(paths)
    msg = str(err.value)
    assert "2 video id(s)" in msg and "x:" in msg and "y:" in msg and str(paths[1]) in msg
    ok = check_unique_ids(paths[:1] + paths[2:3])
    assert list(ok) == ["x", "y"]


def test_shards_cover_every_item_exactly_once():
    items = {f"v{i:03d}": Path(f"/v/{i}.mp4") for i in (7, 1, 30, 2, 11, 5, 9)}
    for n in (1, 2, 3, 8):
        seen = []
        for i in range(n):
            seen += list(select_shard(items, f"{i}/{n}"))
        assert sorted(seen) == sorted(items)
        assert len(seen) == len(set(seen))
    assert select_shard(items, None) == items
    assert parse_shard(" 1 / 4 ") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(UsageError):  # the command line is wrong: exit status 2
            parse_shard(bad)


def test_run_batch_goes_on_after_failures(tmp_path, capsys):
    items = {k: tmp_path / f"{k}.mp4" for k in ("a", "b", "c", "d")}
    done_before = {"d"}
    calls = []

    def process(vid, path):
        calls.append(vid)
        if vid == "b":
            raise VideoDecodeError(path, "no decodable video frames")
        if vid == "c":
            raise ValueError("boom")

    report = run_batch(items, process, lambda vid, p: vid in done_before, progress=False)
    assert calls == ["a", "b", "c"]
    assert report.done == ["a"] and report.skipped == ["d"]
    assert report.failed == [(str(items["b"]), "no decodable video frames"), (str(items["c"]), "ValueError: boom")]
    assert not report.ok and report.summary() == "1 done, 1 skipped, 2 failed"
    err = capsys.readouterr().err
    assert f"tal: {items['b']}: no decodable video frames" in err.splitlines()
    assert f"tal: {items['c']}: ValueError: boom" in err.splitlines()

    path = write_failures(tmp_path, report)
    assert path.read_text().splitlines() == [f"{items['b']}\tno decodable video frames", f"{items['c']}\tValueError: boom"]
    assert write_failures(tmp_path, BatchReport(done=["a"])) is None and not path.exists()


def test_run_batch_stops_on_keyboard_interrupt(tmp_path):
    calls = []

    def process(vid, path):
        calls.append(vid)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch({"a": tmp_path / "a", "b": tmp_path / "b"}, process, progress=False)
    assert calls == ["a"]
