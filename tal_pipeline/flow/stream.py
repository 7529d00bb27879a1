"""TV-L1 over a video that arrives in chunks (``FeatureExtractor``'s flow stream)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tal_pipeline.flow.tvl1_torch import CPUWorkers


class FlowStream:
    """TV-L1 over a stream of RGB chunks: ``push`` returns the fields whose next frame is known
    (field k: frame k -> k+1), ``finish`` the last frame's field (a repeat; zeros for 1 frame).

    It runs on the extractor's prefetch thread, so it changes no process-wide torch setting:
    the torch backend's CPU batches run on ``workers``, which the extractor built in its own
    thread (:class:`~tal_pipeline.flow.tvl1_torch.CPUWorkers` says why).
    """

    def __init__(self, backend: str, device: str, workers: CPUWorkers | None = None):
        self.backend = backend
        self.device = device
        self.workers = workers  # torch backend on the CPU only
        self.prev: np.ndarray | None = None  # grey (H, W) of the last frame seen
        self.last: np.ndarray | None = None  # float32 (2, H, W), the last field computed

    def push(self, rgb: np.ndarray) -> np.ndarray:
        from tal_pipeline.decode import rgb_to_gray
        from tal_pipeline.flow import compute_flow

        h, w = rgb.shape[1:3]
        if len(rgb) == 0:
            return np.zeros((0, 2, h, w), np.float32)
        gray = rgb_to_gray(rgb)  # (n, H, W) uint8
        seq = gray if self.prev is None else np.concatenate([self.prev[None], gray])
        self.prev = gray[-1]
        if len(seq) < 2:
            return np.zeros((0, 2, h, w), np.float32)
        fields = np.asarray(compute_flow(seq, backend=self.backend, device=self.device, workers=self.workers),
                            np.float32)
        self.last = fields[-1]
        return fields  # (len(seq) - 1, 2, H, W)

    def finish(self) -> np.ndarray:
        if self.prev is None:
            return np.zeros((0, 2, 1, 1), np.float32)
        if self.last is None:
            return np.zeros((1, 2, *self.prev.shape), np.float32)
        return self.last[None].copy()
