"""Temporal shift against a numpy reference; loading torchvision state dicts and its errors."""

import numpy as np
import pytest
import torch
import torchvision

from vidccnet.models import DilatedResNet, temporal_shift


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
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        b.load_pretrained(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="could not be read"):
        b.load_pretrained(junk)
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(ValueError, match="not a state dict"):
        b.load_pretrained(lst)
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
