"""Several processes on one output: per-video locks, busy items, no duplicate or lost work."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from batchrun import FAST, demo_dim, hidden, plain_model
from click.testing import CliRunner
from videogen import write_video

from tal_pipeline import locks
from tal_pipeline.batch import BatchReport, run_batch, write_failures
from tal_pipeline.cli import main
from tal_pipeline.featio import load_features
from tal_pipeline.locks import hold_lock, lock_path, try_lock
from tal_pipeline.outputs import DetectionOutput as _Output
from tal_pipeline.results import load_results, make_results, write_results

DEMO_DIM = demo_dim()  # D of the feature files the demo model takes
SUMMARY = re.compile(r"(\d+) done, (\d+) skipped, (\d+) failed(?:, (\d+) busy)?")


def _raw_lock(path: Path) -> int:
    """An exclusive flock through a file description of its own (conflicts even in-process)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _is_locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_locked_item_is_busy_and_left_alone(tmp_path):
    items = {k: tmp_path / f"{k}.mp4" for k in ("a", "b", "c", "d")}
    live_temp = tmp_path / ".b.npy.k3x9q2zz.part"  # the other process's write in progress
    live_temp.write_bytes(b"partial")
    stale_temp = tmp_path / ".a.npy.abcdefgh.part"  # left by a killed run
    stale_temp.write_bytes(b"partial")
    fd = _raw_lock(lock_path(tmp_path, "b"))
    finished_meanwhile = {"d": False}  # done by another process once we hold d's lock
    calls = []

    def is_done(vid, path):
        if vid == "d":
            done, finished_meanwhile["d"] = finished_meanwhile["d"], True
            return done
        return False

    def process(vid, path):
        assert _is_locked(lock_path(tmp_path, vid))  # held while working on it
        assert not stale_temp.exists()  # its stale temps were removed first
        calls.append(vid)

    try:
        report = run_batch(items, process, is_done, progress=False, lock_dir=tmp_path,
                           outputs_fn=lambda vid: [tmp_path / f"{vid}.npy"])
        assert calls == ["a", "c"]
        assert report.done == ["a", "c"] and report.busy == ["b"] and report.skipped == ["d"]
        assert not report.ok and report.summary() == (  # busy is not done
            "2 done, 1 skipped, 0 failed, 1 busy (another process is still on them: not done)"
        )
        assert live_temp.exists()  # never another live process's temp
        assert hidden(tmp_path) == [".b.lock", live_temp.name]  # ours are removed
    finally:
        os.close(fd)


def test_lock_taken_over_after_unlink_race(tmp_path, monkeypatch):
    """The holder releases (unlinks) between our open() and our flock(): we must not keep a lock
    on the unlinked file, but retry on the path's new file."""
    path = lock_path(tmp_path, "v")
    holder = try_lock(path)
    assert holder is not None and try_lock(path) is None
    real_flock = locks._flock
    calls = []

    def racing_flock(fd, op):
        calls.append(os.fstat(fd).st_ino)
        if len(calls) == 1:
            holder.release()  # unlink + unlock, after our open()
        real_flock(fd, op)

    monkeypatch.setattr(locks, "_flock", racing_flock)
    lock = try_lock(path)
    monkeypatch.setattr(locks, "_flock", real_flock)
    assert lock is not None and len(calls) == 2
    assert os.fstat(lock.fd).st_ino == path.stat().st_ino  # the file the path names now
    assert _is_locked(path) and try_lock(path) is None  # a newcomer is excluded
    lock.release()
    assert not path.exists()


def test_waiting_lock_retries_on_the_new_file(tmp_path, monkeypatch):
    path = tmp_path / ".x.lock"
    first = hold_lock(path)
    real_flock = locks._flock
    waiting = threading.Event()

    def flock(fd, op):
        waiting.set()
        real_flock(fd, op)

    monkeypatch.setattr(locks, "_flock", flock)
    got = []
    t = threading.Thread(target=lambda: got.append(hold_lock(path)))
    t.start()
    assert waiting.wait(5)
    time.sleep(0.1)  # let it block in flock() on the file it opened
    first.release()  # unlinks it: the waiter's lock on it would exclude no one
    t.join(5)
    assert got and os.fstat(got[0].fd).st_ino == path.stat().st_ino
    assert try_lock(path) is None
    got[0].release()


