"""The head's checkpoint file: one ``torch.save`` file of plain data (tensors, dicts, lists, str,
numbers), loaded with ``torch.load(weights_only=True)``, so loading never executes code::

    {"format": "tal-pipeline/head", "format_version": 1,
     "head_config": {...HeadConfig fields...},
     "state_dict": {name: tensor},
     "class_names": [str, ...],                 # column order of the class scores
     "input_dim": D,
     "features": {"step": s, "t0": s0, "fps": f, "feature_stride": n, "window_frames": 16,
                  "dim": D (D + K with motion_input), "steps_vary": bool, "streams": [...], "flow_backend": str,
                  "backbone": "r3d_18" | "unknown", "weights": "<id>:sha256:..." | "unknown",
                  "motion_input": {"columns": [...], "mean": [...], "std": [...]}},   # optional
     "training": {...epochs, seed, lr, data, final loss, validation mAP...},
     "motion_check": {"columns": [...], "threshold": px, "scale": f,     # optional
                      "labels": {label: {"column": "tx", "sign": 1}, ...}}}

``features["motion_input"]`` (``global_motion.MotionInput``): the head reads the features'
global-motion descriptor too, z-scored, appended after their ``D`` channels (``input_dim`` is
then ``D + K``). ``motion_check`` (``global_motion.MotionCheck``), for heads whose labels are camera motions:
each label's global-motion column and sign, and the threshold under which a detection's
segment did not see that camera motion (its score is then scaled by ``scale``; 0 drops it).

Anything else (not a zip of tensors, missing keys, wrong types, shapes that do not fit the config)
is refused with an :class:`~tal_pipeline.errors.InputError` naming the file. ``load_head`` reads
a file into the :class:`~tal_pipeline.head.model.HeadModel` (``build_model``) and a typed
:class:`HeadMeta` (what the head was trained on); running the head on a video is
``inference.py``'s.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tal_pipeline.errors import InputError
from tal_pipeline.featio import UNKNOWN, WeightsLabel
from tal_pipeline.global_motion import MotionCheck, MotionInput
from tal_pipeline.head.model import HeadConfig, HeadModel

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "tal-pipeline/head"
CHECKPOINT_VERSION = 1


def checkpoint_bytes(checkpoint: dict) -> bytes:
    """Serialise a checkpoint dict (deterministic bytes for equal content)."""
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue()


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write a checkpoint through ``safety`` (atomically; it replaces only a checkpoint, never
    features, annotations or a device); creates parent folders."""
    from tal_pipeline.safety import write_bytes

    return write_bytes(path, checkpoint_bytes(checkpoint), "checkpoint")


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
    if "motion_check" in ckpt:
        try:
            MotionCheck.from_json(ckpt["motion_check"], names)
        except (TypeError, ValueError) as err:
            raise InputError(f"{source}: checkpoint {err}") from None
    if "motion_input" in ckpt["features"]:
        try:
            width = MotionInput.from_json(ckpt["features"]["motion_input"]).width
        except (TypeError, ValueError) as err:
            raise InputError(f"{source}: checkpoint {err}") from None
        if ckpt["input_dim"] <= width:
            raise InputError(f"{source}: checkpoint input_dim {ckpt['input_dim']} leaves no feature channels "
                             f"beside its {width} global-motion inputs")


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


