"""How a player turns a stored picture: the display matrix a frame carries, else the older
``rotate`` stream tag; rotations by quarter turns and mirrors. ``probe_video`` reports it,
the sampler applies it to every picture it converts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import av
import numpy as np

log = logging.getLogger("tal_pipeline.decode")  # the stage's one logger, as documented


@dataclass(frozen=True)
class Orientation:
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


IDENTITY = Orientation()


def orientation_from_matrix(values: tuple[int, ...]) -> Orientation | None:
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
        return Orientation(False, d < 0, a < 0)
    if a == 0 and d == 0 and b and c:  # x' = c y, y' = b x: rows of the result run along x
        return Orientation(True, b < 0, c < 0)
    return None


def orientation_from_degrees(clockwise: int) -> Orientation:
    clockwise %= 360
    if clockwise == 90:
        return Orientation(True, False, True)
    if clockwise == 180:
        return Orientation(False, True, True)
    if clockwise == 270:
        return Orientation(True, True, False)
    return IDENTITY


def _side_data(frame: av.VideoFrame) -> list:
    """The frame's side data objects. PyAV 18.1.0 iterates its container of them; 18.1.1 made
    it a mapping, whose iteration gives their types (the keys)."""
    container = frame.side_data
    return [item if hasattr(item, "type") else container[item] for item in container]


def orientation(frame: av.VideoFrame, stream) -> Orientation:
    """The display transform: the frame's display-matrix side data, else the ``rotate`` tag."""
    for side in _side_data(frame):
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            raw = bytes(side)
            if len(raw) >= 36:
                values = tuple(np.frombuffer(raw[:36], dtype="<i4").tolist())
                found = orientation_from_matrix(values)
                if found is not None:
                    return found
            # an odd angle or matrix: round the rotation to the nearest quarter turn
            ccw = frame.rotation
            log.warning("display rotation %s degrees rounded to a quarter turn", ccw)
            return orientation_from_degrees(-90 * round(ccw / 90))
    tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
    if tag:
        try:
            return orientation_from_degrees(90 * round(float(tag) / 90))
        except ValueError:
            log.warning("ignoring unreadable rotate tag %r", tag)
    return IDENTITY
