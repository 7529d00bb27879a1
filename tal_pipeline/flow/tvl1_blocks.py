"""The building blocks of the batched TV-L1 solver (``tvl1_torch``): pre-smoothing and pyramid
resizing, the brightness gain of the second frame, image and flow derivatives, the median
filter, the warp, and the flow's dominant affine part. All work on batches of pairs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _resize(x: torch.Tensor, size: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``(B, C, *size)`` (OpenCV INTER_LINEAR, no blur;
    ``antialias``: the kernel widened by the scale when shrinking, a low-pass)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` (radius ceil(2 sigma), replicated border)."""
    r = max(1, math.ceil(2 * sigma))
    k = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-r, r + 1)]
    k = [v / sum(k) for v in k]
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r, r, r), mode="replicate")  # (B, C, H + 2r, W + 2r)
    # weighted sums of shifted views (a few taps: faster than a 1-channel convolution here)
    y = sum(k[i] * p[..., :, i : i + w] for i in range(2 * r + 1))  # along x: (B, C, H + 2r, W)
    return sum(k[i] * y[..., i : i + h, :] for i in range(2 * r + 1))  # along y: (B, C, H, W)


GAIN_RANGE = (0.5, 2.0)  # the largest exposure change compensated (factor)
# smaller changes are left alone: content moving in or out also moves the mean (a dark object
# entering: ~3 % on the carphone clip at 10 fps; a 6-12 px shift of a textured photo with new
# content at the border: up to ~9 %), and correcting those would be the error
GAIN_MIN_CHANGE = 0.10  # |ln(gain)|: about 10 % brighter or darker from one frame to the next


