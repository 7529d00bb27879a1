"""Decode stage: a video file in, chunks of 10 fps RGB frames sized for the backbone out.

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

Errors: every refusal is ``VideoDecodeError(path, cause)``, the cause naming what is wrong:
a missing file, a broken symbolic link (and its target), a symbolic link loop, a folder, FIFO,
socket or device ("not a regular file": never handed to ``av.open``, which would block on a
FIFO), an empty or unreadable file ("permission denied"), a file that is not a video, a file
without a video stream, a header over the limits below, and a stream with no decodable frame.

Which stream: the first video stream that is not a still picture (cover art marked
``attached_pic``, a one-frame track, an image-codec track one frame long), the one marked
default if several are left; its frames, its start time and its header's duration are used
together (a Matroska track's ``DURATION`` tag counts from 0: its start is taken off).

A file corrupt part-way is decoded as far as possible: packets the decoder rejects are skipped,
a demuxer error ends the stream there, and decoding stops at a timestamp more than
``MAX_DURATION_S`` after t0; each case is reported with ``logging.warning`` (logger
``tal_pipeline.decode``). One rule for damaged and truncated files, every container alike:
the seconds of video that decode (gaps of over ``HOLE_S`` between decoded frames left out) are
compared with the duration the video stream's header gives; under ``MIN_DECODED_SHARE`` (half)
the file is refused ("damaged or truncated: ..."), after the frames it has; short of it by
more than max(``TRUNCATION_WARN_S``, 5 %), it is processed with a warning. A file without a
duration in its header, or whose only duration is the container's with other streams (it may
be a longer audio track's), is only warned about. (An mp4 cut before the end of its index, the ``moov`` box, which ffmpeg
writes last by default, cannot be opened at all: "not a readable video file (...); truncated:
the file ends inside its 'mdat' box", or "no 'moov' box" for one never finished.)

Limits, all checked before anything large is allocated:

- The path (``_check_file``, before ``av.open``): after following symbolic links it must be a
  non-empty regular file this process can open for reading.
- ``MAX_SIDE`` (16384 px a side) and ``MAX_PIXELS`` (8192 x 8192 px in all): the picture size
  the stream's header claims, checked right after ``av.open`` has read the headers (no frame
  decoded yet); the decoder is also given ``max_pixels = MAX_PIXELS``, so a frame whose own
  header claims more than the stream's (a later SPS, a JPEG SOF) is rejected by ffmpeg before
  its picture is allocated (a rejected packet, see above), and each decoded picture is checked
  again before conversion. At the limit one decoded 8-bit 4:2:0 picture is 96 MiB.
- ``MAX_DURATION_S`` (72 h): a longer duration in the header (stream's, else container's) is
  refused before decoding; a stream whose timestamps run past it stops there with a warning,
  so no input gives more than ``MAX_DURATION_S * fps`` output frames (2.6 M at 10 fps). When
  the header gives a duration H, timestamps past max(2 H, H + ``HEADER_SLACK_S``) are corrupt:
  decoding stops there too, and a last frame "lasting" past H is shown until H (a flipped bit
  in a sample table must not turn a 1 s file into days of one picture).
- ``MAX_BAD_PACKETS`` (1000) packets in a row rejected by the decoder: the file is given up (a
  demuxer that accepts garbage does not keep the decoder busy for the whole file).

Memory: one chunk of ``chunk_size`` output frames (``chunk_size * size * size * 3`` bytes;
64 x 112 x 112 x 3 = 2.4 MB by default), at most ``_Converter.MAX_PENDING`` (4) decoded pictures
waiting for conversion, and the decoder's own buffers (its reference frames: a few pictures),
whatever the video's length: nothing grows with the number of frames (``tests/
test_resource_limits.py`` decodes a 3 h stream, 108,000 output frames, in a bounded peak RSS).
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tal_pipeline.errors import VideoDecodeError
from tal_pipeline.transforms import FPS, KINETICS_R3D, VideoTransformSpec

__all__ = [
    "DEFAULT_CHUNK",
    "MAX_DURATION_S",
    "MAX_PIXELS",
    "MAX_SIDE",
    "FrameChunk",
    "VideoInfo",
    "decode_video",
    "num_output_frames",
    "probe_video",
    "rgb_to_gray",
]

log = logging.getLogger(__name__)

MAX_SIDE = 16384  # pixels: a stream whose header claims a wider or taller picture is refused
MAX_PIXELS = 8192 * 8192  # pixels per picture (width * height): larger is refused
MAX_DURATION_S = 72 * 3600.0  # seconds: longer header durations are refused; decoding stops there
MAX_BAD_PACKETS = 1000  # consecutive packets the decoder rejects before we give up on the file
TRUNCATION_WARN_S = 1.0  # seconds: warn when the stream ends this much before its header says
MIN_DECODED_SHARE = 0.5  # of the header's duration: a video of which less decodes is refused
HEADER_SLACK_S = 600.0  # seconds: timestamps past max(2 H, H + this) of a header's H are corrupt
HOLE_S = 1.0  # seconds: a longer gap between decoded frames counts as lost (damage), not video
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


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` learns from the headers and the first decoded frame."""

    path: str  # the file, as given
    duration: float | None  # seconds, from the stream's or the container's header (best effort)
    width: int  # pixels, as displayed (after rotation)
    height: int  # pixels, as displayed (after rotation)
    source_fps: float | None  # the stream's average frame rate, frames per second, if known
    rotation: int  # degrees a player turns the stored picture clockwise: 0, 90, 180 or 270
    codec: str  # decoder name, e.g. "h264"
    num_frames: int | None  # output frames ``decode_video`` gives at 10 fps, from ``duration``


