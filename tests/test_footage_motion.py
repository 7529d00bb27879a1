"""``benchmarks/footage_motion.py``: the scale change it reports against a known zoom; the
global/local split against known global motion plus a moving object."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.footage_motion import (
    MARGIN,
    detector_view,
    fit_global,
    net_shift,
    object_motion,
    shot_motion,
)
from tal_pipeline.flow import compute_flow


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


def _affine_flow(h: int, w: int, u0: float, v0: float, zoom: float) -> np.ndarray:
    """float32 (2, h, w): a translation (u0, v0) plus a zoom (``zoom`` px per px from the centre)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs -= (w - 1) / 2
    ys -= (h - 1) / 2
    return np.stack([u0 + zoom * xs, v0 + zoom * ys]).astype(np.float32)


def test_the_global_fit_ignores_an_object_and_the_split_measures_it():
    h = w = 112
    flow = _affine_flow(h, w, 1.5, -0.7, 0.01)
    flow[:, 20:50, 10:40] += np.array([3.0, 1.0], np.float32)[:, None, None]  # a 30x30 object, top left
    coef, model = fit_global(flow)
    assert np.allclose(coef, [[1.5, 0.01, 0.0], [-0.7, 0.0, 0.01]], atol=1e-6), coef
    assert np.allclose(model, _affine_flow(h, w, 1.5, -0.7, 0.01), atol=1e-5)
    m = object_motion(flow[None])
    inner = (h - 2 * MARGIN) * (w - 2 * MARGIN)
    assert abs(m["area"][0] - 900 / inner) < 1e-9  # exactly the object's pixels
    assert abs(m["resid"][0] - 900 * np.hypot(3.0, 1.0)) < 1e-2  # all residual is the object's
    assert abs(m["resid_in"][0] - m["resid"][0]) < 1e-2  # none outside it
    assert abs(m["u0"][0] - 1.5) < 1e-6 and abs(m["v0"][0] + 0.7) < 1e-6 and abs(m["zoom"][0] - 0.56) < 1e-6
    assert abs(m["drift"][0] - 900 / inner * np.hypot(3.0, 1.0)) < 1e-4
    assert abs(m["quad"][0] - 900 / (inner / 4) * np.hypot(3.0, 1.0)) < 1e-4  # all in one quadrant
    assert object_motion(_affine_flow(h, w, 1.5, -0.7, 0.01)[None])["quad"][0] < 1e-5  # camera only
    # an object the size of most of the frame is the "global" motion: the split cannot know
    big = _affine_flow(h, w, 0.0, 0.0, 0.0)
    big[:, 10:100, 10:100] = 2.0
    won = object_motion(big[None])
    assert abs(won["u0"][0] - 2) < 1e-6 and abs(won["v0"][0] - 2) < 1e-6  # the object won


def _grey_texture(h: int, w: int, seed: int, sigma: float = 1.5) -> np.ndarray:
    """uint8 (h, w) random texture, fine enough for TV-L1 to match everywhere."""
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), sigma)
    return cv2.normalize(g, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def test_tvl1_split_of_a_pan_with_a_moving_object():
    """Real TV-L1 (the demo's backend) on a background panning 1.5 px a step with a 28x28 object
    moving 3 px a step the other way: the global part is the pan, the unexplained flow sits
    inside the object; with the pan stopped the global part is ~0 and the object remains."""
    bg, obj = _grey_texture(160, 160, 0), _grey_texture(28, 28, 1)

    def frames(pan: float) -> np.ndarray:
        out = []
        for k in range(3):
            x0 = 24 - round(pan * k)  # the window moves left: content moves right by ``pan``
            f = bg[24:136, x0:x0 + 112].copy()
            ox = 40 - 3 * k
            f[42:70, ox:ox + 28] = obj
            out.append(f)
        return np.stack(out)

    for pan in (2.0, 0.0):
        m = object_motion(compute_flow(frames(pan), backend="torch"))
        assert np.all(np.abs(m["u0"] - pan) < 0.2) and np.all(np.abs(m["v0"]) < 0.2), (pan, m)
        assert np.all(m["area"] > 0.03) and np.all(m["area"] < 0.12), m["area"]  # object 6 %
        outside = (m["resid"] - m["resid_in"]) / (m["flow"] - m["flow_in"])
        if pan:
            assert np.all(outside < 0.1), outside  # the pan is explained outside the object
        assert np.all(m["resid_in"] / m["flow_in"] > 0.5)  # inside, most is unexplained
        assert np.all(m["drift"] > 0.1)


def test_detector_view_samples_10_fps_by_the_nearest_frame():
    n, h, w = 50, 96, 128
    frames = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 5, h * w * 3).reshape(n, h, w, 3)
    got = detector_view(frames, 25.0)  # frame k at 0.1 k s: source frame round(2.5 k)
    assert got.shape == (20, 112, 112)
    idx = got[:, 0, 0].astype(int) // 5  # which source frame each sample is
    assert np.all(np.abs(idx - 2.5 * np.arange(20)) <= 0.5) and np.all(np.diff(idx) > 0), idx
    full = detector_view(frames, 25.0, full=True)
    assert full.shape == (20, 112, 149)


def test_net_shift_tells_a_steady_pan_from_jitter():
    steady = np.full(30, 0.7)  # px a step, one way: 7 px in 1 s
    jitter = np.tile([1.5, -1.5], 15)  # faster, but it comes back
    zero = np.zeros(30)
    assert abs(net_shift(steady, zero) - 7.0) < 1e-9
    assert abs(net_shift(zero, steady) - 7.0) < 1e-9
    assert net_shift(jitter, zero) <= 1.5 + 1e-9
    assert abs(net_shift(steady[:4], zero[:4]) - 2.8) < 1e-9  # a clip under 1 s: all of it
