"""The export formulation of criss-cross attention: exact against the reference op, and
`torch.onnx.export(..., dynamo=True)` of an attention module runs in onnxruntime."""

import pytest
import torch

from vidccnet.nn import RecurrentCrissCrossAttention
from vidccnet.ops import criss_cross_attention
from vidccnet.ops.export import cca_export, exporting

SHAPES = [  # (B, Cqk, Cv, T, H, W), including T, H, W = 1
    (1, 4, 5, 1, 7, 13),
    (2, 3, 6, 5, 4, 6),
    (1, 2, 3, 3, 1, 5),
    (1, 2, 3, 4, 6, 1),
    (2, 8, 4, 1, 1, 1),
]


def _inputs(shape, dtype=torch.float64, seed=0):
    B, Cqk, Cv, T, H, W = shape
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, Cqk, T, H, W, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, Cv, T, H, W, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_matches_reference_float64(shape, scale):
    q, k, v = _inputs(shape)
    ref = criss_cross_attention(q, k, v, scale=scale, backend="reference")
    torch.testing.assert_close(cca_export(q, k, v, scale), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 1e-2),
                                        (torch.bfloat16, 5e-2)])
def test_low_precision_against_float64(dtype, tol):
    q, k, v = _inputs((2, 4, 6, 3, 5, 7), seed=1)
    ref = criss_cross_attention(q, k, v, backend="reference")
    out = cca_export(*(x.to(dtype) for x in (q, k, v)))
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_onnx_export_switches_to_standard_ops(monkeypatch):
    """Only while torch.onnx.export traces does the operator take the export formulation."""
    calls = []
    import vidccnet.ops.cca as cca_mod

    monkeypatch.setattr(cca_mod, "cca_export", lambda *a: calls.append(1) or cca_export(*a))
    q, k, v = _inputs((1, 2, 3, 2, 3, 4), dtype=torch.float32)
    criss_cross_attention(q, k, v)
    assert calls == []
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    out = criss_cross_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])  # 2D input too
    assert calls == [1] and out.shape == (1, 3, 3, 4)


class _Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rcca = RecurrentCrissCrossAttention(16, recurrence=2, reduction=4)
        torch.nn.init.constant_(self.rcca.cca.gamma, 0.7)

    def forward(self, x):
        return self.rcca(x)


def test_plain_torch_onnx_export_dynamic(tmp_path):
    """`torch.onnx.export(module, (x,), dynamo=True)` with dynamic B, T, H, W: onnxruntime
    matches PyTorch at the export shape and at other shapes (fp32, 1e-4)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = _Attention().eval()
    Dim = torch.export.Dim
    dims = {"x": {0: Dim("B", min=1, max=64), 2: Dim("T", min=2, max=64),
                  3: Dim("H", min=2, max=512), 4: Dim("W", min=2, max=512)}}
    x = torch.randn(2, 16, 3, 5, 6)
    program = torch.onnx.export(model, (x,), dynamic_shapes=dims, dynamo=True, verbose=False)
    path = tmp_path / "rcca.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for shape in [(2, 16, 3, 5, 6), (1, 16, 7, 4, 9), (3, 16, 2, 8, 3)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        assert got.shape == ref.shape
        assert abs(got - ref).max() <= 1e-4, shape


def test_export_onnx_where_the_exporter_does_not_say_it_exports(tmp_path, monkeypatch):
    """torch 2.6 / 2.7's dynamo exporter leaves `torch.onnx.is_in_onnx_export()` False, so
    the custom op reached the ONNX translation and failed ('No ONNX function found for
    vidccnet.cca_fwd'). `export_onnx` switches the operator itself."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vidccnet.export import export_onnx

    class Net(torch.nn.Module):  # clip (B, 3, T, H, W) -> logits, the attention inside
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 16, 1)
            self.att = _Attention()

        def forward(self, clip):
            return self.att(self.conv(clip))

    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: False)
    torch.manual_seed(0)
    model = Net().eval()
    path = export_onnx(model, tmp_path / "m.onnx", example=(2, 3, 3, 16, 24), optimize=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 4, 16, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    assert abs(session.run(None, {"clip": x.numpy()})[0] - ref).max() <= 1e-4
    assert not exporting()  # after the export the custom op runs again