def num_output_frames(duration: float, fps: float = FPS) -> int:
    """Output frames of a video lasting ``duration`` seconds: ``ceil(duration * fps)``.

    (With a 1e-6 tolerance, so that 0.30000000000000004 s gives 3 frames at 10 fps.)
    """
    return max(0, math.ceil(duration * fps - 1e-6))


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


# ----------------------------------------------------------------------------- opening


_NOT_REGULAR = (  # (stat test, what the file is) for paths that must never reach av.open
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_file(path: str | os.PathLike) -> None:
    """Refuse, with a precise cause, what is not a readable non-empty regular file.

    Follows symbolic links (stat), so a broken link, a link loop, a folder, a FIFO or a device
    is refused here: ``av.open`` is never called on them (it would block on a FIFO forever).
    """
    from tal_pipeline.fsutil import access_problem

    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as err:
        raise VideoDecodeError(path, access_problem(name, err, "file not found")) from None
    if not stat.S_ISREG(st.st_mode):
        what = next((w for test, w in _NOT_REGULAR if test(st.st_mode)), "not a file")
        raise VideoDecodeError(path, f"not a regular file ({what})")
    if st.st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        with open(name, "rb"):
            pass
    except PermissionError:
        raise VideoDecodeError(path, "permission denied (the file cannot be read)") from None
    except OSError as err:
        raise VideoDecodeError(path, f"cannot open ({err.strerror or err})") from None


def open_video(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.video.VideoStream]:
    """Open ``path`` and return the container and its video stream (still pictures and cover art
    skipped), after every check ``decode_video`` makes; VideoDecodeError otherwise. The caller
    closes the container."""
    _check_file(path)
    p = Path(path)
    _check_y4m_header(p)
    try:
        container = av.open(str(p), "r")
    except av.FFmpegError as err:
        cause = f"not a readable video file ({_why(err)}){_mp4_hint(p) or _list_hint(p)}"
        raise VideoDecodeError(path, cause) from err
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise VideoDecodeError(path, f"cannot open ({err})") from err
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoDecodeError(path, f"no video stream (has: {', '.join(kinds)})")
        stream = _pick_stream(container.streams.video)
        if stream is None:
            raise VideoDecodeError(path, "no decodable video stream (the codec is unknown)")
        _check_header(path, container, stream)
        try:
            # the decoder itself refuses pictures above the limit (a frame whose own header
            # claims more than the stream's), before allocating them: decode and probe alike
            stream.codec_context.options = {"max_pixels": str(MAX_PIXELS)}
        except (AttributeError, TypeError, ValueError):  # pragma: no cover - older PyAV
            pass
    except BaseException:
        container.close()
        raise
    return container, stream


_IMAGE_CODECS = frozenset(["mjpeg", "png", "bmp", "gif", "webp", "tiff", "jpeg2000", "jpegls"])


def _is_still(stream) -> bool:
    """A picture rather than a video: cover art (``attached_pic``), a one-frame track, or an
    image-codec track of at most one frame's duration."""
    if stream.disposition & av.stream.Disposition.attached_pic:
        return True
    if stream.frames == 1:
        return True
    return stream.codec_context.name in _IMAGE_CODECS and bool(stream.average_rate) and (
        (_stream_span(stream) or 0) <= 1 / float(stream.average_rate) + 1e-6
    )


def _pick_stream(streams):
    """The video to analyse: not a still picture (cover art, a one-frame track), the stream
    marked default if several are left, else the first; frames and duration then both come
    from it. Only stills: the first of them (a one-picture "video"). None: no stream has a
    decoder."""
    known = [s for s in streams if s.codec_context is not None]  # None: no decoder for it
    videos = [s for s in known if not _is_still(s)] or known
    default = [s for s in videos if s.disposition & av.stream.Disposition.default]
    return (default or videos or [None])[0]


def _check_y4m_header(path: Path) -> None:
    """A y4m file's picture size, from its first line, before ffmpeg (whose own size check
    reports an unrelated errno for an absurd one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return
    if not head.startswith(b"YUV4MPEG2 "):
        return
    fields = {t[:1]: t[1:] for t in head.split(b"\n", 1)[0].split()[1:]}
    try:
        width, height = int(fields.get(b"W", b"0")), int(fields.get(b"H", b"0"))
    except ValueError:
        return
    _check_size(path, width, height)


def _check_size(path, width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise VideoDecodeError(
            path,
            f"picture size {width}x{height} exceeds the limit "
            f"({MAX_SIDE} px a side, {MAX_PIXELS} px in all)",
        )


def _list_hint(path: Path) -> str:
    """A text file whose first entry (read as ``batch`` reads a list) is an existing file is a
    list of videos without the ``.txt`` that makes it one: say so; else "". Reads 4 KB only."""
    from tal_pipeline.batch import list_entries

    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        entries = list_entries(head.decode("utf-8-sig"), path.parent)
        found = bool(entries) and entries[0].is_file()
    except (OSError, UnicodeDecodeError, ValueError):  # ValueError: a NUL in the "path"
        return ""
    return "; it looks like a list of paths: lists need the .txt extension" if found else ""


def _mp4_hint(path: Path) -> str:
    """Why an ISO-BMFF (mp4, mov) file ffmpeg cannot open is broken, from its top-level boxes:
    it ends inside a box (truncated), or it has no ``moov`` index; else ""."""
    kinds: list[bytes] = []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            at = 0
            while at + 8 <= size and len(kinds) < 256:
                f.seek(at)
                head = f.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if n == 1 and len(head) == 16:  # 64-bit size
                    n = int.from_bytes(head[8:16], "big")
                elif n == 0:  # to the end of the file
                    n = size - at
                if n < 8 or not kind.isascii():
                    return ""
                kinds.append(kind)
                at += n
    except OSError:
        return ""
    if not kinds or kinds[0] != b"ftyp" or at + 8 <= size:  # not an mp4, or too many boxes
        return ""
    if at > size:
        return f"; truncated: the file ends inside its '{kinds[-1].decode()}' box"
    if b"moov" not in kinds:
        return "; no 'moov' box (the mp4 index): truncated or never finished"
    return ""


def _why(err: BaseException) -> str:
    """A short cause from a PyAV exception (its message without the repeated file name)."""
    msg = getattr(err, "strerror", None) or str(err)
    return str(msg).strip() or type(err).__name__


def _stream_span(stream) -> float | None:
    """Seconds the stream's own header says it lasts: its duration field, else a Matroska
    track's ``DURATION`` tag (its end, counted from 0: minus the stream's start); else None."""
    tb = stream.time_base
    if stream.duration is not None and stream.duration > 0 and tb:
        return float(stream.duration * tb)
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    if tag:
        try:
            h, m, sec = tag.split(":")
            end = int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
        start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        if end - start > 0:
            return end - start
    return None


def _header_duration(container, stream) -> float | None:
    """Seconds, from the stream's own header, else the container's; None when neither says."""
    own = _stream_span(stream)
    if own is not None:
        return own
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _check_header(path, container, stream) -> None:
    """Refuse absurd resolutions and durations before the decoder allocates anything."""
    _check_size(path, stream.codec_context.width, stream.codec_context.height)
    claims = [_stream_span(stream), (container.duration or 0) / av.time_base]
    duration = max((d for d in claims if d is not None), default=0.0)  # the stream's or the file's
    if duration > MAX_DURATION_S:
        raise VideoDecodeError(
            path,
            f"duration {duration:.0f} s ({duration / 3600:.0f} h) exceeds the limit of "
            f"{MAX_DURATION_S:.0f} s ({MAX_DURATION_S / 3600:.0f} h)",
        )


# ----------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class _Orientation:
    """How to turn a stored (H, W) picture into the displayed one: transpose, then flips."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(H, W, ...) -> displayed (H', W', ...); a view, no copy."""
        if self.transpose:
            image = image.swapaxes(0, 1)
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return image

    @property
    def clockwise_degrees(self) -> int:
        """The rotation part, as degrees a player turns the picture clockwise (mirrors ignored)."""
        if not self.transpose:
            return 180 if (self.flip_rows and self.flip_cols) else 0
        # transpose then flip cols = clockwise 90; transpose then flip rows = clockwise 270;
        # a bare transpose (or anti-transpose) is a mirrored quarter turn: report 90 (270)
        return 270 if self.flip_rows and not self.flip_cols else 90


