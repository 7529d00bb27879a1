"""What this CPU can run, for tests that need it (skipped elsewhere, with the reason)."""

import pytest

from tal_pipeline.features import onednn_runs_bf16

needs_bf16_kernels = pytest.mark.skipif(
    not onednn_runs_bf16(), reason="oneDNN has no bf16 convolutions on this CPU (AVX2 only)")
