"""Post-processing: position-wise head outputs to scored segments in seconds.

The recipe (ActionFormer's, restated; all steps vectorised with numpy except the inherently
sequential Soft-NMS loop, which is vectorised over the remaining candidates):

1. candidates: every (position, class) pair whose score (the class probability, or with
   ``score_fusion="actionness"`` the probability times the actionness) is above ``min_score``;
   keep the ``pre_nms_top_k`` best;
2. decode each candidate to seconds with :func:`positions_to_seconds` (the one grid-to-seconds
   formula of the project);
3. clamp to ``[0, duration]`` and drop segments shorter than ``min_length`` feature steps
   after clamping (one step: the features cannot place anything finer);
4. Soft-NMS (Gaussian by default) per class (``multiclass``) or over all classes;
5. optional score voting: the boundaries of each kept segment become the score*tIoU weighted
   mean of the pre-NMS candidates (same class) overlapping it by at least ``voting_threshold``;
6. the ``max_segments`` best, sorted by score, descending.

The head fuses its outputs into one probability per (position, class) before calling
:func:`postprocess` (e.g. class probability times actionness); this module does not know about
the head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NMS_METHODS = ("gaussian", "linear", "hard")


@dataclass(frozen=True)
class Segment:
    """One detection: an action ``label`` from ``start`` to ``end`` (seconds), with a ``score``."""

    label: str  # class name
    score: float  # confidence in [0, 1]
    start: float  # seconds from the start of the video
    end: float  # seconds from the start of the video, >= start

    def to_json(self) -> dict:
        """The ActivityNet results entry: ``{"label", "score", "segment": [start, end]}``."""
        return {
            "label": self.label,
            "score": float(self.score),
            "segment": [float(self.start), float(self.end)],
        }

    @classmethod
    def from_json(cls, obj: dict) -> Segment:
        """Inverse of :meth:`to_json` (no validation; :mod:`tal_pipeline.results` validates)."""
        t0, t1 = obj["segment"]
        return cls(str(obj["label"]), float(obj["score"]), float(t0), float(t1))


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing options; defaults are ActionFormer's (THUMOS14 test config)."""

    pre_nms_top_k: int = 2000  # candidates (position, class) kept before NMS, per video
    min_score: float = 0.001  # probability; candidates at or below it, and segments whose score
    #                           Soft-NMS decays below it, are dropped
    nms_method: str = "gaussian"  # "gaussian" (Soft-NMS), "linear" (Soft-NMS) or "hard" (NMS)
    nms_sigma: float = 0.5  # Gaussian Soft-NMS width, in tIoU^2 units: score *= exp(-iou^2/sigma)
    iou_threshold: float = 0.1  # tIoU; "linear"/"hard" only decay/suppress overlaps above it
    #                             (kept for ActionFormer parity; unused by "gaussian")
    max_segments: int = 200  # segments kept per video, after NMS
    multiclass: bool = True  # True: NMS per class; False: all classes suppress each other
    voting_threshold: float = 0.0  # tIoU; > 0 turns on score voting (ActionFormer uses 0.7)
    min_length: float = 1.0  # feature steps; shorter segments (after clamping) are dropped: the
    #                          head cannot place boundaries finer than one step, and what is left
    #                          shorter is a clamped sliver at either end of the video. A video
    #                          shorter than this keeps segments as long as the video
    motion_check: bool = True  # apply the checkpoint's camera-motion check (``global_motion``),
    #                            when it declares one and the features carry their global motion

    def __post_init__(self):
        if self.nms_method not in NMS_METHODS:
            raise ValueError(f"nms_method must be one of {NMS_METHODS}, got {self.nms_method!r}")
        if self.pre_nms_top_k < 1 or self.max_segments < 1:
            raise ValueError("pre_nms_top_k and max_segments must be >= 1")
        if self.nms_sigma <= 0:
            raise ValueError(f"nms_sigma must be > 0, got {self.nms_sigma}")
        if not self.min_length >= 0:
            raise ValueError(f"min_length must be >= 0, got {self.min_length}")


def positions_to_seconds(times, offsets, step: float) -> np.ndarray:
    """Decode position-wise boundary distances into segments in seconds.

    THE one grid-to-seconds formula of the project. Position ``i`` of the feature sequence is
    centred at ``times[i]`` seconds (for a backbone window of ``num_frames`` frames moved by
    ``feature_stride`` frames at ``fps``: ``times[i] = (i * feature_stride + 0.5 * num_frames) /
    fps``, ActionFormer's grid) and predicts distances ``(left, right) >= 0`` in feature steps
    of ``step = feature_stride / fps`` seconds::

        start = times[i] - left * step
        end   = times[i] + right * step

    Args:
        times: ``(T,)`` centre time of each position, seconds.
        offsets: ``(T, 2)`` distances (left, right) in feature steps.
        step: seconds per feature step.

    Returns:
        ``(T, 2)`` float64 array of (start, end) in seconds (not clamped).
    """
    times = np.asarray(times, dtype=np.float64)  # (T,)
    offsets = np.asarray(offsets, dtype=np.float64)  # (T, 2)
    if offsets.ndim != 2 or offsets.shape[1] != 2 or times.shape != offsets.shape[:1]:
        raise ValueError(f"expected times (T,) and offsets (T, 2), got {times.shape} and {offsets.shape}")
    start = times - offsets[:, 0] * step
    end = times + offsets[:, 1] * step
    return np.stack([start, end], axis=1)  # (T, 2)


