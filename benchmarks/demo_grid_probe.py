"""Would spatial grid pooling help the demo? ``tal extract`` with the trunk's pooling widened.

    python -m benchmarks.demo_grid_probe extract LIST.txt -o FEATURES --weights seeded \\
        --streams flow --flow torch --threads 1

Any ``tal extract`` arguments; the one difference is the trunk's last step: instead of the
global spatial mean of layer 4 ((B, 512, T, 7, 7) -> (B, 512, T)), the global mean followed by
the means of a 2 x 2 grid of the picture ((B, 5 * 512, T): global, top-left, top-right,
bottom-left, bottom-right). The first 512 channels are bit-identical to ``tal extract``'s, so a
head trained on these features and one trained on the first 512 compare pooling alone.

Why: on the demo's data, the head takes the footage's own motion (cars crossing, a shot playing
back and forth) for camera motion. With a global mean a large moving object and a camera move
can give alike features; a grid shows whether the motion is everywhere. A diagnostic, not a
feature of the package: it changes a class of ``tal_pipeline.backbone`` for this process only,
and the features' meta still names the ``seeded`` weights (``dim`` is 2560).
"""

from __future__ import annotations

import sys
from dataclasses import replace

import torch
import torch.nn.functional as F

from tal_pipeline import backbone, features

GRID = 2  # cells per side


def global_and_grid_mean(self, x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, (1 + GRID^2) C, T): global mean, then each cell's (row-major)."""
    b, c, t = x.shape[:3]
    cells = F.adaptive_avg_pool3d(x, (t, GRID, GRID))  # (B, C, T, G, G); 7 px -> cells of 4
    cells = cells.permute(0, 3, 4, 1, 2).reshape(b, GRID * GRID * c, t)
    return torch.cat([x.mean(dim=(3, 4)), cells], dim=1)


def main(argv: list[str] | None = None) -> int:
    backbone.SpatialMean.forward = global_and_grid_mean
    for table in (backbone.SPECS, features.SPECS):
        table["r3d_18"] = replace(backbone.SPECS["r3d_18"], dim=512 * (1 + GRID * GRID))
    from tal_pipeline.cli import main as tal

    return tal(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
