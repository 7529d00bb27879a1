"""Prediction with a trained head: a feature array in, segments in seconds out.

:class:`HeadPredictor` holds a model rebuilt from its checkpoint (``checkpoint.py``): the
windowed forward over a whole video (``predict_arrays``), positions to times, then
post-processing (``postprocess.py``).
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from tal_pipeline.checkpoint import build_model, read_checkpoint
from tal_pipeline.errors import InputError
from tal_pipeline.featio import UNKNOWN
from tal_pipeline.head.model import HeadModel, fuse_scores
from tal_pipeline.postprocess import PostprocessConfig, Segment, postprocess

log = logging.getLogger(__name__)



def predict_arrays(model: HeadModel, features: np.ndarray, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Windowed whole-video forward: ``{"probs" (N, C), "offsets" (N, 2) steps, "actionness" (N,),
    "positions" (N,) steps}``; ``N = T`` and ``positions = 0..T-1`` for a head with one output
    level, the levels one after the other otherwise (:meth:`HeadModel.infer`)."""
    x = torch.from_numpy(np.array(features, dtype=np.float32, copy=True)).to(device)
    probs, dist, act, pos = model.infer(x, return_positions=True)
    return {"probs": probs.cpu().numpy(), "offsets": dist.cpu().numpy(), "actionness": act.cpu().numpy(),
            "positions": pos.numpy()}


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
    class_names: list[str],
    config: PostprocessConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[Segment]:
    """Features ``(T, D)`` -> segments in seconds (windowed inference, merged, scores fused as
    the head's ``score_fusion`` says, then Soft-NMS).

    ``config`` defaults to ``PostprocessConfig()`` (ActionFormer's recipe)."""
    if features.shape[0] == 0:
        return []
    out = predict_arrays(model, features, device)
    scores = fuse_scores(model.config, out["probs"], out["actionness"])  # (N, C)
    times = position_times(out["positions"], times, step)  # (N,) s
    return postprocess(scores, out["offsets"], times, step, duration, class_names,
                       config or PostprocessConfig())


class HeadPredictor:
    """A trained head, ready to predict on feature arrays.

    ``HeadPredictor.load(path, device="cpu")``; ``.class_names``; ``.meta`` (the checkpoint's
    ``features`` and ``training`` dicts plus ``head_config``); ``.config`` (HeadConfig);
    ``.predict(features, times, step, duration, config)``.
    """

    def __init__(self, model: HeadModel, class_names: list[str], meta: dict, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.meta = meta
        self.config = model.config

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> HeadPredictor:
        """Load a checkpoint safely (``weights_only``); :class:`InputError` if malformed."""
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            from tal_pipeline.errors import NotAvailableError

            raise NotAvailableError(f"device {device!r} requested but CUDA is not available")
        ckpt = read_checkpoint(path)
        model = build_model(ckpt, str(path))
        meta = {"features": ckpt["features"], "training": ckpt["training"], "head_config": ckpt["head_config"],
                "input_dim": ckpt["input_dim"], "path": str(path)}
        return cls(model, ckpt["class_names"], meta, device)

    @property
    def input_dim(self) -> int:
        return self.config.input_dim

    @property
    def step(self) -> float | None:
        """Seconds per feature step the head was trained on (None if unknown)."""
        return self.meta["features"].get("step")

    def check_features(self, dim: int, backbone: str = UNKNOWN, weights: str = UNKNOWN, source: str = "features") -> None:
        """Refuse features this head was not trained for (:class:`InputError`): wrong D, or a
        different backbone/weights checksum when both sides know theirs."""
        if dim != self.input_dim:
            raise InputError(f"{source}: features have {dim} channels, the model expects {self.input_dim}")
        mine = self.meta["features"]
        for key, theirs in (("backbone", backbone), ("weights", weights)):
            ours = mine.get(key, UNKNOWN)
            if UNKNOWN in (ours, theirs) or not ours or not theirs:
                continue
            if ours != theirs:
                raise InputError(
                    f"{source}: features come from {key} {theirs!r}, but the model was trained on {key} {ours!r}"
                )

    def predict(
        self,
        features: np.ndarray,
        times: np.ndarray,
        step: float,
        duration: float,
        config: PostprocessConfig | None = None,
    ) -> list[Segment]:
        """Segments of one video.

        Args:
            features: ``(T, D)`` float32.
            times: ``(T,)`` centre time of each position, seconds.
            step: seconds per feature step.
            duration: the video's duration, seconds.
            config: post-processing options (default ``PostprocessConfig()``).
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise InputError(f"features must be (T, D), got shape {features.shape}")
        self.check_features(features.shape[1])
        trained = self.step
        if trained and not math.isclose(step, trained, rel_tol=0.02):
            log.warning("feature step %.4g s differs from the %.4g s the model was trained on", step, trained)
        return predict_segments(self.model, features, np.asarray(times, np.float64), step, duration,
                                self.class_names, config, self.device)
