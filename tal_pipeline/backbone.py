"""Per-stream 3D ResNet trunks, run fully convolutionally in time and streamed with halos.

The r3d_18 trunk (torchvision ``r3d_18`` without ``avgpool``/``fc``):

    stem     conv 3x7x7, temporal stride 1          (B, C, N, 112, 112) -> (B, 64, N, 56, 56)
    layer1   4 convs 3x3x3                           -> (B, 64, N, 56, 56)
    layer2   first conv stride 2                     -> (B, 128, N/2, 28, 28)
    layer3   first conv stride 2                     -> (B, 256, N/4, 14, 14)
    layer4   *temporal stride 1, dilation 2*         -> (B, 512, N/4, 7, 7)
    mean over H, W                                   -> (B, 512, N/4)

``r3d_18_grid`` is the same trunk and weights with a wider last step: the global mean followed by
the means of a 2 x 2 grid of the picture, ``(B, 5 * 512, N/4)`` (global, then top-left,
top-right, bottom-left, bottom-right). Its first 512 channels equal ``r3d_18``'s; the grid tells
motion everywhere in the picture (a camera move) from motion in one part (an object crossing),
which a global mean can give alike.

Output step: **4 frames** (0.4 s at 10 fps). torchvision's layer4 halves time again (step 8);
we give its first conv and its shortcut temporal stride 1 and its three later convs temporal
dilation 2 ("a trous"), so every even output position equals torchvision's layer4 output exactly
(zero padding included) and the odd ones interleave. The receptive field stays the pretrained
one: **109 frames** (10.9 s), centred on frame ``4 j`` for feature ``j``; feature ``j`` is
therefore timed at ``4 j / fps`` seconds. ``layer4_dilation=1`` gives the plain stride-1
variant (receptive field 85 frames) for ablation.

Streaming: each stage (stem+layer1, layer2, layer3, layer4+pool) is temporally local (radius
5, 7, 7, 7 of its input steps) and zero-pads at the sequence ends. :class:`HaloRunner` applies a
stage to a stream of chunks: each core chunk is computed with ``halo >= radius`` neighbours on
each side (fewer at the true ends, where the zero padding then matches the whole-sequence run),
and only the core's outputs are kept. Chaining one runner per stage gives the whole-sequence
output (within float rounding) while each frame is computed about once and memory depends on
the chunk, not on the video's length. The extractor's default (64 steps for the stages
fed at the full frame rate, stem+layer1 and layer2, whose activations are the largest; 128
steps for layer3 and layer4) trades a little halo recompute for lower peak memory than 128
everywhere (the measured trade-off is in BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache, partial

import torch
from torch import nn


@dataclass(frozen=True)
class StageSpec:
    stride: int  # input steps per output step (temporal)
    radius: int  # input steps each side that one output depends on (temporal)


@dataclass(frozen=True)
class BackboneSpec:
    id: str  # "r3d_18" or "i3d_r50"
    dim: int  # features per stream (channels after spatial pooling)
    feature_stride: int  # frames per feature step
    receptive_field: int  # frames one feature sees (temporal)
    centre_offset: float  # frame index of feature 0's receptive-field centre (feature j: + j*stride)
    stem_key: str  # state-dict key of the first conv (its input channels differ per stream)
    last_conv: str  # key suffix of each residual block's last conv (seeded init scales it down)
    grid: int = 0  # spatial pooling: 0 global mean only; g: global mean, then a g x g grid's means
    trunk: str = ""  # the backbone whose weights (and state-dict keys) it uses; "": its own id

    @property
    def weights_of(self) -> str:
        """The backbone id its weights are resolved and checksummed under."""
        return self.trunk or self.id


R3D_18 = BackboneSpec("r3d_18", 512, 4, 109, 0.0, "stem.0.weight", ".conv2.0.weight")
R3D_18_GRID = replace(R3D_18, id="r3d_18_grid", dim=512 * (1 + 2 * 2), grid=2, trunk="r3d_18")
I3D_R50 = BackboneSpec("i3d_r50", 2048, 2, 36, 0.5, "blocks.0.conv.weight", "branch2.conv_c.weight")
SPECS = {s.id: s for s in (R3D_18, R3D_18_GRID, I3D_R50)}  # the backbones; builders: BUILDERS below
BACKBONES = tuple(SPECS)


class SpatialMean(nn.Module):
    """(B, C, T, H, W) -> (B, C, T): global average over space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(3, 4))


