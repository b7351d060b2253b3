"""Checkpoint conversion from mmsegmentation's and the official CCNet's naming.

The source state dicts are built here with the sources' own names and shapes (mmseg:
ResNetV1c + CCHead + FCNHead, ``configs/_base_/models/ccnet_r50-d8.py``; official:
speedinghzl/CCNet ``networks/ccnet.py``), converted, loaded strictly, and the converted model is
compared with a float64 re-implementation of the *source* network that reads the source tensors
directly (official: BGR input minus its mean, full dilation in the first blocks, LeakyReLU(0.01)
after the head BNs, max pool with ceil_mode, dsn conv with bias).
"""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidccnet.models import create_model
from vidccnet.models.convert import (
    CCNET_BGR_MEAN,
    ConversionError,
    convert_state_dict,
    fold_bgr_mean_input,
    read_source,
)

MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)
K = 3  # classes


# ------------------------------------------------------------------ source state dicts


def _conv(sd, name, cout, cin, k, g, bias=False):
    std = math.sqrt(2.0 / (cin * k * k))
    sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * std
    if bias:
        sd[f"{name}.bias"] = 0.1 * torch.randn(cout, generator=g)


def _bn(sd, name, c, g, counter=True):
    sd[f"{name}.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
    sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
    if counter:
        sd[f"{name}.num_batches_tracked"] = torch.tensor(1000)


def _resnet50_layers(sd, prefix, inplanes, g, counter):
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"{prefix}layer{i}.{b}"
            _conv(sd, f"{p}.conv1", planes, inplanes, 1, g)
            _bn(sd, f"{p}.bn1", planes, g, counter)
            _conv(sd, f"{p}.conv2", planes, planes, 3, g)
            _bn(sd, f"{p}.bn2", planes, g, counter)
            _conv(sd, f"{p}.conv3", planes * 4, planes, 1, g)
            _bn(sd, f"{p}.bn3", planes * 4, g, counter)
            if b == 0:
                _conv(sd, f"{p}.downsample.0", planes * 4, inplanes, 1, g)
                _bn(sd, f"{p}.downsample.1", planes * 4, g, counter)
            inplanes = planes * 4


def _cca(sd, prefix, c, g, gamma):
    for name, cout in (("query_conv", c // 8), ("key_conv", c // 8), ("value_conv", c)):
        _conv(sd, f"{prefix}.{name}", cout, c, 1, g, bias=True)
    sd[f"{prefix}.gamma" if gamma == "param" else f"{prefix}.gamma.scale"] = (
        torch.tensor([0.7]) if gamma == "param" else torch.tensor(0.7)
    )


def _mmseg_cc_head(sd: dict, cin: int, channels: int, K: int, g: torch.Generator) -> None:
    """mmseg's CCHead (convs.0, cca, convs.1, conv_cat on concat(x, y), conv_seg) on cin."""
    d = "decode_head"
    _conv(sd, f"{d}.convs.0.conv", channels, cin, 3, g)
    _bn(sd, f"{d}.convs.0.bn", channels, g)
    _cca(sd, f"{d}.cca", channels, g, gamma="scale")
    _conv(sd, f"{d}.convs.1.conv", channels, channels, 3, g)
    _bn(sd, f"{d}.convs.1.bn", channels, g)
    _conv(sd, f"{d}.conv_cat.conv", channels, cin + channels, 3, g)
    _bn(sd, f"{d}.conv_cat.bn", channels, g)
    _conv(sd, f"{d}.conv_seg", K, channels, 1, g, bias=True)


def mmseg_r50(seed=0, channels=64, aux_channels=32):
    """mmseg CCNet R50-D8 state dict (``state_dict`` of the .pth), narrow heads for speed."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i, (cin, cout) in enumerate(((3, 32), (32, 32), (32, 64))):
        _conv(sd, f"backbone.stem.{3 * i}", cout, cin, 3, g)
        _bn(sd, f"backbone.stem.{3 * i + 1}", cout, g)
    _resnet50_layers(sd, "backbone.", 64, g, True)
    _mmseg_cc_head(sd, 2048, channels, K, g)
    _conv(sd, "auxiliary_head.convs.0.conv", aux_channels, 1024, 3, g)
    _bn(sd, "auxiliary_head.convs.0.bn", aux_channels, g)
    _conv(sd, "auxiliary_head.conv_seg", K, aux_channels, 1, g, bias=True)
    return sd


def ccnet_r50(seed=1):
    """Official CCNet state dict with 6 layer3 blocks (the release is R101: 23 blocks)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i, (cin, cout) in enumerate(((3, 64), (64, 64), (64, 128)), start=1):
        _conv(sd, f"conv{i}", cout, cin, 3, g)
        _bn(sd, f"bn{i}", cout, g, counter=False)  # InPlace-ABN: no counter
    _resnet50_layers(sd, "", 128, g, False)
    inter = 2048 // 4
    _conv(sd, "head.conva.0", inter, 2048, 3, g)
    _bn(sd, "head.conva.1", inter, g, counter=False)
    _cca(sd, "head.cca", inter, g, gamma="param")
    _conv(sd, "head.convb.0", inter, inter, 3, g)
    _bn(sd, "head.convb.1", inter, g, counter=False)
    _conv(sd, "head.bottleneck.0", 512, 2048 + inter, 3, g)
    _bn(sd, "head.bottleneck.1", 512, g, counter=False)
    _conv(sd, "head.bottleneck.3", K, 512, 1, g, bias=True)
    _conv(sd, "dsn.0", 512, 1024, 3, g, bias=True)
    _bn(sd, "dsn.1", 512, g, counter=False)
    _conv(sd, "dsn.3", K, 512, 1, g, bias=True)
    for k in [k for k in sd if k.endswith("running_var")]:  # InPlace-ABN weights may be < 0
        w = sd[k.replace("running_var", "weight")]
        w[::3] = -w[::3]
    return sd


# ------------------------------------------------------------- reference source networks


def _cc_attention_ref(x, q, k, v, gamma):
    """Official 2D criss-cross attention, dense: row + column, centre once, one softmax."""
    B, C, H, W = x.shape
    e_row = torch.einsum("bchw,bchv->bhwv", q, k)  # (B, H, W, W)
    e_col = torch.einsum("bchw,bcuw->bhwu", q, k)  # (B, H, W, H)
    eye = torch.eye(H, dtype=torch.bool).view(1, H, 1, H)
    e_col = e_col.masked_fill(eye, float("-inf"))
    a = torch.softmax(torch.cat([e_row, e_col], dim=-1), dim=-1)
    out = torch.einsum("bhwv,bchv->bchw", a[..., :W], v)
    out = out + torch.einsum("bhwu,bcuw->bchw", a[..., W:], v)
    return gamma * out + x


def reference(src, fmt, pixels, recurrence=2):
    """Source network on uint8-range RGB pixels (B, 3, H, W) float64 -> (logits, aux) at /8."""
    S = {k: v.double() for k, v in src.items()}
    slope = 0.01 if fmt == "ccnet" else 0.0

    def bn(x, p, act=True, leaky=0.0):
        w = S[f"{p}.weight"]
        if fmt == "ccnet":  # InPlace-ABN scales by |weight| + eps (its CUDA kernels)
            w = w.abs() + 1e-5
        y = F.batch_norm(x, S[f"{p}.running_mean"], S[f"{p}.running_var"], w,
                         S[f"{p}.bias"], False, 0.0, 1e-5)
        return (F.leaky_relu(y, leaky) if leaky else F.relu(y)) if act else y

    def conv(x, p, stride=1, dil=1):
        w = S[f"{p}.weight"]
        return F.conv2d(x, w, S.get(f"{p}.bias"), stride, dil * (w.shape[-1] // 2), dil)

    if fmt == "ccnet":  # BGR minus mean; the first conv's padding stands for our mean colour
        x = pixels.flip(1) - torch.tensor(CCNET_BGR_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        pad = (255 * MEAN - torch.tensor(CCNET_BGR_MEAN[::-1], dtype=torch.float64)).flip(0)
        pad = pad.view(1, 3, 1, 1)
        x = F.pad(x - pad, (1, 1, 1, 1)) + pad
        x = F.conv2d(x, S["conv1.weight"], None, 2)
        x = bn(x, "bn1")
        x = bn(conv(x, "conv2"), "bn2")
        x = bn(conv(x, "conv3"), "bn3")
        x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        pre = ""
    else:
        x = (pixels / 255 - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)
        x = bn(conv(x, "backbone.stem.0", stride=2), "backbone.stem.1")
        x = bn(conv(x, "backbone.stem.3"), "backbone.stem.4")
        x = bn(conv(x, "backbone.stem.6"), "backbone.stem.7")
        x = F.max_pool2d(x, 3, 2, 1)
        pre = "backbone."
    feats = []
    for i, (blocks, stride, dil) in enumerate(((3, 1, 1), (4, 2, 1), (6, 1, 2), (3, 1, 4)), 1):
        for b in range(blocks):
            p = f"{pre}layer{i}.{b}"
            s = stride if b == 0 else 1
            d = dil // 2 if (b == 0 and dil > 1 and fmt == "mmseg") else dil
            out = bn(conv(x, f"{p}.conv1"), f"{p}.bn1")
            out = bn(conv(out, f"{p}.conv2", s, d), f"{p}.bn2")
            out = bn(conv(out, f"{p}.conv3"), f"{p}.bn3", act=False)
            idn = bn(conv(x, f"{p}.downsample.0", s), f"{p}.downsample.1", act=False) \
                if b == 0 else x
            x = F.relu(out + idn)
        feats.append(x)
    c3, c4 = feats[2], feats[3]
    if fmt == "ccnet":
        names = dict(a="head.conva.0", abn="head.conva.1", cca="head.cca", b="head.convb.0",
                     bbn="head.convb.1", cat="head.bottleneck.0", catbn="head.bottleneck.1",
                     cls="head.bottleneck.3", aux="dsn.0", auxbn="dsn.1", auxcls="dsn.3")
        gamma = S["head.cca.gamma"]
    else:
        d, a = "decode_head", "auxiliary_head"
        names = dict(a=f"{d}.convs.0.conv", abn=f"{d}.convs.0.bn", cca=f"{d}.cca",
                     b=f"{d}.convs.1.conv", bbn=f"{d}.convs.1.bn", cat=f"{d}.conv_cat.conv",
                     catbn=f"{d}.conv_cat.bn", cls=f"{d}.conv_seg", aux=f"{a}.convs.0.conv",
                     auxbn=f"{a}.convs.0.bn", auxcls=f"{a}.conv_seg")
        gamma = S[f"{d}.cca.gamma.scale"]
    n = names
    y = bn(conv(c4, n["a"]), n["abn"], leaky=slope)
    for _ in range(recurrence):
        c = n["cca"]
        y = _cc_attention_ref(y, conv(y, f"{c}.query_conv"), conv(y, f"{c}.key_conv"),
                              conv(y, f"{c}.value_conv"), gamma)
    y = bn(conv(y, n["b"]), n["bbn"], leaky=slope)
    y = bn(conv(torch.cat([c4, y], 1), n["cat"]), n["catbn"], leaky=slope)
    logits = conv(y, n["cls"])
    aux = conv(bn(conv(c3, n["aux"]), n["auxbn"], leaky=slope), n["auxcls"])
    return logits, aux


# ------------------------------------------------------------------------------ helpers


def build(conv, recurrence=2):
    """The converted model, weights assigned strictly, in float64 eval mode."""
    with torch.device("meta"):
        model = create_model(f"ccnet2d_resnet{conv.depth}", conv.num_classes,
                             recurrence=recurrence, attention_backend="reference",
                             **conv.model_kwargs)
    model.load_state_dict(conv.state_dict, strict=True, assign=True)
    return model.double().eval()


def ours(model, pixels):
    x = ((pixels / 255 - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)).unsqueeze(2)
    c3, c4 = model.backbone(x)
    return model.head(c4, 1)[0], model.aux_head(c3)


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(1, 3, 33, 33, generator=torch.Generator().manual_seed(5)) * 255


@pytest.fixture(scope="module")
def mmseg_case():
    src = mmseg_r50()
    return src, convert_state_dict(src, "mmseg")


@pytest.fixture(scope="module")
def ccnet_case():
    src = ccnet_r50()
    return src, convert_state_dict(src, "ccnet")


# -------------------------------------------------------------------------------- tests


def test_mmseg_conversion_reads_the_architecture(mmseg_case):
    src, conv = mmseg_case
    assert conv.depth == 50 and conv.num_classes == K
    assert conv.model_kwargs == dict(stem="deep", aux_channels=32, head_channels=64,
                                     contract_dilation=True, head_activation="relu")
    assert sorted(conv.used) == sorted(src)  # every source tensor is used
    sd = conv.state_dict
    assert torch.equal(sd["backbone.stem.6.weight"], src["backbone.stem.6.weight"])
    assert torch.equal(sd["head.conva.1.running_var"], src["decode_head.convs.0.bn.running_var"])
    assert torch.equal(sd["head.cca.cca.query.weight"][..., 0],
                       src["decode_head.cca.query_conv.weight"])
    assert sd["head.cca.cca.gamma"].shape == (1,)
    assert torch.equal(sd["head.bottleneck.0.weight"], src["decode_head.conv_cat.conv.weight"])
    assert torch.equal(sd["aux_head.classifier.bias"], src["auxiliary_head.conv_seg.bias"])


@pytest.mark.parametrize("fmt", ["mmseg", "ccnet"])
def test_converted_model_equals_the_source_network(fmt, mmseg_case, ccnet_case, pixels):
    src, conv = mmseg_case if fmt == "mmseg" else ccnet_case
    model = build(conv)
    with torch.no_grad():
        logits, aux = ours(model, pixels)
        want_logits, want_aux = reference(src, fmt, pixels)
    assert logits.shape == want_logits.shape == (1, K, 5, 5)
    # fp32 weights (the folds round to fp32), fp64 arithmetic on both sides: the random
    # 50-layer network's logits reach ~1e5, and the rounding costs up to ~5e-7 of that scale
    for got, want in ((logits, want_logits), (aux, want_aux)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def test_ccnet_conversion_folds_bias_and_input(ccnet_case):
    src, conv = ccnet_case
    assert conv.depth == 50
    assert conv.model_kwargs == dict(stem="deep_ccnet", contract_dilation=False,
                                     head_activation="leaky_relu", aux_channels=512,
                                     head_channels=512)
    assert sorted(conv.used) == sorted(src)
    sd = conv.state_dict
    torch.testing.assert_close(sd["aux_head.conv.1.running_mean"],
                               src["dsn.1.running_mean"] - src["dsn.0.bias"])
    assert torch.equal(sd["head.classifier.weight"], src["head.bottleneck.3.weight"])
    assert int(sd["head.conva.1.num_batches_tracked"]) == 0  # absent in InPlace-ABN
    # module. prefixes (DataParallel) and the first release's names convert the same way
    renamed = {("module." + k).replace("head.conva.", "head.conv1a.").replace(
        "head.cca.", "head.pc."): v for k, v in src.items()}
    tmp = convert_state_dict(
        {k[len("module."):]: v for k, v in renamed.items()}, "ccnet"
    ).state_dict
    assert all(torch.equal(tmp[k], sd[k]) for k in sd)


def test_every_converted_tensor_reaches_the_output(mmseg_case, pixels):
    """Gradient of a random projection of (logits, aux) w.r.t. every floating tensor, BN
    statistics included (BN written out so that its buffers are differentiable)."""
    _, conv = mmseg_case
    model = build(conv)

    def explicit_bn(self, x):
        shape = (1, -1, 1, 1)
        return ((x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape)
                + self.eps) * self.weight.view(shape) + self.bias.view(shape))

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.forward = types.MethodType(explicit_bn, m)
    tensors = {k: v.detach().clone().requires_grad_(v.is_floating_point())  # all but the
               for k, v in model.state_dict().items()  # training-only CCL embedding
               if not k.startswith("head.embed.")}

    class Both(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, p):
            return ours(self.m, p)

    both = Both(model)
    logits, aux = torch.func.functional_call(both, {f"m.{k}": v for k, v in tensors.items()},
                                             (pixels,))
    g = torch.Generator().manual_seed(0)
    loss = (logits * torch.randn(logits.shape, generator=g, dtype=logits.dtype)).sum() + (
        aux * torch.randn(aux.shape, generator=g, dtype=aux.dtype)).sum()
    loss.backward()
    dead = [k for k, v in tensors.items()
            if v.is_floating_point() and (v.grad is None or not v.grad.abs().sum() > 0)]
    assert not dead, dead
    assert len(tensors) == len(conv.state_dict)


def test_fold_bgr_mean_input_exact_inside():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(8, 3, 3, 3, generator=g, dtype=torch.float64)
    rm = torch.randn(8, generator=g, dtype=torch.float64)
    rv = torch.rand(8, generator=g, dtype=torch.float64) + 0.5
    p = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64) * 255
    theirs_x = p.flip(1) - torch.tensor(CCNET_BGR_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    want = F.batch_norm(F.conv2d(theirs_x, w, None, 2, 1), rm, rv, training=False)
    w2, rm2 = fold_bgr_mean_input(w, rm)
    x = (p / 255 - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)
    got = F.batch_norm(F.conv2d(x, w2, None, 2, 1), rm2, rv, training=False)
    # rows / columns 0 read the zero padding, where the conventions differ
    torch.testing.assert_close(got[..., 1:, 1:], want[..., 1:, 1:], rtol=1e-10, atol=1e-9)
    assert not torch.allclose(got[..., 0, :], want[..., 0, :], atol=1e-9)


def test_wrong_sources_are_refused(mmseg_case, tmp_path):
    src, _ = mmseg_case
    with pytest.raises(ConversionError, match="no decode_head.cca"):
        convert_state_dict({k: v for k, v in src.items() if ".cca." not in k}, "mmseg")
    with pytest.raises(ConversionError, match="no head.cca"):
        convert_state_dict(src, "ccnet")
    with pytest.raises(ConversionError, match=r"1 source tensors .*decode_head\.extra"):
        convert_state_dict({**src, "decode_head.extra.weight": torch.zeros(1)}, "mmseg")
    with pytest.raises(ConversionError, match=r"1 missing \(e.g. head.convb.1.running_var\)"):
        convert_state_dict({k: v for k, v in src.items()
                            if k != "decode_head.convs.1.bn.running_var"}, "mmseg")
    short = {k: v for k, v in src.items() if not k.startswith("backbone.layer3.5.")}
    with pytest.raises(ConversionError, match=r"\(3, 4, 5, 3\) bottleneck blocks"):
        convert_state_dict(short, "mmseg")
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="cannot be read"):
        read_source(bad)
    torch.save([1, 2], bad)
    with pytest.raises(ConversionError, match="not a checkpoint"):
        read_source(bad)


def mmseg_r18(seed=2, channels=16):
    """mmseg CCNet state dict on a ResNetV1c-18 backbone (BasicBlock), narrow heads."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i, (cin, cout) in enumerate(((3, 32), (32, 32), (32, 64))):
        _conv(sd, f"backbone.stem.{3 * i}", cout, cin, 3, g)
        _bn(sd, f"backbone.stem.{3 * i + 1}", cout, g)
    inplanes = 64
    for i, planes in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            p = f"backbone.layer{i}.{b}"
            _conv(sd, f"{p}.conv1", planes, inplanes, 3, g)
            _bn(sd, f"{p}.bn1", planes, g)
            _conv(sd, f"{p}.conv2", planes, planes, 3, g)
            _bn(sd, f"{p}.bn2", planes, g)
            if b == 0 and inplanes != planes:
                _conv(sd, f"{p}.downsample.0", planes, inplanes, 1, g)
                _bn(sd, f"{p}.downsample.1", planes, g)
            inplanes = planes
    _mmseg_cc_head(sd, 512, channels, K, g)
    return sd


def test_basic_block_sources_are_refused():
    """mmseg's BasicBlock dilates conv1 only (conv2: dilation 1, padding 1), vidccnet's
    ResNet-18/34 dilate both 3x3 convs of layer3 / layer4 (and the official CCNet has no
    BasicBlock network): a converted ResNet-18/34 would load strictly but compute another
    network, so the conversion refuses it."""
    with pytest.raises(ConversionError, match="BasicBlock"):
        convert_state_dict(mmseg_r18(), "mmseg")


def test_a_file_that_is_no_pytorch_file_is_named_so_without_the_trust_hint(tmp_path) -> None:
    """An ONNX file (or any non-PyTorch file) passed as the source: the error says it is not a
    PyTorch file; it used to suggest --trust-source, which cannot help and is unsafe advice."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(64))
    with pytest.raises(ConversionError, match="not a PyTorch file") as info:
        read_source(path)
    assert "trust" not in str(info.value)


def test_a_file_of_python_objects_is_one_plain_sentence(tmp_path) -> None:
    """A pickled module: the error carried the first line of PyTorch's message, with terminal
    escape codes and 'you have two options,' cut before the options."""
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ConversionError) as info:
        read_source(path)
    msg = str(info.value)
    assert "\x1b" not in msg and "two options" not in msg and "\n" not in msg, msg
    assert "Python objects" in msg and msg.endswith("rerun with --trust-source"), msg
