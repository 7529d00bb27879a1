"""Label assignment: which positions learn which instance.

Coordinates: position ``i`` of a feature sequence sits at time ``t0 + i * step`` (seconds); an
instance ``[t_start, t_end]`` (seconds) becomes ``[s, e]`` in *feature steps*:
``s = (t_start - t0) / step``, ``e = (t_end - t0) / step`` (fractional, may fall outside the
window). Regression targets are the distances ``(i - s, e - i)`` in feature steps, clamped at 0;
the head predicts them in the same unit (a learned scale, initialised to ``reg_init`` steps, maps
the network's output to steps; DIoU is scale-free, so no further normalisation).

Positives (centre sampling, as in ActionFormer but on a single temporal scale):
position ``i`` is positive for an instance with centre ``c`` and half-length ``h`` when

* ``|i - c| <= h + 0.5`` (the position's own step overlaps the instance), and
* ``|i - c| <= max(center_radius, center_ratio * h)`` (near the centre: at least
  ``center_radius`` = 1.5 steps, for long instances the central ``center_ratio`` = 50 %).

So every instance of at least one step gets positives, even one shorter than a step (its nearest
position). A position that qualifies for several instances (overlaps) goes to the **shortest**
one; its class target is that instance's class only (one-hot), its regression target that
instance's distances. Other positions are negatives for every class.

Actionness target: 1 at every position inside any instance (``|i - c| <= h``) or positive,
0 elsewhere. Padded positions (``mask`` False) take no part in any loss.

Several output levels (:func:`assign_levels`, ActionFormer's rule): level ``l`` has stride
``s = 2^l``; its position ``p`` sits at ``x = p s + (s - 1) / 2`` steps. It is positive for an
instance when ``x`` is inside the instance, within ``center_radius * s`` of its centre, and the
larger of its two distances ``max(x - start, end - x)`` lies in the level's range
``[range_base * 2^(l-1), range_base * 2^l)`` (``[0, range_base)`` for level 0, no upper bound for
the last level): short instances are regressed at fine levels, long ones at coarse levels, and
every distance a level learns is a few of its strides. Ties go to the shortest instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AssignConfig:
    """Centre-sampling options."""

    center_radius: float = 1.5  # feature steps, minimum radius of the positive region
    center_ratio: float = 0.5  # fraction of the half-length that is positive for long instances
    range_base: float = 4.0  # several levels: level 0 regresses distances below this many steps


@dataclass(frozen=True)
class Targets:
    """Training targets of a batch, all ``(B, T, ...)`` torch tensors."""

    mask: torch.Tensor  # (B, T) bool, valid positions
    positive: torch.Tensor  # (B, T) bool
    classes: torch.Tensor  # (B, T, C) float one-hot at positives, 0 elsewhere
    distances: torch.Tensor  # (B, T, 2) float, steps, meaningful at positives
    actionness: torch.Tensor  # (B, T) float in {0, 1}

    def to(self, device) -> Targets:
        return Targets(*(getattr(self, k).to(device) for k in ("mask", "positive", "classes", "distances", "actionness")))


def assign_window(
    instances: np.ndarray, length: int, num_classes: int, config: AssignConfig = AssignConfig()
) -> dict[str, np.ndarray]:
    """Targets of one window.

    Args:
        instances: ``(N, 3)`` float: class index, start, end in feature steps relative to the
            window's first position (may extend past the window).
        length: T, positions in the window.

    Returns:
        ``positive (T,) bool``, ``classes (T, C) float32``, ``distances (T, 2) float32``,
        ``actionness (T,) float32``.
    """
    pos = np.arange(length, dtype=np.float64)  # (T,)
    positive = np.zeros(length, bool)
    classes = np.zeros((length, num_classes), np.float32)
    distances = np.zeros((length, 2), np.float32)
    actionness = np.zeros(length, np.float32)
    best_len = np.full(length, np.inf)
    for label, s, e in np.asarray(instances, np.float64).reshape(-1, 3):
        c, h = 0.5 * (s + e), 0.5 * max(e - s, 0.0)
        off = np.abs(pos - c)
        inside = off <= h
        cand = (off <= h + 0.5) & (off <= max(config.center_radius, config.center_ratio * h))
        actionness[inside | cand] = 1.0
        win = cand & (2 * h < best_len)  # shortest instance wins
        best_len[win] = 2 * h
        positive[win] = True
        classes[win] = 0.0
        classes[win, int(label)] = 1.0
        distances[win, 0] = np.maximum(pos[win] - s, 0.0)
        distances[win, 1] = np.maximum(e - pos[win], 0.0)
    return {"positive": positive, "classes": classes, "distances": distances, "actionness": actionness}


def assign_levels(
    instances: np.ndarray, length: int, num_classes: int, strides: tuple[int, ...],
    config: AssignConfig = AssignConfig(),
) -> dict[str, np.ndarray]:
    """Targets of one window for output levels of the given strides (see the module docstring),
    concatenated along T in level order, like the head's outputs. Same keys as
    :func:`assign_window`, with ``sum(ceil(length / s))`` rows."""
    parts = []
    inst = np.asarray(instances, np.float64).reshape(-1, 3)
    for level, stride in enumerate(strides):
        n = -(-length // stride)
        pos = np.arange(n, dtype=np.float64) * stride + 0.5 * (stride - 1)  # (T_l,) centres, steps
        lo = 0.0 if level == 0 else config.range_base * 2 ** (level - 1)
        hi = np.inf if level == len(strides) - 1 else config.range_base * 2**level
        positive = np.zeros(n, bool)
        classes = np.zeros((n, num_classes), np.float32)
        distances = np.zeros((n, 2), np.float32)
        actionness = np.zeros(n, np.float32)
        best_len = np.full(n, np.inf)
        for label, s, e in inst:
            c, h = 0.5 * (s + e), 0.5 * max(e - s, 0.0)
            inside = np.abs(pos - c) <= h
            actionness[inside] = 1.0
            reach = np.maximum(pos - s, e - pos)  # (T_l,) the larger distance to regress
            cand = inside & (np.abs(pos - c) <= config.center_radius * stride) & (reach >= lo) & (reach < hi)
            win = cand & (2 * h < best_len)  # shortest instance wins
            best_len[win] = 2 * h
            positive[win] = True
            classes[win] = 0.0
            classes[win, int(label)] = 1.0
            distances[win, 0] = pos[win] - s
            distances[win, 1] = e - pos[win]
        parts.append({"positive": positive, "classes": classes, "distances": distances, "actionness": actionness})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def collate_targets(
    windows: list[dict[str, np.ndarray]], lengths: list[int], total: int, strides: tuple[int, ...] = (1,)
) -> Targets:
    """Stack per-window targets (from :func:`assign_window`, or :func:`assign_levels` with the
    same ``strides``) padded to ``total`` positions (each level to ``ceil(total / s)``)."""
    b, c = len(windows), windows[0]["classes"].shape[1]
    sizes = [-(-total // s) for s in strides]
    starts = np.cumsum([0, *sizes])  # first row of each level in the batch
    rows = int(starts[-1])
    mask = np.zeros((b, rows), bool)
    out = {"positive": np.zeros((b, rows), bool), "classes": np.zeros((b, rows, c), np.float32),
           "distances": np.zeros((b, rows, 2), np.float32), "actionness": np.zeros((b, rows), np.float32)}
    for k, (w, n) in enumerate(zip(windows, lengths)):
        src = 0
        for level, s in enumerate(strides):
            m = -(-n // s)  # this window's positions at the level
            dst = slice(int(starts[level]), int(starts[level]) + m)
            mask[k, dst] = True
            for key, arr in out.items():
                arr[k, dst] = w[key][src : src + m]
            src += m
    return Targets(*(torch.from_numpy(a) for a in (mask, out["positive"], out["classes"], out["distances"],
                                                   out["actionness"])))
