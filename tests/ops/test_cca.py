"""Reference criss-cross attention vs a dense float64 masked softmax written here."""

import pytest
import torch

from vidccnet.ops import cca_reference, criss_cross_attention, resolve_backend
from vidccnet.ops.reference import cca_reference_backward


def dense_logits(q, k, scale=1.0):
    """(B, N, N) float64 logits with -inf outside the criss-cross key set."""
    B, C, T, H, W = q.shape
    t, h, w = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    t, h, w = t.flatten(), h.flatten(), w.flatten()
    eq = lambda a: a[:, None] == a[None, :]  # noqa: E731
    mask = (eq(h) & eq(w)) | (eq(t) & eq(h)) | (eq(t) & eq(w))  # time line | row | column
    e = torch.einsum("bcn,bcm->bnm", q.double().flatten(2), k.double().flatten(2)) * scale
    return e.masked_fill(~mask, float("-inf"))


def dense_cca(q, k, v, scale=1.0):
    """Dense (N x N) masked attention in float64: the definition, spelled out."""
    B, C, T, H, W = q.shape
    e = dense_logits(q, k, scale)
    lse = torch.logsumexp(e, -1)
    out = torch.einsum("bnm,bcm->bcn", e.softmax(-1), v.double().flatten(2))
    return out.view(B, -1, T, H, W), lse.view(B, T, H, W)


SHAPES = [  # (B, Cqk, Cv, T, H, W)
    (1, 4, 5, 1, 7, 13),
    (2, 3, 6, 5, 4, 6),
    (1, 2, 3, 3, 1, 5),
    (1, 2, 3, 4, 6, 1),
    (2, 8, 4, 1, 1, 1),
    (1, 4, 4, 5, 7, 13),
]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _inputs(shape, dtype=torch.float64, seed=0, qk_std=1.0):
    """q, k, v, dO; q and k with entries of std `qk_std` (float64 draws, then cast)."""
    B, Cqk, Cv, T, H, W = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Cqk, T, H, W, generator=g, dtype=torch.float64) * qk_std
    k = torch.randn(B, Cqk, T, H, W, generator=g, dtype=torch.float64) * qk_std
    v = torch.randn(B, Cv, T, H, W, generator=g, dtype=torch.float64)
    go = torch.randn(B, Cv, T, H, W, generator=g, dtype=torch.float64)
    return tuple(x.to(dtype) for x in (q, k, v, go))


def _spread_inputs(shape, dtype, seed=0):
    """Inputs whose logits have a standard deviation of 3: a peaked, not near-uniform softmax."""
    return _inputs(shape, dtype, seed, qk_std=(9.0 / shape[1]) ** 0.25)


def assert_close(actual, expected, tol, what=""):
    """Elementwise |a - b| <= tol + tol * |b| against the float64 `expected`."""
    a, b = actual.double(), expected.double()
    bad = ~((a - b).abs() <= tol + tol * b.abs())  # NaN is off too
    worst = ((a - b).abs() / (tol + tol * b.abs())).max().item()
    assert not bad.any(), f"{what}: {int(bad.sum())} elements off, worst {worst:.3g}x the tolerance"


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


def test_spread_inputs_give_a_peaked_softmax():
    # Guards the inputs of the tolerance tests: near-uniform attention would hide errors.
    q, k, _, _ = _spread_inputs((1, 4, 5, 3, 7, 13), torch.float64)
    p_max = dense_logits(q, k).softmax(-1).amax(-1)  # (B, N): the largest weight per query
    assert p_max.mean() > 0.4  # uniform over the 21 keys would be 0.048


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 0.35])
def test_reference_matches_dense_float64(shape, scale):
    q, k, v, _ = _spread_inputs(shape, torch.float64)
    out, lse = cca_reference(q, k, v, scale)
    ref_out, ref_lse = dense_cca(q, k, v, scale)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_low_precision_matches_float64_dense(shape, dtype):
    """Output, lse and gradients of the public op in float32/16, bfloat16 vs float64 dense."""
    q, k, v, go = _spread_inputs(shape, dtype, seed=1)
    ref_out, ref_lse = dense_cca(q, k, v)
    leaves = [x.double().requires_grad_() for x in (q, k, v)]
    ref_grads = torch.autograd.grad(dense_cca(*leaves)[0], leaves, go.double())
    xs = [x.requires_grad_() for x in (q, k, v)]
    out = criss_cross_attention(*xs, backend="reference")
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, xs, go)
    tol = TOL[dtype]
    assert_close(out, ref_out, tol, "out")
    assert_close(cca_reference(q, k, v)[1], ref_lse, tol, "lse")
    # Gradients go through a difference (dP - Delta) of O(|v|) terms: float32 at 1e-4.
    gtol = 1e-4 if dtype == torch.float32 else tol
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, r, gtol, name)


