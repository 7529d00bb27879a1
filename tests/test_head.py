"""The head: TSA matrices on hand-made cases, masks, any D, windowed inference."""

import pytest
import torch

from tal_pipeline.head import HeadConfig, HeadModel
from tal_pipeline.head.tsa import TemporalSelfAttention, class_relation_matrix, interval_tiou_matrix

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_class_relation_matrix_eq1():
    classes = torch.tensor([[0, 0, 1, 2, 0]])
    is_action = torch.tensor([[True, True, True, False, False]])
    a = class_relation_matrix(classes, is_action)[0]
    assert a[0, 1] == 0.5 and a[1, 0] == 0.5 and a[0, 0] == 0.5  # same action class
    assert a[0, 2] == pytest.approx(0.4) and a[2, 1] == pytest.approx(0.4)  # different actions
    assert a[0, 3] == pytest.approx(0.1) and a[3, 2] == pytest.approx(0.1)  # one background
    assert a[0, 4] == pytest.approx(0.1)  # background predicted class 0 is still background
    assert a[3, 4] == 0 and a[4, 4] == 0  # both background


def test_interval_tiou_matrix_eq2():
    # intervals [t - l, t + r]: [0, 2], [0, 2], [2, 3], [2, 4]
    d = torch.tensor([[[0.0, 2.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]])
    b = interval_tiou_matrix(d)[0]
    assert b[0, 1] == pytest.approx(1.0)
    assert b[0, 2] == 0 and b[1, 3] == 0  # touching intervals
    assert b[2, 3] == pytest.approx(0.5)
    assert torch.allclose(b, b.T)


def test_tsa_fusion_ignores_own_instance_and_background():
    torch.manual_seed(0)
    tsa = TemporalSelfAttention(8, "full")
    y = torch.randn(1, 8, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    cls = torch.tensor([[[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]])
    act = torch.tensor([[5.0, 5.0, 5.0, -5.0]])  # position 3 is background
    dist = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]])  # 0 and 1: same instance
    g, _ = tsa.fusion(y, mask, cls, dist, act)
    g = g[0]
    assert g[0, 1] == 0 and g[0, 0] == 0  # own instance (tIoU 1) is redundant
    assert torch.allclose(g.sum(-1), torch.ones(4))
    # position 3 (background) attends to the actions with weight 0.1 each, not to itself
    assert g[3, 3] == 0 and (g[3, :3] > 0).all()


def test_tsa_without_row_normalisation_keeps_the_weights_of_eq1():
    """``normalise=False``: G = M * A * (1 - B) as is, so a background step gives its actions
    weight 0.1 x M (not all of its attention) and an action step at most 0.5 in all."""
    torch.manual_seed(0)
    full = TemporalSelfAttention(8, "full")
    raw = TemporalSelfAttention(8, "full", normalise=False)
    raw.load_state_dict(full.state_dict())
    y, mask = torch.randn(1, 8, 4), torch.ones(1, 4, dtype=torch.bool)
    cls = torch.tensor([[[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]])
    act = torch.tensor([[5.0, 5.0, 5.0, -5.0]])
    dist = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]])
    g_norm, v = full.fusion(y, mask, cls, dist, act)
    g_raw, v_raw = raw.fusion(y, mask, cls, dist, act)
    m = torch.softmax(torch.bmm(torch.sigmoid(full.query(y)).transpose(1, 2), torch.sigmoid(full.key(y))) / 8**0.5, -1)
    assert torch.allclose(g_raw[0, 3, :3], 0.1 * m[0, 3, :3]) and g_raw[0, 3, 3] == 0  # background row
    assert torch.allclose(g_raw[0, 2, :2], 0.4 * m[0, 2, :2])  # other class, other instance
    assert (g_raw.sum(-1) <= 0.5 + 1e-6).all() and torch.equal(v, v_raw)
    rows = g_raw.sum(-1, keepdim=True)
    assert torch.allclose(g_norm, g_raw / rows.clamp(min=1e-6))  # the normalised G is the same, rescaled


@pytest.mark.parametrize("tsa", ["full", "plain", "none"])
@pytest.mark.parametrize("tpp", [True, False])
@pytest.mark.parametrize("embed_kernel", [1, 3])
def test_padding_does_not_change_valid_outputs(tsa, tpp, embed_kernel):
    torch.manual_seed(0)
    model = HeadModel(HeadConfig(input_dim=12, num_classes=3, hidden_dim=16, tsa=tsa, tpp=tpp,
                                 embed_kernel=embed_kernel)).eval()
    x = torch.randn(1, 37, 12)
    with torch.no_grad():
        alone = model(x)
        padded_x = torch.cat([x, torch.randn(1, 20, 12) * 10], dim=1)
        mask = torch.zeros(1, 57, dtype=torch.bool)
        mask[:, :37] = True
        padded = model(padded_x, mask)
    for name in ("cls1", "reg1", "act1", "cls", "reg", "act"):
        assert torch.allclose(getattr(padded, name)[:, :37], getattr(alone, name), atol=1e-4), name


