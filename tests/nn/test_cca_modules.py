import pytest
import torch

from vidccnet.nn import CrissCrossAttention3d, RecurrentCrissCrossAttention, attention_off
from vidccnet.ops import cca_reference


def test_shapes_and_projection_sizes():
    m = CrissCrossAttention3d(32, reduction=8)
    assert m.query.out_channels == m.key.out_channels == 4 and m.value.out_channels == 32
    assert m.query.bias is not None
    for shape in [(2, 32, 5, 7, 13), (1, 32, 1, 1, 9), (1, 32, 3, 1, 1)]:
        assert m(torch.randn(shape)).shape == shape


def test_identity_at_init():
    x = torch.randn(2, 16, 3, 5, 6)
    m = RecurrentCrissCrossAttention(16, recurrence=3, reduction=4)
    assert m.cca.gamma.item() == 0.0
    assert torch.equal(m(x), x)


def test_block_matches_formula():
    torch.manual_seed(0)
    m = CrissCrossAttention3d(16, reduction=4).double()
    torch.nn.init.constant_(m.gamma, 0.3)
    x = torch.randn(2, 16, 3, 4, 5, dtype=torch.float64)
    out, _ = cca_reference(m.query(x), m.key(x), m.value(x))
    torch.testing.assert_close(m(x), 0.3 * out + x)


def test_recurrence_shares_parameters():
    m1 = RecurrentCrissCrossAttention(16, recurrence=1, reduction=4)
    m3 = RecurrentCrissCrossAttention(16, recurrence=3, reduction=4)
    n = sum(p.numel() for p in m1.parameters())
    assert n == sum(p.numel() for p in m3.parameters())
    m3.load_state_dict(m1.state_dict())
    torch.nn.init.constant_(m3.cca.gamma, 0.5)
    x = torch.randn(1, 16, 2, 4, 4)
    y = x
    for _ in range(3):
        y = m3.cca(y)
    torch.testing.assert_close(m3(x), y)


def test_per_frame_mode_uses_same_parameters_and_isolates_frames():
    torch.manual_seed(0)
    m3d = RecurrentCrissCrossAttention(16, recurrence=2, reduction=4, temporal=True)
    m2d = RecurrentCrissCrossAttention(16, recurrence=2, reduction=4, temporal=False)
    m2d.load_state_dict(m3d.state_dict())
    for m in (m3d, m2d):
        torch.nn.init.constant_(m.cca.gamma, 0.5)
    x = torch.randn(1, 16, 4, 5, 6)
    x2 = x.clone()
    x2[:, :, 2] += 1.0
    # 2D: other frames untouched; 3D: they change.
    d2 = (m2d(x2) - m2d(x)).abs().amax(dim=(0, 1, 3, 4))
    d3 = (m3d(x2) - m3d(x)).abs().amax(dim=(0, 1, 3, 4))
    assert d2[[0, 1, 3]].max() == 0 and d2[2] > 0
    assert d3[[0, 1, 3]].min() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of reduction"):
        CrissCrossAttention3d(12, reduction=8)
    with pytest.raises(ValueError, match="recurrence"):
        RecurrentCrissCrossAttention(16, recurrence=-1)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        CrissCrossAttention3d(16)(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match="reduction must be >= 1"):
        CrissCrossAttention3d(16, reduction=0)
    with pytest.raises(TypeError, match="reduction must be an integer"):
        CrissCrossAttention3d(16, reduction=2.0)
    with pytest.raises(TypeError, match="recurrence must be an integer"):
        RecurrentCrissCrossAttention(16, recurrence=1.5)  # failed only at the first forward
    with pytest.raises(ValueError, match="unknown backend 'foo'"):
        CrissCrossAttention3d(16, backend="foo")  # at build time, not at the first forward
    with pytest.raises(ValueError, match="8 channels.*built for 16"):
        RecurrentCrissCrossAttention(16)(torch.randn(1, 8, 3, 7, 13))
    for empty in ((1, 16, 0, 5, 7), (1, 16, 3, 0, 7)):  # not a reshape error
        with pytest.raises(ValueError, match=r"empty input \(" + ", ".join(map(str, empty))):
            CrissCrossAttention3d(16)(torch.randn(empty))
    # recurrence 0 is the identity, but still only on the inputs the attention was built for
    with pytest.raises(ValueError, match="8 channels.*built for 16"):
        RecurrentCrissCrossAttention(16, recurrence=0)(torch.randn(1, 8, 3, 7, 13))
    with pytest.raises(ValueError, match=r"expected input \(B, C, T, H, W\)"):
        RecurrentCrissCrossAttention(16, recurrence=0)(torch.randn(2, 16))


