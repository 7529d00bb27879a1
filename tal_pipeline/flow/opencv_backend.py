"""TV-L1 flow with OpenCV contrib's ``DualTVL1OpticalFlow``: the reference backend.

Frame pairs run in parallel on a thread pool (``cv2`` releases the GIL inside ``calc``), one
``DualTVL1OpticalFlow`` instance per worker thread, with OpenCV's own threading set to one
thread meanwhile (its row-parallel loops scale poorly on 112x112 images; independent pairs
scale well). ``cv2.setNumThreads`` is restored afterwards.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tal_pipeline.errors import NotAvailableError


@dataclass(frozen=True)
class OpenCVTVL1Options:
    """``cv2.optflow.DualTVL1OpticalFlow_create`` parameters; the defaults are OpenCV's own."""

    tau: float = 0.25  # primal-dual time step
    lambda_: float = 0.15  # weight of the data term
    theta: float = 0.3  # coupling between u and v
    scales: int = 5  # pyramid levels
    warps: int = 5  # warps per level
    epsilon: float = 0.01  # stop when mean |u - u_prev|² < epsilon² (pixels²)
    inner_iterations: int = 30  # iterations between median filterings
    outer_iterations: int = 10  # median filterings per warp (cap: inner x outer iterations)
    scale_step: float = 0.8  # size ratio between consecutive levels
    gamma: float = 0.0  # weight of the illumination term (0: plain TV-L1)
    median_filtering: int = 5  # median filter size on u before each outer iteration


def _create(opts: OpenCVTVL1Options):
    try:
        import cv2

        create = cv2.optflow.DualTVL1OpticalFlow_create
    except (ImportError, AttributeError) as err:
        raise NotAvailableError(
            "the opencv flow backend needs cv2.optflow (pip install opencv-contrib-python-headless)"
        ) from err
    return create(
        tau=opts.tau,
        lambda_=opts.lambda_,
        theta=opts.theta,
        nscales=opts.scales,
        warps=opts.warps,
        epsilon=opts.epsilon,
        innnerIterations=opts.inner_iterations,  # sic: OpenCV's keyword has three n's
        outerIterations=opts.outer_iterations,
        scaleStep=opts.scale_step,
        gamma=opts.gamma,
        medianFiltering=opts.median_filtering,
    )


def tvl1_opencv(
    gray: np.ndarray, opts: OpenCVTVL1Options | None = None, threads: int | None = None
) -> np.ndarray:
    """Flow between consecutive frames with OpenCV.

    Args:
        gray: ``(N, H, W)`` uint8, or float32 in [0, 255] (scaled to [0, 1] here because OpenCV
            multiplies float input by 255).
        opts: OpenCV parameters (OpenCV's defaults when None).
        threads: worker threads (default: all cores, ``os.cpu_count()``).

    Returns:
        ``(N-1, 2, H, W)`` float32 flow in pixels, (dx, dy) from frame k to frame k+1.
    """
    return tvl1_opencv_pairs(gray[:-1], gray[1:], opts, threads)


def tvl1_opencv_pairs(
    first: np.ndarray,
    second: np.ndarray,
    opts: OpenCVTVL1Options | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Flow from ``first[k]`` to ``second[k]``: ``(P, H, W)`` x 2 -> ``(P, 2, H, W)`` float32, pixels."""
    import cv2

    opts = opts or OpenCVTVL1Options()
    if first.dtype != np.uint8:  # OpenCV multiplies float input by 255: hand it [0, 1]
        first = first.astype(np.float32) / np.float32(255.0)
        second = second.astype(np.float32) / np.float32(255.0)
    n_pairs = first.shape[0]
    out = np.empty((n_pairs, 2, *first.shape[1:]), dtype=np.float32)
    local = threading.local()

    def run(k: int) -> None:
        solver = getattr(local, "solver", None)
        if solver is None:
            solver = local.solver = _create(opts)
        flow = solver.calc(first[k], second[k], None)  # (H, W, 2)
        out[k] = flow.transpose(2, 0, 1)

    _create(opts)  # fail early (NotAvailableError) in the caller's thread
    workers = max(1, min(threads or os.cpu_count() or 1, n_pairs))
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if workers == 1:
            for k in range(n_pairs):
                run(k)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, range(n_pairs)))
    finally:
        cv2.setNumThreads(previous)
    return out
