"""Helpers of the batch CLI tests (interruption, concurrency)."""

from __future__ import annotations

import os
from pathlib import Path

# tal extract as fast as it goes: seeded weights, 32 px frames, flow stream only
FAST = ["--weights", "seeded", "--size", "32", "--chunk-frames", "16", "--streams", "flow",
        "--no-progress"]


def demo_dim() -> int:
    """D of the feature files the shipped demo model takes (``tal detect --features`` tests)."""
    from tal_pipeline.checkpoint import load_head
    from tal_pipeline.pipeline import demo_checkpoint_path

    return load_head(demo_checkpoint_path())[1].feature_dim


def plain_model() -> Path:
    """A checkpoint that takes bare ``.npy`` features of :func:`demo_dim` channels: the demo's
    head without its global-motion input (the embedding's first ``D`` input channels), since
    meta-less files carry no descriptor. The batch tests' model; written once per demo file."""
    import tempfile

    from tal_pipeline.checkpoint import read_checkpoint, save_checkpoint
    from tal_pipeline.pipeline import demo_checkpoint_path
    from tal_pipeline.weights import file_sha256

    path = Path(tempfile.gettempdir()) / f"tal-test-plain-{file_sha256(demo_checkpoint_path())[:16]}.pt"
    if path.is_file():
        return path
    ckpt = read_checkpoint(demo_checkpoint_path())
    dim = demo_dim()
    if "motion_input" in ckpt["features"]:
        ckpt["features"] = {k: v for k, v in ckpt["features"].items() if k != "motion_input"} | {"dim": dim}
        ckpt["input_dim"] = dim
        ckpt["head_config"] = {**ckpt["head_config"], "input_dim": dim}
        w = ckpt["state_dict"]["embed.weight"]  # (hidden, D + K, taps)
        ckpt["state_dict"] = {**ckpt["state_dict"], "embed.weight": w[:, :dim].clone()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.pt")  # parallel sessions: whole files only
    save_checkpoint(tmp, ckpt)
    tmp.replace(path)
    return path


def hidden(folder: Path) -> list[str]:
    """Names of the hidden files under ``folder`` (locks, temps), sorted."""
    return sorted(p.name for p in folder.rglob(".*"))
