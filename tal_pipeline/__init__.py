"""tal-pipeline: raw video to temporal action detections.

Public API (imported lazily, so ``import tal_pipeline`` and ``tal --help`` stay light)::

    from tal_pipeline import decode_video, compute_flow, FeatureExtractor, Detector
"""

from __future__ import annotations

import importlib

from tal_pipeline._version import __version__

_LAZY = {
    "decode_video": "tal_pipeline.decode",
    "probe_video": "tal_pipeline.decode",
    "FrameChunk": "tal_pipeline.decode",
    "VideoInfo": "tal_pipeline.decode",
    "rgb_to_gray": "tal_pipeline.decode",
    "compute_flow": "tal_pipeline.flow",
    "FeatureExtractor": "tal_pipeline.features",
    "Features": "tal_pipeline.features",
    "Detector": "tal_pipeline.pipeline",
    "Segment": "tal_pipeline.postprocess",
}

__all__ = ["__version__", *sorted(_LAZY)]  # noqa: PLE0604 (names, listed from the table)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tal_pipeline' has no attribute {name!r}")
