"""Is this file a video we can read, and which of its streams: the decode stage's checks.

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

``probe_video`` reads the headers and the first frame; ``open_video`` is every check before
sampling (``decode.sample``), which applies the damaged-file rule (``report_damage``) at the end.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av

from tal_pipeline.decode.orientation import orientation
from tal_pipeline.errors import VideoDecodeError
from tal_pipeline.transforms import FPS

log = logging.getLogger("tal_pipeline.decode")  # the stage's one logger, as documented

MAX_SIDE = 16384  # pixels: a stream whose header claims a wider or taller picture is refused
MAX_PIXELS = 8192 * 8192  # pixels per picture (width * height): larger is refused
MAX_DURATION_S = 72 * 3600.0  # seconds: longer header durations are refused; decoding stops there
MAX_BAD_PACKETS = 1000  # consecutive packets the decoder rejects before we give up on the file
TRUNCATION_WARN_S = 1.0  # seconds: warn when the stream ends this much before its header says
MIN_DECODED_SHARE = 0.5  # of the header's duration: a video of which less decodes is refused
HEADER_SLACK_S = 600.0  # seconds: timestamps past max(2 H, H + this) of a header's H are corrupt
HOLE_S = 1.0  # seconds: a longer gap between decoded frames counts as lost (damage), not video


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
        (stream_span(stream) or 0) <= 1 / float(stream.average_rate) + 1e-6
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
    from tal_pipeline.inputs import list_entries

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


def stream_span(stream) -> float | None:
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


def header_duration(container, stream) -> float | None:
    """Seconds, from the stream's own header, else the container's; None when neither says."""
    own = stream_span(stream)
    if own is not None:
        return own
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _check_header(path, container, stream) -> None:
    """Refuse absurd resolutions and durations before the decoder allocates anything."""
    _check_size(path, stream.codec_context.width, stream.codec_context.height)
    claims = [stream_span(stream), (container.duration or 0) / av.time_base]
    duration = max((d for d in claims if d is not None), default=0.0)  # the stream's or the file's
    if duration > MAX_DURATION_S:
        raise VideoDecodeError(
            path,
            f"duration {duration:.0f} s ({duration / 3600:.0f} h) exceeds the limit of "
            f"{MAX_DURATION_S:.0f} s ({MAX_DURATION_S / 3600:.0f} h)",
        )


# ----------------------------------------------------------------------------- decoded frames, damage


def decoded_frames(path, container, stream, on_error: list) -> Iterator[av.VideoFrame]:
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


def report_damage(
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
    header = header_duration(container, stream)
    covered = decoded_s if covered_s is None else min(covered_s, decoded_s)
    if header is None or covered >= header - max(TRUNCATION_WARN_S, 0.05 * header):
        return
    share = covered / header
    own = stream_span(stream) is not None or len(container.streams) == 1
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
        first = next(decoded_frames(path, container, stream, errors), None)
        if first is None:
            cause = "no decodable video frames"
            if errors:
                cause += f" ({errors[0]})"
            raise VideoDecodeError(path, cause)
        orient = orientation(first, stream)
        width, height = first.width, first.height
        if orient.transpose:
            width, height = height, width
        duration = header_duration(container, stream)
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
