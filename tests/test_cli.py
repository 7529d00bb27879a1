"""The `tal` command-line skeleton: version, verbs, one-line errors."""

import subprocess
import sys

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
