"""CCNet models: registry, shapes, temporal causality, state-dict interchange, channels_last."""

import pytest
import torch

from vidccnet.losses import SegmentationCriterion
from vidccnet.models import create_model, list_models

K = 5
SMALL = dict(head_channels=64, attention_backend="reference")


def build(name="ccnet3d_resnet18", **kw):
    torch.manual_seed(0)
    return create_model(name, K, **{**SMALL, **kw})


def test_registry_names_and_errors():
    names = list_models()
    for d in (18, 50, 101):
        assert f"ccnet3d_resnet{d}" in names and f"ccnet2d_resnet{d}" in names
    with pytest.raises(ValueError, match="did you mean 'ccnet3d_resnet50'"):
        create_model("ccnet3d_resnet5O", K)
    with pytest.raises(TypeError, match="'recurence'.*did you mean 'recurrence'"):
        create_model("ccnet3d_resnet18", K, recurence=1)
    with pytest.raises(ValueError, match="shift_stages"):
        create_model("ccnet3d_resnet18", K, shift_stages=(0, 5))
    with pytest.raises(ValueError, match="unknown stem 'foo'"):  # not "needs width 64"
        create_model("ccnet3d_resnet18", K, stem="foo", backbone_width=8)
    for kwargs in ({"recurrence": 1.5}, {"attention_reduction": 2.0}, {"head_channels": 16.0}):
        with pytest.raises(TypeError, match=f"{next(iter(kwargs))} must be an integer"):
            create_model("ccnet3d_resnet18", K, **kwargs)
    with pytest.raises(TypeError, match="num_classes must be an integer"):
        create_model("ccnet3d_resnet18", 3.0)
    with pytest.raises(ValueError, match="backbone_width must be >= 1"):  # not 'width'
        create_model("ccnet3d_resnet18", K, backbone_width=0)


def test_defaults_from_name():
    with torch.device("meta"):
        m3 = create_model("ccnet3d_resnet50", K)
        m2 = create_model("ccnet2d_resnet50", K)
    assert m3.backbone.temporal_shift and m3.head.cca.temporal and m3.head.cca.recurrence == 2
    assert not m2.backbone.temporal_shift and not m2.head.cca.temporal
    assert m3.head.conva[0].in_channels == 2048 and m3.head.conva[0].out_channels == 512
    assert m3.head.bottleneck[0].in_channels == 2048 + 512
    assert m3.aux_head.conv[0].in_channels == 1024 and m3.aux_head.conv[0].out_channels == 256
    assert m3.head.cca.cca.query.out_channels == 512 // 8
    assert m3.backbone.layer1[0].shift_fraction == 0.125
    assert all(b.shift_fraction == 0 for b in m2.backbone.layer1)


@pytest.mark.parametrize(
    "name,B,T,R",
    [
        ("ccnet3d_resnet18", 1, 1, 0),
        ("ccnet3d_resnet18", 2, 2, 1),
        ("ccnet2d_resnet18", 1, 5, 2),
        ("ccnet3d_resnet18", 1, 5, 3),
        ("ccnet2d_resnet18", 2, 1, 3),
    ],
)
def test_shapes(name, B, T, R):
    m = build(name, recurrence=R)
    torch.nn.init.constant_(m.head.cca.cca.gamma, 0.5)
    x = torch.randn(B, 3, T, 33, 47)
    out = m.train()(x)
    assert set(out) == {"out", "aux", "features"}
    assert out["out"].shape == out["aux"].shape == (B, K, T, 33, 47)
    # the 16-d embedding at output stride 8: ceil(33/8), ceil(47/8)
    assert out["features"].shape == (B, 16, T, 5, 6)
    with torch.no_grad():
        y = m.eval()(x)
    assert y.shape == (B, K, T, 33, 47) and torch.isfinite(y).all()


def test_odd_size_and_no_aux():
    m = build(aux=False).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 2, 97, 129)).shape == (1, K, 2, 97, 129)
    out = m.train()(torch.randn(1, 3, 1, 33, 47))
    assert set(out) == {"out", "features"}


def test_backbone_dilation_resnet18():
    m = build()
    b = m.backbone
    assert b.layer3[0].conv1.stride == (1, 1) and b.layer3[0].conv1.dilation == (1, 1)
    assert b.layer3[0].downsample[0].stride == (1, 1)
    assert b.layer3[1].conv1.dilation == b.layer3[0].conv2.dilation == (2, 2)
    assert b.layer4[0].conv1.dilation == (2, 2) and b.layer4[1].conv2.dilation == (4, 4)
    assert b.layer4[1].conv2.padding == (4, 4)
    c3, c4 = b(torch.randn(1, 3, 2, 64, 80))
    assert c3.shape == (2, 256, 8, 10) and c4.shape == (2, 512, 8, 10)


def _perturb_frame(x, t):
    y = x.clone()
    y[:, :, t] = torch.randn_like(y[:, :, t])
    return y


