"""The `tal` command-line skeleton: version, verbs, one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tal_pipeline import __version__
from tal_pipeline.cli import VERBS, main


def test_version():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0
    assert __version__ in res.output


def test_help_lists_verbs():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for verb in ("detect", "extract", "train", "eval"):
        assert verb in res.output
    assert set(VERBS) >= {"detect", "extract", "train", "eval"}


def test_python_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "tal_pipeline", "--version"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_unknown_verb_is_usage_error():
    res = CliRunner().invoke(main, ["nope"])
    assert res.exit_code == 2
    assert "nope" in res.output


# ------------------------------------------------------------- one-line errors, exit statuses


def _tal(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error(r) -> str:
    """The run's only stderr line (``tal: error: ...``); no traceback, no usage block."""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tal: error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture
def feats(tmp_path):
    """Two meta-less feature files of the demo model's width, in ``tmp_path/feats``."""
    from batchrun import demo_dim

    folder = tmp_path / "feats"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(folder / f"{name}.npy", rng.standard_normal((24, demo_dim())).astype(np.float32))
    return folder


from batchrun import plain_model  # tests/ is on the path, as for the fixture above

FEATS = ["--features", "--model", str(plain_model()), "--fps", "10", "--feature-stride", "4", "--no-progress"]
TRAIN = ["train", "feats", "--annotations", "ann.json", "-o", "m.pt"]


