"""Reference criss-cross attention vs a dense float64 masked softmax written here."""

import pytest
import torch

from vidccnet.ops import cca_reference, criss_cross_attention, resolve_backend


def dense_cca(q, k, v, scale=1.0):
    """Dense (N x N) masked attention in float64: the definition, spelled out."""
    B, C, T, H, W = q.shape
    t, h, w = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    t, h, w = t.flatten(), h.flatten(), w.flatten()
    eq = lambda a: a[:, None] == a[None, :]  # noqa: E731
    mask = (eq(h) & eq(w)) | (eq(t) & eq(h)) | (eq(t) & eq(w))  # time line | row | column
    q, k, v = (x.double().flatten(2) for x in (q, k, v))
    e = torch.einsum("bcn,bcm->bnm", q, k) * scale
    e = e.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(e, -1)
    out = torch.einsum("bnm,bcm->bcn", e.softmax(-1), v)
    return out.view(B, -1, T, H, W), lse.view(B, T, H, W)


SHAPES = [  # (B, Cqk, Cv, T, H, W)
    (1, 4, 5, 1, 7, 13),
    (2, 3, 6, 5, 4, 6),
    (1, 2, 3, 3, 1, 5),
    (1, 2, 3, 4, 6, 1),
    (2, 8, 4, 1, 1, 1),
    (1, 4, 4, 5, 7, 13),
]


def _inputs(shape, dtype=torch.float64, seed=0):
    B, Cqk, Cv, T, H, W = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Cqk, T, H, W, generator=g, dtype=dtype)
    k = torch.randn(B, Cqk, T, H, W, generator=g, dtype=dtype)
    v = torch.randn(B, Cv, T, H, W, generator=g, dtype=dtype)
    return q, k, v


def test_key_count_is_t_plus_h_plus_w_minus_2():
    # With q = 0 every key weighs the same: the output is the mean of v over the key set.
    B, Cqk, Cv, T, H, W = 1, 2, 1, 3, 4, 5
    q = torch.zeros(B, Cqk, T, H, W, dtype=torch.float64)
    v = torch.zeros(B, Cv, T, H, W, dtype=torch.float64)
    v[0, 0, 1, 2, 3] = 1.0  # a single non-zero value at the centre of position (1, 2, 3)
    out, lse = cca_reference(q, q, v)
    n_keys = T + H + W - 2
    assert out[0, 0, 1, 2, 3].item() == pytest.approx(1.0 / n_keys)
    assert torch.allclose(lse, torch.full_like(lse, float(n_keys)).log())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 0.35])
def test_reference_matches_dense_float64(shape, scale):
    q, k, v = _inputs(shape)
    out, lse = cca_reference(q, k, v, scale)
    ref_out, ref_lse = dense_cca(q, k, v, scale)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_public_op_float32_matches_dense(shape):
    q, k, v = _inputs(shape, torch.float32)
    out = criss_cross_attention(q, k, v, backend="reference")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), dense_cca(q, k, v)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_inputs(dtype, tol):
    q, k, v = _inputs((2, 4, 6, 3, 5, 7), torch.float32)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    out = criss_cross_attention(q, k, v, backend="reference")
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), dense_cca(q, k, v)[0], rtol=tol, atol=tol)


def test_2d_input_is_ccnet():
    # 4-D input = T of 1: the key set is row + column, H + W - 1 keys (official CCNet).
    q, k, v = _inputs((2, 4, 5, 1, 6, 9))
    out = criss_cross_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    assert out.shape == (2, 5, 6, 9)
    torch.testing.assert_close(out, dense_cca(q, k, v)[0][:, :, 0])


def test_non_contiguous_inputs():
    q, k, v = _inputs((2, 4, 6, 3, 5, 7))
    # channels-last-like permutation views and a strided slice
    qn = q.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    vn = torch.stack([v, -v], dim=-1)[..., 0]
    assert not qn.is_contiguous() and not vn.is_contiguous()
    out = criss_cross_attention(qn, k, vn)
    torch.testing.assert_close(out, dense_cca(q, k, v)[0])


