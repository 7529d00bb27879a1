"""Raw video -> segments: decode -> TV-L1 flow -> two-stream features -> TSA/TPP head -> Soft-NMS.

:class:`Detector` ties a trained head checkpoint to the feature extractor it was trained on::

    det = Detector.load("demo")            # or a path to a `tal train` checkpoint
    segments = det.detect("video.mp4")      # list[Segment(label, score, start, end)], seconds

The checkpoint records the backbone id and the checksum of the backbone weights its training
features came from; ``load`` builds that extractor and refuses to pair the head with other
weights (a clear :class:`~tal_pipeline.errors.InputError`), since a head trained on one feature
space gives garbage on another. Memory stays bounded by the extractor's chunks: the features of a
video are small (an hour is 9,000 x 1024 float32, 37 MB) and the head runs in windows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tal_pipeline.errors import InputError
from tal_pipeline.featio import UNKNOWN, FeatureMeta, WeightsLabel
from tal_pipeline.postprocess import PostprocessConfig, Segment

log = logging.getLogger(__name__)

DEMO_MODEL = "demo"  # name of the shipped demo detector
DEMO_FILE = "demo.pt"  # in the top-level `weights/` folder, installed as tal_pipeline.checkpoints


def demo_checkpoint_path() -> Path:
    """The shipped demo checkpoint, from a checkout (editable install) or an installed wheel."""
    path = Path(str(resources.files("tal_pipeline.checkpoints").joinpath(DEMO_FILE)))
    if not path.is_file():
        raise InputError(
            f"the demo model is missing ({path}); reinstall tal-pipeline or pass --model PATH"
        )
    return path


def resolve_model(model: str | os.PathLike) -> Path:
    """``"demo"`` -> the shipped checkpoint; anything else is a path."""
    return demo_checkpoint_path() if str(model) == DEMO_MODEL else Path(model)


@dataclass
class Detection:
    """Segments of one video plus what the results file records about it."""

    video: str  # the input path
    segments: list[Segment]
    duration: float  # seconds
    features: FeatureMeta | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def video_meta(self) -> dict[str, Any]:
        fps = self.features.fps if self.features is not None else 10.0
        meta = {"path": self.video, "duration": round(float(self.duration), 4), "fps": fps}
        meta.update(self.extra)
        return meta


class Detector:
    """A trained head plus the feature extractor it needs."""

    def __init__(self, predictor, extractor=None, postprocess: PostprocessConfig | None = None):
        self.predictor = predictor  # tal_pipeline.inference.HeadPredictor
        self.extractor = extractor  # tal_pipeline.features.FeatureExtractor, built lazily
        self.postprocess = postprocess or PostprocessConfig()
        self._extract_kwargs: dict[str, Any] = {}
        self.model_sha256: str | None = None  # of the checkpoint file (``load``)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike = DEMO_MODEL,
        *,
        device: str = "cpu",
        flow_backend: str | None = None,
        weights: str | os.PathLike | None = None,
        postprocess: PostprocessConfig | None = None,
        build_extractor: bool = True,
        precision: str = "auto",
    ) -> Detector:
        """Load ``model`` ("demo" or a checkpoint path) and build its extractor.

        ``flow_backend``: TV-L1 implementation; default: the one the training features used
        (recorded in the checkpoint), else ``"torch"``.
        ``weights`` overrides where the backbone weights come from (e.g. a local ``.pth`` of the
        Kinetics weights); their checksum must still match the checkpoint's.
        ``precision``: the backbone's ("auto", "fp32", "bf16", "fp16"; ``features.auto_precision``);
        the head takes features of any precision made with its weights.
        """
        from tal_pipeline.inference import HeadPredictor
        from tal_pipeline.weights import file_sha256

        path = resolve_model(model)
        predictor = HeadPredictor.load(path, device=device)
        det = cls(predictor, None, postprocess)
        det.model_sha256 = file_sha256(path)
        feats = predictor.meta["features"]
        backbone = feats.get("backbone", UNKNOWN)
        label = WeightsLabel.parse(feats.get("weights", UNKNOWN))
        streams = tuple(feats.get("streams") or ("rgb", "flow"))
        flow_backend = flow_backend or feats.get("flow_backend") or "torch"
        det._extract_kwargs = {
            "backbone": backbone,
            "weights": str(weights) if weights is not None else (label.id if label else UNKNOWN),
            "streams": streams,
            "flow_backend": flow_backend,
            "device": device,
            "precision": precision,
        }
        if build_extractor:
            det._build_extractor(path)
        return det

    def _build_extractor(self, source: str | os.PathLike = "<model>") -> None:
        from tal_pipeline.features import FeatureExtractor

        kw = self._extract_kwargs
        feats = self.predictor.meta["features"]
        if kw["backbone"] == UNKNOWN or WeightsLabel.parse(feats.get("weights", UNKNOWN)) is None:
            raise InputError(
                f"{source}: the model was trained on features of an unknown backbone; "
                "run it on pre-extracted features with --features"
            )
        if kw["weights"] == "file":
            raise InputError(
                f"{source}: the model was trained on features from a local weights file; "
                "pass that file with --weights PATH"
            )
        extractor = FeatureExtractor(**kw)
        self.check_extractor(extractor, source)
        self.extractor = extractor

    def check_extractor(self, extractor, source: str | os.PathLike = "<model>") -> None:
        """Refuse an extractor whose backbone or weights differ from the checkpoint's."""
        feats = self.predictor.meta["features"]
        want_backbone, want_weights = feats.get("backbone"), feats.get("weights", "")
        have = f"{extractor.backbone_id} {extractor.loaded.label}"
        want = WeightsLabel.parse(want_weights)
        if extractor.backbone_id != want_backbone or want is None or extractor.weights_sha256 != want.sha256:
            raise InputError(
                f"{source}: backbone mismatch: the model was trained on {want_backbone} "
                f"{want_weights}, the extractor has {have}"
            )
        if extractor.dim != self.predictor.input_dim:
            raise InputError(
                f"{source}: the extractor gives {extractor.dim}-d features, the model expects "
                f"{self.predictor.input_dim}"
            )

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    def external_data(self) -> dict[str, Any]:
        feats = self.predictor.meta["features"]
        return {
            "backbone": feats.get("backbone", UNKNOWN),
            "weights": feats.get("weights", UNKNOWN),
            "model": str(self.predictor.meta.get("path", "?")),
            "classes": self.class_names,
            **({"precision": self.extractor.options.precision} if self.extractor is not None else {}),
        }

    def provenance(self, inputs: str = "video") -> dict[str, Any]:
        """What this detector's results depend on, as plain JSON values (``tal detect`` records
        it with the results and resumes only over results of an equal one): the checkpoint's
        checksum, the backbone and its weights, the post-processing options, and for raw video
        (``inputs="video"``) the extractor's streams and flow backend. New keys may be added;
        results missing a key count as made otherwise."""
        feats = self.predictor.meta["features"]
        prov: dict[str, Any] = {
            "model_sha256": self.model_sha256,
            "backbone": feats.get("backbone", UNKNOWN),
            "weights": feats.get("weights", UNKNOWN),
            "inputs": inputs,
            "postprocess": asdict(self.postprocess),
        }
        if inputs == "video":
            kw = self._extract_kwargs
            streams = list(kw.get("streams") or ())
            prov["streams"] = streams
            prov["flow_backend"] = kw.get("flow_backend") if "flow" in streams else None
            if self.extractor is not None:  # the backbone's precision ("auto" resolved)
                prov["precision"] = self.extractor.options.precision
        return prov

    def detect(self, path: str | os.PathLike) -> list[Segment]:
        """Segments of the video at ``path``, sorted by score (descending)."""
        return self.detect_video(path).segments

    def detect_video(self, path: str | os.PathLike) -> Detection:
        """Like :meth:`detect`, with the video's duration and feature meta."""
        if self.extractor is None:
            self._build_extractor()
        feats = self.extractor.extract(path)
        return self.detect_features(feats.array, feats.meta, video=str(path))

    def detect_features(
        self, array: np.ndarray, meta: FeatureMeta, video: str | None = None
    ) -> Detection:
        """Segments from pre-extracted features ``(T, D)`` with their meta."""
        source = video or meta.video
        self.predictor.check_features(array.shape[1], meta.backbone, meta.weights, source=source)
        segments = self.predictor.predict(
            array, meta.times(), meta.step, meta.duration, self.postprocess
        )
        precision = meta.extra.get("precision")  # the features' (any precision is accepted)
        return Detection(source, segments, meta.duration, meta, {"precision": precision} if precision else {})


def summary_lines(segments: list[Segment], limit: int = 20) -> list[str]:
    """Human-readable lines: ``label  start-end s  score`` (best first)."""
    lines = [
        f"{s.label:<12s} {s.start:8.2f} - {s.end:8.2f} s   score {s.score:.3f}"
        for s in segments[:limit]
    ]
    if len(segments) > limit:
        lines.append(f"... and {len(segments) - limit} more")
    return lines
