"""Batches stopped mid-way (SIGKILL, Ctrl-C, SIGTERM): only complete outputs are left, the
rerun redoes nothing that was finished, and Ctrl-C stops promptly with one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from batchrun import FAST, demo_dim, hidden, plain_model
from click.testing import CliRunner
from videogen import write_video

from tal_pipeline.cli import main
from tal_pipeline.featio import is_complete, load_features
from tal_pipeline.fsutil import temp_target
from tal_pipeline.results import load_results

DEMO_DIM = demo_dim()  # D of the feature files the demo model takes
N_VIDEOS = 3
N_FEATURES = 6  # detect --features: files of (64, D) features (the demo model's D), ~0.5 s of work each
PROMPT_S = 2.5  # a stopped run ends within this (~0.2 s; 2-9 s if it waits for flow workers)
DETECT = ["--features", "--model", str(plain_model()), "--fps", "10", "--feature-stride", "4", "--no-progress"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three clips: v0 1 s, then two of 8 s (a few seconds of work each at --size 32, so that
    a loaded machine cannot finish the batch between v0's outputs appearing and the signal)."""
    root = tmp_path_factory.mktemp("videos")
    for k in range(N_VIDEOS):
        base = np.random.default_rng(k).integers(0, 256, (12, 60, 3)).astype(np.uint8)
        base = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)
        n = 10 if k == 0 else 80
        frames = [np.ascontiguousarray(base[:, 4 * (i % 80) : 4 * (i % 80) + 128]) for i in range(n)]
        write_video(root / f"v{k}.mp4", frames, fps=10, codec="mpeg4")
    return root


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """One 40 s clip: its flow keeps the decode/flow thread and its worker pool busy."""
    root = tmp_path_factory.mktemp("long")
    base = np.random.default_rng(9).integers(0, 256, (12, 40, 3)).astype(np.uint8)
    base = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)
    write_video(root / "long.mp4", lambda i: np.ascontiguousarray(base[:, 2 * i % 150 :][:, :128]),
                num_frames=400, fps=10, codec="mpeg4")
    return root


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    for k in range(N_FEATURES):
        np.save(root / f"f{k:02d}.npy", rng.standard_normal((64, DEMO_DIM)).astype(np.float32))
    return root


# Ctrl-C as from a terminal: a test run started in the background (``cmd &``, nohup) passes
# SIGINT on as *ignored*, and Python then installs no KeyboardInterrupt handler, so the child
# would rightly ignore the signal these tests send. The launcher puts Python's handler back.
_LAUNCH = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "sys.argv[0] = 'tal'; runpy.run_module('tal_pipeline', run_name='__main__')")


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _LAUNCH, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """Poll until ``ready()``; fail if the process ends first (the batch was too short)."""
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before it could be stopped: "
                        f"{proc.communicate()[1]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the first output never appeared")
        time.sleep(0.01)


def _stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns


def _steps(vid: str) -> int:
    """Feature steps of the clip ``vid`` (v0: 10 frames, the others 80; 4 frames a step)."""
    return 3 if vid == "v0" else 20


def _complete_features(out: Path) -> dict[str, tuple]:
    """Every visible file is whole: a ``.json`` (the marker) has its loadable, matching ``.npy``;
    a lone ``.npy`` loads too (atomic write). Returns {id: stamps} of the complete pairs."""
    pairs = {}
    for p in out.iterdir():
        if p.name.startswith("."):
            continue
        if p.suffix == ".json":
            arr, meta = load_features(p.with_suffix(".npy"))
            assert arr.shape == (meta.num_features, meta.dim) == (_steps(p.stem), 512), p
            assert is_complete(out, p.stem)
            pairs[p.stem] = (_stamp(p.with_suffix(".npy")), _stamp(p))
        elif p.suffix == ".npy":
            assert np.load(p, allow_pickle=False).shape == (_steps(p.stem), 512), p
        else:
            pytest.fail(f"unexpected output {p}")
    return pairs


