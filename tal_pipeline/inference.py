"""The head on one video: a feature array in, segments in seconds out.

:func:`predict_segments` is the one place the trained head runs on a video: ``Detector``
(``pipeline.py``) calls it for every video, training (``train.py``) for each validation video.
It runs :meth:`~tal_pipeline.head.model.HeadModel.infer` (windowed over the whole video), fuses
the detection scores as the head's ``score_fusion`` says, places each output position in time
(:func:`position_times`) and post-processes (``postprocess.py``). The model comes from a
checkpoint file through ``checkpoint.load_head``.
"""

from __future__ import annotations

import numpy as np
import torch

from tal_pipeline.head.model import HeadModel, fuse_scores
from tal_pipeline.postprocess import PostprocessConfig, Segment, postprocess


def position_times(positions: np.ndarray, times: np.ndarray, step: float) -> np.ndarray:
    """Centre time (s) of fractional positions ``(N,)``: ``times`` interpolated, extended past the
    last position by ``step`` per step (a coarse level's last bin may be centred beyond it)."""
    times = np.asarray(times, np.float64)
    idx = np.arange(len(times), dtype=np.float64)
    return np.interp(positions, idx, times) + np.maximum(positions - idx[-1], 0.0) * step


def predict_segments(
    model: HeadModel,
    features: np.ndarray,
    times: np.ndarray,
    step: float,
    duration: float,
    class_names: list[str] | tuple[str, ...],
    config: PostprocessConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[Segment]:
    """Segments of one video, best first.

    Args:
        model: the trained head, on ``device``, in eval mode.
        features: ``(T, D)`` float32.
        times: ``(T,)`` centre time of each feature, seconds.
        step: seconds per feature step.
        duration: the video's duration, seconds.
        class_names: ``C`` names, the order of the head's class scores.
        config: post-processing options (default ``PostprocessConfig()``, ActionFormer's recipe).
        device: where the model is.
    """
    if features.shape[0] == 0:
        return []
    x = torch.from_numpy(np.array(features, dtype=np.float32, copy=True)).to(device)  # (T, D)
    # N = T positions for a head with one output level; the levels one after the other otherwise
    probs, dist, act, pos = model.infer(x, return_positions=True)  # (N, C), (N, 2) steps, (N,), (N,) steps
    probs, dist, act = probs.cpu().numpy(), dist.cpu().numpy(), act.cpu().numpy()
    scores = fuse_scores(model.config, probs, act)  # (N, C)
    centres = position_times(pos.numpy(), times, step)  # (N,) s
    return postprocess(scores, dist, centres, step, duration, class_names, config or PostprocessConfig())
