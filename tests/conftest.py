"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# the benchmark generators (benchmarks/) are test data, not part of the package: importable from
# the checkout also when pytest runs without `python -m`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture
def one_torch_thread():
    """2 shared cores: intra-op threads fight each other; one thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
