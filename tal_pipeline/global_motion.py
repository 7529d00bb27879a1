"""Global (camera) motion of optical flow: a robust camera model fitted to each field.

A camera that pans, tilts, zooms or rolls moves the whole picture by one parametric field; an
object moves part of it. :func:`fit_fields` fits the camera model (an affine field about the
frame's centre) to the block medians of each flow field by iteratively reweighted least
squares (Tukey's biweight), so blocks an object covers are outliers as long as it covers less
than about half of the frame (a second start from the zero model, ``zero_margin``, was tried
for a still background under a large object and not adopted: docs/method.md, issue #31's third
session). :func:`step_descriptor` averages the per-field numbers over each
feature step, giving the per-step array ``(T, K)`` that feature files carry (``COLUMNS``), and
:func:`segment_motion` reads it back over a detection's time span (``MotionCheck``, which a
checkpoint may declare, demotes or drops detections whose camera did not move in their label's
direction).

Units: pixels of flow per sampled frame pair, at the size the flow was computed at (10 fps,
112 px for the demo). ``zoom``, ``rotation`` and the shears are the model's flow at the frame's
edge (the affine part times half the frame width), so a zoom compares with a pan: a zoom in
whose picture grows 1 % a frame at 112 px gives ``zoom`` 0.56. Signs are the *picture's*:
the camera panning left moves the picture right, ``tx > 0``; zooming in, ``zoom > 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COLUMNS = (
    "tx",  # picture's shift right, px per frame pair
    "ty",  # picture's shift down, px per frame pair
    "zoom",  # divergence: radial flow at the frame's edge, px (> 0: the picture grows)
    "rotation",  # curl: tangential flow at the edge, px (> 0: the picture turns clockwise on screen)
    "shear_a",  # (du/dx - dv/dy) / 2 at the edge, px
    "shear_b",  # (du/dy + dv/dx) / 2 at the edge, px
    "inliers",  # share of blocks whose residual is under INLIER_PX (0-1)
    "residual",  # mean residual over the blocks, px: motion the camera model leaves unexplained
    "worst_quadrant",  # the largest of the 2x2 quadrants' mean residuals, px
)
GRID = 8  # blocks per side: 64 block medians per field
MARGIN = 4  # px left out at the border, where TV-L1 has no content to match
INLIER_PX = 0.3  # px: a block the model explains (the demo's slowest pan is ~0.7 px a pair)
TUKEY_C = 4.685  # Tukey biweight's cut-off, in robust sigmas (95 % efficiency under Gaussian noise)
MIN_SIGMA = 0.1  # px: floor of the robust scale, so near-perfect fits do not reject noise
ITERATIONS = 12  # IRLS rounds (converges in a handful)
# fit_fields' second start (issue #31): None, the median block's start alone; a share of the
# blocks m, also the zero model's, kept when it explains as many blocks less m (docs/method.md)
ZERO_MARGIN: float | None = None


def _blocks(h: int, w: int, grid: int, margin: int) -> tuple[int, int, int, int, np.ndarray]:
    """The tiling of an ``h x w`` field: (top row, left column, block height, block width,
    centres (G*G, 2) as (x, y) px from the frame's centre)."""
    m = margin if min(h, w) > 2 * margin + grid else 0
    bh, bw = (h - 2 * m) // grid, (w - 2 * m) // grid
    if bh < 1 or bw < 1:
        raise ValueError(f"a flow field of {h}x{w} px is too small for a {grid}x{grid} grid")
    y0, x0 = m + ((h - 2 * m) - bh * grid) // 2, m + ((w - 2 * m) - bw * grid) // 2
    cy = y0 + bh * (np.arange(grid) + 0.5) - h / 2
    cx = x0 + bw * (np.arange(grid) + 0.5) - w / 2
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    return y0, x0, bh, bw, np.stack([xx.ravel(), yy.ravel()], 1)


def block_centres(h: int, w: int, grid: int = GRID, margin: int = MARGIN) -> np.ndarray:
    """Centres (G*G, 2), (x, y) px from the frame's centre, of :func:`block_medians`' blocks."""
    return _blocks(h, w, grid, margin)[4]


def block_medians(flow: np.ndarray, grid: int = GRID, margin: int = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Median flow of each block of a ``grid x grid`` tiling: ``flow`` float32 (N, 2, H, W) px ->
    (values (N, G*G, 2) px, centres (G*G, 2) as (x, y) px from the frame's centre)."""
    n, _, h, w = flow.shape
    y0, x0, bh, bw, centres = _blocks(h, w, grid, margin)
    core = flow[:, :, y0 : y0 + bh * grid, x0 : x0 + bw * grid]
    blocks = core.reshape(n, 2, grid, bh, grid, bw).transpose(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, 2, -1)
    values = np.median(blocks, axis=-1)  # (N, G*G, 2)
    return values.astype(np.float64), centres


def _irls(values: np.ndarray, design: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """IRLS with Tukey's biweight from ``coef`` (N, 3, 2): the fitted (N, 3, 2)."""
    for _ in range(ITERATIONS):
        resid = np.linalg.norm(values - design @ coef, axis=-1)  # (N, B) px
        sigma = np.maximum(1.4826 * np.median(resid, axis=1, keepdims=True), MIN_SIGMA)
        u = resid / (TUKEY_C * sigma)
        weights = np.where(u < 1, (1 - u**2) ** 2, 0.0)  # (N, B)
        normal = np.einsum("nb,bi,bj->nij", weights, design, design) + 1e-6 * np.eye(3)  # (N, 3, 3)
        rhs = np.einsum("nb,bi,nbk->nik", weights, design, values)  # (N, 3, 2)
        new = np.linalg.solve(normal, rhs)
        if np.allclose(new, coef, atol=1e-4):
            return new
        coef = new
    return coef


def fit_fields(flow: np.ndarray, zero_margin: float | None = ZERO_MARGIN) -> np.ndarray:
    """The per-field descriptor: ``flow`` float32 (N, 2, H, W) px -> float32 (N, K), ``COLUMNS``.

    Starts from the median block (a translation: what most of the frame does), then IRLS with
    Tukey's biweight on the block residuals' length (scale: 1.4826 x their median, at least
    ``MIN_SIGMA``), solving the 3x3 weighted normal equations of ``u`` and ``v`` for all fields
    at once. ``zero_margin`` (a share of the blocks; None: the median start alone): the fit is
    also run from the zero model (a still camera), and a field keeps that one when it explains
    (residual under ``INLIER_PX``) at least as many blocks as the median start's less
    ``zero_margin`` of them. :func:`fit_blocks` does the same from block medians.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got {flow.shape}")
    if len(flow) == 0:
        return np.zeros((0, len(COLUMNS)), np.float32)
    values, centres = block_medians(flow)  # (N, B, 2), (B, 2)
    return fit_blocks(values, centres, flow.shape[3], zero_margin)


def fit_blocks(values: np.ndarray, centres: np.ndarray, width: int,
               zero_margin: float | None = ZERO_MARGIN) -> np.ndarray:
    """:func:`fit_fields` from :func:`block_medians`' ``values`` (N, B, 2) px and ``centres``
    (B, 2) of fields ``width`` px wide -> float32 (N, K)."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n == 0:
        return np.zeros((0, len(COLUMNS)), np.float32)
    design = np.concatenate([np.ones((len(centres), 1)), centres], 1)  # (B, 3): 1, x, y
    coef = np.zeros((n, 3, 2))  # per field: [[tx, ty], [du/dx, dv/dx], [du/dy, dv/dy]]
    coef[:, 0] = np.median(values, axis=1)
    if zero_margin is None:
        coef = _irls(values, design, coef)
    else:  # both starts in one batch: the median block's (first n), the zero model's (last n)
        twice = np.concatenate([values, values])  # (2N, B, 2)
        both = _irls(twice, design, np.concatenate([coef, np.zeros_like(coef)]))
        share = (np.linalg.norm(twice - design @ both, axis=-1) < INLIER_PX).mean(axis=1)  # (2N,)
        zero_wins = share[n:] >= share[:n] - zero_margin  # (N,)
        coef = np.where(zero_wins[:, None, None], both[n:], both[:n])
    resid = np.linalg.norm(values - design @ coef, axis=-1)  # (N, B) px
    r = width / 2  # px: the frame's half width, where the affine part is read
    dudx, dvdx, dudy, dvdy = coef[:, 1, 0], coef[:, 1, 1], coef[:, 2, 0], coef[:, 2, 1]
    g = round(np.sqrt(resid.shape[1]))
    quads = resid.reshape(n, 2, g // 2, 2, g // 2).mean(axis=(2, 4)).reshape(n, 4)  # (N, 4)
    out = np.stack([
        coef[:, 0, 0], coef[:, 0, 1],
        r * (dudx + dvdy) / 2, r * (dvdx - dudy) / 2,
        r * (dudx - dvdy) / 2, r * (dudy + dvdx) / 2,
        (resid < INLIER_PX).mean(axis=1), resid.mean(axis=1), quads.max(axis=1),
    ], 1)
    return out.astype(np.float32)


def step_descriptor(per_field: np.ndarray, num_steps: int, fps: float, t0: float, step: float) -> np.ndarray:
    """Per-field rows ``(N, K)`` (field k from frame k to k + 1) -> per-feature-step means
    ``float32 (T, K)``: each field goes to the step whose centre (``t0 + j * step`` s) is nearest
    its own time, ``(k + 0.5) / fps`` s. A step no field falls in (none with at least two frames
    per step) gets its nearest field's row."""
    per_field = np.asarray(per_field, np.float64)
    k = len(per_field)
    out = np.zeros((num_steps, per_field.shape[1] if per_field.ndim == 2 else len(COLUMNS)), np.float32)
    if k == 0 or num_steps == 0:
        return out
    field_times = (np.arange(k) + 0.5) / fps
    owner = np.clip(np.rint((field_times - t0) / step), 0, num_steps - 1).astype(int)  # (N,)
    counts = np.bincount(owner, minlength=num_steps)  # (T,)
    sums = np.zeros((num_steps, per_field.shape[1]))
    np.add.at(sums, owner, per_field)
    empty = counts == 0
    out[~empty] = sums[~empty] / counts[~empty, None]
    if empty.any():
        centres = t0 + step * np.nonzero(empty)[0]
        nearest = np.abs(field_times[None, :] - centres[:, None]).argmin(axis=1)
        out[empty] = per_field[nearest]
    return out


def segment_motion(motion: np.ndarray, times: np.ndarray, start: float, end: float) -> np.ndarray:
    """Median of each column over the steps whose centre lies in ``[start, end]`` s (the nearest
    step when none does): ``motion`` (T, K), ``times`` (T,) s -> (K,). The median, so a cut or a
    brief object inside a long segment does not decide it."""
    times = np.asarray(times, np.float64)
    inside = (times >= start) & (times <= end)
    if not inside.any():
        inside = np.zeros(len(times), bool)
        inside[int(np.abs(times - (start + end) / 2).argmin())] = True
    return np.median(np.asarray(motion)[inside], axis=0)


@dataclass(frozen=True)
class LabelMotion:
    column: str  # a COLUMNS name, e.g. "tx"
    sign: int  # +1 or -1: the label's camera motion makes ``sign * column`` positive


@dataclass(frozen=True)
class MotionCheck:
    """A checkpoint's camera-motion check, as data: ``labels`` maps each checked label to the
    column and sign of its motion; a detection of such a label whose segment's median
    ``sign * column`` (:func:`segment_motion`) is below ``threshold`` px has its score multiplied
    by ``scale`` (0: dropped): the camera did not move that way, whatever moved in the picture."""

    labels: dict[str, LabelMotion]
    threshold: float  # px per frame pair at the flow's size
    scale: float = 0.0  # score factor of a detection that fails (0: drop it)

    def to_json(self) -> dict:
        return {"columns": list(COLUMNS), "threshold": float(self.threshold), "scale": float(self.scale),
                "labels": {k: {"column": v.column, "sign": int(v.sign)} for k, v in self.labels.items()}}

    @classmethod
    def from_json(cls, d: object, class_names: Sequence[str]) -> MotionCheck:
        """Validate a checkpoint's ``motion_check`` dict; TypeError or ValueError says what is wrong."""
        if not isinstance(d, dict) or not isinstance(d.get("labels"), dict):
            raise TypeError("motion_check must be a dict with 'labels' and 'threshold'")
        threshold = d.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
            raise ValueError("motion_check 'threshold' must be a finite number")
        scale = d.get("scale", 0.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= 1:
            raise ValueError("motion_check 'scale' must be a number in [0, 1]")
        if d.get("columns", list(COLUMNS)) != list(COLUMNS):
            raise ValueError("motion_check was made for other global-motion columns than this tal computes")
        labels = {}
        for name, spec in d["labels"].items():
            if name not in class_names:
                raise ValueError(f"motion_check names label {name!r}, which the model does not have")
            if not isinstance(spec, dict) or spec.get("column") not in COLUMNS or spec.get("sign") not in (1, -1):
                raise ValueError(f"motion_check label {name!r} needs a column of {', '.join(COLUMNS)} and a sign of 1 or -1")
            labels[name] = LabelMotion(spec["column"], int(spec["sign"]))
        return cls(labels, float(threshold), float(scale))

    def keeps(self, label: str, seg_motion: np.ndarray) -> bool:
        """Whether a segment of ``label`` with the column medians ``seg_motion`` (K,) passes."""
        lm = self.labels.get(label)
        if lm is None:
            return True
        return lm.sign * float(seg_motion[COLUMNS.index(lm.column)]) >= self.threshold


def apply_check(segments: list, motion: np.ndarray, times: np.ndarray, check: MotionCheck) -> list:
    """``segments`` (``postprocess.Segment``, seconds, best first) after ``check``: those that
    fail it dropped (``scale`` 0) or their score scaled; best first again.
    ``motion`` (T, K), ``times`` (T,) s: the features' descriptor and step centres."""
    from dataclasses import replace

    out = []
    for s in segments:
        if check.keeps(s.label, segment_motion(motion, times, s.start, s.end)):
            out.append(s)
        elif check.scale > 0:
            out.append(replace(s, score=s.score * check.scale))
    return sorted(out, key=lambda s: -s.score)


@dataclass(frozen=True)
class MotionInput:
    """The descriptor as an input of the head (issue #31), as data a checkpoint carries: its
    ``COLUMNS``, each z-scored by the training videos' ``mean`` and ``std``, appended to the
    features ``(T, D) -> (T, D + K)``. The trunk's pooled features lose where in the frame the
    flow is; these say whether one camera model explains it (a camera move) or leaves a region
    unexplained (an object), which the head learns to read over time."""

    mean: tuple[float, ...]  # per column, over the training videos' steps
    std: tuple[float, ...]  # per column (floored at 1e-3: a column that never moved adds nothing)

    @classmethod
    def fit(cls, motions: Sequence[np.ndarray]) -> MotionInput:
        """Statistics of the per-step descriptors ``(T, K)`` of the training videos."""
        rows = np.concatenate([np.asarray(m, np.float64).reshape(-1, len(COLUMNS)) for m in motions])
        if len(rows) == 0:
            raise ValueError("no global-motion rows to fit the motion input on")
        return cls(tuple(float(v) for v in rows.mean(0)), tuple(float(v) for v in np.maximum(rows.std(0), 1e-3)))

    @property
    def width(self) -> int:
        return len(COLUMNS)

    def append(self, features: np.ndarray, motion: np.ndarray | None, source: str = "features") -> np.ndarray:
        """``features`` float32 (T, D) and their ``motion`` (T, K) -> float32 (T, D + K); a
        ``ValueError`` naming ``source`` when the motion is missing or of another length."""
        if motion is None:
            raise ValueError(f"{source}: features without their global motion (made by an older tal, or "
                             "without the flow stream); the model reads it: re-extract them")
        motion = np.asarray(motion, np.float32)
        if motion.shape != (features.shape[0], len(COLUMNS)):
            raise ValueError(f"{source}: global motion of shape {motion.shape} for {features.shape[0]} feature steps")
        z = (motion - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.concatenate([np.asarray(features, np.float32), z], axis=1)

    def to_json(self) -> dict:
        return {"columns": list(COLUMNS), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, d: object) -> MotionInput:
        """Validate a checkpoint's ``motion_input`` dict; TypeError or ValueError says what is wrong."""
        if not isinstance(d, dict):
            raise TypeError("motion_input must be a dict with 'columns', 'mean' and 'std'")
        if d.get("columns") != list(COLUMNS):
            raise ValueError("motion_input was made for other global-motion columns than this tal computes")
        out = []
        for key in ("mean", "std"):
            v = d.get(key)
            if (not isinstance(v, list) or len(v) != len(COLUMNS)
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
                raise ValueError(f"motion_input '{key}' must be {len(COLUMNS)} finite numbers")
            out.append(tuple(float(x) for x in v))
        if min(out[1]) <= 0:
            raise ValueError("motion_input 'std' must be positive")
        return cls(*out)
