"""Helpers of the batch CLI tests (interruption, concurrency)."""

from __future__ import annotations

from pathlib import Path

# tal extract as fast as it goes: seeded weights, 32 px frames, flow stream only
FAST = ["--weights", "seeded", "--size", "32", "--chunk-frames", "16", "--streams", "flow",
        "--no-progress"]


def demo_dim() -> int:
    """D of the feature files the shipped demo model takes (``tal detect --features`` tests)."""
    from tal_pipeline.checkpoint import read_checkpoint
    from tal_pipeline.pipeline import demo_checkpoint_path

    return int(read_checkpoint(demo_checkpoint_path())["input_dim"])


def hidden(folder: Path) -> list[str]:
    """Names of the hidden files under ``folder`` (locks, temps), sorted."""
    return sorted(p.name for p in folder.rglob(".*"))
