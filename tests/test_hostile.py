"""Bad files in a batch: each is named with its cause, the good ones complete, nothing partial."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from videogen import write_audio, write_video

from tal_pipeline.batch import video_id
from tal_pipeline.cli import main

BAD = {
    "zero_bytes.mp4": lambda p, good: p.write_bytes(b""),
    "random_bytes.mp4": lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(20000)),
    "text.mp4": lambda p, good: p.write_text("this is not a video\n" * 50),
    "audio_only.mp4": lambda p, good: write_audio(p, seconds=1.0),
    "truncated.mp4": lambda p, good: p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3]),
}
GOOD_NAMES = ["plain.mp4", "with space ü $(x) ;.mp4"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(1)
    tex = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    frames = [np.roll(tex, 2 * i, axis=1)[:96, :128] for i in range(45)]  # 3 s at 15 fps, a pan
    good = write_video(d / GOOD_NAMES[0], frames, fps=15)
    shutil.copy(good, d / GOOD_NAMES[1])
    for name, make in BAD.items():
        make(d / name, good)
    return d


def _no_partial_files(out):
    left = [p for p in out.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]
    assert not left, left


@pytest.mark.parametrize("verb", ["extract", "detect"])
def test_batch_names_each_bad_file_and_completes_the_good_ones(folder, tmp_path, verb):
    out = tmp_path / "out"
    args = [verb, str(folder), "-o", str(out) + "/", "--no-progress"]
    if verb == "extract":
        args += ["--weights", "seeded", "--streams", "flow"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    for name in BAD:
        lines = [ln for ln in r.output.splitlines() if ln.startswith("tal: ") and name in ln]
        assert len(lines) == 1, (name, r.output)  # one line, naming the file and a cause
        assert len(lines[0]) > len(f"tal: {folder / name}: ") + 5
    failed = (out / "failures.txt").read_text()
    assert sorted(ln.split("\t")[0].rsplit(os.sep, 1)[-1] for ln in failed.splitlines()) == sorted(BAD)
    suffix = ".npy" if verb == "extract" else ".json"
    done = sorted(p.name for p in out.iterdir() if p.suffix == suffix)
    assert done == sorted(video_id(n) + suffix for n in GOOD_NAMES)
    assert video_id(GOOD_NAMES[1]) == "with_space_____x___"  # spaces, unicode, $();
    _no_partial_files(out)
    # rerun: the good ones are skipped, the bad ones fail again, same exit status
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and f"{len(GOOD_NAMES)} skipped" in r.output


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
