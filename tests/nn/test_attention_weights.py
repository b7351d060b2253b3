"""model_attention_weights: the weights of every loop reproduce the attention block's output."""

import pytest
import torch

from vidccnet.models import create_model
from vidccnet.models.head import unfold_frames
from vidccnet.nn import model_attention_weights, pixel_to_cell


def tiny_model(**kw):
    torch.manual_seed(0)
    model = create_model("ccnet3d_resnet18", 3, head_channels=16, backbone_width=8, **kw)
    with torch.no_grad():  # sharper than the init's near-uniform attention
        model.head.cca.cca.query.weight.mul_(10)
        model.head.cca.cca.key.weight.mul_(10)
    return model.eval()


def block_inputs(model, clip):
    """Input of the attention block at each loop, computed here without hooks."""
    _, c4 = model.backbone(clip)
    x = unfold_frames(model.head.conva(c4), clip.shape[2])  # (1, C, T, h, w)
    rcca = model.head.cca
    xs = []
    for _ in range(rcca.recurrence):
        xs.append(x)
        x = rcca.cca(x, temporal=rcca.temporal)
    return xs


@pytest.mark.parametrize("temporal", [True, False])
@pytest.mark.parametrize("recurrence", [1, 2])
def test_weights_reproduce_block_output(temporal, recurrence):
    model = tiny_model(recurrence=recurrence, temporal_attention=temporal)
    T, H, W, frame, pixel = 3, 20, 30, 1, (19, 9)
    clip = torch.randn(1, 3, T, H, W, generator=torch.Generator().manual_seed(1))
    got = model_attention_weights(model, clip, frame, pixel)
    assert got.cell == (1, 2, 1) and got.grid == (3, 3, 4) and got.temporal == temporal
    assert len(got.loops) == recurrence
    block = model.head.cca.cca
    t, h, w = got.cell
    with torch.no_grad():
        for x, wt in zip(block_inputs(model, clip), got.loops):
            assert (wt.time.shape, wt.row.shape, wt.column.shape) == ((T,), (4,), (3,))
            total = wt.time.sum() + wt.row.sum() + wt.column.sum()
            assert total.item() == pytest.approx(1.0, abs=1e-12)
            assert max(part.max() for part in wt) > 0.3  # not uniform: the check below has teeth
            if not temporal:
                assert torch.equal(wt.time, torch.zeros(T, dtype=torch.float64))
            v = block.value(x)[0].double()  # (C, T, h, w)
            mixed = v[:, :, h, w] @ wt.time + v[:, t, h, :] @ wt.row + v[:, t, :, w] @ wt.column
            expected = block(x, temporal=temporal)[0, :, t, h, w].double()
            torch.testing.assert_close(block.gamma.double() * mixed + x[0, :, t, h, w].double(),
                                       expected, rtol=1e-5, atol=1e-5)


def test_model_mode_is_restored_and_hooks_removed():
    model = tiny_model().train()
    clip = torch.randn(1, 3, 2, 16, 16)
    got = model_attention_weights(model, clip, 0, (0, 0))
    assert model.training
    assert not model.head.cca.cca._forward_pre_hooks
    # the weights are those of eval mode (BN running statistics, no dropout), whatever the
    # model's mode: in train mode BN would normalise with the clip's own statistics
    want = model_attention_weights(model.eval(), clip, 0, (0, 0))
    for a, b in zip(got.loops, want.loops):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_pixel_to_cell():
    assert pixel_to_cell((20, 30), (48, 64)) == (2, 3)
    assert pixel_to_cell((47, 63), (48, 64)) == (5, 7)
    assert pixel_to_cell((16, 8), (17, 9)) == (2, 1)  # feature map ceil(17/8) x ceil(9/8) = 3x2
    for bad in [(48, 0), (0, 64), (-1, 0)]:
        with pytest.raises(ValueError, match="outside the 48x64 frame"):
            pixel_to_cell(bad, (48, 64))


def test_bad_inputs_raise():
    clip = torch.randn(1, 3, 2, 16, 16)
    with pytest.raises(ValueError, match="recurrence 0"):
        model_attention_weights(tiny_model(recurrence=0), clip, 0, (0, 0))
    with pytest.raises(ValueError, match="no criss-cross attention"):
        model_attention_weights(torch.nn.Identity(), clip, 0, (0, 0))
    model = tiny_model()
    with pytest.raises(ValueError, match="frame 2 is outside"):
        model_attention_weights(model, clip, 2, (0, 0))
    with pytest.raises(ValueError, match="outside the 16x16 frame"):
        model_attention_weights(model, clip, 0, (16, 0))
    with pytest.raises(ValueError, match="one clip"):
        model_attention_weights(model, clip[0], 0, (0, 0))
