"""Hostile inputs, made by the tests (no binary blobs in git).

``make_bad(kind, folder, clip, name=None) -> (path, word)`` writes one bad input of ``kind`` in
``folder`` (named ``name``, else ``<kind>.<ext>``) and returns its path and a word the one-line
error about it must contain. ``clip`` is any small real h264 mp4 written by
``videogen.write_video`` (its ``moov`` index at the end, ffmpeg's default); some kinds cut or
patch a copy of it.

Kinds, by who refuses them:

- ``DECODE_KINDS``: ``decode_video`` and ``probe_video`` raise ``VideoDecodeError``.
- ``SHORT_KINDS``: decode fine, but give fewer frames than one feature step (4 at 10 fps): the
  feature extractor refuses them (``VideoTooShortError``), so both verbs do.
- ``PERMISSION_KINDS``: unreadable; only refused where permissions apply (not as root with
  CAP_DAC_OVERRIDE: see ``unprivileged_prefix``).
- ``PARTIAL_KINDS``: truncated after an intact index: decode keeps the frames that are there.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
from videogen import code_frame, write_audio, write_video

W, H = 64, 48  # pixels, the size of the small videos made here

DECODE_KINDS = {  # kind -> the word its error must contain
    "missing": "not found",
    "empty": "empty",
    "random": "",  # whatever the demuxers make of it; any one-line cause
    "text": "not a readable video",
    "audio": "no video stream",
    "truncated_10": "truncated",  # moov at the end: the index is lost
    "truncated_50": "truncated",
    "truncated_90": "truncated",
    "truncated_header": "truncated",  # fast start (moov first), cut inside the index
    "no_index": "no 'moov' box",  # cut where the index begins: complete boxes, no index
    "no_frames": "no decodable video frames",  # a valid index, every sample zeroed
    "folder": "not a regular file",
    "fifo": "not a regular file",  # av.open would block on it forever
    "broken_link": "broken symbolic link",
    "link_loop": "symbolic link loop",  # a.mp4 -> b.mp4 -> a.mp4
    "huge_side": "exceeds the limit",  # y4m header: 16400 x 16
    "huge_area": "exceeds the limit",  # y4m header: 9000 x 8000
    "huge_area_avi": "exceeds the limit",  # mjpeg in avi: header and JPEG SOF say 8000 x 9000
    "huge_duration_mp4": "exceeds the limit",  # mdhd/stts/mvhd: a million hours
    "huge_duration_mkv": "exceeds the limit",  # Segment Info Duration: a million hours
    "huge_duration_avi": "exceeds the limit",  # strh/avih frame counts: 2^31 - 1 at 10 fps
}
SHORT_KINDS = {"one_frame": "too short", "short": "too short"}
PERMISSION_KINDS = {"unreadable": "permission denied"}
PARTIAL_KINDS = ("truncated_faststart_90", "truncated_fragmented_50")

EXTENSIONS = {
    "audio": ".m4a",
    "huge_side": ".y4m",
    "huge_area": ".y4m",
    "huge_area_avi": ".avi",
    "huge_duration_mkv": ".mkv",
    "huge_duration_avi": ".avi",
}

MILLION_HOURS_S = 3_600_000_000  # seconds


def make_bad(kind: str, folder: Path, clip: Path, name: str | None = None) -> tuple[Path, str]:
    """Write a bad input of ``kind`` into ``folder``; returns (path, word of its error)."""
    words = {**DECODE_KINDS, **SHORT_KINDS, **PERMISSION_KINDS}
    path = folder / (name or kind + EXTENSIONS.get(kind, ".mp4"))
    _MAKERS[kind](path, Path(clip))
    return path, words.get(kind, "")


def write_clip(path: Path, num_frames: int = 90, fps: int = 30, **kwargs) -> Path:
    """A small h264 video of self-identifying frames (``videogen.code_frame``)."""
    return write_video(path, lambda i: code_frame(i, W, H), fps, num_frames=num_frames, **kwargs)


# ----------------------------------------------------------------------------- makers


def _missing(path: Path, clip: Path) -> None:
    pass


def _random(path: Path, clip: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())


def _truncated(fraction: float):
    def make(path: Path, clip: Path) -> None:
        data = clip.read_bytes()
        assert data.index(b"moov") > len(data) // 2  # the index is at the end: cut off
        path.write_bytes(data[: int(len(data) * fraction)])

    return make


def _no_index(path: Path, clip: Path) -> None:
    data = clip.read_bytes()
    path.write_bytes(data[: data.index(b"moov") - 4])


def _truncated_written(fraction: float, **kwargs):
    def make(path: Path, clip: Path) -> None:
        whole = write_clip(path.with_name(".whole-" + path.name), **kwargs)
        data = whole.read_bytes()
        whole.unlink()
        path.write_bytes(data[: int(len(data) * fraction)])

    return make


def _no_frames(path: Path, clip: Path) -> None:
    data = bytearray(clip.read_bytes())
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    path.write_bytes(bytes(data))


def _folder(path: Path, clip: Path) -> None:
    path.mkdir()


def _fifo(path: Path, clip: Path) -> None:
    os.mkfifo(path)


def _broken_link(path: Path, clip: Path) -> None:
    path.symlink_to(path.with_name("does-not-exist.mp4"))


def _link_loop(path: Path, clip: Path) -> None:
    other = path.with_name(path.stem + "_b" + path.suffix)
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def _y4m(width: int, height: int):
    def make(path: Path, clip: Path) -> None:
        path.write_bytes(
            f"YUV4MPEG2 W{width} H{height} F30:1 C420jpeg\nFRAME\n".encode() + bytes(1000)
        )

    return make


def _huge_area_avi(path: Path, clip: Path) -> None:
    """An mjpeg avi whose BITMAPINFOHEADER, AVI header and every JPEG SOF say 8000 x 9000
    (72 M pixels: each side under MAX_SIDE, the area over MAX_PIXELS)."""
    width, height = 8000, 9000
    small = write_clip(path.with_name(".small.avi"), 10, 10, codec="mjpeg", pix_fmt="yuvj420p")
    data = bytearray(small.read_bytes())
    small.unlink()
    sof = b"\xff\xc0"
    at, n = data.find(sof), 0
    while at >= 0:  # FFC0, length (2), precision (1), height (2), width (2)
        if data[at + 5 : at + 9] == struct.pack(">HH", H, W):
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            n += 1
        at = data.find(sof, at + 2)
    assert n == 10, n
    strf = data.index(b"strf") + 8  # BITMAPINFOHEADER: biSize, biWidth, biHeight (LE int32)
    data[strf + 4 : strf + 12] = struct.pack("<ii", width, height)
    avih = data.index(b"avih") + 8  # MainAVIHeader: dwWidth, dwHeight at bytes 32..40
    data[avih + 32 : avih + 40] = struct.pack("<II", width, height)
    path.write_bytes(bytes(data))


_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _mp4_boxes(data: bytearray, start: int = 0, end: int | None = None):
    """(type, offset, size) of every box, depth first (the boxes the patches need)."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size < 8:
            return
        yield kind, at, size
        if kind in _MP4_CONTAINERS:
            yield from _mp4_boxes(data, at + 8, at + size)
        at += size


