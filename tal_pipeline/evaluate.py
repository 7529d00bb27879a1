"""Detection mAP, computed as the official ActivityNet evaluation does (``Evaluation/eval_detection.py``).

Per class, over all evaluated videos:

1. sort the class's predictions by score, descending (stable: ties keep input order, i.e. the
   order of the predictions dict, then of each video's list);
2. walk them in that order; each one is a true positive when some not-yet-matched ground-truth
   instance of the same class in the same video has tIoU >= the threshold with it (it takes the
   one with the highest tIoU), otherwise a false positive (a second detection of an already
   matched instance is a false positive);
3. precision and recall over the ranked list (recall divides by the class's number of
   ground-truth instances, so missed instances and videos without predictions count);
4. AP = VOC all-point interpolated area (ActivityNet's ``interpolated_prec_rec``): precision
   made non-increasing from the right, summed over the recall steps.

mAP is the mean AP over the ground truth's classes (a class with no predictions has AP 0);
average mAP is the mean of mAP over the tIoU thresholds. Thresholds are rounded to 10 decimals
so ``np.arange(0.3, 0.71, 0.1)`` means exactly 0.3 ... 0.7.

Where this differs from the official script, it refuses to crash rather than to count:

- a predicted label that is not a class of the ground truth is ignored (warned, counted);
  the official script raises on it;
- predictions for a video that is not in the ground truth (of the chosen subset) are ignored
  (warned, counted); the official script counts them as false positives. Predictions for a
  video that *is* in the ground truth but has no instance of that class are false positives,
  as officially;
- tIoU is 0 when the union is empty (zero-length segments), where the official gives NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tal_pipeline.errors import InputError
from tal_pipeline.results import Annotations, Results

log = logging.getLogger(__name__)

THUMOS_TIOU = (0.3, 0.4, 0.5, 0.6, 0.7)  # tIoU thresholds of THUMOS14 papers
ACTIVITYNET_TIOU = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))  # 0.5:0.95:0.05


def tiou(target, candidates) -> np.ndarray:
    """Temporal IoU of one segment with many.

    Args:
        target: ``(2,)`` (start, end).
        candidates: ``(K, 2)`` (start, end), same unit.

    Returns:
        ``(K,)`` float64 in [0, 1]; 0 where the union is empty.
    """
    t = np.asarray(target, dtype=np.float64).reshape(2)
    c = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)  # (K, 2)
    inter = np.clip(np.minimum(t[1], c[:, 1]) - np.maximum(t[0], c[:, 0]), 0.0, None)
    union = (t[1] - t[0]) + (c[:, 1] - c[:, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _tiou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(P, 2)`` x ``(G, 2)`` -> ``(P, G)`` tIoU (same rule as :func:`tiou`)."""
    inter = np.clip(
        np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0, None
    )
    union = (a[:, None, 1] - a[:, None, 0]) + (b[None, :, 1] - b[None, :, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def interpolated_ap(precision, recall) -> float:
    """VOC all-point interpolated AP (ActivityNet's ``interpolated_prec_rec``).

    Args:
        precision: ``(P,)`` precision after each ranked prediction.
        recall: ``(P,)`` recall after each ranked prediction (non-decreasing).
    """
    mprec = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]  # non-increasing from the right
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _thresholds(tiou_thresholds) -> np.ndarray:
    thr = np.round(np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1), 10)
    if thr.size == 0 or not np.all((thr > 0) & (thr <= 1)):
        raise InputError(f"tIoU thresholds must be in (0, 1], got {list(thr)}")
    return thr


