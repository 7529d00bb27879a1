"""The detection head: stage-1 coarse predictions, TSA, TPP, final predictions.

Architecture (docs/method.md), for features ``y (B, T, D)`` with a padding mask ``(B, T)``::

    y ──embed──▶ x (B,H,T) ──stem──▶ x ──stage-1 heads──▶ cls1 (B,T,C), reg1 (B,T,2), act1 (B,T)
                                      │                        │
                                      └──────── TSA (A, B, M → G) ◀──┘
                                                  │ y_hat (B,H,T)
                                   TPP(y_hat ⊕ sigmoid(act1)) ──▶ final heads ──▶ cls, reg, act

All distances are in feature steps (``reg[..., 0]`` back to the start, ``reg[..., 1]`` on to the
end of the instance around each position). Layers are convolutions plus attention inside a
window, so padded positions never change outputs at valid positions.

Long videos (:meth:`HeadModel.infer`) run in windows of ``window`` steps that overlap by
``overlap`` steps (hop = window - overlap, a multiple of the TPP pooling factor so the pooling
grid matches the whole-video grid); each position keeps its prediction from the window where
it is most central (window ``k`` owns ``[k*hop + overlap/2, (k+1)*hop + overlap/2)``; the first
and last windows own up to the video's ends). Merging happens before NMS, and memory grows
linearly with T (``batch_windows`` windows at a time).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tal_pipeline.head.tpp import ChannelNorm, Conv1d, ConvNormReLU, TemporalPyramidPooling
from tal_pipeline.head.tsa import TSA_MODES, TemporalSelfAttention

SCORE_FUSIONS = ("class", "actionness")


@dataclass(frozen=True)
class HeadConfig:
    """Options of the head; stored in checkpoints (``asdict``), so only plain values."""

    input_dim: int  # D, feature channels (1024 for our two-stream r3d_18, 2048 for public I3D)
    num_classes: int  # C, action classes (background implied)
    hidden_dim: int = 128  # H, channels inside the head
    stem_layers: int = 2  # shared 3-tap conv layers before the stage-1 heads
    head_layers: int = 1  # conv layers in each class/regression head before its output conv
    tsa: str = "full"  # "full" (A, B, M fused into G), "plain" (G = M) or "none"
    tpp: bool = True  # temporal pyramid pooling before the final heads (off: heads read y_hat)
    tpp_dilations: tuple[int, ...] = (1, 2, 4)  # dilated branches (eq. 8), rates in steps
    tpp_strides: tuple[int, ...] = (2, 4)  # strided pyramid levels (eq. 7), pooling factors
    reg_init: float = 4.0  # initial scale of predicted distances, feature steps
    prior_prob: float = 0.01  # initial class probability (focal-loss bias init)
    dropout: float = 0.3  # dropout on the embedded features during training (regularises small datasets)
    window: int = 256  # inference window, feature steps (training windows default to the same)
    overlap: int = 64  # overlap of consecutive inference windows, feature steps
    # Fields below came later; their defaults are the earlier behaviour, so checkpoints that lack
    # them load unchanged. ``tal train`` picks its own defaults (``train.HEAD_DEFAULTS``).
    stem_dilations: tuple[int, ...] = ()  # dilation of each stem layer (() = all 1); a wider
    #   receptive field before stage 1 lets the coarse predictions (and so TSA's A and B) see
    #   temporal patterns several steps long
    output_levels: int = 1  # final predictions at strides 1, 2, 4, ... (2^(L-1)) of the TPP output,
    #   each level regressing only instances in its range (assign.py); 1 = one scale (earlier)
    score_fusion: str = "class"  # detection score: "class" (class probability) or "actionness"
    #   (class probability x actionness: the actionness head, trained at every position inside
    #   an instance, ranks boundaries and background better than centre-trained class scores)
    embed_kernel: int = 1  # taps of the input embedding conv (odd); 3 lets the first layer
    #   average neighbouring steps of every input channel before the D -> H compression
    input_dropout: float = 0.0  # while training, drop whole input channels (all steps of a window)
    #   with this probability before the embedding: wide features on few videos let the head
    #   memorise a handful of channels (BENCHMARKS.md, "Head", long regime)
    tsa_normalise: bool = True  # TSA "full": rows of G = M * A * (1 - B) rescaled to sum 1 (True,
    #   the earlier behaviour) or used as they are (tsa.py)

    def __post_init__(self):
        if self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(f"score_fusion must be one of {SCORE_FUSIONS}, got {self.score_fusion!r}")
        if self.stem_dilations and len(self.stem_dilations) != self.stem_layers:
            raise ValueError("stem_dilations needs one rate per stem layer")
        if self.tsa not in TSA_MODES:
            raise ValueError(f"tsa must be one of {TSA_MODES}, got {self.tsa!r}")
        if self.input_dim < 1 or self.num_classes < 1 or self.hidden_dim < 1:
            raise ValueError("input_dim, num_classes and hidden_dim must be positive")
        if not 0 <= self.overlap < self.window:
            raise ValueError("need 0 <= overlap < window")
        if self.embed_kernel < 1 or self.embed_kernel % 2 == 0:
            raise ValueError("embed_kernel must be a positive odd number")
        if self.output_levels < 1:
            raise ValueError("output_levels must be >= 1")
        if not 0.0 <= self.input_dropout < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout and input_dropout must be in [0, 1)")
        multiple = math.lcm(max(self.tpp_strides, default=1) if self.tpp else 1, 2 ** (self.output_levels - 1))
        if (self.window - self.overlap) % multiple:
            raise ValueError(f"window - overlap must be a multiple of {multiple} (TPP pooling)")

    def to_dict(self) -> dict:
        """Plain dict (lists instead of tuples) for checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each output level, feature steps."""
        return tuple(2**k for k in range(self.output_levels))

    @classmethod
    def from_dict(cls, d: dict) -> HeadConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (``TypeError``)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TypeError(f"unknown head config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class HeadOutputs:
    """Raw outputs, all ``(B, T, ...)``; distances in feature steps, >= 0.

    With ``output_levels`` L > 1 the final ``cls``, ``reg``, ``act`` hold the levels one after
    the other along T: level ``l`` (stride ``s = 2^l``) has ``ceil(T / s)`` positions, position
    ``p`` covering steps ``[p s, p s + s - 1]`` and centred at ``p s + (s - 1) / 2``
    (:func:`level_positions`). Its distances are in feature steps too.
    """

    cls1: torch.Tensor  # (B, T, C) stage-1 class logits
    reg1: torch.Tensor  # (B, T, 2) stage-1 distances to start / end
    act1: torch.Tensor  # (B, T) stage-1 actionness logits
    cls: torch.Tensor  # (B, T, C) final class logits
    reg: torch.Tensor  # (B, T, 2) final distances
    act: torch.Tensor  # (B, T) final actionness logits
    strides: tuple[int, ...] = (1,)  # stride of each level of the final outputs


def level_lengths(t: int, strides: tuple[int, ...]) -> list[int]:
    """Positions per output level for ``t`` steps."""
    return [-(-t // s) for s in strides]


def level_positions(t: int, strides: tuple[int, ...]) -> torch.Tensor:
    """``(sum of level lengths,)`` float64: the centre of every output position, in feature steps."""
    return torch.cat([torch.arange(n, dtype=torch.float64) * s + 0.5 * (s - 1)
                      for n, s in zip(level_lengths(t, strides), strides)])


class PredictionHeads(nn.Module):
    """Class logits, distances and actionness from ``(B, H, T)`` features."""

    def __init__(self, dim: int, num_classes: int, layers: int, reg_init: float, prior_prob: float):
        super().__init__()
        self.cls_tower = nn.ModuleList(ConvNormReLU(dim, dim) for _ in range(layers))
        self.reg_tower = nn.ModuleList(ConvNormReLU(dim, dim) for _ in range(layers))
        self.cls_out = Conv1d(dim, num_classes, 3, padding=1)
        self.reg_out = Conv1d(dim, 2, 3, padding=1)
        self.act_out = Conv1d(dim, 1, 3, padding=1)
        self.log_scale = nn.Parameter(torch.tensor(math.log(reg_init)))  # distances' unit, steps
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = x
        for layer in self.cls_tower:
            c = layer(c, mask)
        r = x
        for layer in self.reg_tower:
            r = layer(r, mask)
        cls = self.cls_out(c).transpose(1, 2)  # (B, H, T) -> (B, T, C)
        reg = F.softplus(self.reg_out(r)).transpose(1, 2) * self.log_scale.exp()  # (B, T, 2) steps
        act = self.act_out(x)[:, 0]  # (B, T)
        return cls, reg, act


class HeadModel(nn.Module):
    """Stage-1 + TSA + TPP + final heads (see the module docstring)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        h = config.hidden_dim
        self.embed = Conv1d(config.input_dim, h, config.embed_kernel, padding=config.embed_kernel // 2)
        self.embed_norm = ChannelNorm(h)
        self.dropout = nn.Dropout(config.dropout)
        # (B, D, T): whole channels; Identity when off, so a model without it draws the same
        # random numbers in training as before the option existed (same seed, same checkpoint)
        self.input_dropout = nn.Dropout1d(config.input_dropout) if config.input_dropout else nn.Identity()
        rates = config.stem_dilations or (1,) * config.stem_layers
        self.stem = nn.ModuleList(ConvNormReLU(h, h, 3, r) for r in rates)
        self.stage1 = PredictionHeads(h, config.num_classes, config.head_layers, config.reg_init, config.prior_prob)
        self.tsa = TemporalSelfAttention(h, config.tsa, config.tsa_normalise)
        self.tpp = TemporalPyramidPooling(h, config.tpp_dilations, config.tpp_strides) if config.tpp else None
        self.final = PredictionHeads(h, config.num_classes, config.head_layers, config.reg_init, config.prior_prob)
        if config.output_levels > 1:  # downsampling chain: level l+1 = conv(maxpool2(level l))
            self.pyramid = nn.ModuleList(ConvNormReLU(h, h) for _ in range(config.output_levels - 1))
            self.level_scales = nn.Parameter(torch.zeros(config.output_levels))  # log, per level

    def length_multiple(self) -> int:
        """Inputs are padded inside :meth:`forward` to a multiple of this many steps."""
        tpp = self.tpp.length_multiple() if self.tpp is not None else 1
        return math.lcm(tpp, self.config.strides[-1])

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> HeadOutputs:
        """``features (B, T, D)`` float, ``mask (B, T)`` bool (True = valid) -> :class:`HeadOutputs`.

        Outputs at padded positions are meaningless (the losses ignore them).
        """
        b, t, _ = features.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=features.device)
        m = self.length_multiple()
        pad = -t % m + (m if m > 1 else 0)
        if pad:  # the pooling grid, and the masked level beyond the end that linear upsampling
            # reads, must not depend on how much padding the caller added (windows == whole video)
            features = F.pad(features, (0, 0, 0, pad))
            mask = F.pad(mask, (0, pad), value=False)
        fmask = mask[:, None, :].to(features.dtype)  # (B, 1, T')

        x = self.embed(self.input_dropout(features.transpose(1, 2)) * fmask)  # (B, D, T') -> (B, H, T')
        x = self.dropout(torch.relu(self.embed_norm(x))) * fmask
        for layer in self.stem:
            x = layer(x, mask)  # (B, H, T')
        cls1, reg1, act1 = self.stage1(x, mask)  # (B, T', C), (B, T', 2), (B, T')

        y_hat = self.tsa(x, mask, cls1, reg1.detach(), act1)  # (B, H, T')
        if self.tpp is not None:
            refined = self.tpp(y_hat, torch.sigmoid(act1)[:, None, :], mask)  # (B, H, T')
        else:
            refined = y_hat
        if self.config.output_levels == 1:
            cls, reg, act = self.final(refined, mask)  # (B, T', C), (B, T', 2), (B, T')
            return HeadOutputs(cls1[:, :t], reg1[:, :t], act1[:, :t], cls[:, :t], reg[:, :t], act[:, :t])
        xs, ms, x, m = [refined], [mask], refined, mask
        for level in range(1, self.config.output_levels):
            # (B, H, T_l) -> (B, H, T_l / 2), padded positions never win the max
            x = F.max_pool1d(x.masked_fill(~m[:, None, :], float("-inf")), 2, 2)
            m = F.max_pool1d(m[:, None, :].to(x.dtype), 2, 2)[:, 0] > 0
            x = self.pyramid[level - 1](x.masked_fill(~m[:, None, :], 0.0), m)
            xs.append(x)
            ms.append(m)
        # One pass of the shared final heads over the levels laid end to end along T (one set of
        # conv calls instead of one per level: the per-call cost dominates at the coarse levels).
        # Exact: every level ends in at least one padded, zeroed position (pad >= the coarsest
        # stride), and the heads' 3-tap convs zero their outputs there, so no level reads another.
        c, r, a = self.final(torch.cat(xs, dim=2), torch.cat(ms, dim=1))  # (B, sum T'_l, C), (.., 2), (..)
        outs, first = [], 0
        for level, (stride, xl) in enumerate(zip(self.config.strides, xs)):
            n = -(-t // stride)  # (B, n, ...) of this level; reg from level units to steps
            outs.append((c[:, first : first + n], r[:, first : first + n] * (self.level_scales[level].exp() * stride),
                         a[:, first : first + n]))
            first += xl.shape[2]
        cls, reg, act = (torch.cat(parts, dim=1) for parts in zip(*outs))  # (B, sum T_l, ...)
        return HeadOutputs(cls1[:, :t], reg1[:, :t], act1[:, :t], cls, reg, act, self.config.strides)

    @torch.no_grad()
    def infer(
        self,
        features: torch.Tensor,
        window: int | None = None,
        overlap: int | None = None,
        batch_windows: int = 16,
        return_positions: bool = False,
    ):
        """Whole-video inference in overlapping windows (memory linear in T).

        Args:
            features: ``(T, D)`` float tensor on the model's device.
            window, overlap: steps; default to the config's.
            batch_windows: windows per forward pass (bounds peak memory).
            return_positions: also return each output position's centre (see below).

        Returns:
            class probabilities ``(N, C)`` (sigmoid of the final logits), distances ``(N, 2)``
            (steps) and actionness ``(N,)`` (sigmoid), merged across windows; with
            ``return_positions`` also ``(N,)`` float64 centres in feature steps. ``N = T`` for a
            single output level; with several, the levels one after the other (:class:`HeadOutputs`).
        """
        window = window or self.config.window
        overlap = self.config.overlap if overlap is None else overlap
        t = features.shape[0]
        strides = self.config.strides
        positions = level_positions(t, strides)  # (N,)
        if t <= window:
            out = self(features[None])
            res = (torch.sigmoid(out.cls[0]), out.reg[0], torch.sigmoid(out.act[0]))
            return (*res, positions) if return_positions else res
        hop = window - overlap
        starts = list(range(0, t - overlap, hop))  # the last window reaches the end (padded)
        if starts[-1] + window < t:
            starts.append(starts[-1] + hop)
        lengths = level_lengths(t, strides)  # per level, whole video
        offsets = [sum(lengths[:k]) for k in range(len(strides))]  # first row of each level
        wlengths = level_lengths(window, strides)  # per level, one window
        probs = features.new_empty(positions.shape[0], self.config.num_classes)
        dist = features.new_empty(positions.shape[0], 2)
        act = features.new_empty(positions.shape[0])
        for i in range(0, len(starts), batch_windows):
            group = starts[i : i + batch_windows]
            batch = features.new_zeros(len(group), window, features.shape[1])  # (nW, W, D)
            mask = torch.zeros(len(group), window, dtype=torch.bool, device=features.device)
            for j, s in enumerate(group):
                n = min(window, t - s)
                batch[j, :n] = features[s : s + n]
                mask[j, :n] = True
            out = self(batch, mask)
            for j, s in enumerate(group):
                k = i + j
                own0 = 0 if k == 0 else s + overlap // 2  # steps this window owns
                # the last window owns everything after: a coarse level's last bin may be centred
                # past the last step, and a row nobody owns would stay uninitialised
                own1 = math.inf if k == len(starts) - 1 else s + hop + overlap // 2
                w0 = 0
                for level, stride in enumerate(strides):
                    # hop is a multiple of every stride: the window's level grid is the video's
                    first = s // stride  # video-level index of the window's first position
                    centre = (first + torch.arange(wlengths[level])) * stride + 0.5 * (stride - 1)
                    keep = (centre >= own0) & (centre < own1) & (first + torch.arange(wlengths[level]) < lengths[level])
                    idx = torch.nonzero(keep)[:, 0]
                    rows = offsets[level] + first + idx
                    src = w0 + idx
                    probs[rows] = torch.sigmoid(out.cls[j, src])
                    dist[rows] = out.reg[j, src]
                    act[rows] = torch.sigmoid(out.act[j, src])
                    w0 += wlengths[level]
        return (probs, dist, act, positions) if return_positions else (probs, dist, act)


def fuse_scores(config: HeadConfig, probs, actionness):
    """Detection scores ``(T, C)`` from class probabilities ``(T, C)`` and actionness ``(T,)``
    (torch tensors or numpy arrays)."""
    if config.score_fusion == "actionness":
        return probs * actionness[:, None]
    return probs