@torch.no_grad()
def test_ccnet2d_frames_are_independent():
    m = build("ccnet2d_resnet18", recurrence=2).eval()
    torch.nn.init.constant_(m.head.cca.cca.gamma, 1.0)
    x = torch.randn(1, 3, 3, 33, 47)
    a, b = m(x), m(_perturb_frame(x, 1))
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and torch.equal(a[:, :, 2], b[:, :, 2])
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])


@pytest.mark.parametrize(
    "shift,att", [(True, True), (True, False), (False, True)], ids=["both", "shift", "attention"]
)
@torch.no_grad()
def test_ccnet3d_mixes_frames(shift, att):
    m = build("ccnet3d_resnet18", temporal_shift=shift, temporal_attention=att).eval()
    torch.nn.init.constant_(m.head.cca.cca.gamma, 1.0)
    x = torch.randn(1, 3, 3, 33, 47)
    a, b = m(x), m(_perturb_frame(x, 1))
    for t in (0, 2):
        assert (a[:, :, t] - b[:, :, t]).abs().max() > 1e-4


@torch.no_grad()
def test_no_temporal_path_means_independent_frames():
    # CCNet's init (gamma 0): the attention is the identity
    m = build("ccnet3d_resnet18", temporal_shift=False, attention_init="ccnet").eval()
    x = torch.randn(1, 3, 2, 33, 47)
    a, b = m(x), m(_perturb_frame(x, 1))
    assert torch.equal(a[:, :, 0], b[:, :, 0])


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_state_dicts_interchangeable(depth):
    with torch.device("meta"):
        s2 = create_model(f"ccnet2d_resnet{depth}", K).state_dict()
        s3 = create_model(f"ccnet3d_resnet{depth}", K, recurrence=3).state_dict()
    assert list(s2) == list(s3)
    assert all(s2[k].shape == s3[k].shape for k in s2)


def test_state_dict_loads_both_ways():
    m2, m3 = build("ccnet2d_resnet18"), build("ccnet3d_resnet18")
    torch.nn.init.constant_(m2.head.cca.cca.gamma, 0.7)
    m3.load_state_dict(m2.state_dict(), strict=True)
    assert m3.head.cca.cca.gamma.item() == pytest.approx(0.7)
    m2.load_state_dict(m3.state_dict(), strict=True)


@torch.no_grad()
def test_channels_last_matches():
    m = build().eval()
    torch.nn.init.constant_(m.head.cca.cca.gamma, 0.5)
    x = torch.randn(1, 3, 2, 33, 47)
    ref = m(x)
    m = m.to_channels_last()
    assert m.backbone.layer2[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-4)


def test_train_backward_reaches_attention():
    m = build(recurrence=2)
    torch.nn.init.constant_(m.head.cca.cca.gamma, 0.1)
    out = m.train()(torch.randn(1, 3, 2, 33, 47))
    labels = torch.randint(0, K, (1, 2, 33, 47))
    labels[:, 1] = 255  # an unlabelled frame
    loss, parts = SegmentationCriterion(ohem=True, ohem_min_kept=200)(out, labels)
    assert parts["ce"] > 0 and parts["aux"] > 0 and parts["cc"] > 0
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.head.cca.cca.query.weight.grad.abs().sum() > 0


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        build()(torch.randn(1, 3, 33, 47))
    with pytest.raises(TypeError, match="uint8.*to_clip_tensor"):  # raw frames
        build()(torch.zeros(1, 3, 2, 32, 32, dtype=torch.uint8))
    for empty in ((0, 3, 2, 32, 32), (1, 3, 0, 32, 32)):  # a reshape / modulo error before
        with pytest.raises(ValueError, match="empty clip"):
            build().eval()(torch.zeros(empty))


def test_attention_init_options():
    m = build(attention_init="ccnet")
    assert m.head.cca.cca.gamma.item() == 0.0
    m = build()  # default: identity value projection, gamma 1
    cca = m.head.cca.cca
    assert cca.gamma.item() == 1.0
    w = cca.value.weight.view(cca.value.out_channels, -1)
    assert torch.equal(w, torch.eye(w.shape[0])) and not cca.value.bias.any()
    with pytest.raises(ValueError, match="unknown attention init"):
        build(attention_init="zeros")


def test_default_init_lets_every_attention_parameter_learn_at_step_one():
    # with CCNet's gamma = 0, q, k and v get exactly zero gradient (the saddle)
    x = torch.randn(1, 3, 3, 33, 47)
    for init, learns in (("ccnet", False), ("identity", True)):
        m = build(attention_init=init).train()
        m(x)["out"].square().mean().backward()
        cca = m.head.cca.cca
        for p in (cca.query.weight, cca.key.weight, cca.value.weight):
            assert (p.grad.abs().sum() > 0) == learns, init