def _iou_one_to_many(seg: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """tIoU of one segment ``(2,)`` with ``(K, 2)`` segments -> ``(K,)``; 0 where the union is 0."""
    inter = np.clip(np.minimum(seg[1], segs[:, 1]) - np.maximum(seg[0], segs[:, 0]), 0.0, None)
    union = (seg[1] - seg[0]) + (segs[:, 1] - segs[:, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def soft_nms(
    segments,
    scores,
    sigma: float = 0.5,
    min_score: float = 0.001,
    max_keep: int | None = None,
    *,
    method: str = "gaussian",
    iou_threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS over 1D segments (Bodla et al. 2017, as ActionFormer uses it).

    Repeatedly picks the remaining segment with the highest (current) score, then decays the
    score of every other remaining segment ``j`` by its tIoU with the pick:

    - ``"gaussian"``: ``score_j *= exp(-iou^2 / sigma)``;
    - ``"linear"``: ``score_j *= 1 - iou`` where ``iou > iou_threshold``;
    - ``"hard"``: ``score_j = 0`` where ``iou > iou_threshold`` (classic NMS).

    Segments whose score falls below ``min_score`` (or reaches 0) are dropped. Stops after
    ``max_keep`` picks.

    Args:
        segments: ``(K, 2)`` (start, end), any time unit.
        scores: ``(K,)`` scores.

    Returns:
        ``(keep, new_scores)``: ``keep`` ``(M,)`` int64 indices into ``segments`` in pick order,
        ``new_scores`` ``(M,)`` their scores when picked (non-increasing).
    """
    if method not in NMS_METHODS:
        raise ValueError(f"method must be one of {NMS_METHODS}, got {method!r}")
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)  # (K, 2)
    cur = np.array(scores, dtype=np.float64).reshape(-1)  # (K,) current (decayed) scores
    if segs.shape[0] != cur.shape[0]:
        raise ValueError(f"segments {segs.shape} and scores {cur.shape} disagree")
    limit = segs.shape[0] if max_keep is None else min(int(max_keep), segs.shape[0])
    ids = np.flatnonzero((cur >= min_score) & (cur > 0))  # (R,) original indices in play
    segs, cur = segs[ids], cur[ids]  # compacted: (R, 2), (R,)
    keep: list[int] = []
    kept_scores: list[float] = []
    while ids.size and len(keep) < limit:
        b = int(np.argmax(cur))  # first max: ties go to the earlier index
        keep.append(int(ids[b]))
        kept_scores.append(float(cur[b]))
        iou = _iou_one_to_many(segs[b], segs)  # (R,)
        if method == "gaussian":
            cur = cur * np.exp(-(iou * iou) / sigma)
        elif method == "linear":
            cur = np.where(iou > iou_threshold, cur * (1.0 - iou), cur)
        else:
            cur = np.where(iou > iou_threshold, 0.0, cur)
        alive = (cur >= min_score) & (cur > 0)
        alive[b] = False
        ids, segs, cur = ids[alive], segs[alive], cur[alive]
    return np.asarray(keep, dtype=np.int64), np.asarray(kept_scores, dtype=np.float64)


def _vote(kept: np.ndarray, pool: np.ndarray, pool_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Score voting: each kept ``(M, 2)`` segment becomes the mean of the ``(K, 2)`` pool
    segments overlapping it by tIoU >= ``threshold``, weighted by score * tIoU."""
    out = kept.copy()
    for m in range(kept.shape[0]):
        iou = _iou_one_to_many(kept[m], pool)  # (K,)
        w = np.where(iou >= threshold, pool_scores * iou, 0.0)
        if w.sum() > 0:
            out[m] = (w[:, None] * pool).sum(axis=0) / w.sum()
    return out


def postprocess(
    class_probs,
    offsets,
    times,
    step: float,
    duration: float,
    class_names: Sequence[str],
    config: PostprocessConfig = PostprocessConfig(),
) -> list[Segment]:
    """Turn one video's position-wise predictions into at most ``config.max_segments`` segments.

    Args:
        class_probs: ``(T, C)`` probabilities in [0, 1] (NaN counts as 0).
        offsets: ``(T, 2)`` distances (left, right) to the boundaries, in feature steps
            (negative values count as 0).
        times: ``(T,)`` centre time of each position, seconds.
        step: seconds per feature step.
        duration: the video's duration, seconds; segments are clamped to ``[0, duration]``.
        class_names: ``C`` names, in the order of ``class_probs``' columns.
        config: the recipe's options.

    Returns:
        Segments (seconds) sorted by score, descending; ``start < end`` within ``[0, duration]``.
    """
    probs = np.asarray(class_probs, dtype=np.float64)  # (T, C)
    if probs.ndim != 2:
        raise ValueError(f"class_probs must be (T, C), got shape {probs.shape}")
    num_pos, num_cls = probs.shape
    if len(class_names) != num_cls:
        raise ValueError(f"{len(class_names)} class names for {num_cls} class columns")
    offs = np.asarray(offsets, dtype=np.float64).reshape(num_pos, 2)  # (T, 2)
    times = np.asarray(times, dtype=np.float64).reshape(num_pos)  # (T,)
    duration = float(duration)
    if num_pos == 0 or num_cls == 0 or not duration > 0:
        return []
    pos, cls, scores = _candidates(probs, config)  # 1.
    min_length = min(config.min_length * step, duration)  # s
    segs, ok = _decode(times[pos], offs[pos], step, duration, min_length)  # 2.-3.
    suppressed = _suppress(segs[ok], scores[ok], cls[ok], duration, config)  # 4.-5.
    if suppressed is None:
        return []
    return _best(*suppressed, class_names, config.max_segments)  # 6.


def _candidates(probs: np.ndarray, config: PostprocessConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1: the (position, class) pairs scoring above ``min_score``, the ``pre_nms_top_k``
    best of them in (position, class) order: ``(pos (N,), cls (N,), scores (N,))``."""
    num_cls = probs.shape[1]
    flat = np.clip(np.nan_to_num(probs, nan=0.0), 0.0, 1.0).ravel()  # (T*C,)
    cand = np.flatnonzero(flat > config.min_score)  # (N,)
    if cand.size > config.pre_nms_top_k:
        part = np.argpartition(-flat[cand], config.pre_nms_top_k - 1)[: config.pre_nms_top_k]
        cand = np.sort(cand[part])
    pos, cls = np.divmod(cand, num_cls)  # (N,), (N,)
    return pos, cls, flat[cand]


def _decode(
    times: np.ndarray, offsets: np.ndarray, step: float, duration: float, min_length: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-3: candidates ``(N,)`` centred at ``times`` with distances ``(N, 2)`` (negative
    ones count as 0) to ``(N, 2)`` segments in seconds clamped to the video, and ``ok (N,)``:
    finite, not empty, and at least ``min_length`` seconds long (1 us of slack, so that a
    segment of exactly one step survives the float arithmetic). Score voting (step 5) keeps
    this: a weighted mean of segments this long is this long."""
    segs = positions_to_seconds(times, np.maximum(offsets, 0.0), step)  # (N, 2)
    segs = np.clip(segs, 0.0, duration)
    length = segs[:, 1] - segs[:, 0]  # (N,) s
    ok = np.isfinite(segs).all(axis=1) & (length > 0) & (length >= min_length - 1e-6)
    return segs, ok


def _suppress(
    segs: np.ndarray, scores: np.ndarray, cls: np.ndarray, duration: float, config: PostprocessConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps 4-5: Soft-NMS (and score voting) per class, or over all classes: the kept
    ``(segs (M, 2), scores (M,), cls (M,))``, class after class; None when no class is left."""
    groups = [np.flatnonzero(cls == c) for c in np.unique(cls)] if config.multiclass else [
        np.arange(cls.size)
    ]
    out_segs, out_scores, out_cls = [], [], []
    for idx in groups:
        keep, new_scores = soft_nms(
            segs[idx],
            scores[idx],
            config.nms_sigma,
            config.min_score,
            config.max_segments,
            method=config.nms_method,
            iou_threshold=config.iou_threshold,
        )
        kept = segs[idx][keep]  # (M, 2)
        if config.voting_threshold > 0 and keep.size:
            kept = np.clip(_vote(kept, segs[idx], scores[idx], config.voting_threshold), 0.0, duration)
        out_segs.append(kept)
        out_scores.append(new_scores)
        out_cls.append(cls[idx][keep])
    if not out_segs:
        return None
    return np.concatenate(out_segs), np.concatenate(out_scores), np.concatenate(out_cls)


def _best(
    segs: np.ndarray, scores: np.ndarray, cls: np.ndarray, class_names: Sequence[str], max_segments: int
) -> list[Segment]:
    """Step 6: the ``max_segments`` best as :class:`Segment`s, by score descending (stable)."""
    order = np.argsort(-scores, kind="stable")[:max_segments]
    result = []
    for k in order:
        start, end = float(segs[k, 0]), float(segs[k, 1])
        if not end > start:  # voting cannot empty a segment, but stay safe
            continue
        score = min(max(float(scores[k]), 0.0), 1.0)
        if math.isfinite(score):
            result.append(Segment(str(class_names[int(cls[k])]), score, start, end))
    return result