def test_2d_input_is_ccnet():
    # 4-D input = T of 1: the key set is row + column, H + W - 1 keys (official CCNet).
    q, k, v, _ = _inputs((2, 4, 5, 1, 6, 9))
    out = criss_cross_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    assert out.shape == (2, 5, 6, 9)
    torch.testing.assert_close(out, dense_cca(q, k, v)[0][:, :, 0])


def test_non_contiguous_inputs_and_gradients():
    q, k, v, go = _spread_inputs((2, 4, 6, 3, 5, 7), torch.float64)
    # a channels-last view, a strided slice, and a transposed (H, W) view
    qn = q.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    vn = torch.stack([v, -v], dim=-1)[..., 0]
    kn = k.transpose(3, 4).contiguous().transpose(3, 4)
    gon = go.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    assert not any(x.is_contiguous() for x in (qn, kn, vn, gon))
    xs = [x.requires_grad_() for x in (qn, kn, vn)]
    out = criss_cross_attention(*xs)
    torch.testing.assert_close(out, dense_cca(q, k, v)[0])
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = torch.autograd.grad(dense_cca(*leaves)[0], leaves, go)
    for g, r in zip(torch.autograd.grad(out, xs, gon), ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 2, 3, 3, 4, 5), (1, 2, 2, 1, 3, 4), (1, 2, 2, 3, 1, 2)])
def test_gradcheck_float64(shape):
    q, k, v, _ = _spread_inputs(shape, torch.float64)
    xs = [x.requires_grad_() for x in (q, k, v)]
    fn = lambda a, b, c: criss_cross_attention(a, b, c, scale=0.7)  # noqa: E731
    assert torch.autograd.gradcheck(fn, xs, fast_mode=True)


def test_analytic_backward_matches_autograd_of_dense():
    q, k, v, g = _spread_inputs((2, 4, 6, 3, 5, 7), torch.float64)
    xs = [x.requires_grad_() for x in (q, k, v)]
    grads = torch.autograd.grad(criss_cross_attention(*xs, scale=0.6), xs, g)
    ref = torch.autograd.grad(dense_cca(*xs, scale=0.6)[0], xs, g)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("needs", [(False, False, True), (True, False, False), (False, True, True)])
def test_partial_requires_grad(needs):
    q, k, v, g = _spread_inputs((1, 3, 4, 3, 4, 5), torch.float64)
    xs = [x.requires_grad_(n) for x, n in zip((q, k, v), needs)]
    wanted = [x for x in xs if x.requires_grad]
    ref = torch.autograd.grad(dense_cca(*xs)[0], wanted, g)
    for fn in (criss_cross_attention, lambda *a: cca_reference(*a)[0]):
        got = torch.autograd.grad(fn(*xs), wanted, g)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # the reference backward computes only what is asked for
    out, lse = cca_reference(q.detach(), k.detach(), v.detach())
    grads = cca_reference_backward(q, k, v, out, lse, g, 1.0, needs_grad=needs)
    assert [gr is not None for gr in grads] == list(needs)


def test_reference_double_backward_raises():
    q, k, v, g = _inputs((1, 2, 3, 2, 3, 4))
    xs = [x.requires_grad_() for x in (q, k, v)]
    out = cca_reference(*xs)[0]
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        torch.autograd.grad(out, xs[0], g, create_graph=True)


def test_opcheck():
    q, k, v = (x.requires_grad_() for x in _inputs((2, 4, 6, 3, 5, 7), torch.float32)[:3])
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