@pytest.mark.parametrize("shape", [(2, 3, 4, 3, 4, 5), (1, 2, 3, 1, 5, 7), (1, 2, 2, 4, 1, 3)])
def test_gradcheck_float64(shape):
    q, k, v = (x.requires_grad_() for x in _inputs(shape))
    fn = lambda a, b, c: criss_cross_attention(a, b, c, scale=0.7)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_analytic_backward_matches_autograd_of_dense():
    q, k, v = (x.requires_grad_() for x in _inputs((2, 4, 6, 3, 5, 7)))
    g = torch.randn(2, 6, 3, 5, 7, dtype=torch.float64)
    grads = torch.autograd.grad(criss_cross_attention(q, k, v), (q, k, v), g)
    ref = torch.autograd.grad(dense_cca(q, k, v)[0], (q, k, v), g)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_opcheck():
    q, k, v = (x.requires_grad_() for x in _inputs((2, 4, 6, 3, 5, 7), torch.float32))
    torch.library.opcheck(torch.ops.vidccnet.cca_fwd.default, (q, k, v, 1.0, "reference"))


def test_torch_compile_fullgraph():
    from vidccnet.nn import CrissCrossAttention3d

    m = CrissCrossAttention3d(16, reduction=4)
    torch.nn.init.constant_(m.gamma, 0.5)
    x = torch.randn(1, 16, 3, 5, 6, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)
    y = compiled(x)
    torch.testing.assert_close(y, m(x), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_memory_is_linear_in_keys_not_quadratic():
    # The reference never builds an N x N matrix: at N = 8*48*48 = 18432 an N x N float32
    # matrix would be 1.36 GB; the axis passes need N * (T + H + W) * 4 B ~ 7.7 MB each.
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(1, 4, 8, 48, 48)
    v = torch.randn(1, 4, 8, 48, 48)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        criss_cross_attention(q, q, v, backend="reference")
    biggest = max(e.cpu_memory_usage for e in prof.key_averages())
    n = 8 * 48 * 48
    assert biggest < n * n * 4 / 20


# --- bad input ---------------------------------------------------------------------------------


def test_errors_name_the_shapes():
    q, k, v = _inputs((1, 4, 5, 2, 3, 4), torch.float32)
    with pytest.raises(ValueError, match=r"q \(1, 4, 2, 3, 4\), k \(1, 3, 2, 3, 4\)"):
        criss_cross_attention(q, k[:, :3], v)
    with pytest.raises(ValueError, match="v must match q"):
        criss_cross_attention(q, k, v[:, :, :1])
    with pytest.raises(ValueError, match="same rank"):
        criss_cross_attention(q, k, v[0])
    with pytest.raises(ValueError, match="same rank"):
        criss_cross_attention(q[0, 0], k[0, 0], v[0, 0])
    with pytest.raises(TypeError, match="floating-point"):
        criss_cross_attention(q.long(), k.long(), v.long())
    with pytest.raises(TypeError, match="one dtype"):
        criss_cross_attention(q, k.double(), v)
    with pytest.raises(ValueError, match="unknown backend"):
        criss_cross_attention(q, k, v, backend="cuda")
    with pytest.raises(ValueError, match="one device"):
        criss_cross_attention(q, k.to("meta"), v)


def test_backend_env_var(monkeypatch):
    monkeypatch.setenv("VIDCCNET_CCA_BACKEND", "reference")
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    monkeypatch.setenv("VIDCCNET_CCA_BACKEND", "bogus")
    with pytest.raises(ValueError, match="VIDCCNET_CCA_BACKEND"):
        resolve_backend("auto", torch.device("cpu"))
    monkeypatch.delenv("VIDCCNET_CCA_BACKEND")
    assert resolve_backend("auto", torch.device("cpu")) == "reference"


def test_auto_uses_triton_only_for_inputs_it_takes(monkeypatch):
    import vidccnet.ops.cca as cca

    monkeypatch.delenv("VIDCCNET_CCA_BACKEND", raising=False)
    monkeypatch.setattr(cca, "triton_status", lambda device: (True, ""))
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda, torch.float16, 64) == "triton"
    assert resolve_backend("auto", cuda, torch.float64, 64) == "reference"
    assert resolve_backend("auto", cuda, torch.float32, 512) == "reference"
    assert resolve_backend("auto", torch.device("cpu"), torch.float32, 64) == "reference"


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = _inputs((1, 4, 5, 2, 3, 4), torch.float32)
    with pytest.raises(RuntimeError, match="triton backend cannot run here"):
        criss_cross_attention(q, k, v, backend="triton")
