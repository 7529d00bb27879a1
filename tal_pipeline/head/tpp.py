"""TPP: temporal pyramid pooling (docs/method.md, eqs. 7-8).

Input: ``y_fuse``, the TSA output ``y_hat (B, H, T)`` concatenated with the stage-1 actionness
``y_act (B, 1, T)`` along channels. Branches, each ``Conv1d -> norm -> ReLU`` (eqs. 7-8):

* dilated branches at full resolution, one per rate in ``dilations`` (eq. 8, "hole"
  convolutions: a wide receptive field without losing short actions to downsampling);
* strided branches, one per factor in ``strides``: max-pool by ``s`` (padded positions count
  as ``-inf``), a ``3``-tap conv at that level, then linear interpolation back to length T.

The branch outputs are concatenated, fused by a 1x1 conv (+ the residual ``y_hat``) and masked.

Normalisation: the paper writes BN; we use a per-position LayerNorm over channels
(:class:`ChannelNorm`) so that padded positions and the batch composition never change the
output at valid positions (training runs batches of 2-8 windows with padding). Callers must pad
T to a multiple of ``max(strides)`` so the pooling grid does not depend on the padding
(:meth:`TemporalPyramidPooling.length_multiple`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` (same parameters and state-dict keys) run in the channels-last layout.

    ``(B, Cin, T) -> (B, Cout, T)``; the output is stored position by position (strides
    ``(T * Cout, 1, Cout)``, a transposed ``(B, T, Cout)`` tensor). Why: on CPU a channels-last
    convolution is as fast as a contiguous one, and :class:`ChannelNorm`'s transposes, the TSA's
    ``(B, T, H)`` matrices and the heads' ``(B, T, C)`` outputs then read it without copies (the
    contiguous layout cost a copy before and after every LayerNorm). The same result up to rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, Cin, 1, T), no copy if already
        y = F.conv2d(x4, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]), (0, self.padding[0]),
                     (1, self.dilation[0]), self.groups)  # (B, Cout, 1, T) channels-last
        return y.squeeze(2)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, T)`` tensor, position by position."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T) -> (B, C, T)


class ConvNormReLU(nn.Module):
    """``Conv1d -> ChannelNorm -> ReLU``, zeroed at padded positions. ``(B, Cin, T) -> (B, Cout, T)``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, dilation: int = 1):
        super().__init__()
        self.conv = Conv1d(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.norm = ChannelNorm(c_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x))) * mask[:, None, :]


class TemporalPyramidPooling(nn.Module):
    """``(y_hat (B, H, T), y_act (B, 1, T), mask (B, T)) -> (B, H, T)`` multi-scale features."""

    def __init__(self, dim: int, dilations: tuple[int, ...] = (1, 2, 4), strides: tuple[int, ...] = (2, 4)):
        super().__init__()
        if not dilations and not strides:
            raise ValueError("TPP needs at least one dilated or strided branch")
        self.strides = tuple(strides)
        self.dilated = nn.ModuleList(ConvNormReLU(dim + 1, dim, 3, d) for d in dilations)
        self.pooled = nn.ModuleList(ConvNormReLU(dim + 1, dim, 3, 1) for _ in strides)
        self.fuse = Conv1d(dim * (len(dilations) + len(strides)), dim, 1)
        self.norm = ChannelNorm(dim)

    def length_multiple(self) -> int:
        """T must be a multiple of this (pad with masked positions)."""
        return max(self.strides, default=1)

    def forward(self, y_hat: torch.Tensor, y_act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = y_hat.shape[-1]
        fmask = mask[:, None, :].to(y_hat.dtype)  # (B, 1, T)
        y_fuse = torch.cat([y_hat, y_act * fmask], dim=1)  # (B, H + 1, T)
        branches = [branch(y_fuse, mask) for branch in self.dilated]  # each (B, H, T)
        for s, branch in zip(self.strides, self.pooled):
            pooled = F.max_pool1d(y_fuse.masked_fill(~mask[:, None, :], float("-inf")), s, s)  # (B, H+1, T/s)
            mask_s = F.max_pool1d(fmask, s, s)[:, 0] > 0  # (B, T/s): any valid position in the bin
            pooled = pooled.masked_fill(~mask_s[:, None, :], 0.0)
            level = branch(pooled, mask_s)  # (B, H, T/s)
            up = F.interpolate(level, size=t, mode="linear", align_corners=False)  # (B, H, T)
            branches.append(up * fmask)
        fused = self.fuse(torch.cat(branches, dim=1))  # (B, n_branches * H, T) -> (B, H, T)
        return torch.relu(self.norm(fused + y_hat)) * fmask