@dataclass(frozen=True)
class HeadMeta:
    """What a checkpoint says besides its weights, typed: the classes, and the features the head
    was trained on (the file keeps them as the plain ``features`` dict of the module docstring)."""

    path: str  # the checkpoint file
    class_names: tuple[str, ...]  # column order of the class scores
    input_dim: int  # the head's input channels: D, plus K with ``motion_input``
    backbone: str = UNKNOWN  # "r3d_18", "i3d_r50"; UNKNOWN: foreign features (e.g. THUMOS14 I3D .npy)
    weights: str = UNKNOWN  # "<id>:sha256:<hex>" (featio.WeightsLabel); UNKNOWN if foreign
    streams: tuple[str, ...] = ("rgb", "flow")  # the extractor's streams, RGB columns first
    flow_backend: str | None = None  # the TV-L1 the training features used, if recorded
    flow_version: int | None = None  # its version (flow.FLOW_VERSIONS), if recorded
    step: float | None = None  # seconds per feature step (None: not recorded)
    motion_check: MotionCheck | None = None  # the camera-motion check it declares, if any
    motion_input: MotionInput | None = None  # the global-motion descriptor as an input, if it reads it
    training: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # options, epochs, mAP

    @classmethod
    def of(cls, ckpt: dict, path: str | os.PathLike) -> HeadMeta:
        """The meta of a validated checkpoint dict read from ``path``."""
        feats = ckpt["features"]
        return cls(
            path=str(path),
            class_names=tuple(ckpt["class_names"]),
            input_dim=ckpt["input_dim"],
            backbone=feats.get("backbone", UNKNOWN),
            weights=feats.get("weights", UNKNOWN),
            streams=tuple(feats.get("streams") or ("rgb", "flow")),
            flow_backend=feats.get("flow_backend"),
            flow_version=feats.get("flow_version"),
            step=feats.get("step"),
            motion_check=(MotionCheck.from_json(ckpt["motion_check"], ckpt["class_names"])
                          if "motion_check" in ckpt else None),
            motion_input=(MotionInput.from_json(feats["motion_input"]) if "motion_input" in feats else None),
            training=dict(ckpt["training"]),
        )

    @property
    def feature_dim(self) -> int:
        """D: the channels of the features the head reads (its input less the motion input)."""
        return self.input_dim - (self.motion_input.width if self.motion_input is not None else 0)

    @property
    def weights_label(self) -> WeightsLabel | None:
        """The backbone weights' id and checksum; None when foreign or unreadable."""
        return WeightsLabel.parse(self.weights)

    def check_features(
        self,
        dim: int,
        backbone: str = UNKNOWN,
        weights: str = UNKNOWN,
        source: str = "features",
        step: float | None = None,
        streams: tuple[str, ...] | list[str] = (),
        flow_backend: str | None = None,
        flow_version: int | None = None,
    ) -> None:
        """Refuse features this head was not trained for (:class:`InputError`): another width
        ``D``, or another backbone or weights checksum when both sides know theirs; when both
        come from a known backbone, other ``streams`` (RGB and flow features of one backbone
        have the same width: one read as the other gives wrong detections, no error) or flow
        from another TV-L1 ``flow_backend``. Flow of another ``flow_version`` of the same
        backend is warned about once (``warn_flow_version``: this tal computes only its own
        version, so re-extracting cannot give the old one). A feature ``step`` (s) over 2 %
        away from the trained one is only warned about (foreign features may round it)."""
        if dim != self.feature_dim:
            raise InputError(f"{source}: features have {dim} channels, the model expects {self.feature_dim}")
        for key, ours, theirs in (("backbone", self.backbone, backbone), ("weights", self.weights, weights)):
            if UNKNOWN in (ours, theirs) or not ours or not theirs:
                continue
            if ours != theirs:
                raise InputError(
                    f"{source}: features come from {key} {theirs!r}, but the model was trained on {key} {ours!r}"
                )
        known = UNKNOWN not in (self.backbone, backbone) and bool(streams)  # meta-less: unknown
        if known and tuple(streams) != tuple(self.streams):
            raise InputError(
                f"{source}: features of the {'+'.join(streams)} stream{'s' if len(streams) > 1 else ''}, but "
                f"the model was trained on {'+'.join(self.streams)}; extract them with --streams "
                f"{','.join(self.streams)}"
            )
        if known and "flow" in streams and self.flow_backend and flow_backend:
            if flow_backend != self.flow_backend:
                raise InputError(
                    f"{source}: flow from the {flow_backend} TV-L1, but the model was trained on "
                    f"{self.flow_backend} flow (the two give different fields); extract with --flow "
                    f"{self.flow_backend}"
                )
            if flow_version is not None:
                self.warn_flow_version(flow_backend, flow_version, "features")
        if step is not None and self.step and not math.isclose(step, self.step, rel_tol=0.02):
            log.warning("feature step %.4g s differs from the %.4g s the model was trained on", step, self.step)

    def warn_flow_version(self, backend: str, version: int, what: str) -> None:
        """Once per model and version: ``what`` ("features", "this tal") has ``backend``'s flow
        ``version``, the model was trained on another one of the same backend."""
        if self.flow_backend != backend or self.flow_version is None or version == self.flow_version:
            return
        key = (self.path, backend, version)
        if key not in _warned_versions:
            _warned_versions.add(key)
            log.warning("%s: trained on %s flow version %d, %s %s version %d: detections may be "
                        "worse than the model's own scores", self.path, backend, self.flow_version,
                        what, "has" if what == "features" else "computes", version)


_warned_versions: set[tuple[str, str, int]] = set()  # (model, backend, version) warned about


def load_head(path: str | os.PathLike, device: str = "cpu") -> tuple[HeadModel, HeadMeta]:
    """The trained head of a checkpoint file, on ``device`` and in eval mode, with its meta.

    Loads safely (``weights_only``); :class:`InputError` if the file is malformed,
    :class:`~tal_pipeline.errors.NotAvailableError` for a CUDA device on a machine without one.
    """
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        from tal_pipeline.errors import NotAvailableError

        raise NotAvailableError(f"device {device!r} requested but CUDA is not available")
    ckpt = read_checkpoint(path)
    model = build_model(ckpt, str(path)).to(torch.device(device)).eval()
    return model, HeadMeta.of(ckpt, path)