def _rerun_extract(videos: Path, out: Path, finished: dict[str, tuple]) -> None:
    r = CliRunner().invoke(main, ["extract", str(videos), "-o", str(out), *FAST])
    assert r.exit_code == 0, r.output
    k = len(finished)
    assert f"{N_VIDEOS - k} done, {k} skipped, 0 failed -> " in r.stderr
    after = _complete_features(out)
    assert sorted(after) == [f"v{i}" for i in range(N_VIDEOS)]
    assert {vid: after[vid] for vid in finished} == finished  # not rewritten
    assert hidden(out) == []  # no temp, no lock left


def test_extract_killed_resumes_without_redoing(videos, tmp_path):
    out = tmp_path / "feats"
    proc = _start("extract", videos, "-o", out, *FAST)
    _wait_for(proc, lambda: (out / "v0.json").exists())
    proc.kill()  # SIGKILL: no cleanup at all
    proc.wait(30)
    finished = _complete_features(out)
    assert 1 <= len(finished) < N_VIDEOS, "killed after the batch ended: make the clips longer"
    for name in hidden(out):  # what the killed run left: its locks and temps, unfinished only
        target = temp_target(name)
        assert target is not None or name.endswith(".lock"), name
        assert (target or name[1:]).split(".")[0] not in finished, name
    _rerun_extract(videos, out, finished)


@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
def test_extract_stopped_by_signal_is_prompt_and_clean(videos, tmp_path, sig, status, word):
    out = tmp_path / "feats"
    proc = _start("extract", videos, "-o", out, *FAST)
    _wait_for(proc, lambda: (out / "v0.json").exists())
    proc.send_signal(sig)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == status, err
    assert f"tal: {word}" in err and "Traceback" not in err, err
    assert elapsed < PROMPT_S, f"took {elapsed:.1f} s to stop"
    finished = _complete_features(out)
    assert 1 <= len(finished) < N_VIDEOS, "stopped after the batch ended: make the clips longer"
    assert hidden(out) == []  # it removed its temps and lock on the way out
    if sig == signal.SIGINT:  # (the same state after SIGTERM)
        _rerun_extract(videos, out, finished)


def test_ctrl_c_mid_video_stops_at_once(long_video, tmp_path):
    """Ctrl-C while the flow of a chunk is being computed: no wait for the worker threads."""
    out = tmp_path / "feats"
    proc = _start("extract", long_video, "-o", out, "--weights", "seeded", "--size", "64",
                  "--streams", "flow", "--flow", "opencv", "--no-progress")
    _wait_for(proc, lambda: (out / ".long.lock").exists())
    time.sleep(1.5)
    assert proc.poll() is None, "the clip was done already: make it longer"
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130 and "tal: interrupted" in err and "Traceback" not in err, err
    assert elapsed < PROMPT_S, f"took {elapsed:.1f} s to stop"
    assert list(out.iterdir()) == []  # no output, no temp, no lock


@pytest.mark.parametrize("stop", ["kill", "interrupt"])
def test_merged_detect_resumes_from_its_parts(features, tmp_path, stop):
    x = tmp_path / "out.json"
    parts = tmp_path / "out.json.parts"
    proc = _start("detect", features, "-o", x, *DETECT)
    _wait_for(proc, lambda: parts.is_dir() and any(parts.glob("f*.json")))
    if stop == "kill":
        proc.kill()
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if stop == "interrupt":
        assert proc.returncode == 130 and "tal: interrupted" in err and "Traceback" not in err, err
        assert hidden(tmp_path) == []
    assert not x.exists(), "stopped after the batch ended: use more feature files"
    done = {}
    for p in parts.glob("*.json"):  # whole parts only
        res = load_results(p)
        assert list(res.detections) == [p.stem]
        done[p.stem] = json.loads(p.read_text())["results"][p.stem]
    assert 1 <= len(done) < N_FEATURES

    r = CliRunner().invoke(main, ["detect", str(features), "-o", str(x), *DETECT])
    assert r.exit_code == 0, r.output
    assert f"{N_FEATURES - len(done)} done, {len(done)} skipped, 0 failed" in r.stderr
    merged = json.loads(x.read_text())["results"]
    assert sorted(merged) == [f"f{k:02d}" for k in range(N_FEATURES)]
    assert {vid: merged[vid] for vid in done} == done
    assert not parts.exists() and hidden(tmp_path) == []
