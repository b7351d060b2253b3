"""The residual temporal shift of the backbone's blocks: the residual branch sees the shifted
input, the identity branch the unshifted one (TSM's "residual" shift, not "in-place").

(Here rather than in tests/models/test_backbone.py, which was being edited elsewhere.)
"""

import pytest
import torch

from vidccnet.models import temporal_shift
from vidccnet.models.backbone import ShiftBasicBlock, ShiftBottleneck


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
