"""Backbone trunks: chunked == whole, receptive field, weights land where torchvision's do."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from cpucaps import needs_bf16_kernels  # tests/ is on the path

from tal_pipeline.backbone import R3D_18, forward_chunked, r3d_18
from tal_pipeline.weights import flow_state_dict, load_weights, state_checksum


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so misplaced tensors cannot cancel out."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    n = r3d_18(3).eval()
    _randomise_bn(n)
    return n


def test_spec_step_and_receptive_field(net):
    assert net.stride == R3D_18.feature_stride == 4
    assert 2 * net.radius + 1 == R3D_18.receptive_field == 109
    assert r3d_18(3, layer4_dilation=1, device="meta").radius == 42


@pytest.mark.parametrize("n_frames", [1, 6, 29])
def test_chunked_equals_whole_sequence(net, n_frames):
    torch.manual_seed(n_frames)
    x = torch.randn(3, n_frames, 16, 16)
    with torch.inference_mode():
        whole = net(x[None])[0]  # (512, ceil(N / 4))
    assert whole.shape == (512, -(-n_frames // 4))
    for chunk, piece in [(8, 3), (16, 64)]:
        got = forward_chunked(net, x, chunk, piece)
        assert got.shape == whole.shape
        assert torch.allclose(got, whole, atol=1e-4, rtol=0), (chunk, piece)


def test_receptive_field_is_exact(net):
    """Changing frame f changes exactly the features j with |4 j - f| <= 54."""
    torch.manual_seed(1)
    n, f = 160, 80
    x = torch.randn(3, n, 16, 16)
    y = x.clone()
    y[:, f] += 3.0
    with torch.inference_mode():
        a, b = net(x[None])[0], net(y[None])[0]
    changed = {j for j in range(a.shape[1]) if not torch.equal(a[:, j], b[:, j])}
    expected = {j for j in range(a.shape[1]) if abs(4 * j - f) <= net.radius}
    assert changed == expected


def test_weights_load_into_torchvision_places(tmp_path, net):
    """A state dict saved from torchvision's r3d_18 loads; our even positions equal torchvision's
    layer4 output and their mean equals torchvision's pooled forward (fc = Identity)."""
    from torchvision.models.video import r3d_18 as tv_r3d_18

    torch.manual_seed(3)
    tv = tv_r3d_18(weights=None).eval()
    _randomise_bn(tv, seed=3)
    path = tmp_path / "random_r3d18.pth"
    torch.save(tv.state_dict(), path)

    loaded = load_weights("r3d_18", path)
    ours = r3d_18(3, device="meta")
    ours.to_empty(device="cpu")
    ours.body.load_state_dict(loaded.state_dict, strict=True)
    ours.eval()

    pooled = {}

    def hook(module, inputs, output) -> None:
        pooled["l4"] = output.mean(dim=(3, 4))  # (1, 512, 2): torchvision's temporal step 8

    tv.layer4.register_forward_hook(hook)
    tv.fc = torch.nn.Identity()
    x = torch.randn(1, 3, 16, 48, 48)
    with torch.inference_mode():
        ref = tv(x)[0]  # (512,): mean over time and space
        feats = ours(x)[0]  # (512, 4): step 4 frames
    assert feats.shape == (512, 4)
    assert torch.allclose(feats[:, ::2], pooled["l4"][0], atol=1e-5)
    assert torch.allclose(feats[:, ::2].mean(dim=1), ref, atol=1e-5)
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert loaded.sha256 == state_checksum(sd)


def test_flow_stem_is_rgb_stem_averaged():
    sd = load_weights("r3d_18", "seeded").state_dict
    flow = flow_state_dict(sd, R3D_18.stem_key)
    w, wf = sd[R3D_18.stem_key], flow[R3D_18.stem_key]
    assert wf.shape == (64, 2, 3, 7, 7)
    for c in range(2):
        assert torch.allclose(wf[:, c], w.mean(dim=1))
    assert all(torch.equal(sd[k], flow[k]) for k in sd if k != R3D_18.stem_key)