def gain_ratio(i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
    """mean(I0) / mean(I1) per pair, clamped to ``GAIN_RANGE``, 1 where it is within
    ``GAIN_MIN_CHANGE`` of 1: ``(B, H, W)`` x 2 -> ``(B,)``.

    A global gain step (auto-exposure, a light switched on) violates brightness constancy over
    the whole frame and TV-L1 answers it with a wild flow field, tens of pixels in a 112-px
    frame; a multiplicative correction removes it and is 1 for pairs of the same exposure.
    """
    m0, m1 = i0.mean((1, 2)), i1.mean((1, 2))
    r = (m0 / m1.clamp_min(1.0)).clamp(*GAIN_RANGE)
    return torch.where((r.log().abs() > GAIN_MIN_CHANGE), r, torch.ones_like(r))


def log_intensity(img: torch.Tensor) -> torch.Tensor:
    """``ln max(img, 1)``, elementwise: the brightness scale on which a gain is an offset."""
    return img.clamp_min(1.0).log()


def aligned_gain(
    i0: torch.Tensor, i1w: torch.Tensor, u: torch.Tensor, log_i0: torch.Tensor | None = None
) -> torch.Tensor:
    """I0's brightness over I1's where the current flow aligns them: ``(B, 1, h, w)`` frame 0,
    frame 1 warped by ``u (B, 2, h, w)`` -> ``(B, 1, 1, 1)``, clamped to ``GAIN_RANGE``.
    ``log_i0``: ``log_intensity(i0)`` when the caller has it (the solver computes it once per
    pyramid level, not at every warp).

    Why: a brightness change of a few percent (flicker, auto-exposure drifting) is below
    ``gain_ratio``'s dead band, yet TV-L1's data term reads it as motion, and the more so the
    weaker the gradient (low contrast, defocus; BENCHMARKS.md, "Flow" and issue #12, round 8).
    Frame means cannot tell a gain from content entering or leaving, but the warped frames
    can: once aligned, the same scene points face each other, and the median of their log
    ratio is the gain (moving objects, disocclusions and the border strip where the sample
    falls outside the frame are a minority, or left out). Re-estimated at every warp: the flow
    is better each time, so the alignment is.
    """
    h, w = i0.shape[-2:]
    ys = torch.arange(h, dtype=u.dtype, device=u.device).view(1, h, 1)
    xs = torch.arange(w, dtype=u.dtype, device=u.device).view(1, 1, w)
    x1, y1 = xs + u[:, 0], ys + u[:, 1]  # (B, h, w): where each pixel's sample comes from
    inside = ((x1 >= 1) & (x1 <= w - 2) & (y1 >= 1) & (y1 <= h - 2)).unsqueeze(1)
    if log_i0 is None:
        log_i0 = log_intensity(i0)
    log_ratio = log_i0 - log_intensity(i1w)  # (B, 1, h, w)
    if log_ratio.device.type == "cpu":
        medians = _lower_medians(log_ratio.detach().flatten(1).numpy(), inside.flatten(1).numpy())
        log_gain = torch.from_numpy(medians)  # (B,) no pixel inside: 0, a gain of 1
    else:
        log_ratio = log_ratio.masked_fill_(~inside, math.nan).flatten(1)
        log_gain = torch.nan_to_num(log_ratio.nanmedian(1).values, nan=0.0)  # no pixel inside: 1
    return log_gain.exp().clamp(*GAIN_RANGE).view(-1, 1, 1, 1)


def _lower_medians(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row, the lower median of ``x``'s valid entries (``torch.nanmedian``'s value), 0 for a
    row with none: ``(B, N)`` float, ``(B, N)`` bool -> ``(B,)``.

    Why not ``nanmedian`` on the CPU: it is about 8x slower than NumPy's introselect for rows
    of this size, and it ran at every warp (BENCHMARKS.md, issue #12 round 10). The k-th
    smallest of finite samples is one number whatever the algorithm, so the gain, and the
    flow, are bitwise the same (``tests/test_flow.py`` checks the two against each other).
    """
    out = np.zeros(len(x), dtype=x.dtype)
    for k, (row, ok) in enumerate(zip(x, valid)):
        v = row[ok]  # (n,) a copy, which partition may reorder
        if v.size:
            mid = (v.size - 1) // 2
            v.partition(mid)  # in place: v[mid] is now the mid-th smallest
            out[k] = v[mid]
    return out


def centred_gradient(img: torch.Tensor) -> torch.Tensor:
    """Centred differences ``0.5 (x[i+1] - x[i-1])``, replicated border: ``(B, H, W) -> (B, 2, H, W)``."""
    p = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]  # (B, H+2, W+2)
    gx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    gy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return torch.stack([gx, gy], 1)


def forward_gradient(u: torch.Tensor) -> torch.Tensor:
    """Forward differences, zero on the last column/row: ``(..., H, W) -> (..., 2, H, W)``."""
    gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return torch.stack([gx, gy], -3)


def divergence(p: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence, the negative adjoint of ``forward_gradient``.

    ``(..., 2, H, W) -> (..., H, W)``; the x component's last column and the y component's last
    row are treated as zero (they are zero in the solver: ∇u is zero there).
    """
    px = p[..., 0, :, :-1]  # (..., H, W-1): last column dropped
    py = p[..., 1, :-1, :]  # (..., H-1, W)
    dx = F.pad(px, (0, 1)) - F.pad(px, (1, 0))
    dy = F.pad(py, (0, 0, 0, 1)) - F.pad(py, (0, 0, 1, 0))
    return dx + dy


def _med3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Elementwise median of three tensors."""
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def median_filter(u: torch.Tensor, k: int) -> torch.Tensor:
    """k x k median with replicated border (OpenCV ``medianBlur``): ``(B, C, H, W)`` -> same.

    3x3 uses min/max only (sort each vertical triple; the median of nine is the median of the
    largest low, the median middle and the smallest high); 5x5 sorts 25 neighbours (slower).
    On the CPU (float32), OpenCV's ``medianBlur`` runs each image instead: a median is a
    selection, so the result is bitwise the same, and it is ~14x faster than the torch
    operations, whose freshly allocated temporaries dominate (BENCHMARKS.md, issue #12 round 10).
    """
    if u.device.type == "cpu" and k in (3, 5) and u.dtype == torch.float32:
        return _median_filter_opencv(u, k)
    return _median_filter_torch(u, k)


def _median_filter_torch(u: torch.Tensor, k: int) -> torch.Tensor:
    """``median_filter`` in torch operations (any device)."""
    r = k // 2
    x = F.pad(u, (r, r, r, r), mode="replicate")  # (B, C, H+2r, W+2r)
    if k == 3:
        a, b, c = x[..., :-2, :], x[..., 1:-1, :], x[..., 2:, :]  # vertical triples (B, C, H, W+2)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        mid, hi = torch.minimum(hi, c), torch.maximum(hi, c)
        lo, mid = torch.minimum(lo, mid), torch.maximum(lo, mid)
        lo_max = torch.maximum(torch.maximum(lo[..., :-2], lo[..., 1:-1]), lo[..., 2:])
        hi_min = torch.minimum(torch.minimum(hi[..., :-2], hi[..., 1:-1]), hi[..., 2:])
        return _med3(lo_max, _med3(mid[..., :-2], mid[..., 1:-1], mid[..., 2:]), hi_min)
    patches = x.unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H, W, k, k)
    return patches.reshape(*u.shape, k * k).median(-1).values


def _median_filter_opencv(u: torch.Tensor, k: int) -> torch.Tensor:
    """``median_filter`` of a CPU float32 ``(B, C, H, W)`` by ``cv2.medianBlur`` per image
    (replicated border, as the torch path; OpenCV runs 3 and 5 on float32)."""
    import cv2  # a core dependency; imported here so that importing the solver stays light

    src = u.detach().contiguous().numpy()
    out = np.empty_like(src)  # (B, C, H, W)
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):
            cv2.medianBlur(src[b, c], k, dst=out[b, c])
    return torch.from_numpy(out)


def warp(stack: torch.Tensor, flow: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample ``stack (B, C, H, W)`` at ``x + flow`` (``flow (B, 2, H, W)``, pixels); border replicated."""
    h, w = stack.shape[-2:]
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
    # align_corners=True: pixel centre i maps to -1 + 2 i / (size - 1)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1)  # (B, H, W, 2)
    return F.grid_sample(stack, grid, mode=mode, padding_mode="border", align_corners=True)


def dominant_affine(u: torch.Tensor) -> torch.Tensor:
    """The linear part of the flow's dominant camera motion: the field ``G (x - c)`` whose 2 x 2
    Jacobian ``G`` is, entry by entry, the median of ``u``'s forward differences over the frame;
    ``u (B, 2, H, W)`` -> ``(B, 2, H, W)``, pixels, zero at the frame's centre ``c``.

    Why: TV-L1's regulariser charges a flow |∇u| per pixel, so a rotation or a zoom, whose
    ∇u is the same non-zero matrix everywhere, pays for its slope over the whole frame and
    comes out shrunk (measured on known motions: 6 % short of a 3-degree rotation, worst at the
    frame's edge). With ``TVL1Options.affine_tv`` the regulariser acts on ``u`` minus this
    field instead, which costs nothing for a rotation, zoom or shear of the camera. The median
    makes it the motion of most of the frame: an object moving over a still background (its
    edges are the only non-zero differences) leaves ``G`` at zero, as for a pan.
    """
    b, _, h, w = u.shape
    gx = (u[..., :-1, 1:] - u[..., :-1, :-1]).flatten(2)  # (B, 2, N): d/dx of dx, dy
    gy = (u[..., 1:, :-1] - u[..., :-1, :-1]).flatten(2)  # (B, 2, N): d/dy
    d = torch.cat([gx, gy], 1).reshape(b * 4, -1)  # (4B, N), a fresh array
    if d.device.type == "cpu":  # NumPy's selection, in place: torch.median's lower median, faster
        rows, mid = d.detach().numpy(), (d.shape[1] - 1) // 2
        rows.partition(mid, axis=1)
        med = torch.from_numpy(rows[:, mid].copy())  # (4B,)
    else:
        med = d.median(1).values  # (4B,)
    jac = med.view(b, 2, 2, 1, 1)  # [pair, d/dx | d/dy, flow component]
    ys = torch.arange(h, dtype=u.dtype, device=u.device).view(1, 1, h, 1) - (h - 1) / 2
    xs = torch.arange(w, dtype=u.dtype, device=u.device).view(1, 1, 1, w) - (w - 1) / 2
    return jac[:, 0] * xs + jac[:, 1] * ys  # (B, 2, H, W)


__all__ = [
    "GAIN_MIN_CHANGE",
    "GAIN_RANGE",
    "aligned_gain",
    "centred_gradient",
    "divergence",
    "dominant_affine",
    "forward_gradient",
    "gain_ratio",
    "gaussian_blur",
    "log_intensity",
    "median_filter",
    "warp",
]
