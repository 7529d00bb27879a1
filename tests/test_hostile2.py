"""Hostile inputs, second round (issue #18): every case with its own input, made here.

Stale resume and colliding outputs, valid files that were refused, tracebacks, long names,
several video streams, list files, messages, leftovers, and the exit status of every verb.
Detection runs on small random feature files (``--features``): the resume and output logic is
the same as for raw video, in a fraction of the time.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from badfiles import (
    CONTAINERS,
    damaged_middle,
    unprivileged_prefix,
    write_clip,
    write_multi_stream,
    write_offset_clip,
)
from batchrun import demo_dim, plain_model
from click.testing import CliRunner
from videogen import read_code

from tal_pipeline import fsutil
from tal_pipeline.batch import run_batch
from tal_pipeline.checkpoint import read_checkpoint, save_checkpoint
from tal_pipeline.cli import main
from tal_pipeline.decode import decode_video, probe_video
from tal_pipeline.errors import InputError, VideoDecodeError
from tal_pipeline.inputs import collect_inputs
from tal_pipeline.locks import lock_path
from tal_pipeline.results import load_annotations, load_results

FEATS = ["--features", "--model", str(plain_model()), "--fps", "10", "--feature-stride", "4", "--no-progress"]
DEMO_DIM = demo_dim()  # D of the feature files the demo model takes


def _tal(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _feats(folder: Path, names=("f0", "f1"), rows: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        np.save(folder / f"{n}.npy", rng.standard_normal((rows, DEMO_DIM)).astype(np.float32))
    return folder


def _clip(tmp_path: Path) -> Path:
    """A 1.2 s h264 clip in ``tmp_path/v/``."""
    (tmp_path / "v").mkdir(exist_ok=True)
    return write_clip(tmp_path / "v" / "clip.mp4", 12, 10)


def _one_error(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("tal: ")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """The batch tests' checkpoint with one training note changed: same head, another checksum."""
    ckpt = read_checkpoint(plain_model())
    ckpt["training"] = {**ckpt["training"], "note": "another model"}
    return save_checkpoint(tmp_path_factory.mktemp("model") / "other.pt", ckpt)


# ----------------------------------------------------------------------------- 1. resume


def test_merged_output_from_other_settings_is_refused_before_any_work(tmp_path):
    feats = _feats(tmp_path / "feats")
    x = tmp_path / "r.json"
    assert _tal("detect", feats, *FEATS, "-o", x).exit_code == 0
    before = x.read_bytes()
    prov = json.loads(before)["external_data"]["provenance"]
    assert len(prov["model_sha256"]) == 64 and prov["postprocess"]["min_score"] == 0.001
    r = _tal("detect", feats, *FEATS, "-o", x, "--min-score", "0.5")
    assert r.exit_code == 1
    line = _one_error(r)
    assert "postprocess.min_score: 0.001 -> 0.5" in line and "--overwrite" in line
    assert x.read_bytes() == before and not (tmp_path / "r.json.parts").exists()
    r = _tal("detect", feats, *FEATS, "-o", x, "--min-score", "0.5", "--overwrite")
    assert r.exit_code == 0, r.output
    assert load_results(x).external_data["provenance"]["postprocess"]["min_score"] == 0.5


def test_merged_file_never_mixes_models(tmp_path, other_model):
    feats = _feats(tmp_path / "feats", ("a", "b"))
    x = tmp_path / "x.json"
    assert _tal("detect", feats / "a.npy", *FEATS, "-o", x).exit_code == 0
    r = _tal("detect", feats / "b.npy", *FEATS, "-o", x, "--model", other_model)
    assert r.exit_code == 1 and "model_sha256" in _one_error(r)
    assert set(load_results(x).detections) == {"a"}  # b never joined a's model's file


