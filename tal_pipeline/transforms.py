"""The input transform the backbone's weights expect, in one place.

torchvision's ``R3D_18_Weights.KINETICS400_V1`` was trained on clips resized to 128x171
(height x width) and centre-cropped to 112x112, normalised with the Kinetics mean/std below.
The decoder (``decode.py``) applies the geometric part, the extractor (``features.py``) the
normalisation; both read it from here (via ``weights.py``'s weight specs), so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

FPS = 10.0  # sampled frames per second, the whole pipeline's time base


@dataclass(frozen=True)
class VideoTransformSpec:
    resize_hw: tuple[int, int] = (128, 171)  # (H, W) in pixels before the crop
    crop: int = 112  # side of the square centre crop, pixels
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)  # RGB, on [0, 1] values
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)  # RGB, on [0, 1] values

    def resize_for(self, size: int) -> tuple[int, int]:
        """(H, W) to resize to before a centre crop of ``size`` pixels (scaled with the spec)."""
        if size == self.crop:
            return self.resize_hw
        h, w = self.resize_hw
        return (round(h * size / self.crop), round(w * size / self.crop))


# r3d_18 Kinetics-400 (torchvision VideoClassification preset: resize (128, 171), crop 112)
KINETICS_R3D = VideoTransformSpec()