def average_precision(
    ground_truth: Mapping[str, Sequence[Sequence[float]]],
    predictions: Sequence[tuple[str, float, float, float]],
    tiou_thresholds=THUMOS_TIOU,
) -> np.ndarray:
    """AP of one class at each tIoU threshold.

    Args:
        ground_truth: video id -> ``(G, 2)`` instances (start, end) of this class, seconds.
        predictions: ``(video_id, score, start, end)`` of this class, any order.
        tiou_thresholds: ``(Th,)`` thresholds.

    Returns:
        ``(Th,)`` AP in [0, 1]; zeros when there is no ground truth or no prediction.
    """
    thr = _thresholds(tiou_thresholds)  # (Th,)
    gt = {vid: np.asarray(s, dtype=np.float64).reshape(-1, 2) for vid, s in ground_truth.items()}
    num_gt = sum(g.shape[0] for g in gt.values())
    num_pred = len(predictions)
    if num_gt == 0 or num_pred == 0:
        return np.zeros(thr.size)
    scores = np.array([float(p[1]) for p in predictions])  # (P,)
    order = np.argsort(-scores, kind="stable")  # rank -> prediction index
    segs = np.array([[float(p[2]), float(p[3])] for p in predictions]).reshape(-1, 2)[order]  # (P, 2)
    vids = [predictions[i][0] for i in order]

    ranks_by_video: dict[str, list[int]] = {}
    for rank, vid in enumerate(vids):
        ranks_by_video.setdefault(vid, []).append(rank)

    tp = np.zeros((thr.size, num_pred), dtype=bool)  # (Th, P) by rank
    rows = np.arange(thr.size)
    for vid, ranks in ranks_by_video.items():
        g = gt.get(vid)
        if g is None or g.shape[0] == 0:
            continue  # no instance of this class in that video: all false positives
        iou = _tiou_matrix(segs[ranks], g)  # (P_v, G)
        matched = np.zeros((thr.size, g.shape[0]), dtype=bool)  # (Th, G)
        for k, rank in enumerate(ranks):  # within a video, in rank order
            cand = np.where(matched, -1.0, iou[k][None, :])  # (Th, G) matched ones unavailable
            best = np.argmax(cand, axis=1)  # (Th,) highest tIoU among the unmatched
            hit = cand[rows, best] >= thr  # (Th,)
            tp[hit, rank] = True
            matched[rows[hit], best[hit]] = True

    ctp = np.cumsum(tp, axis=1, dtype=np.float64)  # (Th, P)
    precision = ctp / np.arange(1, num_pred + 1)
    recall = ctp / num_gt
    return np.array([interpolated_ap(precision[i], recall[i]) for i in range(thr.size)])


@dataclass(frozen=True)
class EvalResult:
    """Detection mAP at several tIoU thresholds (fractions in [0, 1], not percent)."""

    tiou: tuple[float, ...]  # thresholds
    mAP: tuple[float, ...]  # mean AP over the ground truth's classes, per threshold
    average_mAP: float  # mean of mAP over the thresholds
    per_class: dict[str, tuple[float, ...]]  # label -> AP per threshold (ground-truth classes)
    num_videos: int = 0  # ground-truth videos evaluated
    num_ground_truth: int = 0  # ground-truth instances
    num_predictions: int = 0  # predictions evaluated
    num_ignored_video: int = 0  # predictions ignored: video not in the ground truth
    num_ignored_label: int = 0  # predictions ignored: label not a ground-truth class
    num_videos_without_predictions: int = 0  # ground-truth videos with no prediction at all

    def to_dict(self) -> dict:
        """``{"tiou", "mAP", "average_mAP", "per_class"}`` (what ``tal eval --json`` prints)."""
        return {
            "tiou": list(self.tiou),
            "mAP": list(self.mAP),
            "average_mAP": self.average_mAP,
            "per_class": {k: list(v) for k, v in self.per_class.items()},
        }

    def table(self) -> str:
        """A plain-text table in percent: mAP per threshold, average, then AP per class."""
        width = max([len("average mAP")] + [len(c) for c in self.per_class])
        head = f"{'tIoU':<{width}}" + "".join(f"{t:>8.2f}" for t in self.tiou) + f"{'avg':>8}"
        rule = "-" * len(head)

        def row(name: str, values) -> str:
            values = list(values)
            mean = float(np.mean(values)) if values else 0.0
            return f"{name:<{width}}" + "".join(f"{100 * v:>8.2f}" for v in values) + f"{100 * mean:>8.2f}"

        lines = [
            "Detection mAP (%), ActivityNet protocol",
            head,
            rule,
            row("mAP", self.mAP),
            rule,
            *(row(name, ap) for name, ap in self.per_class.items()),
            rule,
            f"average mAP {100 * self.average_mAP:.2f} %; {self.num_videos} videos, "
            f"{self.num_ground_truth} ground-truth instances, {self.num_predictions} predictions"
            + (
                f"; ignored {self.num_ignored_video} (unknown video) + {self.num_ignored_label} (unknown label)"
                if self.num_ignored_video or self.num_ignored_label
                else ""
            ),
        ]
        return "\n".join(lines)


def _unpack(seg) -> tuple[str, float, float, float]:
    """(label, score, start, end) of a Segment, a Segment-like object or a results dict."""
    if isinstance(seg, Mapping):
        t0, t1 = seg["segment"]
        return str(seg["label"]), float(seg["score"]), float(t0), float(t1)
    return str(seg.label), float(seg.score), float(seg.start), float(seg.end)