def test_torch_compile_fullgraph_module_dynamic_shapes():
    # inductor failed on the projections' reshape + conv2d with dynamic sizes, as after
    # clips of several sizes ("cannot determine truth value of Relational")
    from vidccnet.nn import CrissCrossAttention3d

    m = CrissCrossAttention3d(8, reduction=4)
    torch.nn.init.constant_(m.gamma, 0.5)
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    for shape in [(2, 8, 3, 5, 6), (3, 8, 4, 7, 9)]:
        x = torch.randn(shape)
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_dynamic_shapes():
    # dynamic=True traced the scale check (math.isfinite) to an Unsupported error
    fn = torch.compile(criss_cross_attention, fullgraph=True, dynamic=True, backend="aot_eager")
    for shape in [(1, 3, 4, 3, 5, 6), (2, 3, 4, 2, 4, 7)]:
        q, k, v, _ = _inputs(shape, torch.float32)
        torch.testing.assert_close(fn(q, k, v, scale=0.5), dense_cca(q, k, v, 0.5)[0].float())
    with pytest.raises(ValueError, match="finite"):
        criss_cross_attention(q, k, v, scale=float("nan"))


def _peak_allocated(fn, tmp_path) -> int:
    """Peak bytes allocated by PyTorch's CPU allocator during fn(), above the state before."""
    import json

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    prof.export_chrome_trace(str(tmp_path / "trace.json"))
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")


def test_memory_is_linear_and_a_few_value_tensors(tmp_path):
    # Never an N x N matrix: at N = 2*48*48 = 4608 one N x N float32 matrix is 85 MB.
    q, k, v, _ = _inputs((1, 4, 8, 2, 48, 48), torch.float32)
    n = 2 * 48 * 48
    peak = _peak_allocated(lambda: criss_cross_attention(q, k, v, backend="reference"), tmp_path)
    assert peak < n * n * 4 / 20
    # Value-sized buffers: the forward keeps the channels-last copy of v, the channels-last
    # output and the output (<= 3x v's bytes) plus the (N, T + H + W) probabilities; the
    # previous path peaked at ~7x. The backward: dO, dv channels-last, dv (and transients).
    B, Cqk, Cv, T, H, W = 1, 4, 64, 4, 24, 24
    q, k, v, go = _inputs((B, Cqk, Cv, T, H, W), torch.float32)
    n, v_bytes, e_bytes = T * H * W, v.numel() * 4, T * H * W * (T + H + W) * 4
    fwd = _peak_allocated(lambda: criss_cross_attention(q, k, v, backend="reference"), tmp_path)
    assert fwd <= 3 * v_bytes + e_bytes
    out, lse = cca_reference(q, k, v)
    bwd = _peak_allocated(lambda: cca_reference_backward(q, k, v, out, lse, go, 1.0), tmp_path)
    assert bwd <= 4 * v_bytes + 2 * e_bytes


# --- bad input ---------------------------------------------------------------------------------


def test_errors_name_the_shapes():
    q, k, v, _ = _inputs((1, 4, 5, 2, 3, 4), torch.float32)
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
    with pytest.raises(ValueError, match="empty input"):  # v without channels, not a reshape
        criss_cross_attention(q, k, v[:, :0])


def test_empty_batch_gives_empty_output_and_gradients():
    """An empty batch is a valid input (as for torch's layers): the reference path returns
    (0, Cv, T, H, W) and empty gradients, as the Triton path does; an empty channel or
    (T, H, W) dimension stays an error."""
    q, k, v = (torch.randn(0, c, 2, 3, 4, dtype=torch.float64, requires_grad=True)
               for c in (4, 4, 5))
    out = criss_cross_attention(q, k, v, backend="reference")
    assert out.shape == (0, 5, 2, 3, 4)
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    out, lse = cca_reference(q.detach(), k.detach(), v.detach())
    assert out.shape == (0, 5, 2, 3, 4) and lse.shape == (0, 2, 3, 4)
    assert criss_cross_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0]).shape == (0, 5, 3, 4)
    for t, h, w in ((0, 3, 4), (2, 0, 4), (2, 3, 0)):
        x = torch.randn(1, 4, t, h, w)
        with pytest.raises(ValueError, match="empty input"):
            criss_cross_attention(x, x, x, backend="reference")