def test_category_consistent_terms_all_active_at_init():
    """On a clip with several classes the CCL works on the 16-d embedding, where at init the
    class means are closer than 2 * delta_d (distance term > 0) and the variance term active.
    (On the 512-d post-ReLU head features the class means start > 2 * delta_d apart: dis = 0.)"""
    from vidccnet.data.synthetic import SyntheticVideoDataset
    from vidccnet.losses import CategoryConsistentLoss

    ds = SyntheticVideoDataset("train", num_videos=2, num_frames=8, height=48, width=64)
    item = ds[3]
    labels = item["labels"][None]  # (1, T, H, W)
    assert len(labels.unique()) >= 3
    m = create_model("ccnet3d_resnet18", 7).train()  # CCNet's 512-wide head
    terms = CategoryConsistentLoss().terms(m(item["clip"][None])["features"], labels)
    assert terms["var"] > 0 and terms["dis"] > 0 and terms["reg"] > 0


def test_checkpoints_without_the_training_only_embedding_load_strictly():
    m = build()
    state = {k: v for k, v in m.state_dict().items() if not k.startswith("head.embed.")}
    m2 = build("ccnet2d_resnet18")
    before = m2.head.embed.weight.clone()
    m2.load_state_dict(state)  # strict
    assert torch.equal(m2.head.embed.weight, before)
    assert torch.equal(m2.head.conva[0].weight, m.head.conva[0].weight)
    with pytest.raises(RuntimeError, match="Missing key"):
        m2.load_state_dict({k: v for k, v in state.items() if "conva" not in k})


@pytest.mark.parametrize("source", ["attention", "head"])
def test_embedding_source(source):
    """embed_from picks the tensor the embedding projects: the attention loops' output or the
    fused head features the classifier reads; predictions do not depend on it."""
    m = build(embed_from=source).train()
    seen = {}
    m.head.cca.register_forward_hook(lambda _m, _a, out: seen.update(attention=out))
    m.head.bottleneck.register_forward_hook(lambda _m, _a, out: seen.update(head=out))
    out = m(torch.randn(1, 3, 2, 33, 47))
    src = seen[source]
    if src.dim() == 5:  # (B, C, T, h, w) -> (B*T, C, h, w)
        src = src.transpose(1, 2).flatten(0, 1)
    emb = m.head.embed(src)  # (B*T, D, h, w)
    torch.testing.assert_close(out["features"], emb.unflatten(0, (1, 2)).transpose(1, 2))
    x = torch.randn(1, 3, 2, 33, 47)
    with torch.no_grad():
        fresh = build(embed_from=source).eval()  # m's BN statistics moved in train()
        assert torch.equal(fresh(x), build(embed_from="attention").eval()(x))
    with pytest.raises(ValueError, match="embed_from"):
        build(embed_from="backbone")


@torch.no_grad()
def test_embedding_is_training_only():
    m = build().eval()
    calls = []
    m.head.embed.register_forward_hook(lambda *a: calls.append(1))
    m(torch.randn(1, 3, 2, 33, 47))
    assert not calls


def test_narrow_backbone():
    m = build(backbone_width=16)
    assert m.backbone.channels == (64, 128)
    c3, c4 = m.backbone(torch.randn(1, 3, 2, 64, 80))
    assert c3.shape == (2, 64, 8, 10) and c4.shape == (2, 128, 8, 10)
    assert m.backbone.layer4[1].conv2.dilation == (4, 4)
    with pytest.raises(ValueError, match="width"):
        build(backbone_width=0)


def test_to_memory_format_points_to_to_channels_last():
    m = build()
    for fmt in (torch.channels_last, torch.channels_last_3d):
        with pytest.raises(ValueError, match=r"to_channels_last\(\)"):
            m.to(memory_format=fmt)
        with pytest.raises(ValueError, match=r"to_channels_last\(\)"):
            m.to("cpu", torch.float32, memory_format=fmt)
    # the weights were left untouched, and every other form of .to() still works
    assert m.backbone.conv1.weight.is_contiguous()
    assert m.to(torch.float64).backbone.conv1.weight.dtype == torch.float64
    assert m.to("cpu", memory_format=torch.contiguous_format) is m


def test_attention_reduction_sets_the_query_key_width():
    default = create_model("ccnet3d_resnet18", 5, head_channels=32)
    assert default.head.cca.cca.query.out_channels == 4  # 32 // 8, CCNet's reduction
    wide = create_model("ccnet3d_resnet18", 5, head_channels=32, attention_reduction=2)
    assert wide.head.cca.cca.query.out_channels == wide.head.cca.cca.key.out_channels == 16
    assert wide.head.cca.cca.value.out_channels == 32
    with pytest.raises(ValueError, match="attention_reduction must divide head_channels=32"):
        create_model("ccnet3d_resnet18", 5, head_channels=32, attention_reduction=3)


def test_create_model_documents_every_keyword_it_accepts():
    from vidccnet.models import _ALLOWED

    missing = [k for k in _ALLOWED if f"`{k}`" not in create_model.__doc__]
    assert not missing, f"create_model's docstring does not name {missing}"
