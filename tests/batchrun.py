"""Helpers of the batch CLI tests (interruption, concurrency)."""

from __future__ import annotations

from pathlib import Path

# tal extract as fast as it goes: seeded weights, 32 px frames, flow stream only
FAST = ["--weights", "seeded", "--size", "32", "--chunk-frames", "16", "--streams", "flow",
        "--no-progress"]


def hidden(folder: Path) -> list[str]:
    """Names of the hidden files under ``folder`` (locks, temps), sorted."""
    return sorted(p.name for p in folder.rglob(".*"))