def test_scale_is_a_finite_number():
    """A learnable tensor scale would silently get no gradient (it was turned into a float):
    refused with the way to get one; a tensor without grad is taken; nan / inf refused."""
    q, k, v, _ = _inputs((1, 4, 5, 2, 3, 4), torch.float64)
    tau = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
    with pytest.raises(TypeError, match="multiply q by it"):
        criss_cross_attention(q, k, v, scale=tau)
    want = criss_cross_attention(q * 0.5, k, v)
    torch.testing.assert_close(criss_cross_attention(q, k, v, scale=tau.detach()), want)
    torch.testing.assert_close(criss_cross_attention(q, k, v, scale=0.5), want)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            criss_cross_attention(q, k, v, scale=bad)
        with pytest.raises(ValueError, match="finite"):  # the public reference too: not nan
            cca_reference(q, k, v, scale=bad)


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
    monkeypatch.setattr(cca._triton_module(), "shared_memory_shortfall", lambda *a: "")
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda, torch.float16, 64) == "triton"
    assert resolve_backend("auto", cuda, torch.float64, 64) == "reference"
    assert resolve_backend("auto", cuda, torch.float32, 512) == "reference"
    assert resolve_backend("auto", torch.device("cpu"), torch.float32, 64) == "reference"
    # past the kernels' int32 offsets (T * H * W * C >= 2**31 per batch item): not theirs
    big = dict(frames=64, v_channels=512)
    assert resolve_backend("auto", cuda, torch.float16, 64, (256, 256), **big) == "reference"
    assert resolve_backend("auto", cuda, torch.float16, 64, (256, 256), frames=4,
                           v_channels=512) == "triton"


def test_auto_leaves_inputs_whose_kernels_exceed_shared_memory_to_the_reference(monkeypatch):
    """The kernels' shared memory per block is checked against the GPU's (a Triton compile,
    stubbed here; tests/ops/test_triton_cca.py compiles for real): 'auto' checks the backward
    too when gradients are wanted, falls back to the reference path and warns once."""
    import warnings

    import vidccnet.ops.cca as cca

    triton_cca = pytest.importorskip("vidccnet.ops.triton_cca")
    monkeypatch.delenv("VIDCCNET_CCA_BACKEND", raising=False)
    monkeypatch.setattr(cca, "triton_status", lambda device: (True, ""))
    asked = []

    def shortfall(device, dtype, cqk, T, H, W, cv, need=None):
        asked.append(need)
        return "the Triton backward kernel needs 262144 bytes (test)" if need else ""

    monkeypatch.setattr(triton_cca, "shared_memory_shortfall", shortfall)
    monkeypatch.setattr(cca, "_SHARED_MEMORY_WARNED", set())
    cuda, shape = torch.device("cuda"), dict(frames=2, v_channels=512)
    args = ("auto", cuda, torch.float32, 64, (90, 120))
    assert resolve_backend(*args, **shape) == "triton"
    with pytest.warns(UserWarning, match=r"262144 bytes \(test\): backend 'auto' uses the ref"):
        assert resolve_backend(*args, **shape, grads=(True, False, True)) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per case
        assert resolve_backend(*args, **shape, grads=(True, False, True)) == "reference"
    assert asked == [None, (True, False, True), (True, False, True)]
    # An explicit backend is not second-guessed (the kernels raise the same sentence).
    assert resolve_backend("triton", cuda, torch.float32, 64, (90, 120), **shape,
                           grads=(True, True, True)) == "triton"


def test_operator_passes_the_wanted_gradients_to_the_backend_choice(monkeypatch):
    import vidccnet.ops.cca as cca

    seen = []

    def resolve(backend, device, *args, grads=None, **kwargs):
        seen.append(grads)
        return "reference"

    monkeypatch.setattr(cca, "resolve_backend", resolve)
    q = torch.randn(1, 4, 2, 3, 5, requires_grad=True)
    v = torch.randn(1, 6, 2, 3, 5, requires_grad=True)
    criss_cross_attention(q, q.detach(), v)
    with torch.no_grad():
        criss_cross_attention(q, q.detach(), v)
    assert seen == [(True, False, True), None]


