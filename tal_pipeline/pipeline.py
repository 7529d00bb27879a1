"""Raw video -> segments: decode -> TV-L1 flow -> two-stream features -> TSA/TPP head -> Soft-NMS.

:class:`Detector` ties a trained head (the model and the typed meta ``checkpoint.load_head``
reads) to the feature extractor it was trained on::

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
from tal_pipeline.featio import UNKNOWN, FeatureMeta
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
    """A trained head plus the feature extractor it needs.

    ``model``: the :class:`~tal_pipeline.head.model.HeadModel`, on ``device``, in eval mode;
    ``meta``: its :class:`~tal_pipeline.checkpoint.HeadMeta` (classes, what it was trained on).
    """

    def __init__(self, model, meta, extractor=None, postprocess: PostprocessConfig | None = None,
                 device: str = "cpu"):
        self.model = model  # tal_pipeline.head.model.HeadModel
        self.meta = meta  # tal_pipeline.checkpoint.HeadMeta
        self.device = device
        self.extractor = extractor  # tal_pipeline.features.FeatureExtractor, built lazily
        self.postprocess = postprocess or PostprocessConfig()
        self._extract_kwargs: dict[str, Any] = {}
        self.model_sha256: str | None = None  # of the checkpoint file (``load``)
        self._warned_no_motion = False  # features without global motion: said once

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
        from tal_pipeline.checkpoint import load_head
        from tal_pipeline.weights import file_sha256

        path = resolve_model(model)
        head, meta = load_head(path, device=device)
        det = cls(head, meta, None, postprocess, device)
        det.model_sha256 = file_sha256(path)
        label = meta.weights_label
        det._extract_kwargs = {
            "backbone": meta.backbone,
            "weights": str(weights) if weights is not None else (label.id if label else UNKNOWN),
            "streams": meta.streams,
            "flow_backend": flow_backend or meta.flow_backend or "torch",
            "device": device,
            "precision": precision,
        }
        backend = det._extract_kwargs["flow_backend"]
        if "flow" in meta.streams and build_extractor:
            from tal_pipeline.flow import FLOW_VERSIONS

            if meta.flow_backend and backend != meta.flow_backend:  # --flow chose another one
                log.warning("%s: trained on %s flow, --flow %s gives other flow fields: detections "
                            "may be worse than the model's own scores", path, meta.flow_backend, backend)
            meta.warn_flow_version(backend, FLOW_VERSIONS[backend], "this tal")
        if build_extractor:
            det._build_extractor(path)
        return det

    def _build_extractor(self, source: str | os.PathLike = "<model>") -> None:
        from tal_pipeline.features import FeatureExtractor

        kw = self._extract_kwargs
        if kw["backbone"] == UNKNOWN or self.meta.weights_label is None:
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
        meta = self.meta
        have = f"{extractor.backbone_id} {extractor.loaded.label}"
        want = meta.weights_label
        if extractor.backbone_id != meta.backbone or want is None or extractor.weights_sha256 != want.sha256:
            raise InputError(
                f"{source}: backbone mismatch: the model was trained on {meta.backbone} "
                f"{meta.weights}, the extractor has {have}"
            )
        if extractor.dim != meta.feature_dim:
            raise InputError(
                f"{source}: the extractor gives {extractor.dim}-d features, the model expects "
                f"{meta.feature_dim}"
            )

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    def external_data(self) -> dict[str, Any]:
        return {
            "backbone": self.meta.backbone,
            "weights": self.meta.weights,
            "model": self.meta.path,
            "classes": self.class_names,
            **({"precision": self.extractor.options.precision} if self.extractor is not None else {}),
        }

    def provenance(self, inputs: str = "video") -> dict[str, Any]:
        """What this detector's results depend on, as plain JSON values (``tal detect`` records
        it with the results and resumes only over results of an equal one): the checkpoint's
        checksum, the backbone and its weights, the post-processing options, and for raw video
        (``inputs="video"``) the extractor's streams and flow backend. New keys may be added;
        results missing a key count as made otherwise."""
        prov: dict[str, Any] = {
            "model_sha256": self.model_sha256,
            "backbone": self.meta.backbone,
            "weights": self.meta.weights,
            "inputs": inputs,
            "postprocess": asdict(self.postprocess),
        }
        if inputs == "video":
            from tal_pipeline.flow import flow_version

            kw = self._extract_kwargs
            streams = list(kw.get("streams") or ())
            prov["streams"] = streams
            prov["flow_backend"] = kw.get("flow_backend") if "flow" in streams else None
            prov["flow_version"] = flow_version(streams, kw["flow_backend"])
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
        # the extractor was checked against the model when built (an explicit --flow warned)
        return self._detect(feats.array, feats.meta, str(path))

    def detect_features(
        self, array: np.ndarray, meta: FeatureMeta, video: str | None = None
    ) -> Detection:
        """Segments from pre-extracted features ``(T, D)`` with their meta, once the model's
        checkpoint accepts them (``HeadMeta.check_features``: width, backbone and weights,
        streams, flow backend)."""
        from tal_pipeline.featio import recorded_flow_version

        source = video or meta.video
        array = np.asarray(array, dtype=np.float32)  # (T, D)
        if array.ndim != 2:
            raise InputError(f"{source}: features must be (T, D), got shape {array.shape}")
        self.meta.check_features(array.shape[1], meta.backbone, meta.weights, source, meta.step,
                                 meta.streams, meta.extra.get("flow_backend"),
                                 recorded_flow_version(meta.extra))
        return self._detect(array, meta, source)

    def _detect(self, array: np.ndarray, meta: FeatureMeta, source: str) -> Detection:
        """The head on features ``(T, D)`` (``inference.predict_segments``: the windowed
        forward, then post-processing)."""
        from tal_pipeline.inference import predict_segments

        array = np.asarray(array, dtype=np.float32)  # (T, D)
        if self.meta.motion_input is not None:  # (T, D) -> (T, D + K): the head reads the camera model too
            try:
                array = self.meta.motion_input.append(array, meta.motion, source)
            except ValueError as err:
                raise InputError(str(err)) from None
        segments = predict_segments(self.model, array, meta.times(), meta.step, meta.duration,
                                    self.meta.class_names, self.postprocess, self.device)
        segments = self._motion_check(segments, meta, source)
        precision = meta.extra.get("precision")  # the features' (any precision is accepted)
        return Detection(source, segments, meta.duration, meta, {"precision": precision} if precision else {})

    def _motion_check(self, segments: list[Segment], meta: FeatureMeta, source: str) -> list[Segment]:
        """The checkpoint's camera-motion check (``global_motion.MotionCheck``) on ``segments``,
        when it declares one and ``postprocess.motion_check`` is on. Features without their
        global motion (made before it existed) skip it, said once per detector at INFO level:
        they give what they gave before the check existed, which is no cause for a warning."""
        from tal_pipeline.global_motion import apply_check

        check = self.meta.motion_check
        if check is None or not self.postprocess.motion_check:
            return segments
        if meta.motion is None:
            if not self._warned_no_motion:
                self._warned_no_motion = True
                log.info("%s: features without their global motion (made by an older tal): the "
                         "model's camera-motion check is skipped; re-extract them to apply it", source)
            return segments
        # demoted scores obey --min-score like every other score (Soft-NMS's own rule: >= keeps)
        floor = self.postprocess.min_score
        return [s for s in apply_check(segments, meta.motion, meta.times(), check) if s.score >= floor]


def summary_lines(segments: list[Segment], limit: int = 20) -> list[str]:
    """Human-readable lines: ``label  start-end s  score`` (best first)."""
    lines = [
        f"{s.label:<12s} {s.start:8.2f} - {s.end:8.2f} s   score {s.score:.3f}"
        for s in segments[:limit]
    ]
    if len(segments) > limit:
        lines.append(f"... and {len(segments) - limit} more")
    return lines