def test_lock_of_a_killed_process_is_not_stale(tmp_path):
    """flock dies with its process (SIGKILL too): the item is busy while it lives, then done."""
    path = lock_path(tmp_path, "v")
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        calls = []
        report = run_batch({"v": tmp_path / "v.mp4"}, lambda vid, p: calls.append(vid),
                           progress=False, lock_dir=tmp_path)
        assert report.busy == ["v"] and not calls
    finally:
        proc.kill()
        proc.wait()
    assert path.exists()  # left by the killed process, but not held
    report = run_batch({"v": tmp_path / "v.mp4"}, lambda vid, p: calls.append(vid),
                       progress=False, lock_dir=tmp_path)
    assert report.done == ["v"] and calls == ["v"] and not path.exists()


def test_skipped_item_removes_a_left_lock_file(tmp_path):
    (tmp_path / ".v.lock").write_text("")  # a run killed after finishing v, before unlinking
    report = run_batch({"v": tmp_path / "v.mp4"}, lambda vid, p: None, lambda vid, p: True,
                       progress=False, lock_dir=tmp_path)
    assert report.skipped == ["v"] and hidden(tmp_path) == []


def test_write_failures_keeps_the_lines_of_busy_videos(tmp_path):
    (tmp_path / "failures.txt").write_text("/v/b.mp4\tcorrupt (another run)\n/v/x.mp4\told\n")
    report = BatchReport(done=["a"], busy=["b"], failed=[("/v/c.mp4", "no frames")],
                         paths={"a": "/v/a.mp4", "b": "/v/b.mp4", "c": "/v/c.mp4"})
    path = write_failures(tmp_path, report)
    assert path.read_text().splitlines() == [
        "/v/c.mp4\tno frames", "/v/b.mp4\tcorrupt (another run)"
    ]
    report = BatchReport(done=["a", "b", "c"], paths={"a": "/v/a.mp4", "b": "/v/b.mp4"})
    assert write_failures(tmp_path, report) is None and not path.exists()
    assert hidden(tmp_path) == []


def _part(out: _Output, vid: str) -> None:
    write_results(out.part(vid), make_results({vid: []}, {vid: {"duration": 4.0}}, {"model": "m"}))