_IDENTITY = _Orientation()


def _orientation_from_matrix(values: tuple[int, ...]) -> _Orientation | None:
    """Orientation from a 3x3 display matrix (16.16 fixed point, row-major, ffmpeg/ISO-BMFF).

    The matrix maps a stored pixel (x, y) to (a x + c y, b x + d y) on screen, y pointing down.
    Only multiples of 90 degrees (with mirrors) are honoured; None for any other angle.
    """
    a, b, _, c, d = values[0], values[1], values[2], values[3], values[4]
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if scale == 0:
        return None
    a, b, c, d = (round(v / scale) for v in (a, b, c, d))
    if b == 0 and c == 0 and a and d:  # x' = a x, y' = d y
        return _Orientation(False, d < 0, a < 0)
    if a == 0 and d == 0 and b and c:  # x' = c y, y' = b x: rows of the result run along x
        return _Orientation(True, b < 0, c < 0)
    return None


def _orientation_from_degrees(clockwise: int) -> _Orientation:
    clockwise %= 360
    if clockwise == 90:
        return _Orientation(True, False, True)
    if clockwise == 180:
        return _Orientation(False, True, True)
    if clockwise == 270:
        return _Orientation(True, True, False)
    return _IDENTITY


def _orientation(frame: av.VideoFrame, stream) -> _Orientation:
    """The display transform: the frame's display-matrix side data, else the ``rotate`` tag."""
    for side in frame.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            raw = bytes(side)
            if len(raw) >= 36:
                values = tuple(np.frombuffer(raw[:36], dtype="<i4").tolist())
                found = _orientation_from_matrix(values)
                if found is not None:
                    return found
            # an odd angle or matrix: round the rotation to the nearest quarter turn
            ccw = frame.rotation
            log.warning("display rotation %s degrees rounded to a quarter turn", ccw)
            return _orientation_from_degrees(-90 * round(ccw / 90))
    tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
    if tag:
        try:
            return _orientation_from_degrees(90 * round(float(tag) / 90))
        except ValueError:
            log.warning("ignoring unreadable rotate tag %r", tag)
    return _IDENTITY


