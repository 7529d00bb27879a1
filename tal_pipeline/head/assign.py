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


def collate_targets(windows: list[dict[str, np.ndarray]], lengths: list[int], total: int) -> Targets:
    """Stack per-window targets (from :func:`assign_window`) padded to ``total`` positions."""
    b, c = len(windows), windows[0]["classes"].shape[1]
    mask = np.zeros((b, total), bool)
    positive = np.zeros((b, total), bool)
    classes = np.zeros((b, total, c), np.float32)
    distances = np.zeros((b, total, 2), np.float32)
    actionness = np.zeros((b, total), np.float32)
    for k, (w, n) in enumerate(zip(windows, lengths)):
        mask[k, :n] = True
        positive[k, :n] = w["positive"]
        classes[k, :n] = w["classes"]
        distances[k, :n] = w["distances"]
        actionness[k, :n] = w["actionness"]
    return Targets(*(torch.from_numpy(a) for a in (mask, positive, classes, distances, actionness)))
