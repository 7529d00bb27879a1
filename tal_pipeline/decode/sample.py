"""Sampling: an opened video in, chunks of 10 fps RGB frames sized for the backbone out.

Sampling rule (exact, in integer arithmetic on the stream's time base):

    t0      = pts of the first decoded frame (the stream's first presentation time; when the
              first pictures did not decode, the start time of the stream's header, and the
              first decoded picture stands in for the lost ones, so times stay the file's)
    frame k = the last decoded source frame whose pts <= t0 + k / fps      (k = 0, 1, ...)
    time k  = k / fps seconds (float64, exactly ``k / fps``), measured from t0
    D       = (pts of the last frame + that frame's duration) - t0, seconds
    N       = ceil(D * fps)   output frames: every k with k / fps < D, i.e. every instant at
              which the video shows a picture (a video of D = 3.0 s gives 30 frames at
              10 fps, t = 0.0 .. 2.9; D = 3.05 s gives 31)

So a source slower than ``fps`` repeats frames, a faster one skips frames, and a variable
frame rate source is sampled by its real timestamps. "The last frame's duration" is its packet
duration; when the container gives none, the gap between the last two frames; for a
single-frame stream, 1 / average rate, else 1 / fps. Frames without a timestamp (raw
elementary streams) are placed one frame duration (else 1 / average rate) after the previous. (MP4 stores decode-order intervals: with
reordered (B-) frames and a variable frame rate, the last frame's own display time is not in
the file, so the end may differ from the encoder's intent by a fraction of a frame. Every
output up to the last frame's timestamp is exact regardless.)

Geometry: the picture is turned as a player would (display matrix side data, rotations by
quarter turns and mirrors; or the older ``rotate`` stream tag), stretched to
``spec.resize_for(size)`` (128 x 171 for size 112, the r3d_18 Kinetics preset; the aspect
ratio is not kept, as in that preset), then centre-cropped to ``size`` x ``size`` with
torchvision's rounding (rows 8..119, columns 30..141 for 112). The resize is ffmpeg's scaler,
bilinear, on sampled frames only: frames that are skipped are never converted. It writes
planar RGB (``gbrp``: twice as fast as ``reformat(..., format="rgb24")``, the same bytes on
the real clips tried, never more than 1 / 255 apart on noise),
and ffmpeg's bilinear filter widens when it shrinks, so it matches torchvision's
``resize(antialias=True)`` to about 1.2 / 255 mean absolute difference; the Kinetics preset
itself resizes with ``antialias=False``, which aliases on large reductions (about 6 / 255 from
720p). The colour matrix and range (limited / full) come from the stream.

Speed: the decoder runs its own threads (``thread_type = "AUTO"``); conversion runs on one
extra thread so that the thread feeding the decoder never waits for it (see BENCHMARKS.md).

Every check on the file and its stream (limits, damaged files, which stream, the messages of
each refusal) is ``decode.probe``'s; the display transform is ``decode.orientation``'s.

Memory: one chunk of ``chunk_size`` output frames (``chunk_size * size * size * 3`` bytes;
64 x 112 x 112 x 3 = 2.4 MB by default), at most ``_Converter.MAX_PENDING`` (4) decoded pictures
waiting for conversion, and the decoder's own buffers (its reference frames: a few pictures),
whatever the video's length: nothing grows with the number of frames (``tests/
test_resource_limits.py`` decodes a 3 h stream, 108,000 output frames, in a bounded peak RSS).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from tal_pipeline.decode.orientation import IDENTITY, orientation
from tal_pipeline.decode.probe import (
    HEADER_SLACK_S,
    HOLE_S,
    MAX_DURATION_S,
    MAX_PIXELS,
    MAX_SIDE,
    TRUNCATION_WARN_S,
    decoded_frames,
    header_duration,
    open_video,
    report_damage,
    stream_span,
)
from tal_pipeline.errors import VideoDecodeError
from tal_pipeline.transforms import FPS, KINETICS_R3D, VideoTransformSpec

DEFAULT_CHUNK = 64  # output frames per chunk

# ITU-R BT.601 luma weights for R, G, B
BT601_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive output frames of one video.

    frames: ``uint8 (N, size, size, 3)`` RGB. times: ``float64 (N,)`` seconds from the stream's
    first presentation time, ``times[i] == (start + i) / fps``. start: index k of ``frames[0]``
    in the whole video's output.
    """

    frames: np.ndarray  # uint8 (N, S, S, 3), RGB
    times: np.ndarray  # float64 (N,), seconds
    start: int = 0  # output index of frames[0]

    def __len__(self) -> int:
        return len(self.frames)