def test_seeded_flow_stem_sees_the_motion_axis():
    """Seeded weights: each flow channel has its own filters, so a pan (dx) and a tilt (dy) of
    the same size give different features; with averaged filters they would be identical."""
    sd = load_weights("r3d_18", "seeded").state_dict
    own = flow_state_dict(sd, R3D_18.stem_key, independent=True)[R3D_18.stem_key]
    avg = flow_state_dict(sd, R3D_18.stem_key)[R3D_18.stem_key]
    assert torch.allclose(own, sd[R3D_18.stem_key][:, :2] * (1.5**0.5))
    assert own.var().item() == pytest.approx(sd[R3D_18.stem_key].var().item() * 1.5, rel=0.05)
    g = torch.Generator().manual_seed(0)
    field = torch.rand(1, 1, 4, 16, 16, generator=g)
    pan = torch.cat([field, torch.zeros_like(field)], dim=1)  # (1, 2, t, h, w): dx only
    tilt = torch.cat([torch.zeros_like(field), field], dim=1)  # dy only
    conv = torch.nn.functional.conv3d
    assert torch.allclose(conv(pan, avg), conv(tilt, avg), atol=1e-6)  # blind to the axis
    assert not torch.allclose(conv(pan, own), conv(tilt, own), atol=1e-3)


def test_grid_pooling_is_the_global_mean_then_four_cells():
    """SpatialGrid on a 7 x 7 map: the global mean, then the means of rows/columns 0-3 and 3-6
    (top-left, top-right, bottom-left, bottom-right), C channels each."""
    from tal_pipeline.backbone import SpatialGrid, SpatialMean

    x = torch.randn(2, 3, 5, 7, 7, generator=torch.Generator().manual_seed(0))
    y = SpatialGrid(2)(x)
    assert y.shape == (2, 5 * 3, 5)
    assert torch.equal(y[:, :3], SpatialMean()(x))
    cells = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(3, 7)), (slice(3, 7), slice(0, 4)), (slice(3, 7), slice(3, 7))]
    for k, (rows, cols) in enumerate(cells):
        want = x[:, :, :, rows, cols].mean(dim=(3, 4))
        assert torch.allclose(y[:, 3 * (k + 1) : 3 * (k + 2)], want, atol=1e-6), k


def test_grid_backbone_shares_the_trunk_and_its_first_channels(net):
    """``r3d_18_grid`` is r3d_18's trunk and weights: same state-dict keys, same step and
    receptive field, D = 5 x 512, and its first 512 channels are r3d_18's bit for bit;
    chunked still equals whole."""
    from tal_pipeline.backbone import R3D_18_GRID, SPECS, build_stream

    assert R3D_18_GRID.dim == 2560 and R3D_18_GRID.weights_of == "r3d_18" == R3D_18.weights_of
    grid = build_stream("r3d_18_grid", 3)
    assert list(grid.body.state_dict()) == list(net.body.state_dict())
    grid.body.load_state_dict(net.body.state_dict())
    grid.eval()
    assert (grid.stride, 2 * grid.radius + 1) == (4, SPECS["r3d_18_grid"].receptive_field)
    x = torch.randn(3, 13, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        whole, plain = grid(x[None])[0], net(x[None])[0]
    assert whole.shape == (2560, 4) and torch.equal(whole[:512], plain)
    assert not torch.allclose(whole[512:1024], plain, atol=1e-3)  # a cell is not the picture
    assert torch.allclose(forward_chunked(grid, x, 8, 3), whole, atol=1e-4, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("pytorchvideo") is None, reason="pytorchvideo extra not installed")
def test_i3d_r50_random_weights_chunked_equals_whole():
    from tal_pipeline.backbone import I3D_R50, i3d_r50

    torch.manual_seed(0)
    net = i3d_r50(2).eval()  # the flow stream: a 2-channel stem
    assert net.stride == I3D_R50.feature_stride
    x = torch.randn(2, 21, 32, 32)
    with torch.inference_mode():
        whole = net(x[None])[0]
    assert whole.shape == (I3D_R50.dim, 11)  # ceil(21 / 2): the odd last frame is kept
    got = forward_chunked(net, x, chunk=8, piece=5)
    assert torch.allclose(got, whole, atol=1e-4, rtol=0)


def test_batchnorm_folding_keeps_the_outputs(tmp_path):
    """The extractor folds each eval BatchNorm into its conv (20 in r3d_18): with non-trivial
    norm statistics the folded trunk gives the unfolded one's features, and the shared weight
    tensors are not copied."""
    from tal_pipeline.backbone import ConvNorm as _ConvNorm
    from tal_pipeline.backbone import fold_batchnorm as _fold_batchnorm
    from tal_pipeline.features import FeatureExtractor

    torch.manual_seed(5)
    net = r3d_18(3).eval()
    _randomise_bn(net.body, seed=5)
    x = torch.randn(1, 3, 12, 32, 32)
    with torch.inference_mode():
        ref = net(x)
    weights_before = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Conv3d)}
    assert _fold_batchnorm(net.body) == 20
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    folded = [m for m in net.modules() if isinstance(m, _ConvNorm)]
    assert {id(m.conv.weight) for m in folded} == weights_before  # no copies
    with torch.inference_mode():
        got = net(x)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert _fold_batchnorm(net.body) == 0  # idempotent

    fx = FeatureExtractor(weights="seeded", streams=("rgb", "flow"))
    rgb, flow = fx.nets["rgb"], fx.nets["flow"]
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in rgb.modules())
    def storage(net):
        return {m.conv.weight.data_ptr() for m in net.modules() if isinstance(m, _ConvNorm)}

    assert len(storage(rgb) & storage(flow)) == 19  # every conv but the stem: one copy in memory


