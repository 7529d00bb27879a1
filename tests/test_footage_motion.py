"""``benchmarks/footage_motion.py``: the scale change it reports against a known zoom."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.footage_motion import shot_motion


def _texture(h: int = 192, w: int = 256) -> np.ndarray:
    """A smooth random RGB texture, uint8 (h, w, 3): corners to track everywhere."""
    rng = np.random.default_rng(0)
    g = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    g = cv2.normalize(g, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _zoomed(img: np.ndarray, rate: float, n: int) -> np.ndarray:
    """``n`` frames, frame k the picture scaled by (1 + rate)^k about its centre."""
    h, w = img.shape[:2]
    out = []
    for k in range(n):
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, (1 + rate) ** k)
        out.append(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101))
    return np.stack(out)


def test_a_known_zoom_is_measured_at_the_edge_and_a_still_shot_is_still():
    img = _texture()
    scales, moving = shot_motion(_zoomed(img, 0.004, 6))  # 0.004 * 128 px = 0.51 px a frame at the edge
    # one pair's fit scatters by ~0.05 px (tracking noise, RANSAC); the shot's mean is the figure
    assert len(scales) == 5 and np.abs(scales - 0.512).max() < 0.1, scales
    assert abs(scales.mean() - 0.512) < 0.03, scales
    zoom_out, _ = shot_motion(_zoomed(img, -0.004, 6))
    assert abs(zoom_out.mean() + 0.512) < 0.03 and zoom_out.max() < 0, zoom_out
    still_scales, still_moving = shot_motion(np.stack([img] * 4))
    assert np.abs(still_scales).max() < 0.01 and still_moving.max() == 0.0
    assert moving.mean() > still_moving.mean()  # a zoom's edges move beyond 0.5 px