@pytest.mark.parametrize("args, name", [
    (["detect", "f.npy", *FEATS, "-o", "x.json", "--format", "bogus"], "--format"),
    (["detect", "f.npy", *FEATS, "-o", "x.json", "--min-score", "nan"], "--min-score"),
    (["convert", "{results}", "-o", "x.json", "--format", "bogus"], "--format"),
    (["plot", "{results}", "-o", "x.png", "--min-score", "nan"], "--min-score"),
    (["report", "{results}", "-o", "x.html", "--min-score", "2"], "--min-score"),
    (["eval", "{results}", "-a", "{results}", "--tiou", "0:1:0"], "--tiou"),
    ([*TRAIN, "--epochs", "0"], "--epochs"),
    ([*TRAIN, "--batch-size", "0"], "--batch-size"),
    ([*TRAIN, "--window", "0"], "--window"),
    ([*TRAIN, "--lr", "nan"], "--lr"),
    ([*TRAIN, "--lr", "0"], "--lr"),
    ([*TRAIN, "--head", "nonsense=1"], "nonsense"),
    ([*TRAIN, "--head", "dropout=abc"], "dropout"),
    ([*TRAIN, "--device", "tpu"], "--device"),
    (["extract", "v.mp4", "-o", "out", "--device", "tpu:0"], "--device"),
    # Ray-only options without --ray: said, never ignored (item 15)
    (["extract", "v.mp4", "-o", "out", "--workers", "2"], "--workers"),
    (["detect", "f.npy", *FEATS, "-o", "x.json", "--gpus-per-worker", "1"], "--gpus-per-worker"),
])
def test_option_errors_exit_2_in_one_line_before_any_work(tmp_path, monkeypatch, args, name):
    """Every verb's bad option value: click's usage error from the option's own type or callback
    (commands/options.py), one line, exit status 2, no file read or made (the inputs named here
    do not even exist)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.json").write_text('{"results": {}}')
    r = _tal(*[a.format(results=tmp_path / "r.json") for a in args])  # the one file there
    assert r.exit_code == 2, r.output
    assert name in _one_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_head_values_the_model_refuses_are_usage_errors(tmp_path):
    from benchmarks.synthetic import SyntheticConfig, make_benchmark, write_benchmark

    tiny = SyntheticConfig(num_classes=2, dim=16, num_train=2, num_test=0, min_steps=40, max_steps=50,
                           max_instances=1, min_len=8, max_len=12, seed=1)
    feats, ann = write_benchmark(make_benchmark(tiny), tmp_path)
    r = _tal("train", feats, "--annotations", ann, "-o", tmp_path / "m.pt", "--head", "embed_kernel=2")
    assert r.exit_code == 2 and "embed_kernel" in _one_error(r)
    assert not (tmp_path / "m.pt").exists()


DEEP = "[" * 100_000 + "]" * 100_000  # nested deeper than Python's recursion limit


@pytest.mark.parametrize("verb", ["convert", "eval-pred", "eval-ann", "plot", "report"])
def test_deeply_nested_json_is_one_line(tmp_path, verb):
    deep, ok = tmp_path / "deep.json", tmp_path / "ann.json"
    deep.write_text(DEEP)
    ok.write_text('{"database": {"v": {"subset": "test", "duration": 5, "annotations": []}}}')
    args = {"convert": ["convert", deep, "-o", tmp_path / "x.vtt"],
            "eval-pred": ["eval", deep, "-a", ok],
            "eval-ann": ["eval", ok, "-a", deep],
            "plot": ["plot", deep, "-o", tmp_path / "x.png"],
            "report": ["report", deep, "-o", tmp_path / "x.html"]}[verb]
    r = _tal(*args)
    assert r.exit_code == 1, r.output
    assert f"{deep}: not valid JSON" in _one_error(r) and "nested too deeply" in r.stderr


def test_deeply_nested_feature_meta_fails_that_input_only(tmp_path, feats):
    (feats / "a.json").write_text(DEEP)
    r = _tal("detect", feats, *FEATS, "-o", tmp_path / "out/")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"tal: {feats / 'a.npy'}: {feats / 'a.json'}: not valid JSON (nested too deeply" in r.stderr
    assert "1 done, 0 skipped, 1 failed" in r.stderr  # b went on


@pytest.mark.parametrize("verb", ["detect", "extract"])
def test_an_empty_shard_says_so_and_exits_0(tmp_path, feats, verb):
    """More shards than inputs (a job array): the extra shards have nothing to do, which is not
    a failure; nothing is written."""
    out = tmp_path / "out"
    args = [feats, *FEATS, "-o", f"{out}/"] if verb == "detect" else [feats / "a.npy", "-o", out]
    r = _tal(verb, *args, "--shard", "2/3")
    assert r.exit_code == 0, r.output
    inputs = "2 inputs in all, for shards 0-1" if verb == "detect" else "1 input in all, for shards 0-0"
    assert r.stderr.splitlines() == [f"tal: shard 2/3 is empty: {inputs}; nothing to do"]
    assert not out.exists()
    r = _tal(verb, tmp_path / "nothing_here.txt", "-o", out)  # no inputs at all: still an error
    assert r.exit_code == 1


def test_single_video_summary_names_the_hidden_record(tmp_path, feats):
    """-o x.vtt: the low-scoring segments are in the hidden JSON record, not in x.vtt."""
    r = _tal("detect", feats / "a.npy", *FEATS, "-o", tmp_path / "x.vtt")
    assert r.exit_code == 0, r.output
    record = tmp_path / ".x.vtt.json"
    assert record.is_file()
    assert f"kept in the hidden JSON record {record} for ranked evaluation" in r.stdout
    assert "x.vtt for ranked" not in r.stdout.replace(str(record), "")
    r = _tal("detect", feats / "a.npy", *FEATS, "-o", tmp_path / "y.json")
    assert f"kept in {tmp_path / 'y.json'} for ranked evaluation" in r.stdout


def test_merged_subtitle_refusal_counts_the_inputs(tmp_path, feats):
    r = _tal("detect", feats, *FEATS, "-o", tmp_path / "x.vtt")
    assert r.exit_code == 2 and "this run has 2 inputs; use -o DIR/" in _one_error(r)
    assert _tal("detect", feats / "a.npy", *FEATS, "-o", tmp_path / "x.vtt").exit_code == 0
    r = _tal("detect", feats / "b.npy", *FEATS, "-o", tmp_path / "x.vtt")
    assert r.exit_code == 2
    assert f"this run has 1 input, and {tmp_path / 'x.vtt'} already holds 1 other video" in _one_error(r)


@pytest.mark.parametrize("verb,user,expected", [
    ("detect", None, "PASSIVE"), ("extract", None, "PASSIVE"), ("extract", "ACTIVE", "ACTIVE"), ("eval", None, None),
])
def test_pipeline_verbs_make_openmp_sleep_before_torch_loads(verb, user, expected):
    """detect and extract set OMP_WAIT_POLICY=PASSIVE before torch (and so OpenMP) is imported,
    unless the user set it; other verbs leave it alone. Checked in a fresh interpreter, where the
    OpenMP runtime reads it: the value torch's process sees once the verb's options are parsed."""
    import os

    code = (
        "import os, sys\n"
        "from tal_pipeline.cli import main\n"
        f"main.get_command(None, {verb!r})\n"
        "import torch\n"  # what the verb's options import next
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user is not None:
        env["OMP_WAIT_POLICY"] = user
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(expected)