def test_shared_memory_is_not_limited_off_cuda():
    triton_cca = pytest.importorskip("vidccnet.ops.triton_cca")
    assert triton_cca.shared_memory_shortfall("cpu", torch.float32, 256, 8, 256, 256, 2048,
                                              (True, True, True)) == ""


def test_triton_chosen_by_the_env_var_names_it_when_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("VIDCCNET_CCA_BACKEND", "triton")
    q, k, v, _ = _inputs((1, 4, 5, 2, 3, 4), torch.float32)
    with pytest.raises(RuntimeError, match="VIDCCNET_CCA_BACKEND=triton.*unset it"):
        criss_cross_attention(q, k, v)


def test_triton_chosen_by_the_env_var_names_it_for_inputs_it_does_not_take(monkeypatch):
    """With VIDCCNET_CCA_BACKEND=triton, a float64 input got the kernels' own refusal, which
    did not say that the variable had chosen them."""
    import vidccnet.ops.cca as cca_mod

    monkeypatch.setattr(cca_mod, "triton_status", lambda device: (True, ""))
    monkeypatch.setenv("VIDCCNET_CCA_BACKEND", "triton")
    with pytest.raises(ValueError, match="VIDCCNET_CCA_BACKEND=triton.*float64.*unset it"):
        resolve_backend("auto", torch.device("cpu"), torch.float64, 4, (3, 4), 2, 5)
    assert resolve_backend("auto", torch.device("cpu"), torch.float32, 4, (3, 4), 2, 5) == "triton"


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, _ = _inputs((1, 4, 5, 2, 3, 4), torch.float32)
    with pytest.raises(RuntimeError, match="triton backend cannot run here"):
        criss_cross_attention(q, k, v, backend="triton")


def test_assert_close_fails_on_nan():
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 1.0]), 1e-5)


def test_cca_reference_checks_its_inputs():
    """The public reference op returned outputs of v's batch and lse of q's for mismatched
    inputs, silently."""
    from vidccnet.ops import cca_reference

    q = torch.randn(2, 4, 3, 4, 5)
    for v, words in ((torch.randn(1, 6, 3, 4, 5), "v must match q"),
                     (torch.randn(2, 6, 1, 4, 5), "v must match q"),
                     (torch.randn(2, 6, 3, 4, 5, dtype=torch.float64), "one dtype")):
        with pytest.raises((ValueError, TypeError), match=words):
            cca_reference(q, q, v)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        cca_reference(q[:, :, 0], q[:, :, 0], q[:, :, 0])


def test_output_takes_in_place_ops():
    """The output was a view of the op's internal buffer, so an in-place op on it (a residual
    ``out += x``) raised autograd's "a view created inside a custom Function" error even where
    nothing saved needed it. It is a tensor of its own now: with only v trained its output is
    not saved, and an in-place op and a backward both work; where the backward needs it
    (q or k trained), autograd's version check names the modification, as for torch's own ops."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 1, 4, 2, 3, 5, dtype=torch.float64).unbind(0)
    v = torch.randn(1, 6, 2, 3, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 6, 2, 3, 5, dtype=torch.float64)
    out = criss_cross_attention(q, k, v, backend="reference")
    assert out._base is None
    out.mul_(2).add_(x)
    out.pow(2).sum().backward()
    expected = torch.autograd.grad((2 * dense_cca(q, k, v)[0] + x).pow(2).sum(), v)[0]
    torch.testing.assert_close(v.grad, expected)
    q.requires_grad_(True)
    out = criss_cross_attention(q, k, v, backend="reference")
    out.add_(x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_refuses_float8_and_scale_that_is_not_a_number():
    """float8 inputs were taken silently (a float8 output, no documented accuracy), and
    scale='0.5' or scale=True passed as numbers."""
    q = torch.randn(1, 4, 2, 3, 5)
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        x = q.to(dtype)
        with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
            criss_cross_attention(x, x, x)
    for scale in ("0.5", True):
        with pytest.raises(TypeError, match="scale must be a number"):
            criss_cross_attention(q, q, q, scale=scale)