def _huge_duration_mp4(path: Path, clip: Path) -> None:
    """The clip with a million hours in every duration field: movie and media time scales set
    to 1 tick a second, the movie (mvhd), track (tkhd), media (mdhd) and edit list (elst)
    durations to 3.6e9 ticks and every sample (stts) to 2^31 - 1 ticks. (ffmpeg's mp4 demuxer
    derives the stream's duration from the sample table and the edit list, so patching the
    headers alone changes nothing.)"""
    data = bytearray(clip.read_bytes())
    hours = struct.pack(">I", MILLION_HOURS_S)
    patched = set()
    for kind, at, _ in _mp4_boxes(data):
        body = at + 8  # version (1), flags (3), ...
        if kind in (b"mvhd", b"mdhd", b"tkhd", b"elst"):
            assert data[body] == 0  # version 0: 32-bit times
        if kind in (b"mvhd", b"mdhd"):  # creation, modification, time scale, duration
            data[body + 12 : body + 20] = struct.pack(">I", 1) + hours
        elif kind == b"tkhd":  # creation, modification, track id, reserved, duration
            data[body + 20 : body + 24] = hours
        elif kind == b"elst":  # entry count, then (segment duration, media time, rate)
            data[body + 8 : body + 12] = hours
        elif kind == b"stts":  # entry count, then (sample count, sample delta)
            (entries,) = struct.unpack(">I", data[body + 4 : body + 8])
            for i in range(entries):
                data[body + 12 + 8 * i : body + 16 + 8 * i] = struct.pack(">I", 2**31 - 1)
        else:
            continue
        patched.add(kind)
    assert patched == {b"mvhd", b"mdhd", b"tkhd", b"elst", b"stts"}, patched
    path.write_bytes(bytes(data))


def _huge_duration_mkv(path: Path, clip: Path) -> None:
    """A Matroska file whose Segment Info Duration (float, ms) says a million hours."""
    small = write_clip(path.with_name(".small.mkv"), 10, 10)
    data = bytearray(small.read_bytes())
    small.unlink()
    at = data.index(b"\x44\x89\x88")  # Duration element, an 8-byte float
    data[at + 3 : at + 11] = struct.pack(">d", MILLION_HOURS_S * 1000.0)
    path.write_bytes(bytes(data))


def _huge_duration_avi(path: Path, clip: Path) -> None:
    """An avi whose stream and main headers count 2^31 - 1 frames at 10 fps (6.8 years)."""
    small = write_clip(path.with_name(".small.avi"), 10, 10, codec="mpeg4")
    data = bytearray(small.read_bytes())
    small.unlink()
    strh = data.index(b"strh") + 8  # AVIStreamHeader: dwLength at bytes 32..36
    data[strh + 32 : strh + 36] = struct.pack("<I", 2**31 - 1)
    avih = data.index(b"avih") + 8  # MainAVIHeader: dwTotalFrames at bytes 16..20
    data[avih + 16 : avih + 20] = struct.pack("<I", 2**31 - 1)
    path.write_bytes(bytes(data))


