"""Temporal shift against a numpy reference; loading torchvision state dicts and its errors."""

import math

import numpy as np
import pytest
import torch
import torchvision

from vidccnet.models import DilatedResNet, temporal_shift
from vidccnet.models.backbone import ShiftBasicBlock, ShiftBottleneck


def shift_ref(x, T, fraction):
    """x (N*T, C, H, W) numpy -> shifted copy, written with explicit frame loops."""
    nt, C = x.shape[:2]
    f = int(C * fraction)
    y = x.copy()
    for n in range(nt // T):
        for t in range(T):
            i = n * T + t
            y[i, :f] = x[i + 1, :f] if t + 1 < T else 0.0
            y[i, f : 2 * f] = x[i - 1, f : 2 * f] if t > 0 else 0.0
    return y


@pytest.mark.parametrize("T,fraction", [(1, 0.125), (3, 0.125), (4, 0.25), (2, 0.1)])
def test_temporal_shift_matches_reference(T, fraction):
    x = torch.randn(2 * T, 16, 3, 5)
    y = temporal_shift(x, T, fraction)
    np.testing.assert_array_equal(y.numpy(), shift_ref(x.numpy(), T, fraction))
    y_cl = temporal_shift(x.contiguous(memory_format=torch.channels_last), T, fraction)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y_cl, y)


def test_temporal_shift_gradient_is_the_reverse_shift():
    x = torch.randn(6, 8, 2, 2, requires_grad=True)
    g = torch.randn(6, 8, 2, 2)
    temporal_shift(x, 3, 0.25).backward(g)
    # adjoint: channels [0, f) move back one frame, [f, 2f) forward one frame
    expect = g.clone().view(2, 3, 8, 2, 2)
    gv = g.view(2, 3, 8, 2, 2)
    expect[:, 0, :2], expect[:, 1:, :2] = 0, gv[:, :-1, :2]
    expect[:, -1, 2:4], expect[:, :-1, 2:4] = 0, gv[:, 1:, 2:4]
    assert torch.equal(x.grad, expect.view(6, 8, 2, 2))
    with pytest.raises(ValueError, match="multiple of num_frames"):
        temporal_shift(x, 4, 0.25)


def test_shift_stages_select_blocks():
    b = DilatedResNet(18, temporal_shift=True, shift_fraction=0.25, shift_stages=(2, 4))
    assert [blk.shift_fraction for blk in b.layer1] == [0, 0]
    assert [blk.shift_fraction for blk in b.layer2] == [0.25, 0.25]
    assert [blk.shift_fraction for blk in b.layer4] == [0.25, 0.25]


@pytest.fixture(scope="module")
def tv18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_torchvision_state_dict_loads(tv18_file):
    from vidccnet.models import create_model

    m = create_model("ccnet3d_resnet18", 3, head_channels=64, pretrained_backbone=str(tv18_file))
    ref = torch.load(tv18_file, weights_only=True)
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, ref[k]), k
    # the same weights give the same layer1 output as torchvision's ResNet with the shift off
    tv = torchvision.models.resnet18(weights=None)
    tv.load_state_dict(ref)
    tv.eval()
    b = DilatedResNet(18, temporal_shift=False).eval()
    b.load_pretrained(tv18_file)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))
        got = b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x))))))
    torch.testing.assert_close(got, want)


