"""`tal extract`: a folder with a corrupt file, resume, shards, duplicate ids, offline weights."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from videogen import write_video

from tal_pipeline.cli import main
from tal_pipeline.features import onednn_runs_bf16

FAST = ["--weights", "seeded", "--size", "32", "--chunk-frames", "16", "--no-progress"]


def _frames(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (12, 40, 3)).astype(np.uint8)
    base = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)  # (96, 320, 3) blocks
    return [np.ascontiguousarray(base[:, 2 * i : 2 * i + 128]) for i in range(n)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder: two good 0.6 s clips (one in a subfolder) and a corrupt .mp4."""
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    write_video(root / "alpha.mp4", _frames(6, 0), fps=10, codec="mpeg4")
    write_video(root / "sub" / "beta.mp4", _frames(6, 1), fps=10, codec="mpeg4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return root


def run(*args):
    return CliRunner().invoke(main, ["extract", *map(str, args)])


def test_corrupt_file_fails_alone_then_resume(videos, tmp_path):
    out = tmp_path / "feats"
    res = run(videos, "-o", out, *FAST)
    assert res.exit_code == 1, res.output
    assert f"tal: {videos / 'broken.mp4'}: " in res.stderr
    assert "2 done, 0 skipped, 1 failed" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "alpha.json", "alpha.npy", "beta.json", "beta.npy", "failures.txt"
    ]  # nothing for the broken file, no temp files left
    assert (out / "failures.txt").read_text().startswith(f"{videos / 'broken.mp4'}\t")
    meta = json.loads((out / "alpha.json").read_text())
    arr = np.load(out / "alpha.npy")
    assert arr.shape == (2, 1024) == (meta["num_features"], meta["dim"])  # 6 frames -> 2 steps
    assert meta["fps"] == 10.0 and meta["feature_stride"] == 4 and meta["streams"] == ["rgb", "flow"]

    stamp = (out / "alpha.npy").stat().st_mtime_ns
    (out / "beta.json").unlink()  # an interrupted write: the .json is the completion marker
    res = run(videos / "alpha.mp4", videos / "sub", "-o", out, *FAST)
    assert res.exit_code == 0, res.output
    assert "1 done, 1 skipped, 0 failed" in res.stderr
    assert (out / "alpha.npy").stat().st_mtime_ns == stamp
    assert (out / "beta.json").exists()

    res = run(videos / "alpha.mp4", "-o", out, *FAST, "--streams", "rgb")  # other settings
    assert res.exit_code == 1 and "--overwrite" in res.stderr
    res = run(videos / "alpha.mp4", "-o", out, *FAST, "--streams", "rgb", "--overwrite")
    assert res.exit_code == 0 and np.load(out / "alpha.npy").shape == (2, 512)


def test_resume_refuses_features_of_another_precision(videos, tmp_path):
    out = tmp_path / "feats"
    res = run(videos / "alpha.mp4", "-o", out, *FAST, "--streams", "rgb", "--precision", "fp32")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "alpha.json").read_text())["extra"]["precision"] == "fp32"
    # another precision this CPU accepts (an AVX2-only CPU refuses bf16 before looking at the folder)
    other = "bf16" if onednn_runs_bf16() else "fp16"
    res = run(videos / "alpha.mp4", "-o", out, *FAST, "--streams", "rgb", "--precision", other)
    assert res.exit_code == 1 and "--overwrite" in res.stderr and "precision" in res.stderr
    res = run(videos / "alpha.mp4", "-o", out, *FAST, "--streams", "rgb", "--precision", "fp32")
    assert res.exit_code == 0 and "0 done, 1 skipped" in res.stderr


def test_resume_refuses_flow_features_of_an_older_flow_version(videos, tmp_path):
    """Features from before the torch TV-L1's per-warp gain (meta without ``flow_version``)
    are not silently mixed with new ones: resume refuses them by name, ``--overwrite`` redoes
    them, and the new meta records the version."""
    from tal_pipeline.flow import FLOW_VERSIONS

    out = tmp_path / "feats"
    args = [videos / "alpha.mp4", "-o", out, *FAST, "--streams", "flow", "--precision", "fp32"]
    assert run(*args).exit_code == 0
    meta_path = out / "alpha.json"
    meta = json.loads(meta_path.read_text())
    assert meta["extra"]["flow_version"] == FLOW_VERSIONS["torch"] == 2
    assert run(*args).exit_code == 0  # same version: skipped
    del meta["extra"]["flow_version"]  # as written before the key existed (version 1)
    meta_path.write_text(json.dumps(meta))
    res = run(*args)
    assert res.exit_code == 1 and "--overwrite" in res.stderr and "flow_version" in res.stderr
    res = run(*args, "--overwrite")
    assert res.exit_code == 0 and json.loads(meta_path.read_text())["extra"]["flow_version"] == 2


def test_shards_cover_each_video_once(videos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{videos / 'alpha.mp4'}\n{videos / 'sub' / 'beta.mp4'}\n")
    made = []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        res = run(listing, "-o", out, *FAST, "--streams", "rgb", "--shard", f"{i}/2")
        assert res.exit_code == 0, res.output
        made += sorted(p.stem for p in out.glob("*.npy"))
    assert sorted(made) == ["alpha", "beta"]


def test_duplicate_ids_refused_before_any_work(videos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "alpha.mkv").write_bytes(b"x")
    out = tmp_path / "feats"
    res = run(videos / "alpha.mp4", other, "-o", out, *FAST)
    assert res.exit_code == 1
    assert "alpha" in res.stderr and "more than one input" in res.stderr
    assert not out.exists()


def test_offline_kinetics_is_one_clear_line(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    res = run(videos / "alpha.mp4", "-o", tmp_path / "o", "--no-progress")
    assert res.exit_code == 1  # the machine, not the command line (exit status table)
    assert not (tmp_path / "o").exists()  # no empty output folder left
    line = [x for x in res.stderr.splitlines() if x.startswith("tal: error:")]
    assert len(line) == 1 and "r3d_18-b3b3357e.pth" in line[0] and "--weights seeded" in line[0]
