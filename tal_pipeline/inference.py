"""Checkpoints of the head (save, load, validate) and prediction on a feature array.

A checkpoint is one ``torch.save`` file of plain data (tensors, dicts, lists, str, numbers),
loaded with ``torch.load(weights_only=True)``, so loading never executes code::

    {"format": "tal-pipeline/head", "format_version": 1,
     "head_config": {...HeadConfig fields...},
     "state_dict": {name: tensor},
     "class_names": [str, ...],                 # column order of the class scores
     "input_dim": D,
     "features": {"step": s, "fps": f, "feature_stride": n, "window_frames": 16,
                  "backbone": "r3d_18" | "unknown", "weights": "<id>:sha256:..." | "unknown"},
     "training": {...epochs, seed, lr, data, final loss, validation mAP...}}

Anything else (not a zip of tensors, missing keys, wrong types, shapes that do not fit the config)
is refused with an :class:`~tal_pipeline.errors.InputError` naming the file.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tal_pipeline.errors import InputError
from tal_pipeline.head.model import HeadConfig, HeadModel, fuse_scores
from tal_pipeline.postprocess import PostprocessConfig, Segment, postprocess

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "tal-pipeline/head"
CHECKPOINT_VERSION = 1
UNKNOWN = "unknown"


def checkpoint_bytes(checkpoint: dict) -> bytes:
    """Serialise a checkpoint dict (deterministic bytes for equal content)."""
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue()


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write a checkpoint atomically (temp file + rename)."""
    from tal_pipeline.fsutil import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, checkpoint_bytes(checkpoint))
    return path


def make_checkpoint(
    model: HeadModel, class_names: list[str], features: dict[str, Any], training: dict[str, Any]
) -> dict:
    """The checkpoint dict of a trained model (see the module docstring)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "head_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "class_names": list(class_names),
        "input_dim": model.config.input_dim,
        "features": dict(features),
        "training": dict(training),
    }


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint dict (``weights_only``); :class:`InputError` if malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model checkpoint")
    try:
        with warnings.catch_warnings():  # torch's advice about pickle protocols: not for users
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling/zip error means a bad file
        raise InputError(f"{path}: not a tal-pipeline model checkpoint ({_load_problem(path, err)})") from None
    validate_checkpoint(ckpt, str(path))
    return ckpt


def _load_problem(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words (torch's own message
    advises ``weights_only=False``, which would run code from the file: never done here)."""
    import pickle
    import zipfile

    if not zipfile.is_zipfile(path):
        return "not a torch.save file (a zip archive of tensors)"
    if isinstance(err, pickle.UnpicklingError):
        return "it holds Python objects other than tensors and plain data, which are never loaded"
    return f"unreadable: {type(err).__name__}"


def validate_checkpoint(ckpt: Any, source: str = "<checkpoint>") -> None:
    """Check the structure of a checkpoint dict; :class:`InputError` on the first problem."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{source}: not a tal-pipeline model checkpoint (no format '{CHECKPOINT_FORMAT}')")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise InputError(
            f"{source}: checkpoint format version {ckpt.get('format_version')!r} is not supported "
            f"(this version reads {CHECKPOINT_VERSION})"
        )
    types = {"head_config": dict, "state_dict": dict, "class_names": list, "input_dim": int,
             "features": dict, "training": dict}
    for key, typ in types.items():
        if not isinstance(ckpt.get(key), typ):
            raise InputError(f"{source}: checkpoint field '{key}' is missing or not a {typ.__name__}")
    names = ckpt["class_names"]
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise InputError(f"{source}: checkpoint 'class_names' must be distinct strings")
    if not all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()):
        raise InputError(f"{source}: checkpoint 'state_dict' holds something other than tensors")
    try:
        config = HeadConfig.from_dict(ckpt["head_config"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: checkpoint 'head_config' is invalid ({err})") from None
    if config.num_classes != len(names) or config.input_dim != ckpt["input_dim"]:
        raise InputError(f"{source}: checkpoint head_config disagrees with class_names/input_dim")


def build_model(ckpt: dict, source: str = "<checkpoint>") -> HeadModel:
    """Rebuild the model of a validated checkpoint; every tensor's shape must match."""
    model = HeadModel(HeadConfig.from_dict(ckpt["head_config"]))
    expected = model.state_dict()
    got = ckpt["state_dict"]
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise InputError(
            f"{source}: checkpoint weights do not fit its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise InputError(f"{source}: checkpoint tensor '{k}' has shape {tuple(got[k].shape)}, expected {tuple(v.shape)}")
        if got[k].is_floating_point() and not torch.isfinite(got[k]).all():
            raise InputError(f"{source}: checkpoint tensor '{k}' holds NaN or infinite values")
    model.load_state_dict(got)
    return model.eval()


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