@pytest.mark.parametrize("dim", [1, 7, 2048])
def test_any_input_dim_and_output_shapes(dim):
    model = HeadModel(HeadConfig(input_dim=dim, num_classes=4, hidden_dim=16)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 30, dim))
    assert out.cls.shape == (2, 30, 4) and out.reg.shape == (2, 30, 2) and out.act.shape == (2, 30)
    assert out.cls1.shape == (2, 30, 4) and (out.reg >= 0).all() and (out.reg1 >= 0).all()


def test_windowed_inference_equals_full_where_windows_cover():
    torch.manual_seed(0)
    cfg = HeadConfig(input_dim=8, num_classes=2, hidden_dim=16, window=64, overlap=32)
    model = HeadModel(cfg).eval()
    x = torch.randn(60, 8)
    with torch.no_grad():  # T <= window: one pass, identical
        probs, dist, act = model.infer(x)
        full = model(x[None])
    assert torch.allclose(probs, torch.sigmoid(full.cls[0]), atol=1e-6)
    # without TSA the receptive field (~20 steps) is inside the half-overlap: windows == full
    model = HeadModel(HeadConfig(input_dim=8, num_classes=2, hidden_dim=16, tsa="none", window=64, overlap=48)).eval()
    x = torch.randn(300, 8)
    with torch.no_grad():
        probs, dist, act = model.infer(x)
        full = model(x[None])
    assert torch.allclose(probs, torch.sigmoid(full.cls[0]), atol=1e-4)
    assert torch.allclose(dist, full.reg[0], atol=1e-3)
    # with TSA, attention is window-local: outputs stay close, not equal
    model = HeadModel(HeadConfig(input_dim=8, num_classes=2, hidden_dim=16, window=64, overlap=32)).eval()
    with torch.no_grad():
        probs, dist, act = model.infer(x)
        full = model(x[None])
    assert probs.shape == (300, 2) and dist.shape == (300, 2) and act.shape == (300,)
    assert (probs - torch.sigmoid(full.cls[0])).abs().max() < 0.2


def test_config_validation():
    with pytest.raises(ValueError):
        HeadConfig(input_dim=4, num_classes=2, tsa="bogus")
    with pytest.raises(ValueError):
        HeadConfig(input_dim=4, num_classes=2, window=64, overlap=30)  # hop 34 not a multiple of 4
    cfg = HeadConfig(input_dim=4, num_classes=2)
    assert HeadConfig.from_dict(cfg.to_dict()) == cfg


def _levels(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(x, sizes, dim=1))


@pytest.mark.parametrize("tsa", ["full", "none"])
def test_output_levels_padding_and_windows(tsa):
    """Several output levels: per-level lengths, padding never changes valid outputs, and windowed
    inference reproduces the whole-video pass where the receptive field fits the overlap."""
    from tal_pipeline.head.model import level_lengths, level_positions

    torch.manual_seed(0)
    cfg = HeadConfig(input_dim=8, num_classes=3, hidden_dim=16, tsa=tsa, output_levels=4, window=128, overlap=64)
    model = HeadModel(cfg).eval()
    x = torch.randn(1, 37, 8)
    mask = torch.zeros(1, 67, dtype=torch.bool)
    mask[:, :37] = True
    with torch.no_grad():
        alone = model(x)
        padded = model(torch.cat([x, torch.randn(1, 30, 8) * 10], dim=1), mask)
    assert level_lengths(37, cfg.strides) == [37, 19, 10, 5] and alone.cls.shape == (1, 71, 3)
    assert alone.strides == (1, 2, 4, 8) and (alone.reg >= 0).all()
    for name in ("cls", "reg", "act"):
        a = _levels(getattr(alone, name), [37, 19, 10, 5])
        b = _levels(getattr(padded, name), [67, 34, 17, 9])
        for level, (u, v) in enumerate(zip(a, b)):
            assert torch.allclose(u, v[:, : u.shape[1]], atol=1e-4), (name, level)
    pos = level_positions(37, cfg.strides)
    assert pos[37].item() == 0.5 and pos[37 + 19].item() == 1.5 and pos[-1].item() == 4 * 8 + 3.5
    if tsa == "none":
        x = torch.randn(497, 8)  # the coarsest level's last bin is centred past the last step
        with torch.no_grad():
            probs, dist, _, positions = model.infer(x, return_positions=True)
            full = model(x[None])
        assert torch.equal(positions, level_positions(497, cfg.strides)) and positions[-1] > 496
        assert (probs - torch.sigmoid(full.cls[0])).abs().max() < 1e-3
        assert (dist - full.reg[0]).abs().max() < 0.2  # coarsest level's field reaches past the overlap