@needs_bf16_kernels
def test_fused_blocks_match_the_unfused_net_in_fp32_and_bf16(monkeypatch):
    """Folding also fuses each conv's ReLU and each BasicBlock's residual add + ReLU (oneDNN
    post-ops on the CPU): fp32 equals the unfused net within float rounding, bf16 stays at bf16
    rounding of it, and the fallback without oneDNN (the GPU's path: separate add and ReLU)
    gives the fused path's fp32 numbers."""
    from tal_pipeline import backbone
    from tal_pipeline.backbone import ConvNorm, FusedBasicBlock, fold_batchnorm

    torch.manual_seed(6)
    plain = r3d_18(3).eval()
    _randomise_bn(plain.body, seed=6)
    fused = r3d_18(3).eval()
    fused.body.load_state_dict(plain.body.state_dict())
    fold_batchnorm(fused.body)
    assert sum(isinstance(m, FusedBasicBlock) for m in fused.modules()) == 8  # every block
    assert not any(isinstance(m, torch.nn.ReLU) for m in fused.modules())  # all in the convs
    assert sum(isinstance(m, ConvNorm) and m.relu for m in fused.modules()) == 1 + 8 + 8  # stem, conv1s, conv2s
    x = torch.randn(1, 3, 12, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        ref = plain(x)
        got = fused(x)
        with monkeypatch.context() as m:
            m.setattr(backbone, "_onednn_conv", lambda x: False)
            fallback = fused(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref16 = plain(x).float()
            got16 = fused(x).float()
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert torch.allclose(fallback, got, atol=1e-4, rtol=1e-4)
    if backbone._onednn_conv(x):  # bf16 weights were prepacked in oneDNN's layout, once each
        cached = [w for m in fused.modules() if isinstance(m, ConvNorm) for w, _ in m.folded.values()]
        assert len(cached) == 20 and all(w.layout == torch._mkldnn for w in cached)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    assert 0 < rel(got16, ref) < 2e-2  # bf16 really ran, near fp32
    assert rel(got16, ref16) < 2e-2  # and near the unfused bf16 run (rounding apart)


def test_halo_buffers_are_time_major_and_windows_are_views(net):
    """The runner keeps its buffer channels-last in time order: a channels-first input comes out
    of the stage exactly as it would whole, and the stage gets a channels-last view."""
    from tal_pipeline.backbone import HaloRunner, StageSpec

    seen = []

    def stage(x):  # (B, C, t, H, W): records the layout, then a stride-1 local op
        seen.append(x.is_contiguous(memory_format=torch.channels_last_3d))
        return torch.nn.functional.avg_pool3d(x, (3, 1, 1), 1, (1, 0, 0), count_include_pad=True)

    x = torch.randn(4, 23, 5, 5, generator=torch.Generator().manual_seed(7))  # channels-first
    whole = stage(x[None])[0]
    seen.clear()
    runner = HaloRunner(stage, StageSpec(1, 1), chunk=6)
    outs = [runner.push(x[:, i : i + 5]) for i in range(0, 23, 5)] + [runner.finish()]
    got = torch.cat([o for o in outs if o is not None], dim=1)
    assert torch.allclose(got, whole, atol=1e-6) and seen and all(seen)


@needs_bf16_kernels
@pytest.mark.parametrize("dilation,batch", [(1, 1), (2, 1), (2, 2)])
@pytest.mark.parametrize("steps", [33, 70])
def test_small_frame_convs_run_in_time_slices_with_the_same_bits(monkeypatch, dilation, batch, steps):
    """bf16 convs on small frames run on TIME_SLICE-step slices stacked in the batch (oneDNN's
    cliff, backbone.TIME_SLICE): the same bits as one call, with the time padding, the dilation,
    a last partial slice and the residual post-op; fp32 and large frames are not sliced."""
    from tal_pipeline import backbone
    from tal_pipeline.backbone import ConvNorm

    g = torch.Generator().manual_seed(11)
    conv = torch.nn.Conv3d(16, 16, 3, padding=(dilation, 1, 1), dilation=(dilation, 1, 1), bias=False)
    norm = torch.nn.BatchNorm3d(16).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
        norm.running_var.uniform_(0.5, 1.5, generator=g)
    module = ConvNorm(conv, norm, relu=True)
    x = torch.randn(batch, 16, steps, 7, 7, generator=g).contiguous(memory_format=torch.channels_last_3d)
    residual = torch.randn(batch, 16, steps, 7, 7, generator=g).contiguous(memory_format=torch.channels_last_3d)
    calls = []
    real = backbone._to_slices
    monkeypatch.setattr(backbone, "_to_slices", lambda *a: calls.append(a[0].shape) or real(*a))
    monkeypatch.setattr(backbone, "_cpu_has_amx", lambda: True)  # sliced on any CPU here
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        sliced = [module(x), module(x, residual)]
        assert len(calls) == 2 and calls[0][0] == batch  # the slicing ran
        with monkeypatch.context() as m:
            m.setattr(backbone, "TIME_SLICE", 10_000)  # one call
            whole = [module(x), module(x, residual)]
        assert len(calls) == 2
    for a, b in zip(sliced, whole, strict=True):
        assert a.shape == b.shape == (batch, 16, steps, 7, 7)
        assert a.is_contiguous(memory_format=torch.channels_last_3d)
        assert torch.equal(a, b)
    with torch.inference_mode():
        module(x)  # fp32: one call
        module(torch.randn(batch, 16, steps, 16, 16).to(torch.bfloat16))  # 16 x 16 frames: one call
    monkeypatch.setattr(backbone, "_cpu_has_amx", lambda: False)  # no AMX, no cliff: one call
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        module(x)
    assert len(calls) == 2


def test_own_r3d_18_is_torchvisions_key_for_key_and_output_for_output():
    """VideoResNet18 (built here so extraction does not import torchvision) has torchvision's
    r3d_18 state-dict keys and shapes (less fc) and gives its outputs with the same weights."""
    from torchvision.models.video import r3d_18 as tv_r3d_18

    from tal_pipeline.backbone import VideoResNet18

    torch.manual_seed(3)
    tv = tv_r3d_18(weights=None).eval()
    _randomise_bn(tv, seed=3)
    ours = VideoResNet18().eval()
    expected = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    ours.load_state_dict({k: v for k, v in tv.state_dict().items() if k in expected})
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.inference_mode():
        want = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.stem(x)))))
        assert torch.equal(ours(x), want)
    # the random init is torchvision's too: Kaiming (fan out) convs, unit BatchNorms
    conv = VideoResNet18().layer3[0].conv1[0].weight
    assert abs(conv.std().item() - (2 / (256 * 27)) ** 0.5) < 2e-3