def test_per_video_results_from_another_model_are_refused_by_name(tmp_path, other_model):
    feats = _feats(tmp_path / "feats")
    out = tmp_path / "out"
    assert _tal("detect", feats, *FEATS, "-o", f"{out}/").exit_code == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    r = _tal("detect", feats, *FEATS, "-o", f"{out}/", "--model", other_model)
    assert r.exit_code == 1 and "0 done, 0 skipped, 2 failed" in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("tal: ")]
    assert len(lines) == 2 and all("model_sha256" in ln and "--overwrite" in ln for ln in lines)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("f*.json")} == stamps  # untouched
    r = _tal("detect", feats, *FEATS, "-o", f"{out}/", "--model", other_model, "--overwrite")
    assert r.exit_code == 0 and "2 done" in r.stderr


def test_a_truncated_result_is_not_done(tmp_path):
    feats = _feats(tmp_path / "feats")
    out = tmp_path / "out"
    assert _tal("detect", feats, *FEATS, "-o", f"{out}/").exit_code == 0
    whole = (out / "f1.json").read_bytes()
    (out / "f1.json").write_bytes(whole[: len(whole) // 2])
    r = _tal("detect", feats, *FEATS, "-o", f"{out}/")
    assert r.exit_code == 0 and "1 done, 1 skipped, 0 failed" in r.stderr
    assert load_results(out / "f1.json").detections.keys() == {"f1"}


def test_extract_resume_compares_the_frame_size(tmp_path):
    clip = _clip(tmp_path)
    fast = ["--weights", "seeded", "--streams", "rgb", "--chunk-frames", "16", "--no-progress"]
    out = tmp_path / "feats"
    assert _tal("extract", clip, "-o", out, *fast, "--size", "32").exit_code == 0
    r = _tal("extract", clip, "-o", out, *fast, "--size", "48")
    assert r.exit_code == 1 and "size: 32 -> 48" in _one_error(r) and "--overwrite" in r.stderr


# ----------------------------------------------------------------------------- 2. collisions


def test_detections_never_go_into_a_features_folder(tmp_path):
    feats = _feats(tmp_path / "feats")
    for name in ("f0", "f1"):  # feature metas, as tal extract writes them
        (feats / f"{name}.json").write_text(json.dumps({
            "format": "tal-pipeline/features-1", "video": name, "duration": 9.6, "fps": 10.0,
            "feature_stride": 4, "t0": 0.2, "step": 0.4, "dim": 512, "num_features": 24,
            "backbone": "r3d_18", "weights": "unknown", "streams": ["rgb"]}))
    before = {p.name: p.read_bytes() for p in feats.iterdir()}
    for extra in ([], ["--overwrite"]):
        r = _tal("detect", feats, "--features", "--model", str(plain_model()), "--no-progress", "-o", f"{feats}/",
                 *extra)
        assert r.exit_code == 1 and "feature files" in _one_error(r)
    assert {p.name: p.read_bytes() for p in feats.iterdir()} == before


def test_features_never_replace_detections(tmp_path):
    feats = _feats(tmp_path / "feats", ("clip",))
    out = tmp_path / "out"
    assert _tal("detect", feats, *FEATS, "-o", f"{out}/").exit_code == 0
    results = (out / "clip.json").read_bytes()
    clip = _clip(tmp_path)
    r = _tal("extract", clip, "-o", out, "--weights", "seeded", "--streams", "rgb", "--size", "32",
             "--no-progress")
    # refused before any work: the folder holds detections (locks.claim_folder, commands/extract.py)
    assert r.exit_code == 1 and "the folder holds detections (clip.json, from tal detect)" in r.stderr
    assert (out / "clip.json").read_bytes() == results and not (out / "clip.npy").exists()


# ----------------------------------------------------------------------------- 3. valid files


def test_a_start_offset_is_honoured(tmp_path):
    path = write_offset_clip(tmp_path / "late.mkv", start_s=5.0, num_frames=30, fps=10)
    assert probe_video(path).duration == pytest.approx(3.0)
    frames = np.concatenate([c.frames for c in decode_video(path)])
    assert len(frames) == 30
    np.testing.assert_array_equal(read_code(frames), np.arange(30))


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_damaged_middle_is_processed_with_a_warning(tmp_path, container, caplog):
    clip = write_clip(tmp_path / f"clip.{container}", 180, 30, gop=15, **CONTAINERS[container])
    bad = damaged_middle(clip, tmp_path / f"bad.{container}", at=0.8, fraction=0.02)
    with caplog.at_level(logging.WARNING, logger="tal_pipeline.decode"):
        n = sum(len(c) for c in decode_video(bad))
    assert 30 <= n <= 60  # at least half of the 6 s
    assert caplog.records  # the damage is named


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_mostly_lost_file_is_refused_in_every_container(tmp_path, container):
    clip = write_clip(tmp_path / f"clip.{container}", 90, 30, **CONTAINERS[container])
    bad = damaged_middle(clip, tmp_path / f"bad.{container}", at=0.4, fraction=0.2)
    with pytest.raises(VideoDecodeError, match=r"damaged or truncated: .* at least 50 % must"):
        list(decode_video(bad))


# ----------------------------------------------------------------------------- 4. one line, never a traceback


def test_existing_file_as_output_folder(tmp_path):
    feats = _feats(tmp_path / "feats")
    (tmp_path / "file").write_text("x")
    r = _tal("detect", feats, *FEATS, "-o", f"{tmp_path / 'file'}/")
    assert r.exit_code == 1 and "exists and is not a folder" in _one_error(r)
    clip = _clip(tmp_path)
    r = _tal("extract", clip, "-o", f"{tmp_path / 'file'}/", "--weights", "seeded")
    assert r.exit_code == 1 and "not a folder" in _one_error(r)


@pytest.mark.parametrize("device, status, word", [("tpu", 2, "not a device"), ("cuda:x", 2, "not a device")])
def test_device_names_are_checked_first(tmp_path, device, status, word):
    feats = _feats(tmp_path / "feats")
    for verb in (["detect", feats, *FEATS, "-o", tmp_path / "x.json"], ["extract", feats, "-o", tmp_path / "o"]):
        r = _tal(*verb, "--device", device)
        assert r.exit_code == status and word in _one_error(r)
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "o").exists()


def test_cuda_without_cuda_is_exit_1(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    feats = _feats(tmp_path / "feats")
    r = _tal("detect", feats, *FEATS, "-o", tmp_path / "x.json", "--device", "cuda")
    assert r.exit_code == 1 and "CUDA is not available" in _one_error(r)


def test_full_disk_is_one_line_per_video(tmp_path, monkeypatch):
    """ENOSPC where a network file system reports it (at fsync); the real thing below."""

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    feats = _feats(tmp_path / "feats")
    monkeypatch.setattr(fsutil.os, "fsync", full)
    r = _tal("detect", feats, *FEATS, "-o", tmp_path / "x.json")
    assert r.exit_code == 1 and "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("tal: ")]
    assert [ln.split(": ")[1] for ln in lines[:2]] == [str(feats / "f0.npy"), str(feats / "f1.npy")]
    assert all("no space left on device" in ln for ln in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats"]  # no x.json, parts, temps


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, check=False)
    return r.returncode == 0


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (root only; skipped elsewhere), unmounted after the test."""
    where = tmp_path / "tiny"
    if not _mount_tmpfs(where, "64k"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tal_pipeline", *map(str, args)], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.slow
def test_real_full_disk_and_read_only_folder(tmp_path, tiny_fs):
    feats = _feats(tmp_path / "feats")
    (tiny_fs / "fill").write_bytes(bytes(62 * 1024))
    for out in (tiny_fs / "x.json", f"{tiny_fs / 'd'}/"):
        r = _cli("detect", feats, *FEATS, "-o", out)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("no space left on device") >= 2
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["fill"]  # nothing left behind
    (tiny_fs / "fill").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    clip = _clip(tmp_path)
    for verb in (["detect", feats, *FEATS, "-o", tiny_fs / "x.json"],
                 ["detect", feats, *FEATS, "-o", f"{tiny_fs / 'd'}/"],
                 ["extract", clip, "-o", tiny_fs / "d", "--weights", "seeded"]):
        r = _cli(*verb)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("tal: ")]
        assert "read-only file system" in line and line.startswith("tal: error: cannot write the output")


def test_read_only_folder_without_root(tmp_path):
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("root without a way to drop CAP_DAC_OVERRIDE")
    feats = _feats(tmp_path / "feats")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        r = subprocess.run([*prefix, sys.executable, "-m", "tal_pipeline", "detect", str(feats), *FEATS,
                            "-o", str(locked / "x.json")], capture_output=True, text=True, timeout=120,
                           check=False)
    finally:
        locked.chmod(0o755)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "permission denied" in r.stderr and list(locked.iterdir()) == []


# ----------------------------------------------------------------------------- 5. long names


def test_temp_and_lock_names_fit_and_too_long_outputs_are_refused(tmp_path):
    stem = "v" * 245  # <stem>.json is 250 bytes: fits; its temp and lock names must too
    feats = _feats(tmp_path / "feats", (stem, "w" * 251))  # 251: <stem>.json would be 256
    out = tmp_path / "out"
    r = _tal("detect", feats, *FEATS, "-o", f"{out}/")
    assert r.exit_code == 1 and "1 done, 0 skipped, 1 failed" in r.stderr
    assert "over the 255-byte limit" in _one_error(r)
    assert (out / f"{stem}.json").is_file()
    name = stem + ".json"
    prefix = fsutil.temp_prefix(name)
    assert len(prefix) + 8 + len(".part") <= 255 and fsutil.is_temp_of(prefix + "abcd1234.part", name)
    (out / (prefix + "abcd1234.part")).write_text("left by a killed run")
    assert fsutil.remove_stale_temps(out, [name]) == 1
    assert len(lock_path(out, stem).name) <= 255


# ----------------------------------------------------------------------------- 6. several video streams


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_a_still_picture_track_is_not_the_video(tmp_path, ext):
    path = write_multi_stream(tmp_path / f"cover.{ext}", (30,), still_first=True)
    info = probe_video(path)
    assert info.codec == "h264" and info.duration == pytest.approx(3.0)
    frames = np.concatenate([c.frames for c in decode_video(path)])
    np.testing.assert_array_equal(read_code(frames), np.arange(30))


@pytest.mark.parametrize("ext, lengths", [("mkv", (30, 80)), ("mp4", (80, 30))])
def test_frames_and_duration_come_from_the_same_stream(tmp_path, ext, lengths):
    path = write_multi_stream(tmp_path / f"two.{ext}", lengths)
    info = probe_video(path)
    frames = np.concatenate([c.frames for c in decode_video(path)])
    assert info.duration == pytest.approx(len(frames) / 10)  # the stream decoded is the one timed
    assert len(frames) == lengths[0]  # the first real video stream
    np.testing.assert_array_equal(read_code(frames), np.arange(lengths[0]))


# ----------------------------------------------------------------------------- 7. list files


def test_list_files(tmp_path):
    feats = _feats(tmp_path / "feats")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufefffeats/f0.npy\nfeats/f1.npy\n".encode())
    assert collect_inputs([bom]) == [feats / "f0.npy", feats / "f1.npy"]
    gaps = tmp_path / "gaps.txt"
    gaps.write_text("feats/gone.npy\nfeats/f0.npy\nfeats/lost.npy\n")
    r = _tal("detect", gaps, *FEATS, "-o", f"{tmp_path / 'out'}/")
    assert r.exit_code == 1 and "1 done, 0 skipped, 2 failed" in r.stderr
    named = [ln for ln in r.stderr.splitlines() if ln.startswith("tal: ")]
    assert [ln.split(": ")[1].rsplit("/", 1)[-1] for ln in named] == ["gone.npy", "lost.npy"]
    assert all("no such file or folder (listed in" in ln for ln in named)
    me = tmp_path / "me.txt"
    me.write_text("me.txt\nfeats/f1.npy\n")
    problems: list = []
    assert collect_inputs([me], extensions={".npy"}, problems=problems) == [feats / "f1.npy"]
    assert [(p.name, "names itself" in c) for p, c in problems] == [("me.txt", True)]


def test_a_list_without_txt_is_refused_with_the_reason(tmp_path):
    """A list of videos named ``videos.lst`` is opened as a video: the one error line says
    that lists need ``.txt``; a text file that lists nothing gets no such hint."""
    from tal_pipeline.decode import open_video

    (tmp_path / "a.mp4").write_bytes(b"\0" * 64)
    lst = tmp_path / "videos.lst"
    lst.write_text("a.mp4\nb.mp4\n")
    with pytest.raises(VideoDecodeError, match=r"videos\.lst: not a readable video file .*"
                                               r"lists need the \.txt extension"):
        open_video(lst)
    prose = tmp_path / "notes.lst"
    prose.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError) as info:
        open_video(prose)
    assert "not a readable video" in str(info.value) and ".txt" not in str(info.value)


def test_empty_folder_and_list_are_named(tmp_path):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "empty.txt").write_text("# no videos yet\n")
    for what in ("nothing", "empty.txt"):
        r = _tal("detect", tmp_path / what, "-o", tmp_path / "x.json")
        assert r.exit_code == 1 and str(tmp_path / what) in _one_error(r)


# ----------------------------------------------------------------------------- 8. messages


def test_huge_y4m_header_names_the_size_limit(tmp_path):
    path = tmp_path / "big.y4m"
    path.write_bytes(b"YUV4MPEG2 W30000 H30000 F30:1 C420jpeg\nFRAME\n" + bytes(1000))
    with pytest.raises(VideoDecodeError, match="picture size 30000x30000 exceeds the limit"):
        probe_video(path)


class Opaque:
    """Any Python object: a checkpoint holding one must never be unpickled."""


def test_foreign_model_files_are_refused_in_our_words(tmp_path):
    import pickle

    import torch

    (tmp_path / "text.pt").write_text("not a model\n")
    with (tmp_path / "raw.pt").open("wb") as f:
        pickle.dump({"a": 1}, f, protocol=4)
    torch.save({"format": "tal-pipeline/head", "x": Opaque()}, tmp_path / "objects.pt")
    feats = _feats(tmp_path / "feats")
    for name, word in (("text.pt", "not a torch.save file"), ("raw.pt", "not a torch.save file"),
                       ("objects.pt", "never loaded")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = _tal("detect", feats, *FEATS, "-o", tmp_path / "x.json", "--model", tmp_path / name)
        assert r.exit_code == 1 and word in _one_error(r)
        assert len(r.stderr.strip().splitlines()) == 1 and "weights_only" not in r.stderr
        assert not [w for w in caught if "pickle" in str(w.message)], caught  # torch's warning


def test_pickled_npy_and_empty_features(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    np.save(feats / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(feats / "empty.npy", np.zeros((0, 512), np.float32))
    r = _tal("detect", feats, *FEATS, "-o", tmp_path / "x.json")
    assert r.exit_code == 1 and "allow_pickle" not in r.output
    assert "Python objects (a pickle), which are never loaded" in r.stderr
    assert "no features (shape (0, 512))" in r.stderr and "0 segments" not in r.output
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x.json.parts").exists()


def test_nan_in_annotations_is_named_as_such():
    ann = {"database": {"v": {"duration": 9.0, "annotations": [{"label": "a", "segment": [float("nan"), 1.0]}]}}}
    with pytest.raises(InputError, match=r"two finite numbers of seconds, got \[NaN, 1.0\]"):
        load_annotations(ann)


# ----------------------------------------------------------------------------- 9. leftovers


def test_a_batch_that_all_failed_leaves_only_its_failure_list(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    (feats / "a.npy").write_text("not an array")
    (feats / "b.npy").write_bytes(b"\x93NUMPY garbage")
    r = _tal("detect", feats, *FEATS, "-o", tmp_path / "out" / "x.json")
    assert r.exit_code == 1 and "allow_pickle" not in r.output  # numpy's advice never shown
    assert "it does not start with the NumPy header" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.json.failures.txt"]
    r = _tal("detect", feats, *FEATS, "-o", f"{tmp_path / 'per'}/")
    assert sorted(p.name for p in (tmp_path / "per").iterdir()) == ["failures.txt"]


def test_run_batch_refuses_an_output_name_before_asking_is_done(tmp_path):
    asked = []
    report = run_batch({"x" * 300: tmp_path / "v.mp4"}, lambda vid, p: None,
                       lambda vid, p: asked.append(vid), progress=False,
                       outputs_fn=lambda vid: [tmp_path / f"{vid}.json"])
    assert not asked and "over the 255-byte limit" in report.failed[0][1]


# ----------------------------------------------------------------------------- exit status


@pytest.mark.parametrize("args", [["--shard", "3/2"], ["--top-k", "0"], ["--min-score", "2"],
                                  ["--streams", "depth"], ["--device", "tpu"]])
def test_option_values_no_machine_accepts_exit_2(tmp_path, args):
    feats = _feats(tmp_path / "feats")
    verb = ["extract", feats, "-o", tmp_path / "o"] if args[0] == "--streams" else ["detect", feats, *FEATS, "-o", tmp_path / "x.json"]
    r = _tal(*verb, *args)
    assert r.exit_code == 2 and args[0] in _one_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats"]


@pytest.mark.parametrize("verb", ["detect", "extract", "train", "eval", "plot", "report", "convert"])
def test_every_verb_exits_2_on_a_usage_error_and_1_on_a_missing_input(tmp_path, verb):
    from tal_pipeline.cli import VERBS

    if verb not in VERBS:
        pytest.skip(f"no verb {verb} here")
    r = _tal(verb, "--no-such-option")
    assert r.exit_code == 2
    missing = tmp_path / "missing.json"
    args = {"detect": [missing, "-o", tmp_path / "o.json"], "extract": [missing, "-o", tmp_path / "o"],
            "train": [missing, "--annotations", missing, "-o", tmp_path / "m.pt"],
            "eval": [missing, "--annotations", missing], "plot": [missing, "-o", tmp_path / "p.png"],
            "report": [missing, "-o", tmp_path / "r.html"], "convert": [missing, "-o", tmp_path / "c.csv"]}
    r = _tal(verb, *args[verb])
    assert r.exit_code in (1, 2) and "Traceback" not in r.output  # click checks some paths itself
    assert ("missing.json" in r.output) or ("no such file" in r.output.lower())


# ----------------------------------------------------------------------------- fuzzer findings


@pytest.mark.timeout(30)
def test_a_corrupt_sample_time_does_not_make_hours_of_one_picture(tmp_path):
    """Found by the fuzzer: one flipped bit in an mp4's sample table (stts) put the second frame
    of a 1 s clip at 27 h; decoding made 1.9 M copies of the first picture (minutes)."""
    import struct

    from badfiles import _mp4_boxes

    clip = write_clip(tmp_path / "clip.mp4", 12, 12)
    data = bytearray(clip.read_bytes())
    (at,) = [at for kind, at, _ in _mp4_boxes(data) if kind == b"stts"]
    data[at + 16 : at + 24] = struct.pack(">II", 1, 1191183360)  # 1 sample: 96,939 s at 1/12288
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    frames = sum(len(c) for c in decode_video(bad))
    assert frames <= 20  # the header's 1 s (and a little), not hours