def test_pretrained_errors(tmp_path, tv18_file):
    b = DilatedResNet(18)
    with pytest.raises(FileNotFoundError, match="nope.pth") as err:
        b.load_pretrained(tmp_path / "nope.pth")
    # the shipped recipes name weights/resnet50-imagenet.pth, absent on a fresh checkout:
    # the way out without ImageNet weights is named too
    assert "model.pretrained_backbone=null to train from scratch" in str(err.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="could not be read"):
        b.load_pretrained(junk)
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(ValueError, match="not a state dict"):
        b.load_pretrained(lst)
    # a run's checkpoint given as the backbone: the key that loads a whole model is named
    run = tmp_path / "last.pt"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(1)}, "config": {},
                "optimizer": {}}, run)
    with pytest.raises(ValueError, match=r"vidccnet checkpoint .*model\.init_from="):
        b.load_pretrained(run)
    # a ResNet-18 state dict into a ResNet-50: shapes and keys named
    b50 = DilatedResNet(50)
    with pytest.raises(ValueError, match=r"missing keys: layer1\.0\.conv3\.weight") as err:
        b50.load_pretrained(tv18_file)
    assert "shape mismatches" in str(err.value) and "ResNet-50" in str(err.value)
    sd = torch.load(tv18_file, weights_only=True)
    sd["layer2.0.conv1.weight"] = torch.zeros(1, 2, 3, 3)
    del sd["bn1.bias"]
    sd["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(ValueError) as err:
        b.load_pretrained(bad)
    msg = str(err.value)
    assert "1 missing keys: bn1.bias" in msg and "1 unexpected keys: extra.weight" in msg
    assert "layer2.0.conv1.weight: file (1, 2, 3, 3) vs model (128, 64, 3, 3)" in msg


@pytest.mark.parametrize("stem,widths", [("deep", (32, 32, 64)), ("deep_ccnet", (64, 64, 128))])
def test_deep_stems_names_shapes_and_output_stride(stem, widths):
    b = DilatedResNet(18, temporal_shift=False, stem=stem).eval()
    names = [k for k in b.state_dict() if k.startswith("stem.") and k.endswith("weight")]
    assert names == ["stem.0.weight", "stem.1.weight", "stem.3.weight", "stem.4.weight",
                     "stem.6.weight", "stem.7.weight"]
    assert [b.stem[i].out_channels for i in (0, 3, 6)] == list(widths)
    assert b.stem[0].stride == (2, 2) and b.stem[3].stride == (1, 1)
    assert not hasattr(b, "conv1")
    assert b.layer1[0].conv1.in_channels == widths[-1]
    assert (b.layer1[0].downsample is not None) == (widths[-1] != 64)
    for size in (32, 33):
        with torch.no_grad():
            c3, c4 = b(torch.randn(1, 3, 2, size, size))
        assert c3.shape[-2:] == c4.shape[-2:] == (math.ceil(size / 8),) * 2


def test_stem_and_shift_every_are_checked():
    with pytest.raises(ValueError, match="unknown stem 'v1c'"):
        DilatedResNet(18, stem="v1c")
    with pytest.raises(ValueError, match="shift_every"):
        DilatedResNet(18, shift_every=0)


@pytest.mark.parametrize("depth,first", [(18, "conv1"), (50, "conv2")])
def test_contract_dilation(depth, first):
    with torch.device("meta"):
        on = DilatedResNet(depth)
        off = DilatedResNet(depth, contract_dilation=False)
    assert getattr(on.layer3[0], first).dilation == (1, 1)
    assert getattr(on.layer4[0], first).dilation == (2, 2)
    assert getattr(off.layer3[0], first).dilation == (2, 2)
    assert getattr(off.layer4[0], first).padding == (4, 4)
    for b in (on, off):  # every other 3x3 conv of layer3 / layer4 at 2 / 4
        assert all(blk.conv2.dilation == (2, 2) for blk in b.layer3[1:])
        assert all(blk.conv2.dilation == (4, 4) for blk in b.layer4[1:])


def _shifted(b):
    return [[blk.shift_fraction > 0 for blk in getattr(b, f"layer{i}")] for i in (1, 2, 3, 4)]


@pytest.mark.parametrize("depth,every,count", [(18, 1, 8), (50, 1, 16), (101, 2, 18)])
def test_shift_every_follows_tsm_by_default(depth, every, count):
    """TSM's make_temporal_shift: n_round = 2 when layer3 has >= 23 blocks (ResNet-101)."""
    with torch.device("meta"):
        b = DilatedResNet(depth)
        all_blocks = DilatedResNet(depth, shift_every=1)
    assert b.shift_every == every
    flags = _shifted(b)
    assert sum(map(sum, flags)) == count
    assert all(f == (j % every == 0) for stage in flags for j, f in enumerate(stage))
    assert all(map(all, _shifted(all_blocks)))
    assert sum(map(len, flags)) == {18: 8, 50: 16, 101: 33}[depth]


def test_model_options_aux_width_and_head_activation():
    from vidccnet.models import create_model

    with torch.device("meta"):
        default = create_model("ccnet2d_resnet18", 3, head_channels=64)
        wide = create_model("ccnet2d_resnet18", 3, head_channels=64, aux_channels=48,
                            head_activation="leaky_relu")
    assert default.aux_head.conv[0].out_channels == 32  # head_channels // 2
    assert wide.aux_head.conv[0].out_channels == 48
    assert isinstance(wide.head.conva[2], torch.nn.LeakyReLU)
    assert wide.head.conva[2].negative_slope == 0.01
    assert isinstance(wide.aux_head.conv[2], torch.nn.LeakyReLU)
    assert isinstance(default.head.bottleneck[2], torch.nn.ReLU)
    with pytest.raises(ValueError, match="head_activation"):
        create_model("ccnet2d_resnet18", 3, head_activation="gelu")


# --- the residual temporal shift (TSM's "residual" shift, not "in-place"): the residual branch
# sees the shifted input, the identity branch the unshifted one
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_only_the_residual_branch_is_shifted(block):
    torch.manual_seed(0)
    if block == "basic":
        m = ShiftBasicBlock(8, 8)
    else:
        m = ShiftBottleneck(8, 2)  # expansion 4: 8 -> 8 channels, no downsample
    m.shift_fraction, m.num_frames = 0.25, 3
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    m.eval()
    x = torch.randn(6, 8, 4, 5, dtype=torch.float64)  # 2 clips of 3 frames
    m.double()

    def residual(z):
        out = m.relu(m.bn1(m.conv1(z)))
        if block == "basic":
            return m.bn2(m.conv2(out))
        return m.bn3(m.conv3(m.relu(m.bn2(m.conv2(out)))))

    xs = temporal_shift(x, 3, 0.25)
    assert not torch.equal(xs, x)
    with torch.no_grad():
        want = m.relu(residual(xs) + x)  # identity: the unshifted x
        torch.testing.assert_close(m(x), want, rtol=1e-12, atol=1e-12)
        # neither the in-place shift (identity shifted too) nor no shift at all
        assert not torch.allclose(want, m.relu(residual(xs) + xs))
        assert not torch.allclose(want, m.relu(residual(x) + x))
        m.shift_fraction = 0.0  # no shift: the plain block
        torch.testing.assert_close(m(x), m.relu(residual(x) + x), rtol=1e-12, atol=1e-12)
