"""Bad inputs in a batch: each is named with its cause on one line, the good ones complete,
nothing partial, no traceback without --verbose.

The batch runs ``python -m tal_pipeline`` in a subprocess so that file permissions apply: as
root, under ``setpriv`` without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (``badfiles.
unprivileged_prefix``); the unreadable file and folder are left out only where no such prefix
works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from badfiles import make_bad, unprivileged_prefix, write_clip
from click.testing import CliRunner
from videogen import write_video

from tal_pipeline.cli import main
from tal_pipeline.inputs import video_id

BAD = {  # file name in the batch folder -> badfiles kind
    "zero_bytes.mp4": "empty",
    "random_bytes.mp4": "random",
    "text.mp4": "text",
    "audio_only.mp4": "audio",
    "truncated_10.mp4": "truncated_10",
    "truncated_50.mp4": "truncated_50",
    "truncated_90.mp4": "truncated_90",
    "truncated_header.mp4": "truncated_header",
    "no_index.mp4": "no_index",
    "no_frames.mp4": "no_frames",
    "one_frame.mp4": "one_frame",
    "short.mp4": "short",
    "huge_picture.avi": "huge_area_avi",
    "huge_duration.mp4": "huge_duration_mp4",
    "huge_duration_mkv.mkv": "huge_duration_mkv",
    "huge_duration_avi.avi": "huge_duration_avi",
    "broken_link.mp4": "broken_link",
    "link_loop.mp4": "link_loop",  # and link_loop_b.mp4, its other half
    "fifo.mp4": "fifo",
    'bad "name" ü $(touch x) ;`id` &.mp4': "text",
}
PERMISSION_BAD = {"unreadable.mp4": "unreadable"}
GOOD_NAMES = ["plain.mp4", "with space ü $(x) ;.mp4"]
PREFIX = unprivileged_prefix()  # None: permissions cannot be made to apply here


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """(folder, {bad file: cause word}, {folder entry: cause word})"""
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(1)
    tex = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    frames = [np.roll(tex, 2 * i, axis=1)[:96, :128] for i in range(23)]  # 1.5 s at 15 fps, a pan
    good = write_video(d / GOOD_NAMES[0], frames, fps=15)
    shutil.copy(good, d / GOOD_NAMES[1])
    clip = write_clip(tmp_path_factory.mktemp("src") / "clip.mp4")  # 3 s, moov at the end
    bad = {}
    for name, kind in {**BAD, **(PERMISSION_BAD if PREFIX is not None else {})}.items():
        path, word = make_bad(kind, d, clip, name)
        bad[path.name] = word
    bad["link_loop_b.mp4"] = bad["link_loop.mp4"]
    mkv = write_clip(tmp_path_factory.mktemp("src_mkv") / "clip.mkv").read_bytes()
    (d / "cut_after_index.mkv").write_bytes(mkv[: len(mkv) // 2])  # header intact, says 3 s
    bad["cut_after_index.mkv"] = "damaged or truncated: "  # under half decodes: refused
    (d / "empty folder").mkdir()  # no videos: contributes nothing, no error
    (d / "sub").mkdir()
    (d / "sub" / "up").symlink_to("..")  # a folder loop
    problems = {"sub/up": "symbolic link loop"}
    if PREFIX is not None:
        (d / "locked").mkdir()
        shutil.copy(good, d / "locked" / "hidden_good.mp4")
        (d / "locked").chmod(0)
        problems["locked"] = "cannot list the folder: permission denied"
    return d, bad, problems


def _tal(*args: str, prefix=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([*prefix, sys.executable, "-m", "tal_pipeline", *args], capture_output=True,
                          encoding="utf-8", env=env, timeout=240, check=False)


def _naming(stderr: str, path) -> list[str]:
    """stderr lines about ``path`` (not the closing list of failures, indented)."""
    return [ln for ln in stderr.splitlines() if f"{path}: " in ln and not ln.startswith("  ")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("verb", ["extract", "detect"])
def test_batch_names_each_bad_file_and_completes_the_good_ones(batch, tmp_path, verb):
    folder, bad, problems = batch
    out = tmp_path / "out"
    args = [verb, str(folder), "-o", str(out) + "/", "--no-progress"]
    if verb == "extract":
        args += ["--weights", "seeded", "--streams", "flow", "--size", "32", "--chunk-frames", "16"]
    r = _tal(*args, prefix=PREFIX or ())
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for name, word in bad.items():
        lines = _naming(r.stderr, folder / name)
        assert len(lines) == 1, (name, r.stderr)  # one line, naming the file and its cause
        assert lines[0].startswith(f"tal: {folder / name}: ") and word in lines[0], lines[0]
    for entry, word in problems.items():  # folders that cannot be walked: named once
        lines = _naming(r.stderr, folder / entry)
        assert len(lines) == 1 and word in lines[0], (entry, r.stderr)
        assert lines[0].startswith(f"tal: {folder / entry}: "), lines[0]
    assert "hidden_good" not in r.stderr and "empty folder" not in r.stderr
    failed = {ln.split("\t")[0] for ln in (out / "failures.txt").read_text().splitlines()}
    assert failed == {str(folder / n) for n in [*bad, *problems]}  # folder problems fail too
    suffix = ".npy" if verb == "extract" else ".json"
    done = sorted(p.name for p in out.iterdir() if p.suffix == suffix)
    assert done == sorted(video_id(n) + suffix for n in GOOD_NAMES)  # nothing for a bad file
    assert video_id(GOOD_NAMES[1]) == "with_space_____x___"  # spaces, unicode, $();
    left = [p.name for p in out.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]
    assert not left, left  # no partial or temporary file
    assert not (folder / "x").exists() and not (tmp_path / "x").exists()  # no name ran as shell
    # rerun with --verbose: the good ones are skipped, the bad ones fail again, now with tracebacks
    r = _tal("-v", *args, prefix=PREFIX or ())
    assert r.returncode == 1 and f"{len(GOOD_NAMES)} skipped" in r.stderr
    assert "Traceback" in r.stderr


def test_permissions_apply_in_the_batch_run():
    if PREFIX is None:
        pytest.skip("running as root without a way to drop CAP_DAC_OVERRIDE: no unreadable inputs")
    assert PREFIX == () or os.geteuid() == 0


def test_empty_folder_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["detect", str(tmp_path / "empty"), "-o", str(tmp_path / "o.json")])
    assert r.exit_code == 1
    assert r.output.strip().startswith("tal: error:") and "no inputs" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_missing_input_is_one_clear_error(tmp_path):
    r = CliRunner().invoke(main, ["extract", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert "nope.mp4" in r.output and "no such file" in r.output