class SpatialGrid(nn.Module):
    """(B, C, T, H, W) -> (B, (1 + g^2) C, T): the global mean, then each cell's of a g x g grid.

    Cells in row-major order (top-left, top-right, ... for g = 2), C channels each. Cells are
    ``adaptive_avg_pool3d``'s: on r3d_18's 7 x 7 map, rows/columns 0-3 and 3-6 (the middle one is
    in both). The global mean is computed as :class:`SpatialMean` does, so those C channels are
    bit-identical to the mean-pooled trunk's.
    """

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape[:3]
        g = self.grid
        cells = torch.nn.functional.adaptive_avg_pool3d(x, (t, g, g))  # (B, C, T, g, g)
        cells = cells.permute(0, 3, 4, 1, 2).reshape(b, g * g * c, t)  # cell-major
        return torch.cat([x.mean(dim=(3, 4)), cells], dim=1)


class StreamNet(nn.Module):
    """One stream's trunk: ``(B, C_in, N, H, W)`` float -> ``(B, dim, ceil(N / stride))``.

    ``body`` holds the original model's modules under their original names, so its state dict
    has the original keys (torchvision's or pytorchvideo's). ``stages`` are (module, StageSpec)
    in order; they share ``body``'s parameters and are not registered a second time.
    """

    def __init__(self, spec: BackboneSpec, body: nn.Module, stages: Sequence[tuple[nn.Module, StageSpec]]):
        super().__init__()
        self.spec = spec
        self.body = body
        self._stages = list(stages)  # plain list: not registered, no duplicate state-dict keys

    @property
    def stages(self) -> list[tuple[nn.Module, StageSpec]]:
        return self._stages

    @property
    def stride(self) -> int:
        return math.prod(s.stride for _, s in self._stages)

    @property
    def radius(self) -> int:
        """Receptive-field radius in input frames (temporal)."""
        r, jump = 0, 1
        for _, s in self._stages:
            r += s.radius * jump
            jump *= s.stride
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module, _ in self._stages:
            x = module(x)
        return x


def r3d_18(
    in_channels: int = 3, *, layer4_dilation: int = 2, grid: int = 0, device: str = "cpu"
) -> StreamNet:
    """torchvision's r3d_18 (:class:`VideoResNet18`) as a stream trunk (random init; load weights after).

    ``in_channels``: 3 for RGB, 2 for flow (a 2-channel stem). ``layer4_dilation``: 2 keeps the
    pretrained receptive field (see the module docstring), 1 is plain stride 1. ``grid``: 0 pools
    with the global mean (``r3d_18``), 2 with :class:`SpatialGrid` (``r3d_18_grid``).
    ``device="meta"`` builds shapes only (instant): ``to_empty`` then ``load_state_dict`` before use.
    """
    if layer4_dilation not in (1, 2):
        raise ValueError(f"layer4_dilation must be 1 or 2, got {layer4_dilation}")
    if grid not in (0, R3D_18_GRID.grid):
        raise ValueError(f"grid must be 0 or {R3D_18_GRID.grid}, got {grid}")
    with torch.device(device):
        body = VideoResNet18(in_channels)
    first = body.layer4[0]
    first.conv1[0].stride = (1, 2, 2)  # temporal stride 2 -> 1
    first.downsample[0].stride = (1, 2, 2)
    if layer4_dilation == 2:
        for conv in (first.conv2[0], body.layer4[1].conv1[0], body.layer4[1].conv2[0]):
            conv.dilation = (2, 1, 1)
            conv.padding = (2, 1, 1)
    radius4 = 1 + 3 * layer4_dilation  # conv1 +-1, then three convs +-dilation
    stages = [
        (nn.Sequential(body.stem, body.layer1), StageSpec(1, 1 + 4)),  # stem + 4 convs, +-1 each
        (body.layer2, StageSpec(2, 1 + 3 * 2)),  # strided conv +-1, 3 convs at output jump 2
        (body.layer3, StageSpec(2, 1 + 3 * 2)),
        (nn.Sequential(body.layer4, SpatialGrid(grid) if grid else SpatialMean()), StageSpec(1, radius4)),
    ]
    spec = R3D_18_GRID if grid else R3D_18
    spec = spec if layer4_dilation == 2 else replace(spec, receptive_field=85)
    return StreamNet(spec, body, stages)