def test_merged_runs_keep_each_others_results(tmp_path):
    """Two runs on one x.json (e.g. two shards): the first to finish neither drops the other's
    parts nor has its results overwritten by the other's merge."""
    x = tmp_path / "x.json"
    a, b = _Output(str(x), False), _Output(str(x), False)  # b has not seen a's results
    _part(a, "v1")
    a.merge(["v1"])
    a.close(remove_parts=True)
    assert a.parts.is_dir()  # b still runs on it
    assert b.is_done("v1")
    _part(b, "v2")
    b.merge(["v2"])
    b.close(remove_parts=True)
    assert set(load_results(x).detections) == {"v1", "v2"}
    assert not b.parts.exists() and hidden(tmp_path) == []


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four 1 s clips (~1 s of work each at --size 32)."""
    root = tmp_path_factory.mktemp("videos")
    for k in range(4):
        base = np.random.default_rng(k).integers(0, 256, (12, 40, 3)).astype(np.uint8)
        base = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)
        frames = [np.ascontiguousarray(base[:, 2 * i : 2 * i + 128]) for i in range(10)]
        write_video(root / f"v{k}.mp4", frames, fps=10, codec="mpeg4")
    return root


def _summary(stderr: str) -> tuple[int, int, int, int]:
    m = SUMMARY.search(stderr)
    assert m, stderr
    return tuple(int(g or 0) for g in m.groups())


def _two(args: list[str], timeout: float = 120) -> list[tuple[int, str]]:
    cmd = [sys.executable, "-m", "tal_pipeline", *args]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err))
    return out


def test_two_extract_processes_share_the_work(videos, tmp_path):
    out = tmp_path / "feats"
    results = _two(["extract", str(videos), "-o", str(out), *FAST])
    counts = []
    for rc, err in results:
        assert rc == 0, err
        assert "Traceback" not in err
        counts.append(_summary(err))
    done = [c[0] for c in counts]
    assert sum(done) == 4, counts  # each video extracted exactly once
    assert all(sum(c) == 4 and c[2] == 0 for c in counts), counts  # done/skipped/busy, no failure
    for k in range(4):
        arr, meta = load_features(out / f"v{k}.npy")
        assert arr.shape == (3, 512) == (meta.num_features, meta.dim)
    assert hidden(out) == []


def test_two_detect_shards_merge_into_one_file(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for k in range(8):  # ~0.5 s of work each
        np.save(feats / f"f{k:02d}.npy", rng.standard_normal((48, DEMO_DIM)).astype(np.float32))
    x = tmp_path / "out.json"
    args = ["detect", str(feats), "--features", "--model", str(plain_model()), "--fps", "10",
            "--feature-stride", "4", "-o", str(x), "--no-progress"]
    cmd = [sys.executable, "-m", "tal_pipeline", *args]
    procs = [subprocess.Popen([*cmd, "--shard", f"{i}/2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert _summary(err)[:3] == (4, 0, 0)
    assert sorted(load_results(x).detections) == [f"f{k:02d}" for k in range(8)]
    assert not (tmp_path / "out.json.parts").exists() and hidden(tmp_path) == []


def test_cli_reports_busy_videos_as_not_done(videos, tmp_path):
    """Videos another process still holds after --busy-wait are not done by this run: listed,
    exit status 1 (exit 0 means every input is done with this run's settings)."""
    out = tmp_path / "feats"
    out.mkdir()
    fds = [_raw_lock(lock_path(out, f"v{k}")) for k in range(3)]  # "another process" on v0-v2
    try:
        start = time.monotonic()
        r = CliRunner().invoke(main, ["extract", str(videos), "-o", str(out), *FAST, "--busy-wait", "2"])
        waited = time.monotonic() - start
    finally:
        for fd in fds:
            os.close(fd)
    assert r.exit_code == 1, r.output
    assert "1 done, 0 skipped, 0 failed, 3 busy (another process is still on them: not done)" in r.stderr
    assert "tal extract: waiting for 3 videos another process is on (v0, v1, v2); at most 2 s more" in r.stderr
    listed = r.stderr[r.stderr.index("tal extract: 3 not done"):].splitlines()[1:]
    assert listed == [f"  {videos / f'v{k}.mp4'}" for k in range(3)]
    assert waited >= 2
    made = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert made == ["v3.json", "v3.npy"]


def test_busy_video_is_waited_for_then_skipped_or_done(tmp_path):
    """The holder finishes one busy video (then it is skipped here: done with the same settings)
    and gives up the other (then it is done here); exit-0 material: nothing left busy."""
    items = {k: tmp_path / f"{k}.mp4" for k in ("a", "b", "c")}
    finished = set()
    fds = {k: _raw_lock(lock_path(tmp_path, k)) for k in ("a", "b")}

    def holder():  # "another process": finishes a, then drops b unfinished
        time.sleep(0.5)
        finished.add("a")
        os.close(fds.pop("a"))
        time.sleep(0.5)
        os.close(fds.pop("b"))

    calls = []
    t = threading.Thread(target=holder)
    t.start()
    try:
        report = run_batch(items, lambda vid, p: calls.append(vid), lambda vid, p: vid in finished,
                           progress=False, lock_dir=tmp_path, busy_wait=30)
    finally:
        t.join()
    assert calls == ["c", "b"] and report.done == ["c", "b"] and report.skipped == ["a"]
    assert report.busy == [] and report.ok
    assert hidden(tmp_path) == []


def _slow_two(first: list[str], second: list[str], delay: float = 0.0) -> list[tuple[int, str]]:
    """Two tal processes, the second started ``delay`` s after the first; (rc, stderr) each."""
    procs = []
    for args in (first, second):
        procs.append(subprocess.Popen([sys.executable, "-m", "tal_pipeline", *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(delay)
    errs = [p.communicate(timeout=180)[1] for p in procs]
    return [(p.returncode, err) for p, err in zip(procs, errs)]


def _kinds(folder: Path) -> set[str]:
    return {"features" if p.suffix == ".npy" else "detections" for p in folder.iterdir()
            if p.suffix == ".npy" or (p.suffix == ".json" and not p.with_suffix(".npy").exists())}


@pytest.mark.parametrize("first", ["extract", "detect"])
def test_detect_and_extract_racing_on_one_folder_never_mix(videos, tmp_path, first):
    """tal extract -o DIR and tal detect -o DIR/ started together (either first): one of them is
    refused with one line before writing anything; the folder holds one kind of output."""
    out = tmp_path / "out"
    feats = tmp_path / "feats"
    rng = np.random.default_rng(0)
    feats.mkdir()
    for k in range(4):
        np.save(feats / f"f{k}.npy", rng.standard_normal((48, DEMO_DIM)).astype(np.float32))
    extract = ["extract", str(videos), "-o", str(out), *FAST]
    detect = ["detect", str(feats), "--features", "--model", str(plain_model()), "--fps", "10", "--feature-stride", "4", "-o",
              f"{out}/", "--no-progress"]
    runs = _slow_two(*((extract, detect) if first == "extract" else (detect, extract)), delay=2.0)
    codes = sorted(rc for rc, _ in runs)
    assert codes == [0, 1], runs
    refused = next(err for rc, err in runs if rc == 1)
    lines = [ln for ln in refused.splitlines() if ln.startswith("tal: ")]
    assert len(lines) == 1 and "never share a folder" in lines[0], refused
    assert "Traceback" not in refused
    assert len(_kinds(out)) == 1, sorted(p.name for p in out.iterdir())
    assert not [p for p in out.iterdir() if p.name.startswith(".tal-")]  # the claims are gone


def test_sequential_extract_refuses_a_folder_of_detections(videos, tmp_path):
    out = tmp_path / "out"
    feats = tmp_path / "feats"
    feats.mkdir()
    np.save(feats / "f0.npy", np.zeros((24, DEMO_DIM), np.float32))
    args = ["--features", "--model", str(plain_model()), "--fps", "10", "--feature-stride", "4", "--no-progress"]
    assert CliRunner().invoke(main, ["detect", str(feats), *args, "-o", f"{out}/"]).exit_code == 0
    r = CliRunner().invoke(main, ["extract", str(videos / "v0.mp4"), "-o", str(out), *FAST])
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (f"tal: error: {out}{os.sep}: the folder holds detections (f0.json, "
                                         "from tal detect); features and detections never share a "
                                         "folder: use another -o")
    assert _kinds(out) == {"detections"}


def test_two_models_racing_on_one_merged_output_never_exit_0_with_a_video_lost(tmp_path):
    """Two runs with different --min-score (other settings: other provenance) on one -o x.json:
    whatever the interleaving, a run that exits 0 has every one of its videos in x.json with
    its own settings; the other fails by name."""
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(1)
    for k in range(6):
        np.save(feats / f"f{k}.npy", rng.standard_normal((48, DEMO_DIM)).astype(np.float32))
    x = tmp_path / "out.json"
    base = ["detect", str(feats), "--features", "--model", str(plain_model()), "--fps", "10", "--feature-stride", "4", "-o", str(x),
            "--no-progress"]
    runs = _slow_two([*base, "--min-score", "0.01"], [*base, "--min-score", "0.02"])
    assert any(rc != 0 for rc, _ in runs), runs  # two settings cannot both own one merged file
    res = load_results(x) if x.exists() else None
    for (rc, err), score in zip(runs, (0.01, 0.02)):
        assert "Traceback" not in err
        if rc == 0:
            assert res is not None and sorted(res.detections) == [f"f{k}" for k in range(6)], err
            assert res.external_data["provenance"]["postprocess"]["min_score"] == score


def test_detect_shards_keep_their_own_failure_lists(tmp_path):
    """Merged output, --shard: each shard writes x.json.failures-<i>of<n>.txt, so a shard with
    no failure does not delete the list of another."""
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        np.save(feats / f"f{k:02d}.npy", rng.standard_normal((16, DEMO_DIM)).astype(np.float32))
    (feats / "a_bad.npy").write_text("not an array\n")  # sorted first: shard 0 of 2
    x = tmp_path / "out.json"
    args = ["detect", str(feats), "--features", "--model", str(plain_model()), "--fps", "10",
            "--feature-stride", "4", "-o", str(x), "--no-progress"]
    r0 = CliRunner().invoke(main, [*args, "--shard", "0/2"])
    assert r0.exit_code == 1 and "a_bad.npy" in r0.stderr
    line = next(ln for ln in r0.stderr.splitlines() if ln.startswith("tal: "))
    assert line.count(str(feats / "a_bad.npy")) == 1, line  # the path once, then the cause
    listed = tmp_path / "out.json.failures-0of2.txt"
    assert listed.read_text().startswith(str(feats / "a_bad.npy") + "\t")
    r1 = CliRunner().invoke(main, [*args, "--shard", "1/2"])
    assert r1.exit_code == 0, r1.output
    assert listed.is_file() and not (tmp_path / "out.json.failures-1of2.txt").exists()
    assert not (tmp_path / "out.json.failures.txt").exists()


def test_ctrl_c_inside_the_lock_release_leaves_no_lock_file(tmp_path, monkeypatch):
    """The interrupt lands while the finished item's lock is being released (just before the
    unlink): the batch stops, and the lock file is still removed."""
    real_unlink = os.unlink
    hit = []

    def unlink(path, *args, **kwargs):
        if str(path).endswith(".lock") and not hit:
            hit.append(path)
            raise KeyboardInterrupt
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(locks.os, "unlink", unlink)
    done = []
    with pytest.raises(KeyboardInterrupt):
        run_batch({"a": tmp_path / "a.mp4", "b": tmp_path / "b.mp4"},
                  lambda vid, path: done.append(vid), lock_dir=tmp_path, progress=False)
    assert done == ["a"] and hit  # interrupted in a's release, b never started
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .a.lock left