def _unreadable(path: Path, clip: Path) -> None:
    shutil.copy(clip, path)  # a good video: only the permissions make it fail
    path.chmod(0)


_MAKERS = {
    "missing": _missing,
    "empty": lambda p, c: p.write_bytes(b""),
    "random": _random,
    "text": lambda p, c: p.write_text("this is not a video\n" * 50),
    "audio": lambda p, c: write_audio(p, seconds=1.0),
    "truncated_10": _truncated(0.10),
    "truncated_50": _truncated(0.50),
    "truncated_90": _truncated(0.90),
    "no_index": _no_index,
    "truncated_header": _truncated_written(0.10, container_options={"movflags": "faststart"}),
    "truncated_faststart_90": _truncated_written(0.90, container_options={"movflags": "faststart"}),
    "truncated_fragmented_50": _truncated_written(
        0.50, container_options={"movflags": "frag_keyframe+empty_moov"}, gop=15
    ),
    "no_frames": _no_frames,
    "folder": _folder,
    "fifo": _fifo,
    "broken_link": _broken_link,
    "link_loop": _link_loop,
    "huge_side": _y4m(16400, 16),
    "huge_area": _y4m(9000, 8000),
    "huge_area_avi": _huge_area_avi,
    "huge_duration_mp4": _huge_duration_mp4,
    "huge_duration_mkv": _huge_duration_mkv,
    "huge_duration_avi": _huge_duration_avi,
    "one_frame": lambda p, c: write_clip(p, num_frames=1, fps=25),  # 0.04 s: 1 output frame
    "short": lambda p, c: write_clip(p, num_frames=3, fps=10),  # 0.3 s: 3 output frames
    "unreadable": _unreadable,
}


# ----------------------------------------------------------------------------- permissions

_DROP = ["--bounding-set", "-dac_override,-dac_read_search"]


@cache
def unprivileged_prefix() -> tuple[str, ...] | None:
    """Command prefix under which file permissions apply to this user, or None if none works.

    Not root: ``()``. Root: ``setpriv`` dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from
    the bounding set, so the command it runs (still uid 0, owning its files) cannot read a
    mode-000 file or list a mode-000 folder; checked on a real mode-000 file first.
    """
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f".tal-perm-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.chmod(0)
        r = subprocess.run(
            [setpriv, *_DROP, "cat", str(probe)], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        probe.unlink(missing_ok=True)
    return (setpriv, *_DROP) if r.returncode != 0 and b"ermission" in r.stderr else None


# ----------------------------------------------------------------------------- second round
# (issue #18): valid files that used to be refused, several video streams, damaged middles


def write_offset_clip(path: Path, start_s: float = 5.0, num_frames: int = 30, fps: int = 10) -> Path:
    """An h264 video whose first frame is at ``start_s`` (a recording cut from a longer one):
    Matroska's header then says the video ends at ``start_s + num_frames / fps``."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.time_base = Fraction(1, 1000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(code_frame(i, W, H), format="rgb24")
            frame.pts, frame.time_base = round((start_s + i / fps) * 1000), Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_multi_stream(path: Path, lengths: tuple[int, ...], still_first: bool = False, fps: int = 10) -> Path:
    """Video streams of ``lengths`` frames each (h264 at ``fps``; frame i of stream k codes
    ``i + 1000 * k``), after a one-picture MJPEG track (``still_first``, cover art
    as some muxers store it: a video track of one frame)."""
    import av

    with av.open(str(path), "w") as c:
        still = None
        if still_first:
            still = c.add_stream("mjpeg", rate=1)
            still.width, still.height, still.pix_fmt = W, H, "yuvj420p"
        streams = []
        for _ in lengths:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            streams.append(s)
        if still is not None:
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 200, np.uint8), format="rgb24")
            frame.pts = 0
            for p in [*still.encode(frame), *still.encode()]:
                c.mux(p)
        for i in range(max(lengths)):
            for k, (s, n) in enumerate(zip(streams, lengths)):
                if i < n:
                    frame = av.VideoFrame.from_ndarray(code_frame(i + 1000 * k, W, H), format="rgb24")
                    frame.pts = i
                    for p in s.encode(frame):
                        c.mux(p)
        for s in streams:
            for p in s.encode():
                c.mux(p)
    return path


CONTAINERS = {  # name -> write_clip arguments of a small clip in that container
    "mp4": {"container_options": {"movflags": "faststart"}},
    "mkv": {},
    "webm": {"codec": "libvpx-vp9", "pix_fmt": "yuv420p"},
}


def damaged_middle(clip: Path, path: Path, at: float, fraction: float, seed: int = 0) -> Path:
    """``clip`` with ``fraction`` of its bytes, from ``at`` of its length, replaced by noise."""
    data = bytearray(clip.read_bytes())
    lo = int(len(data) * at)
    hi = lo + max(64, int(len(data) * fraction))
    data[lo:hi] = np.random.default_rng(seed).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
