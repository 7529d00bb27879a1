"""Optical flow between consecutive grey frames (TV-L1), and its encoding for the backbone.

    compute_flow(gray (N, H, W), backend="opencv"|"torch", device="cpu") -> (N-1, 2, H, W) float32
    encode_flow(flow) -> float32 in [-1, 1]    (clip to ±FLOW_CLIP_PX, divide by FLOW_CLIP_PX)

Flow is in pixels, channel 0 = dx, channel 1 = dy: the content at (x, y) in frame k is at
(x + dx, y + dy) in frame k + 1 (x to the right, y down).

Backends: ``opencv`` is ``cv2.optflow.DualTVL1OpticalFlow`` with OpenCV's defaults (the
reference); ``torch`` is the batched PyTorch solver in ``tvl1_torch`` (CPU or CUDA), faster
and as accurate on known motions (BENCHMARKS.md), not bit-identical to OpenCV (different
interpolation at borders, median filter and iteration schedule).
"""

from __future__ import annotations

import numpy as np
import torch

from tal_pipeline.errors import InputError, NotAvailableError
from tal_pipeline.flow.opencv_backend import OpenCVTVL1Options, tvl1_opencv
from tal_pipeline.flow.tvl1_torch import (
    CUDA_OPTIONS,
    CPUWorkers,
    TVL1Options,
    options_for,
    tvl1_torch_pairs,
)

FLOW_CLIP_PX = 20.0  # flow is clipped to ±this many pixels before the backbone, then / it
BACKENDS = ("opencv", "torch")
# Which flow each backend computes, recorded in feature metas as ``flow_version`` (features
# without the key: 1): a resumed extraction refuses features of another version as it refuses
# another backend's, and a detector warns when its model was trained on another version.
# Bumped when a backend's output changes on purpose. torch 2: the gain of the second frame
# re-estimated on the aligned frames at every warp (``tvl1_torch.aligned_gain``, issue #12).
FLOW_VERSIONS = {"opencv": 1, "torch": 2}


def flow_version(streams, backend: str) -> int | None:
    """The ``flow_version`` that features of ``streams`` made with ``backend`` record (None
    without a flow stream): one rule for the meta, resume's provenance and tal detect's."""
    return FLOW_VERSIONS[backend] if "flow" in streams else None


MIN_SIZE_PX = 16  # smallest frame side accepted (pixels)


def _check_gray(gray: object) -> np.ndarray | torch.Tensor:
    """Validate ``(N, H, W)`` grey frames (uint8 or float32); raise InputError.

    Float frames are clipped to [0, 255]: a frame warped or resampled with a cubic kernel
    overshoots by a few grey levels (e.g. 261.6), and OpenCV accepts such frames too. Only
    NaN and infinite values are refused (no grey level to clip them to).
    """
    if not isinstance(gray, (np.ndarray, torch.Tensor)):
        raise InputError(f"flow: expected a numpy array of grey frames, got {type(gray).__name__}")
    shape = tuple(gray.shape)
    if len(shape) != 3:
        raise InputError(
            f"flow: expected grey frames of shape (N, H, W), got shape {shape} "
            "(convert colour frames to grey first)"
        )
    if shape[0] < 2:
        raise InputError(f"flow: need at least 2 frames to compute flow, got {shape[0]}")
    if min(shape[1:]) < MIN_SIZE_PX:
        raise InputError(
            f"flow: frames must be at least {MIN_SIZE_PX}x{MIN_SIZE_PX} px, got {shape[1:]}"
        )
    dtype = str(gray.dtype).removeprefix("torch.")
    if dtype == "uint8":
        return gray
    if dtype != "float32":
        raise InputError(f"flow: frames must be uint8 or float32 (grey levels), got dtype {dtype}")
    values = torch.as_tensor(gray)
    if not bool(torch.isfinite(values).all()):
        raise InputError("flow: frames contain NaN or infinite values")
    if bool((values < 0.0).any()) or bool((values > 255.0).any()):
        values = values.clamp(0.0, 255.0)  # a copy: the caller's frames stay as they were
        return values.numpy() if isinstance(gray, np.ndarray) else values
    return gray


