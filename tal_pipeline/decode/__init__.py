"""Decode stage: a video file in, chunks of 10 fps RGB frames sized for the backbone out.

One job a module:

- ``probe``: whether a file is a video this stage reads, and which stream: the path, the limits
  on what a header may claim, damaged and truncated files, the cause named by every refusal
  (``VideoDecodeError``); ``probe_video``.
- ``sample``: the 10 fps clock, chunking, and the turn, resize and centre crop of each sampled
  picture; ``decode_video``.
- ``orientation``: how a player turns the stored picture (display matrix, ``rotate`` tag).

Warnings are logged to ``tal_pipeline.decode``.
"""

from tal_pipeline.decode.probe import (
    MAX_DURATION_S,
    MAX_PIXELS,
    MAX_SIDE,
    VideoInfo,
    num_output_frames,
    open_video,
    probe_video,
)
from tal_pipeline.decode.sample import DEFAULT_CHUNK, FrameChunk, decode_video, rgb_to_gray

__all__ = [
    "DEFAULT_CHUNK",
    "MAX_DURATION_S",
    "MAX_PIXELS",
    "MAX_SIDE",
    "FrameChunk",
    "VideoInfo",
    "decode_video",
    "num_output_frames",
    "open_video",
    "probe_video",
    "rgb_to_gray",
]
