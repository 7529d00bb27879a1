"""Synthetic test videos written with PyAV, and pictures that carry their own frame index.

Writers:

- ``write_video(path, frames, fps, codec=..., pix_fmt=...)``: constant frame rate; frame i has
  pts i in a time base of 1/fps (the muxer may rescale it), duration 1/fps.
- ``write_vfr_video(path, frames, pts, time_base=1/1000, durations=...)``: explicit, irregular
  presentation times; every packet gets its duration, so the last frame's is known.

``frames`` is a sequence of ``uint8 (H, W, 3)`` RGB (or ``(H, W)`` grey) arrays, or a callable
``i -> array`` together with ``num_frames``.

Pictures that identify themselves after the decoder's resize + centre crop:

- ``code_frame(i, width, height)`` draws the bits of ``i`` as a grid of black/white cells in the
  central half of the picture (which survives the 128x171 resize and the 112 centre crop);
  ``read_code(frames)`` reads them back from decoded ``(N, S, S, 3)`` frames.
- ``quadrant_frame(width, height)`` is white in its top-left quadrant only;
  ``bright_quadrant(frame)`` says which quadrant of a decoded frame is bright (rotation tests).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FrameSource = Sequence[np.ndarray] | Callable[[int], np.ndarray]

CODE_ROWS, CODE_COLS = 3, 4  # grid of code cells: 12 bits, frame indices 0..4095
CODE_REGION = (0.25, 0.75)  # cells cover this fraction of the width and of the height
RESIZE_HW = (128, 171)  # (H, W) the decoder resizes to before its centre crop (r3d_18 Kinetics)


def _get(frames: FrameSource, i: int) -> np.ndarray:
    return frames(i) if callable(frames) else frames[i]


def _to_video_frame(array: np.ndarray) -> av.VideoFrame:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 2:
        return av.VideoFrame.from_ndarray(array, format="gray")
    return av.VideoFrame.from_ndarray(array, format="rgb24")


def _open_stream(
    path: Path,
    codec: str,
    rate: Fraction | int | None,
    width: int,
    height: int,
    pix_fmt: str,
    options: dict[str, str] | None,
    rotation: int,
    metadata: dict[str, str] | None,
    container_format: str | None,
    time_base: Fraction | None = None,
    container_options: dict[str, str] | None = None,
):
    container = av.open(str(path), "w", format=container_format, options=container_options or {})
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if time_base is not None:
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
    if options:
        stream.options = dict(options)
    if rotation:
        stream.set_display_rotation(rotation)  # counter-clockwise degrees, as VideoFrame.rotation
    if metadata:
        for key, value in metadata.items():
            stream.metadata[key] = value
    return container, stream


def write_video(
    path: str | Path,
    frames: FrameSource,
    fps: float | Fraction = 30,
    *,
    num_frames: int | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    rotation: int = 0,
    metadata: dict[str, str] | None = None,
    container_format: str | None = None,
    container_options: dict[str, str] | None = None,
    gop: int | None = None,
) -> Path:
    """Write a constant-frame-rate video; frame i is shown from i/fps to (i+1)/fps seconds.

    ``rotation``: display-matrix rotation, counter-clockwise degrees (a player shows the stored
    picture turned that way). ``metadata``: stream tags (e.g. ``{"rotate": "90"}``).
    ``container_options``: muxer options (e.g. ``{"movflags": "faststart"}``). ``gop``: frames
    between keyframes (the encoder's default when None). Returns the path.
    """
    path = Path(path)
    n = len(frames) if num_frames is None else num_frames
    first = _get(frames, 0)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    container, stream = _open_stream(
        path, codec, rate, width, height, pix_fmt, options, rotation, metadata, container_format,
        container_options=container_options,
    )
    if gop is not None:
        stream.codec_context.gop_size = gop
    try:
        for i in range(n):
            frame = _to_video_frame(first if i == 0 else _get(frames, i))
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


def write_vfr_video(
    path: str | Path,
    frames: FrameSource,
    pts: Sequence[int],
    *,
    time_base: Fraction = Fraction(1, 1000),
    durations: Sequence[int] | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    container_format: str | None = None,
) -> Path:
    """Write a variable-frame-rate video: frame i at ``pts[i]`` ticks of ``time_base``.

    ``durations[i]`` (ticks) is each frame's display duration; by default the gap to the next
    frame, and for the last frame the previous gap. Packets carry these durations, so the
    stream's end (last pts + last duration) is exactly known. Returns the path.
    """
    path = Path(path)
    pts = [int(p) for p in pts]
    if any(b <= a for a, b in itertools.pairwise(pts)):
        raise ValueError("pts must increase")
    if durations is None:
        gaps = [b - a for a, b in itertools.pairwise(pts)]
        durations = gaps + [gaps[-1] if gaps else 1]
    by_pts = dict(zip(pts, (int(d) for d in durations)))
    first = _get(frames, 0)
    height, width = first.shape[:2]
    # A nominal rate for the encoder's rate control only; timestamps are explicit.
    container, stream = _open_stream(
        path, codec, None, width, height, pix_fmt, options, 0, None, container_format, time_base
    )

    def mux(packets):
        for packet in packets:
            if packet.pts is not None:
                tick = round(packet.pts * packet.time_base / time_base)
                if tick in by_pts:
                    packet.duration = round(by_pts[tick] * time_base / packet.time_base)
            container.mux(packet)

    try:
        for i, p in enumerate(pts):
            frame = _to_video_frame(first if i == 0 else _get(frames, i))
            frame.pts = p
            frame.time_base = time_base
            mux(stream.encode(frame))
        mux(stream.encode())
    finally:
        container.close()
    return path


def write_audio(
    path: str | Path, seconds: float = 1.0, codec: str = "aac", rate: int = 16000
) -> Path:
    """Write an audio-only file (a 440 Hz tone; ``codec`` e.g. aac, mp2). Returns the path."""
    path = Path(path)
    container = av.open(str(path), "w")
    try:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        formats = stream.codec_context.codec.audio_formats
        resampler = av.AudioResampler(format=formats[0].name if formats else "fltp", layout="mono")
        n = int(seconds * rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


# ----------------------------------------------------------------- self-identifying pictures


def _cell_bounds(k: int, n: int, size: int) -> tuple[int, int]:
    lo, hi = CODE_REGION
    a = lo + (hi - lo) * k / n
    b = lo + (hi - lo) * (k + 1) / n
    return round(a * size), round(b * size)


def code_frame(index: int, width: int, height: int, *, grey: bool = False) -> np.ndarray:
    """``uint8 (H, W, 3)`` (or ``(H, W)`` when ``grey``) picture carrying ``index`` as 12 bits.

    Black background; bit b of ``index`` (b = row * CODE_COLS + col) is a white cell when set.
    The cells tile the central half of the picture, which the decoder's resize and 112 centre
    crop keep whatever the source size.
    """
    if not 0 <= index < 2 ** (CODE_ROWS * CODE_COLS):
        raise ValueError(f"index {index} does not fit in {CODE_ROWS * CODE_COLS} bits")
    picture = np.zeros((height, width), np.uint8)
    for r in range(CODE_ROWS):
        y0, y1 = _cell_bounds(r, CODE_ROWS, height)
        for c in range(CODE_COLS):
            if index >> (r * CODE_COLS + c) & 1:
                x0, x1 = _cell_bounds(c, CODE_COLS, width)
                picture[y0:y1, x0:x1] = 255
    return picture if grey else np.repeat(picture[:, :, None], 3, axis=2)


def read_code(frames: np.ndarray, resize_hw: tuple[int, int] = RESIZE_HW) -> np.ndarray:
    """Frame indices carried by decoded frames ``uint8 (N, S, S, 3)`` (or one ``(S, S, 3)``).

    Assumes the decoder stretched the source to ``resize_hw`` then cropped the centre S x S
    (torchvision's rounding). Reads the mean of the middle third of each cell. Returns
    ``int64 (N,)`` (or an int for one frame).
    """
    single = frames.ndim == 3
    frames = frames[None] if single else frames
    size = frames.shape[1]
    h, w = resize_hw
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    luma = frames.astype(np.float32).mean(axis=3)  # (N, S, S)
    lo, hi = CODE_REGION
    out = np.zeros(len(frames), np.int64)
    for r in range(CODE_ROWS):
        fy = lo + (hi - lo) * (r + 0.5) / CODE_ROWS
        cy = fy * h - top
        ry = (hi - lo) * h / CODE_ROWS / 6
        for c in range(CODE_COLS):
            fx = lo + (hi - lo) * (c + 0.5) / CODE_COLS
            cx = fx * w - left
            rx = (hi - lo) * w / CODE_COLS / 6
            y0, y1 = math.floor(cy - ry), math.ceil(cy + ry)
            x0, x1 = math.floor(cx - rx), math.ceil(cx + rx)
            bit = luma[:, y0:y1, x0:x1].mean(axis=(1, 2)) > 127.5
            out |= bit.astype(np.int64) << (r * CODE_COLS + c)
    return int(out[0]) if single else out


def quadrant_frame(width: int, height: int) -> np.ndarray:
    """``uint8 (H, W, 3)``: white top-left quadrant, black elsewhere (shows orientation)."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[: height // 2, : width // 2] = 255
    return picture


def bright_quadrant(frame: np.ndarray) -> tuple[int, int]:
    """(row, col) in {0, 1}^2 of the brightest quadrant of ``frame`` ``(H, W, 3)`` or ``(H, W)``."""
    luma = frame.astype(np.float32)
    if luma.ndim == 3:
        luma = luma.mean(axis=2)
    h, w = luma.shape
    means = np.array(
        [
            [luma[: h // 2, : w // 2].mean(), luma[: h // 2, w // 2 :].mean()],
            [luma[h // 2 :, : w // 2].mean(), luma[h // 2 :, w // 2 :].mean()],
        ]
    )
    r, c = np.unravel_index(int(means.argmax()), means.shape)
    return int(r), int(c)