# ----------------------------------------------------------------------------- decoding


def _frames(path, container, stream, on_error: list) -> Iterator[av.VideoFrame]:
    """Every decodable frame of ``stream`` in presentation order, skipping rejected packets."""
    bad_in_a_row = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as err:
            on_error.append(f"demuxer error ({_why(err)}); the rest of the file is unreadable")
            return
        try:
            frames = packet.decode()
        except av.FFmpegError as err:
            bad_in_a_row += 1
            on_error.append(f"packet rejected by the decoder ({_why(err)})")
            if bad_in_a_row >= MAX_BAD_PACKETS:
                on_error.append(f"{MAX_BAD_PACKETS} bad packets in a row; giving up")
                return
            if packet.size == 0:  # the flush packet failed: nothing more will come
                return
            continue
        bad_in_a_row = 0
        yield from frames


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
        self.orient = _IDENTITY
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
        header = _header_duration(container, stream)
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

    for frame in _frames(path, container, stream, errors):
        pts = shown.pts(frame, clock)
        if shown.t0 is None:  # shown from t0: the stream's first pictures, if lost
            shown.t0 = _start_pts(stream, pts)
            converter.orient = _orientation(frame, stream)
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
    _report(path, container, stream, errors, shown.dropped, float(end * clock.tb), truncated,
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
    span = _stream_span(stream)
    if span is None or float((first - start) * stream.time_base) > span:
        return first
    return start


def _report(
    path, container, stream, errors: list[str], dropped: int, decoded_s: float,
    truncated: str = "warn", covered_s: float | None = None,
) -> None:
    """Log what went wrong in a stream that still gave frames, and apply the damaged-file rule.

    ``decoded_s``: seconds from the first decoded frame to the end of the last; ``covered_s``:
    of those, the seconds shown by decoded frames (holes over ``HOLE_S`` left out). Against the
    duration its header gives, a video of which under ``MIN_DECODED_SHARE`` decodes is refused
    (``VideoDecodeError``, with ``truncated="error"``), whatever the container; short of that
    by more than max(``TRUNCATION_WARN_S``, 5 %), it is processed with a warning. The refusal
    needs the duration from the video stream's own header (or a file with no other stream): a
    container's duration can be that of a longer audio track."""
    if errors:
        log.warning(
            "%s: %d decoding problem(s), first: %s; kept what decoded", path, len(errors), errors[0]
        )
    if dropped:
        log.warning("%s: dropped %d frame(s) with out-of-order timestamps", path, dropped)
    header = _header_duration(container, stream)
    covered = decoded_s if covered_s is None else min(covered_s, decoded_s)
    if header is None or covered >= header - max(TRUNCATION_WARN_S, 0.05 * header):
        return
    share = covered / header
    own = _stream_span(stream) is not None or len(container.streams) == 1
    if truncated == "error" and own and share < MIN_DECODED_SHARE:
        raise VideoDecodeError(
            path,
            f"damaged or truncated: {covered:.2f} s of the {header:.2f} s of video its header "
            f"gives decode ({100 * share:.0f} %; at least {100 * MIN_DECODED_SHARE:.0f} % must)",
        )
    log.warning(
        "%s: only %.2f s of the %.2f s of video its header gives decode (%.0f %%): damaged or "
        "truncated file; processed",
        path,
        covered,
        header,
        100 * share,
    )


# ----------------------------------------------------------------------------- probing


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the headers and decode the first frame; raise ``VideoDecodeError`` as decode_video.

    ``num_frames`` is ``num_output_frames(duration, 10.0)`` when the header gives a duration.
    """
    container, stream = open_video(path)
    try:
        stream.thread_type = "AUTO"
        errors: list[str] = []
        first = next(_frames(path, container, stream, errors), None)
        if first is None:
            cause = "no decodable video frames"
            if errors:
                cause += f" ({errors[0]})"
            raise VideoDecodeError(path, cause)
        orient = _orientation(first, stream)
        width, height = first.width, first.height
        if orient.transpose:
            width, height = height, width
        duration = _header_duration(container, stream)
        rate = stream.average_rate
        return VideoInfo(
            path=str(path),
            duration=duration,
            width=width,
            height=height,
            source_fps=float(rate) if rate else None,
            rotation=orient.clockwise_degrees,
            codec=stream.codec_context.name,
            num_frames=num_output_frames(duration, FPS) if duration is not None else None,
        )
    finally:
        container.close()