def compute_flow(
    gray: np.ndarray | torch.Tensor,
    backend: str = "opencv",
    device: str = "cpu",
    *,
    options: TVL1Options | OpenCVTVL1Options | None = None,
    threads: int | None = None,
    workers: CPUWorkers | None = None,
) -> np.ndarray:
    """TV-L1 optical flow between consecutive frames.

    Args:
        gray: ``(N, H, W)`` grey frames, N >= 2: uint8, or float32 grey levels (clipped to
            [0, 255]; NaN and infinities are refused). A torch tensor
            is accepted too (the torch backend then skips a host copy when it is on ``device``).
        backend: ``"opencv"`` (reference, CPU only) or ``"torch"`` (CPU or CUDA).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"`` (torch backend only).
        options: ``TVL1Options`` (torch) or ``OpenCVTVL1Options`` (opencv); the backend's
            defaults when None (torch on CUDA: ``CUDA_OPTIONS``).
        threads: CPU worker threads (default: all cores for opencv, ``torch.get_num_threads()``
            for torch).
        workers: torch backend on the CPU: the threads that run the batches
            (:class:`~tal_pipeline.flow.tvl1_torch.CPUWorkers`; default: started for the call).

    Returns:
        ``(N-1, 2, H, W)`` float32 flow in pixels, (dx, dy) such that the content at (x, y) in
        frame k is at (x + dx, y + dy) in frame k + 1.

    Raises:
        InputError: bad frames (shape, dtype, NaN or infinite values), unknown backend or
            device, options of the other backend.
        NotAvailableError: CUDA asked for but not available, or OpenCV without ``cv2.optflow``.
    """
    if backend not in BACKENDS:
        raise InputError(f"flow: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"flow: unknown device {device!r} (use 'cpu' or 'cuda')") from err
    gray = _check_gray(gray)
    if backend == "opencv":
        if dev.type != "cpu":
            raise InputError(
                f"flow: the opencv backend runs on the CPU only, got device {device!r}"
            )
        if options is not None and not isinstance(options, OpenCVTVL1Options):
            raise InputError("flow: the opencv backend takes OpenCVTVL1Options")
        if isinstance(gray, torch.Tensor):
            gray = gray.cpu().numpy()
        return tvl1_opencv(gray, options, threads)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NotAvailableError("flow: device 'cuda' asked for, but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"flow: the torch backend runs on 'cpu' or 'cuda', got {device!r}")
    if options is not None and not isinstance(options, TVL1Options):
        raise InputError("flow: the torch backend takes TVL1Options")
    frames = torch.as_tensor(gray)  # (N, H, W), shares memory with a numpy input
    return tvl1_torch_pairs(frames[:-1], frames[1:], dev, options, threads, workers)


def encode_flow(flow: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Flow in pixels -> the backbone's input: clipped to ±FLOW_CLIP_PX, divided by it.

    Any shape; returns float32 in [-1, 1], of the input's kind (numpy array or torch tensor).
    """
    if isinstance(flow, torch.Tensor):
        return flow.float().clamp(-FLOW_CLIP_PX, FLOW_CLIP_PX) / FLOW_CLIP_PX
    flow = np.asarray(flow, dtype=np.float32)
    return np.clip(flow, -FLOW_CLIP_PX, FLOW_CLIP_PX) / np.float32(FLOW_CLIP_PX)


__all__ = [
    "BACKENDS",
    "CUDA_OPTIONS",
    "FLOW_CLIP_PX",
    "FLOW_VERSIONS",
    "OpenCVTVL1Options",
    "TVL1Options",
    "compute_flow",
    "encode_flow",
    "flow_version",
    "options_for",
]