@pytest.mark.parametrize("tpp", [True, False])
def test_final_heads_in_one_pass_equal_each_level_alone(tpp):
    """The final heads run once over the levels laid end to end (model.py): no level may read
    another's positions, so each level equals the heads applied to that level alone."""
    torch.manual_seed(0)
    cfg = HeadConfig(input_dim=8, num_classes=3, hidden_dim=16, tpp=tpp, output_levels=5,
                     tpp_strides=(2, 4) if tpp else ())
    model = HeadModel(cfg).eval()
    x = torch.randn(2, 61, 8)
    mask = torch.ones(2, 61, dtype=torch.bool)
    mask[1, 40:] = False
    levels = {}
    # capture each level's input to the final heads, as the pass builds it
    hook = model.final.register_forward_hook(lambda mod, inp, out: levels.update(x=inp[0], m=inp[1]))
    with torch.no_grad():
        out = model(x, mask)
    hook.remove()
    first = 0
    for level, stride in enumerate(cfg.strides):
        size = (61 + (-61 % model.length_multiple()) + model.length_multiple()) // stride  # padded length
        xl = levels["x"][:, :, first : first + size]
        ml = levels["m"][:, first : first + size]
        assert not ml[:, -1].any(), "every level must end in a padded position"
        with torch.no_grad():
            c, r, a = model.final(xl, ml)  # this level alone
        n = -(-61 // stride)
        start = sum(-(-61 // s) for s in cfg.strides[:level])
        assert torch.allclose(out.cls[:, start : start + n], c[:, :n], atol=1e-5), level
        assert torch.allclose(out.act[:, start : start + n], a[:, :n], atol=1e-5), level
        scale = model.level_scales[level].exp() * stride
        assert torch.allclose(out.reg[:, start : start + n], r[:, :n] * scale, atol=1e-4), level
        first += size
    assert first == levels["x"].shape[2]


def test_old_checkpoint_config_loads_with_old_behaviour():
    """A config saved before output_levels / score_fusion / stem_dilations / embed_kernel existed
    means one level, class scores, undilated stem layers and a 1x1 embedding."""
    old = {"input_dim": 512, "num_classes": 6, "hidden_dim": 128, "stem_layers": 2, "head_layers": 1, "tsa": "full",
           "tpp": True, "tpp_dilations": [1, 2, 4], "tpp_strides": [2, 4], "reg_init": 4.0, "prior_prob": 0.01,
           "dropout": 0.3, "window": 256, "overlap": 64}
    cfg = HeadConfig.from_dict(old)
    assert cfg.output_levels == 1 and cfg.score_fusion == "class" and cfg.stem_dilations == ()
    model = HeadModel(cfg)
    assert all(layer.conv.dilation == (1,) for layer in model.stem) and not hasattr(model, "pyramid")
    assert cfg.embed_kernel == 1 and model.embed.kernel_size == (1,)  # the 1x1 embedding of old weights
    with pytest.raises(ValueError):
        HeadConfig(input_dim=4, num_classes=2, embed_kernel=2)  # even: no centred padding
    with pytest.raises(ValueError):
        HeadConfig(input_dim=4, num_classes=2, output_levels=8, window=256, overlap=64)  # hop 192 % 128
    with pytest.raises(ValueError):
        HeadConfig(input_dim=4, num_classes=2, score_fusion="max")


def test_input_dropout_drops_whole_channels_in_training_only():
    torch.manual_seed(0)
    model = HeadModel(HeadConfig(input_dim=64, num_classes=2, hidden_dim=16, input_dropout=0.5))
    seen = []
    model.embed.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    x = torch.randn(2, 40, 64)
    model.train()
    model(x)
    kept = seen[-1][..., :40]  # (B, D, T) as the embedding saw it (the head pads T)
    zero = (kept == 0).all(dim=-1)  # (B, D): channels dropped for the whole window
    assert 0.2 < zero.float().mean() < 0.8
    scaled = kept[~zero] / x.transpose(1, 2)[~zero]  # the kept channels, scaled by 1 / (1 - p)
    assert torch.allclose(scaled, torch.full_like(scaled, 2.0))
    model.eval()
    model(x)
    assert torch.equal(seen[-1][..., :40], x.transpose(1, 2))
    assert isinstance(HeadModel(HeadConfig(input_dim=4, num_classes=2)).input_dropout, torch.nn.Identity)


@pytest.mark.parametrize("kernel,dilation,stride", [(1, 1, 1), (3, 1, 1), (3, 4, 1), (3, 1, 2)])
def test_channels_last_conv1d_is_nn_conv1d(kernel, dilation, stride):
    """The head's Conv1d: nn.Conv1d's parameters, state-dict keys and result (up to rounding),
    its output stored position by position ((B, T, C) underneath), on a contiguous or a
    transposed input."""
    from torch import nn

    from tal_pipeline.head.tpp import Conv1d

    torch.manual_seed(0)
    ref = nn.Conv1d(24, 40, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation)
    ours = Conv1d(24, 40, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(3, 24, 57)
    for inp in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):
        y = ours(inp)
        torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
        assert y.shape == ref(x).shape and y.stride(1) == 1  # channels innermost