def test_empty_batch_gives_empty_output():
    """B = 0 is a valid batch, as for torch's layers and the operator: the block and its
    recurrent form return (0, C, T, H, W), and the backward runs."""
    x = torch.randn(0, 16, 3, 5, 7, requires_grad=True)
    for m in (CrissCrossAttention3d(16, init="identity"), RecurrentCrissCrossAttention(16)):
        y = m(x)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape


def test_gradients_reach_all_parameters():
    m = RecurrentCrissCrossAttention(16, recurrence=2, reduction=4)
    torch.nn.init.constant_(m.cca.gamma, 0.1)
    m(torch.randn(1, 16, 2, 3, 4)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_identity_init_starts_as_x_plus_attention_mean():
    torch.manual_seed(0)
    m = CrissCrossAttention3d(16, reduction=4, init="identity").double()
    x = torch.randn(2, 16, 3, 4, 5, dtype=torch.float64)
    out, _ = cca_reference(m.query(x), m.key(x), x)  # value = x
    torch.testing.assert_close(m(x), out + x)


def test_attention_off_zeroes_and_restores_gamma():
    m = torch.nn.Sequential(RecurrentCrissCrossAttention(16, 2, 4, init="identity"))
    x = torch.randn(1, 16, 2, 3, 4)
    y = m(x)
    with attention_off(m) as n:
        assert n == 1 and torch.equal(m(x), x)
    assert m[0].cca.gamma.item() == 1.0 and torch.equal(m(x), y)


def test_per_frame_mode_is_2d_attention_of_each_frame_of_each_clip():
    """temporal=False: frame (b, t) attends within itself only, with the block's parameters.
    B = 2 and T = 3 (with B = 1, folding T into the batch as (t b) instead of (b t) is the
    same, and swapped frames went unnoticed)."""
    torch.manual_seed(0)
    m = CrissCrossAttention3d(8, reduction=4).double()
    torch.nn.init.constant_(m.gamma, 0.7)
    with torch.no_grad():  # a peaked softmax: frames must not be interchangeable
        m.query.weight.mul_(4)
    x = torch.randn(2, 8, 3, 4, 5, dtype=torch.float64)
    q, k, v = m.query(x), m.key(x), m.value(x)
    want = torch.empty_like(x)
    for b in range(2):
        for t in range(3):
            frame = [z[b : b + 1, :, t : t + 1] for z in (q, k, v)]  # T = 1: 2D criss-cross
            want[b, :, t] = 0.7 * cca_reference(*frame)[0][0, :, 0] + x[b, :, t]
    torch.testing.assert_close(m(x, temporal=False), want, rtol=1e-12, atol=1e-12)


def test_identity_init_uses_gamma_init():
    m = CrissCrossAttention3d(8, reduction=4, init="identity", gamma_init=0.25)
    assert m.gamma.item() == 0.25
    r = RecurrentCrissCrossAttention(8, reduction=4, init="identity", gamma_init=-0.5)
    assert r.cca.gamma.item() == -0.5
    assert CrissCrossAttention3d(8, reduction=4, gamma_init=0.25).gamma.item() == 0.0  # ccnet


@pytest.mark.parametrize("recurrence", [1, 2, 3])
def test_recurrence_reach(recurrence):
    """What the docs say R passes reach: the positions that differ from the query in at most R
    of (t, h, w) (R = 2 is not the whole volume in 3D; R = 3 is)."""
    torch.manual_seed(0)
    m = RecurrentCrissCrossAttention(8, recurrence, reduction=4, init="identity").double()
    x = torch.randn(1, 8, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    m(x)[0, :, 1, 2, 3].sum().backward()
    reached = x.grad.abs().sum(1)[0] > 0  # (T, H, W)
    t, h, w = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(5), indexing="ij")
    differ = (t != 1).long() + (h != 2).long() + (w != 3).long()
    assert torch.equal(reached, differ <= recurrence)


def test_attention_off_refuses_backward_across_it():
    """A graph built on one side of the block and differentiated on the other would use the
    other gamma: autograd refuses it (gamma is changed in place), no silent wrong gradient."""
    m = RecurrentCrissCrossAttention(8, 2, 4, init="identity")
    x = torch.randn(1, 8, 2, 3, 4, requires_grad=True)
    y = m(x)
    with attention_off(m):
        z = m(x)
    for out in (y, z):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()