def rgb_to_gray(frames: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    """ITU-R BT.601 luma of RGB frames: ``uint8 (..., H, W, 3) -> (..., H, W)``.

    ``Y = 0.299 R + 0.587 G + 0.114 B``, on the 0..255 scale of the input. ``dtype=np.uint8``
    rounds to the nearest integer; ``dtype=np.float32`` keeps the fraction (still 0..255).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 (..., H, W, 3) RGB frames, got {frames.dtype} {frames.shape}"
        )
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.float32):
        raise ValueError(f"dtype must be uint8 or float32, not {dtype}")
    luma = frames @ BT601_LUMA  # (..., H, W, 3) -> (..., H, W), float32
    if dtype == np.float32:
        return luma
    return np.rint(luma, out=luma).astype(np.uint8)  # max is 255.0 exactly: no overflow


def decode_video(
    path: str | os.PathLike,
    fps: float = FPS,
    size: int = KINETICS_R3D.crop,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    spec: VideoTransformSpec = KINETICS_R3D,
    truncated: str = "error",
) -> Iterator[FrameChunk]:
    """Stream a video as chunks of ``fps`` frames per second, resized and cropped for ``spec``.

    Yields ``FrameChunk``s of at most ``chunk_size`` frames: ``frames uint8 (N, size, size, 3)``
    RGB and ``times float64 (N,)`` seconds, ``times == k / fps`` for output frames
    k = 0 .. ceil(D * fps) - 1 (see the module docstring for the sampling rule).

    The file is opened and its header checked at call time, so a missing file, a non-video, a
    video without video stream or with an absurd header raises ``VideoDecodeError`` here;
    "no decodable frame" raises it from the first ``next()``.

    ``truncated``: the damaged-file rule (module docstring): a video of which under half of
    its header's duration decodes raises ``VideoDecodeError`` ("damaged or truncated: ...")
    after the last chunk (``"error"``, the default), or only logs a warning (``"warn"``: keep
    what is there).
    """
    if truncated not in ("error", "warn"):
        raise ValueError(f"truncated must be 'error' or 'warn', got {truncated!r}")
    if not (isinstance(fps, (int, float, Fraction)) and 0 < fps < math.inf):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    container, stream = open_video(path)
    return _decode(path, container, stream, fps, int(size), int(chunk_size), spec, truncated)


def _decode(path, container, stream, fps, size, chunk_size, spec, truncated) -> Iterator[FrameChunk]:
    converter = _Converter(path, spec.resize_for(size), size)
    try:
        yield from _sample(path, container, stream, fps, chunk_size, converter, truncated)
    finally:
        converter.close()
        container.close()


class _Converter:
    """Turns sampled decoded frames into cropped RGB, on one worker thread.

    ffmpeg's decoder threads are fed by the thread that calls ``decode``; converting on that
    thread would leave them idle meanwhile. The scaler releases the GIL, so a second thread
    converts while the first keeps decoding. At most ``MAX_PENDING`` conversions wait, which
    bounds the decoded frames held alive.
    """

    MAX_PENDING = 4  # queued conversions (each holds one decoded source picture)

    def __init__(self, path, resize_hw: tuple[int, int], size: int):
        self.path = path
        self.out_h, self.out_w = resize_hw
        if self.out_h < size or self.out_w < size:
            raise ValueError(f"resize {self.out_h}x{self.out_w} is smaller than the crop {size}")
        self.size = size
        # torchvision's center_crop rounding
        self.top = round((self.out_h - size) / 2.0)
        self.left = round((self.out_w - size) / 2.0)
        self.orient = IDENTITY
        self.reformatter = av.video.reformatter.VideoReformatter()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tal-decode")
        self.pending: deque[Future] = deque()
        self.last: tuple[av.VideoFrame, tuple] | None = None  # worker-side cache

    def convert(self, frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoded picture -> R, G, B ``uint8 (S, S)`` views: turn, resize, centre crop.

        The scaler writes planar RGB (``gbrp``): ``rgb24``'s bytes (within 1), in half the time.
        """
        if self.last is not None and self.last[0] is frame:
            return self.last[1]
        fw, fh = frame.width, frame.height
        if fw > MAX_SIDE or fh > MAX_SIDE or fw * fh > MAX_PIXELS:
            raise VideoDecodeError(self.path, f"picture size {fw}x{fh} exceeds the limit")
        w, h = (self.out_h, self.out_w) if self.orient.transpose else (self.out_w, self.out_h)
        rgb = self.reformatter.reformat(frame, width=w, height=h, format="gbrp", threads=1)
        rows = slice(self.top, self.top + self.size)
        cols = slice(self.left, self.left + self.size)
        g, b, r = (
            # (h, line_size) -> (h, w) -> displayed (out_h, out_w) -> crop (S, S), all views
            self.orient.apply(np.frombuffer(p, np.uint8).reshape(h, p.line_size)[:, :w])[rows, cols]
            for p in rgb.planes
        )
        self.last = (frame, (r, g, b))
        return r, g, b

    def _fill(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        for c, plane in enumerate(self.convert(frame)):
            out[..., c] = plane  # (S, S) broadcast to (m, S, S)

    def fill(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        """Write ``frame`` into every slot of ``out`` ``(m, S, S, 3)``, in the background."""
        self.pending.append(self.pool.submit(self._fill, frame, out))
        while len(self.pending) > self.MAX_PENDING:
            self.pending.popleft().result()

    def wait(self) -> None:
        """Block until every queued conversion is written; re-raise their errors."""
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)
        self.last = None


@dataclass(frozen=True)
class _Clock:
    """The stream's time base against the output rate, and the sampling limits in its ticks."""

    tb: Fraction  # seconds per tick
    fps: float  # output frames per second
    # pts_rel ticks < k / fps seconds  <=>  pts_rel * tick_a > k * tick_b   (exact integers)
    tick_a: int
    tick_b: int
    header: float | None  # the duration the header gives, seconds
    max_ticks: int  # after t0: later timestamps are corrupt (decoding stops there)
    nominal: int  # one frame period, ticks: from the average rate (demuxers guess one), else 1 / fps
    hole: int  # ticks: a longer gap between frames is a hole, not video

    @classmethod
    def of(cls, container, stream, fps) -> _Clock:
        fps_q = Fraction(fps).limit_denominator(10**6)
        tb = stream.time_base or Fraction(1, 90000)
        # timestamps are trusted up to MAX_DURATION_S, and, when the header gives a duration H, up
        # to max(2 H, H + HEADER_SLACK_S): a corrupt timestamp (a flipped bit in an mp4's sample
        # table) must not turn a 1 s file into hours of copies of one picture
        header = header_duration(container, stream)
        max_ticks = int(MAX_DURATION_S / tb)
        if header is not None:
            max_ticks = min(max_ticks, int(max(2 * header, header + HEADER_SLACK_S) / tb))
        rate = stream.average_rate or fps_q
        return cls(
            tb=tb,
            fps=float(fps),
            tick_a=tb.numerator * fps_q.numerator,
            tick_b=tb.denominator * fps_q.denominator,
            header=header,
            max_ticks=max_ticks,
            nominal=max(1, round(1 / (rate * tb))),
            hole=max(1, int(HOLE_S / tb)),
        )

    def outputs_before(self, rel: int) -> int:
        """Output frames whose time falls before ``rel`` ticks after t0: ``ceil(rel * fps)``."""
        return -(-rel * self.tick_a // self.tick_b)


@dataclass
class _Shown:
    """The decoded frames so far: the picture on screen, since when, and the video they cover."""

    t0: int | None = None  # pts of the first frame, ticks
    frame: av.VideoFrame | None = None  # the last decoded frame: on screen until the next one
    rel: int = 0  # its pts - t0, ticks
    gap: int = 0  # ticks between the last two frames
    dropped: int = 0  # frames dropped for out-of-order timestamps
    covered: int = 0  # ticks of the stream shown by decoded frames, holes left out

    def pts(self, frame: av.VideoFrame, clock: _Clock) -> int:
        """The frame's pts, ticks; without one (raw streams), one frame period after the last."""
        if frame.pts is not None:
            return frame.pts
        if self.t0 is None:
            return 0
        return self.t0 + self.rel + (self.frame.duration or self.gap or clock.nominal)

    def advance(self, frame: av.VideoFrame, rel: int, clock: _Clock) -> None:
        """``frame`` (``rel`` ticks after t0, not before the last) is now on screen."""
        if rel > self.rel:
            self.gap = rel - self.rel
            self.covered += min(self.gap, clock.hole)
        self.frame, self.rel = frame, rel


class _Chunks:
    """Output frames gathered into chunks: each sampled picture written into its slots."""

    def __init__(self, converter: _Converter, chunk_size: int, fps: float):
        self.converter = converter
        self.chunk_size = chunk_size
        self.fps = fps
        self.buf = np.empty((chunk_size, converter.size, converter.size, 3), np.uint8)  # (chunk, S, S, 3)
        self.n = 0  # frames in buf
        self.k = 0  # next output index

    def show(self, frame: av.VideoFrame, count: int) -> Iterator[FrameChunk]:
        """``frame`` as the next ``count`` output frames; yields each chunk that fills up."""
        while count > 0:
            take = min(count, self.chunk_size - self.n)
            self.converter.fill(frame, self.buf[self.n : self.n + take])
            self.n, self.k, count = self.n + take, self.k + take, count - take
            if self.n == self.chunk_size:
                self.converter.wait()
                yield self._chunk(self.buf)
                self.buf = np.empty_like(self.buf)
                self.n = 0

    def flush(self) -> Iterator[FrameChunk]:
        """The last, partly filled chunk, once its conversions are written."""
        self.converter.wait()
        if self.n:
            yield self._chunk(self.buf[: self.n])

    def _chunk(self, frames: np.ndarray) -> FrameChunk:
        times = np.arange(self.k - self.n, self.k, dtype=np.float64) / self.fps  # exactly k / fps
        return FrameChunk(frames, times, self.k - self.n)


def _sample(
    path, container, stream, fps, chunk_size, converter: _Converter, truncated: str = "error"
) -> Iterator[FrameChunk]:
    """The sampling loop (module docstring): decoded frames in, chunks of output frames out."""
    stream.thread_type = "AUTO"
    clock = _Clock.of(container, stream, fps)
    out = _Chunks(converter, chunk_size, clock.fps)
    shown = _Shown()
    errors: list[str] = []

    for frame in decoded_frames(path, container, stream, errors):
        pts = shown.pts(frame, clock)
        if shown.t0 is None:  # shown from t0: the stream's first pictures, if lost
            shown.t0 = _start_pts(stream, pts)
            converter.orient = orientation(frame, stream)
            shown.frame, shown.rel = frame, pts - shown.t0
            continue
        rel = pts - shown.t0
        if rel < shown.rel:  # out of order (broken file): the picture's time has passed
            shown.dropped += 1
            continue
        if rel > clock.max_ticks:
            errors.append(f"timestamp {float(rel * clock.tb):.0f} s past the start, beyond what the "
                          f"header allows ({float(clock.max_ticks * clock.tb):.0f} s); stopping there")
            break
        # the previous picture fills every output time before this one
        yield from out.show(shown.frame, clock.outputs_before(rel) - out.k)
        shown.advance(frame, rel, clock)

    if shown.frame is None:
        cause = "no decodable video frames"
        if errors:
            cause += f" ({errors[0]})"
        raise VideoDecodeError(path, cause)
    last, end = _last_frame_span(shown, clock, errors)
    yield from out.show(shown.frame, clock.outputs_before(end) - out.k)
    shown.frame = None
    yield from out.flush()

    covered = shown.covered + min(last, clock.hole)
    report_damage(path, container, stream, errors, shown.dropped, float(end * clock.tb), truncated,
            float(covered * clock.tb))


def _last_frame_span(shown: _Shown, clock: _Clock, errors: list[str]) -> tuple[int, int]:
    """``(last, end)`` ticks: how long the last frame stays on screen (its duration, else the
    gap between the last two frames, else one nominal period) and when it leaves, after t0; a
    last frame "lasting" far past the header's end is shown until that end."""
    last = shown.frame.duration or 0
    if last <= 0:
        last = shown.gap if shown.gap > 0 else clock.nominal
    end = shown.rel + last
    if clock.header is not None:
        header_end = int(clock.header / clock.tb)
        if shown.rel < header_end < end - max(TRUNCATION_WARN_S, 0.05 * clock.header) / clock.tb:
            errors.append(f"the last frame lasts {float(last * clock.tb):.0f} s, past the header's "
                          f"{clock.header:.2f} s; shown until then")
            end = header_end
    return last, end


def _start_pts(stream, first: int) -> int:
    """t0, ticks: the stream's start time when its first pictures did not decode (damage), so
    output times stay those of the file; the first decoded frame's pts otherwise (also when the
    header's start is absent or implausible: later, or before the frame by more than the
    stream's own duration)."""
    start = stream.start_time
    if start is None or start >= first:
        return first
    span = stream_span(stream)
    if span is None or float((first - start) * stream.time_base) > span:
        return first
    return start