class BasicBlock(nn.Module):
    """torchvision's video ``BasicBlock`` (``Conv3DSimple``): ``relu(conv2(conv1(x)) + shortcut(x))``,
    with its submodule names, so its state-dict keys are torchvision's."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, C', T', H', W')
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class VideoResNet18(nn.Module):
    """torchvision's ``r3d_18`` trunk without ``avgpool``/``fc``: the same modules, names, keys
    and random initialisation, built here so that extraction does not import torchvision
    (``import torchvision`` adds about a second to every ``tal`` start on top of torch's own).
    ``tests/test_backbone.py`` holds it to torchvision's model, key for key and output for output.
    """

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )
        widths, cin = (64, 128, 256, 512), 64
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        if self.stem[0].weight.is_meta:  # shapes only: no values to draw (and drawing on "meta"
            return  # goes through torch._refs, which imports torch._dynamo: ~1.5 s)
        for m in self.modules():  # torchvision's init (random trunks in tests; weights load after)
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, 512, T/8, H/16, W/16)
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def i3d_r50(in_channels: int = 3, *, device: str = "cpu") -> StreamNet:
    """pytorchvideo's ``i3d_r50`` (ResNet-50 I3D, 2048-d) as a stream trunk; needs the extra.

    Structure (pytorchvideo 0.1.5 ``create_resnet``, 5x7x7 stem): blocks[0] stem (temporal
    +-2), blocks[1] res2 (3 bottlenecks with 3x1x1 ``conv_a``: +-3), blocks[2] temporal max-pool
    2 / stride 2 (``ceil_mode`` set, so an odd last frame is kept), blocks[3] res4... res5
    (3x1x1 in every other block: +-2, +-3, +-1 pooled steps), blocks[6] the head (dropped).
    Step 2 frames; feature j's receptive field is frames 2j-17 .. 2j+18 (36), centre 2j + 0.5.
    """
    with torch.device(device):
        body = _pytorchvideo_i3d(pretrained=False)
        return _i3d_stream(body, in_channels)


def _pytorchvideo_i3d(pretrained: bool) -> nn.Module:
    from tal_pipeline.errors import NotAvailableError

    try:  # only pytorchvideo.models: 0.1.5's transforms import a module torchvision removed
        from pytorchvideo.models.hub.resnet import i3d_r50 as pv_i3d_r50
    except ImportError as err:
        raise NotAvailableError(
            f"backbone i3d_r50 needs the optional extra: pip install 'tal-pipeline[pytorchvideo]' ({err})"
        ) from None
    return pv_i3d_r50(pretrained=pretrained)


def _i3d_stream(body: nn.Module, in_channels: int) -> StreamNet:
    blocks = body.blocks
    if in_channels != 3:
        old = blocks[0].conv
        blocks[0].conv = nn.Conv3d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None
        )
    del blocks[6]  # the classification head: spatial pooling only
    blocks[2].ceil_mode = True  # temporal max-pool (2, 1, 1): keep an odd last frame
    stages = [
        (nn.Sequential(blocks[0], blocks[1], blocks[2]), StageSpec(2, 2 + 3 + 1)),  # pool: +1 right
        (nn.Sequential(blocks[3], blocks[4], blocks[5], SpatialMean()), StageSpec(1, 2 + 3 + 1)),
    ]
    return StreamNet(I3D_R50, body, stages)


BUILDERS: dict[str, Callable[..., StreamNet]] = {
    R3D_18.id: r3d_18,
    R3D_18_GRID.id: partial(r3d_18, grid=R3D_18_GRID.grid),
    I3D_R50.id: i3d_r50,
}


def build_stream(backbone: str, in_channels: int, *, device: str = "cpu") -> StreamNet:
    """A stream trunk for ``backbone`` (a key of ``SPECS``), randomly initialised on
    ``device``; ``device="meta"`` for shapes only (fast)."""
    if backbone not in BUILDERS:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
    return BUILDERS[backbone](in_channels, device=device)


# ----------------------------------------------------------------------------- streaming


Forward = Callable[[torch.Tensor], torch.Tensor]


class HaloRunner:
    """Apply a temporally local stage to a stream of chunks, keeping only exact outputs.

    Input pieces are ``(C, t, ...)`` tensors (time on dim 1), any lengths. ``push`` returns the
    newly final outputs ``(C', t', ...)`` or None; ``finish`` returns the rest. Core chunks of
    ``chunk`` input steps start at multiples of ``chunk``; each runs with ``halo`` extra steps
    each side (a multiple of ``stride`` >= the stage's radius, so the output grid stays aligned).
    Up to ``max_batch`` equally long windows run in one forward. The buffer is kept time-major
    (:func:`_time_major`), so a window is a view and a stage's input is already channels-last.
    """

    def __init__(self, fn: Forward, stage: StageSpec, chunk: int, max_batch: int = 1):
        s = stage.stride
        self.fn = fn
        self.stride = s
        self.halo = -(-stage.radius // s) * s
        self.chunk = max(s, -(-chunk // s) * s)
        self.max_batch = max(1, max_batch)
        self.buf: torch.Tensor | None = None  # (C, t, ...) inputs from global step buf_start
        self.buf_start = 0
        self.n_in = 0  # input steps received
        self.next_core = 0  # global input step where the next core chunk starts

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        if x.shape[1] == 0:
            return None
        self.buf = _time_major(x) if self.buf is None else _cat_time([self.buf, x])
        self.n_in += x.shape[1]
        windows = []
        while self.n_in >= self.next_core + self.chunk + self.halo:
            windows.append(self._window(self.next_core + self.chunk + self.halo, self.next_core + self.chunk))
            self.next_core += self.chunk
        out = self._run(windows)
        self._trim()
        return out

    def finish(self) -> torch.Tensor | None:
        """Outputs for the rest of the stream: the last partial chunk is computed, never dropped.

        It is not padded with blank frames (that would change the numbers): the window simply
        ends at the stream's end, where each layer's own zero padding acts exactly as in a
        whole-sequence pass, so ``ceil(N / stride)`` outputs come out in total.
        """
        if self.buf is None or self.next_core >= self.n_in:
            return None
        out = self._run([self._window(self.n_in, self.n_in)])
        self.next_core = self.n_in
        self.buf = None
        return out

    def _window(self, w1: int, core_end: int) -> tuple[int, int, int, int]:
        w0 = max(0, self.next_core - self.halo)
        lo = (self.next_core - w0) // self.stride
        hi = lo + -(-(core_end - self.next_core) // self.stride)
        return w0, w1, lo, hi

    def _run(self, windows: list[tuple[int, int, int, int]]) -> torch.Tensor | None:
        outs: list[torch.Tensor] = []
        i = 0
        while i < len(windows):
            group = [windows[i]]
            while (
                len(group) < self.max_batch
                and i + len(group) < len(windows)
                and windows[i + len(group)][1] - windows[i + len(group)][0] == group[0][1] - group[0][0]
                and windows[i + len(group)][2:] == group[0][2:]
            ):
                group.append(windows[i + len(group)])
            i += len(group)
            b0 = self.buf_start
            views = [self.buf[:, w0 - b0 : w1 - b0].movedim(0, -1) for w0, w1, _, _ in group]  # (t, ..., C)
            # one window: a view of the buffer, no copy (the stages never write to their input)
            x = views[0][None] if len(views) == 1 else torch.stack(views)  # (B, t, ..., C)
            y = self.fn(x.movedim(-1, 1))  # (B, C, t, ...) -> (B, C', t', ...)
            lo, hi = group[0][2], group[0][3]
            outs.extend(y[k, :, lo:hi] for k in range(len(group)))
        if not outs:
            return None
        return outs[0] if len(outs) == 1 else _cat_time(outs)

    def _trim(self) -> None:
        keep_from = max(0, self.next_core - self.halo)
        if keep_from > self.buf_start:
            self.buf = self.buf[:, keep_from - self.buf_start :]
            self.buf_start = keep_from


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """``(C, t, ...)`` with its memory ordered time first, channels last (``(t, ..., C)``): the
    channels-last layout the convolutions take and give, in which a time slice is one block of
    memory. No copy when ``x`` is laid out so already (a stage's output, the RGB input)."""
    return x.movedim(0, -1).contiguous().movedim(-1, 0)


def _cat_time(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(C, t_i, ...)`` pieces -> ``(C, sum t_i, ...)``, time-major (:func:`_time_major`): the
    concatenation is then along the outermost memory dimension (block copies). Along ``dim=1``
    of channels-last pieces it was a strided gather into a channels-first tensor that the next
    convolution converted back."""
    return torch.cat([x.movedim(0, -1) for x in xs], dim=0).movedim(-1, 0)


class StreamPipeline:
    """A :class:`StreamNet` applied to a stream of ``(C, t, H, W)`` input chunks.

    ``push`` / ``finish`` return feature chunks ``(dim, t')`` (or None); over the whole stream
    they concatenate to ``net(x)[0]`` for the whole input ``x`` (within float rounding).
    ``wrap`` turns each stage module into the callable actually run (autocast, memory format).
    """

    def __init__(
        self,
        net: StreamNet,
        chunk: int | Sequence[int] = 64,
        max_batch: int = 1,
        wrap: Callable[[nn.Module], Forward] | None = None,
    ):
        wrap = wrap or (lambda m: m)
        chunks = [chunk] * len(net.stages) if isinstance(chunk, int) else list(chunk)
        if len(chunks) != len(net.stages):
            raise ValueError(f"need one chunk per stage ({len(net.stages)}), got {chunks}")
        self.runners = [
            HaloRunner(wrap(m), spec, c, max_batch) for (m, spec), c in zip(net.stages, chunks, strict=True)
        ]

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        for r in self.runners:
            x = r.push(x)
            if x is None:
                return None
        return x

    def finish(self) -> torch.Tensor | None:
        carry: torch.Tensor | None = None
        for r in self.runners:
            pieces = [p for p in (r.push(carry) if carry is not None else None, r.finish()) if p is not None]
            carry = torch.cat(pieces, dim=1) if pieces else None
        return carry


@torch.inference_mode()
def forward_chunked(net: StreamNet, x: torch.Tensor, chunk: int, piece: int | None = None) -> torch.Tensor:
    """``(C, N, H, W) -> (dim, ceil(N / stride))`` through :class:`StreamPipeline`, fed in pieces.

    For tests and one-off use: equals ``net(x[None])[0]`` within float rounding.
    """
    pipe = StreamPipeline(net, chunk)
    piece = piece or chunk
    outs = [pipe.push(x[:, i : i + piece]) for i in range(0, x.shape[1], piece)]
    outs.append(pipe.finish())
    outs = [o for o in outs if o is not None]
    return torch.cat(outs, dim=1)


# ---------------------------------------------------------------------------------------------
# BatchNorm folding and operator fusion for frozen inference (FeatureExtractor applies it to
# both streams)


class ConvNorm(torch.nn.Module):
    """A ``Conv3d`` followed by an eval-mode ``BatchNorm3d``, as one conv with a bias; optionally
    then a residual add and a ReLU (``relu(conv(x) + shift + residual)``) in the same call.

    The conv's weight tensor is kept as is (shared with the other stream and with the weights
    cache: no second copy); in fp32 the per-channel scale is applied to a transient weight at
    each call (a few MB), the shift is the conv's bias. Under autocast (bf16, fp16) the folded
    weight is made once in that dtype and kept in ``folded`` (shared by both streams' modules of
    the same conv: half the fp32 size in all), instead of a multiply and a cast per call.

    On a CPU with oneDNN (fp32, bf16) the add and the ReLU are the convolution's post-ops
    (:func:`_onednn_conv`): no separate passes over the activation, which in bf16 cost about as
    much as the convolutions. The ReLU alone changes nothing (bitwise); the add is made on the
    convolution's fp32 accumulator and rounded once, where the unfused path rounds the conv's
    output to bf16 first, so bf16 features move at bf16 rounding.
    """

    def __init__(
        self, conv: torch.nn.Conv3d, norm: torch.nn.BatchNorm3d, folded: dict | None = None, relu: bool = False
    ):
        super().__init__()
        self.conv = conv
        self.relu = relu  # ReLU after the (conv + shift + residual)
        self.folded = {} if folded is None else folded  # (_key, dtype) -> (weight, bias)
        # identity of (conv weight, BatchNorm): the streams share these tensors, so their
        # modules of the same conv find one folded copy
        self._key = (conv.weight.data_ptr(), norm.weight.data_ptr(), norm.running_var.data_ptr())
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        self.register_buffer("scale", scale.detach().view(-1, 1, 1, 1, 1).clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        x = x.to(dtype or c.weight.dtype)
        if residual is not None:
            residual = residual.to(x.dtype)
        steps, batch, t_out = _slice_steps(c, x), x.shape[0], _out_steps(c, x.shape[2])  # TIME_SLICE says why
        if steps:
            x = _to_slices(x, c, steps)
            residual = _residual_slices(residual, steps) if residual is not None else None
        geometry = _geometry(c, bool(steps))
        fused = _onednn_conv(x)
        weight, bias = self._weight_bias(x, dtype, fused, geometry)
        if fused:
            y = _conv_pointwise(x, weight, bias, geometry, residual, self.relu)
        else:
            with torch.autocast(x.device.type, enabled=False):
                padding, stride, dilation, groups = geometry
                y = torch.nn.functional.conv3d(x, weight, bias, stride, padding, dilation, groups)
            if residual is not None:
                y += residual
            y = y.relu_() if self.relu else y
        return _from_slices(y, batch, t_out) if steps else y

    def _weight_bias(
        self, x: torch.Tensor, dtype: torch.dtype | None, fused: bool, geometry: tuple
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded (weight, bias) for ``x``'s conv: ``dtype`` is autocast's (None: the weight's).

        A low-precision weight for oneDNN (``fused``) is kept in oneDNN's own blocked layout for
        ``x``'s shape (bitwise the same results): otherwise oneDNN reorders the weight at every
        call, about a sixth of the bf16 convolutions' time. Another input shape still runs
        (oneDNN reorders it then).
        """
        c = self.conv
        if dtype is None or c.weight.dtype == dtype:
            return c.weight * self.scale.to(c.weight.dtype), self.shift.to(c.weight.dtype)
        key = (*self._key, dtype, fused)
        if key not in self.folded:  # once per conv and dtype (same BatchNorm -> same scale)
            weight = (c.weight * self.scale).to(dtype).contiguous(memory_format=_memory_format(c.weight))
            if fused:
                weight = torch._C._nn.mkldnn_reorder_conv3d_weight(weight.to_mkldnn(), *geometry, list(x.shape))
            self.folded[key] = (weight, self.shift.to(dtype))
        return self.folded[key]


# oneDNN's bf16 (AMX) kernels for 3-D convs on small frames slow down 5-13x per output step
# once a call's output has more than ~53 steps of 7 x 7 (~25 % already at 14 x 14), a cliff in
# its blocking heuristic; fp32 and large frames show none. So such convs run on slices of
# TIME_SLICE output steps, stacked in the batch (the same sums: bitwise the same results).
# Only where AMX runs them: on a Zen 4 (AVX512_BF16, no AMX) one call has no cliff and the
# slices cost ~5 % of the trunk (BENCHMARKS.md, issue #30).
TIME_SLICE = 32  # output steps per slice
SMALL_FRAME = 14 * 14  # output pixels per step at or under which convs are sliced


@cache
def _cpu_has_amx() -> bool:
    """Whether oneDNN's bf16 convs run on AMX tiles here (where the time-slice cliff is)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def _slice_steps(conv: torch.nn.Conv3d, x: torch.Tensor) -> int:
    """Output steps per time slice for ``conv`` on ``x`` (0: one call, no slicing)."""
    if x.device.type != "cpu" or x.ndim != 5 or x.dtype != torch.bfloat16 or conv.stride[0] != 1:
        return 0
    if not _cpu_has_amx():
        return 0
    out_hw = 1
    for i in (1, 2):
        k, s, p, d = conv.kernel_size[i], conv.stride[i], conv.padding[i], conv.dilation[i]
        out_hw *= (x.shape[2 + i] + 2 * p - d * (k - 1) - 1) // s + 1
    return TIME_SLICE if out_hw <= SMALL_FRAME and _out_steps(conv, x.shape[2]) > TIME_SLICE else 0


def _out_steps(conv: torch.nn.Conv3d, t: int) -> int:
    """Output steps of ``conv`` (time stride 1) on ``t`` input steps."""
    return t + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1)


def _geometry(conv: torch.nn.Conv3d, sliced: bool) -> tuple[list[int], list[int], list[int], int]:
    """(padding, stride, dilation, groups) of the call: sliced, no time padding (in the slices)."""
    padding = list(conv.padding)
    if sliced:
        padding[0] = 0
    return padding, list(conv.stride), list(conv.dilation), conv.groups


def _to_slices(x: torch.Tensor, conv: torch.nn.Conv3d, steps: int) -> torch.Tensor:
    """``conv``'s input in slices of ``steps`` output steps (:func:`_slices`)."""
    return _slices(x, steps, conv.padding[0], conv.dilation[0] * (conv.kernel_size[0] - 1))


def _residual_slices(r: torch.Tensor, steps: int) -> torch.Tensor:
    """A residual (output-shaped) cut like the output: ``steps``-long pieces, no halo."""
    return _slices(r, steps, 0, 0)


def _slices(x: torch.Tensor, steps: int, pad: int, halo: int) -> torch.Tensor:
    """``(N, C, T, H, W) -> (N * n, C, steps + halo, H, W)`` channels-last: batch ``i * n + j``
    holds the input of output steps ``j * steps ...`` of sample ``i``: ``pad`` zero steps first
    (the conv's time padding), ``halo`` more steps each (its reach), zeros past the end."""
    n = -(-(x.shape[2] + 2 * pad - halo) // steps)
    x = torch.nn.functional.pad(x, (0, 0, 0, 0, pad, n * steps + halo - x.shape[2] - pad))
    b, c, _, h, w = x.shape
    out = torch.empty((b * n, c, steps + halo, h, w), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last_3d)
    out.view(b, n, c, steps + halo, h, w).copy_(x.unfold(2, steps + halo, steps).permute(0, 2, 1, 5, 3, 4))
    return out


def _from_slices(y: torch.Tensor, batch: int, t: int) -> torch.Tensor:
    """``(N * n, C, steps, H, W) -> (N, C, t, H, W)`` channels-last: the slices end to end."""
    bn, c, steps, h, w = y.shape
    n = bn // batch
    out = torch.empty((batch, c, n * steps, h, w), dtype=y.dtype, device=y.device,
                      memory_format=torch.channels_last_3d)
    out.view(batch, c, n, steps, h, w).copy_(y.view(batch, n, c, steps, h, w).permute(0, 2, 1, 3, 4, 5))
    # cropped: a view for one sample (time is its outermost axis), a copy for several
    return out if n * steps == t else out[:, :, :t].contiguous(memory_format=torch.channels_last_3d)


def _onednn_conv(x: torch.Tensor) -> bool:
    """Whether ``x``'s convolution runs through oneDNN's fused convolution (CPU, fp32 or bf16).

    x86 only: there torch's own CPU convolutions are oneDNN's already (same kernels, the post-ops
    added); elsewhere (Arm's oneDNN runs on other libraries) the plain path stays.
    """
    return (
        x.device.type == "cpu"
        and x.ndim == 5
        and x.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.enabled
        and _onednn_fusion_available()
    )


@cache
def _onednn_fusion_available() -> bool:
    import platform

    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _conv_pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    geometry: tuple,
    residual: torch.Tensor | None,
    relu: bool,
) -> torch.Tensor:
    """``relu?(conv3d(x) + bias + residual?)`` as one oneDNN call (the ops inductor fuses into);
    ``geometry``: (padding, stride, dilation, groups)."""
    ops = torch.ops.mkldnn
    if residual is None:
        return ops._convolution_pointwise(x, weight, bias, *geometry, "relu" if relu else "none", [], "")
    return ops._convolution_pointwise.binary(
        x, residual, weight, bias, *geometry, "add", 1.0, "relu" if relu else None, [], ""
    )


class FusedBasicBlock(torch.nn.Module):
    """torchvision's video ``BasicBlock`` after BatchNorm folding:
    ``relu(conv2(conv1(x)) + shortcut(x))``, the add and the ReLU made in ``conv2``'s call.

    Same submodule names as the block it replaces (``conv1``, ``conv2``, ``downsample``).
    """

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.conv1 = block.conv1  # Sequential(ConvNorm with ReLU, Identity, Identity)
        self.conv2 = block.conv2  # Sequential(ConvNorm, Identity)
        self.downsample = block.downsample  # Sequential(ConvNorm, Identity) or None
        self.conv2[0].relu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, C', T', H', W')
        residual = x if self.downsample is None else self.downsample(x)
        return self.conv2[0](self.conv1(x), residual)


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    cl = t.ndim == 5 and t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()
    return torch.channels_last_3d if cl else torch.contiguous_format


def fold_batchnorm(module: torch.nn.Module, folded: dict | None = None) -> int:
    """Fold every eval-mode ``BatchNorm3d`` that follows a ``Conv3d`` in an ``nn.Sequential``
    into it (:class:`ConvNorm`; the norm becomes ``Identity``), and a ``ReLU`` right after the
    norm with it; then make each torchvision video ``BasicBlock`` whose convs were folded a
    :class:`FusedBasicBlock` (residual add and ReLU in its second conv). Returns how many norms.

    Frozen inference only: one pass over each activation and one activation-sized tensor less
    per conv (three with the add and ReLUs); results equal the unfolded net within float rounding.
    """
    n = 0
    for parent in list(module.modules()):
        if not isinstance(parent, torch.nn.Sequential):
            continue
        for i in range(len(parent) - 1):
            conv, norm = parent[i], parent[i + 1]
            if not (isinstance(conv, torch.nn.Conv3d) and isinstance(norm, torch.nn.BatchNorm3d)):
                continue
            if norm.training or norm.running_mean is None:
                continue
            relu = i + 2 < len(parent) and type(parent[i + 2]) is torch.nn.ReLU
            parent[i] = ConvNorm(conv, norm, folded, relu=relu)
            parent[i + 1] = torch.nn.Identity()
            if relu:
                parent[i + 2] = torch.nn.Identity()
            n += 1
    _fuse_basic_blocks(module)
    return n


def _fuse_basic_blocks(module: torch.nn.Module) -> None:
    """Swap each folded ``BasicBlock`` (its convs are ConvNorms) for a FusedBasicBlock."""
    def folded(seq: torch.nn.Module | None) -> bool:
        return isinstance(seq, torch.nn.Sequential) and isinstance(seq[0], ConvNorm)

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (
                type(child) is BasicBlock
                and folded(child.conv1)
                and child.conv1[0].relu
                and folded(child.conv2)
                and not child.conv2[0].relu
                and (child.downsample is None or folded(child.downsample))
            ):
                setattr(parent, name, FusedBasicBlock(child))