def _few(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(repr, items[:n])) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def evaluate(
    ground_truth: Annotations,
    predictions: Mapping[str, Sequence] | Results,
    tiou_thresholds=THUMOS_TIOU,
    subset: str | None = None,
) -> EvalResult:
    """Official ActivityNet detection mAP of ``predictions`` against ``ground_truth``.

    Args:
        ground_truth: annotations (already restricted to a subset, or see ``subset``).
        predictions: video id -> segments (:class:`~tal_pipeline.postprocess.Segment`, any object
            with ``label``/``score``/``start``/``end``, or ``{"label", "score", "segment"}``
            dicts), or a :class:`~tal_pipeline.results.Results`.
        tiou_thresholds: ``(Th,)`` thresholds in (0, 1] (default THUMOS14's 0.3:0.7:0.1).
        subset: evaluate only the ground truth's videos of this subset (``None``: all).

    Raises:
        InputError: the (selected) ground truth has no action instance, or bad thresholds.
    """
    thr = _thresholds(tiou_thresholds)
    gt = ground_truth.select(subset)
    if gt.num_instances == 0:
        raise InputError(
            f"{gt.source}: the ground truth has no action instances"
            + (f" in subset {subset!r}" if subset else "")
            + f" ({len(gt.videos)} videos): nothing to evaluate"
        )
    classes = gt.class_names
    gt_by_class = _ground_truth_by_class(gt)
    pred_map = predictions.detections if isinstance(predictions, Results) else predictions
    preds = _Predictions.sort(pred_map, gt)
    missing = preds.warn(gt)

    ap = np.zeros((len(classes), thr.size))  # (C, Th)
    for i, c in enumerate(classes):
        ap[i] = average_precision(gt_by_class[c], preds.by_class[c], thr)
    m_ap = ap.mean(axis=0)  # (Th,)
    return EvalResult(
        tiou=tuple(float(t) for t in thr),
        mAP=tuple(float(v) for v in m_ap),
        average_mAP=float(m_ap.mean()),
        per_class={c: tuple(float(v) for v in ap[i]) for i, c in enumerate(classes)},
        num_videos=len(gt.videos),
        num_ground_truth=gt.num_instances,
        num_predictions=preds.used,
        num_ignored_video=preds.num_ignored_video,
        num_ignored_label=sum(preds.ignored_labels.values()),
        num_videos_without_predictions=len(missing),
    )


def _ground_truth_by_class(gt: Annotations) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """label -> video id -> that video's instances ``(start, end)`` of the label, seconds."""
    by_class: dict[str, dict[str, list]] = {c: {} for c in gt.class_names}
    for vid, video in gt.videos.items():
        for label, t0, t1 in video.segments:
            by_class[label].setdefault(vid, []).append((t0, t1))
    return by_class


@dataclass
class _Predictions:
    """The predictions sorted by ground-truth class, and those left out (with why)."""

    by_class: dict[str, list[tuple[str, float, float, float]]]  # label -> (video id, score, start, end)
    ignored_videos: list[str] = field(default_factory=list)  # predicted videos not in the ground truth
    num_ignored_video: int = 0  # their predictions
    ignored_labels: dict[str, int] = field(default_factory=dict)  # unknown label -> predictions
    used: int = 0  # predictions evaluated
    videos: set[str] = field(default_factory=set)  # ground-truth videos with at least one prediction

    @classmethod
    def sort(cls, pred_map: Mapping[str, Sequence], gt: Annotations) -> _Predictions:
        """Each prediction to its class's list, in the order of ``pred_map`` (ties in score keep
        it), unless its video or its label is not in ``gt``."""
        out = cls({c: [] for c in gt.class_names})
        for vid, segs in pred_map.items():
            segs = list(segs)
            if vid not in gt.videos:
                out.ignored_videos.append(vid)
                out.num_ignored_video += len(segs)
                continue
            if segs:
                out.videos.add(vid)
            for seg in segs:
                label, score, t0, t1 = _unpack(seg)
                if label not in out.by_class:
                    out.ignored_labels[label] = out.ignored_labels.get(label, 0) + 1
                    continue
                out.by_class[label].append((vid, score, t0, t1))
                out.used += 1
        return out

    def warn(self, gt: Annotations) -> list[str]:
        """Log what was ignored and which ground-truth videos have no prediction; returns those."""
        if self.ignored_videos:
            log.warning(
                "%d predicted videos are not in the ground truth, their %d predictions are ignored: %s",
                len(self.ignored_videos), self.num_ignored_video, _few(self.ignored_videos),
            )
        if self.ignored_labels:
            log.warning(
                "ignored %d predictions with labels that are not ground-truth classes: %s",
                sum(self.ignored_labels.values()), _few(sorted(self.ignored_labels)),
            )
        missing = [vid for vid in gt.videos if vid not in self.videos]
        if missing:
            hint = ""
            if len(gt.subsets) > 1:
                mix = ", ".join(f"{s or '(none)'}: {n} videos" for s, n in gt.subsets.items())
                hint = f" (the ground truth mixes subsets {mix}: choose one with subset= / --subset)"
            log.warning(
                "%d of %d ground-truth videos have no predictions (their instances count as missed): %s%s",
                len(missing), len(gt.videos), _few(missing), hint,
            )
        return missing
