"""Triton criss-cross attention kernels vs a dense float64 masked softmax written here.

On CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set below before
Triton is imported). Tolerances:

* float32 inputs: out, lse, dq, dk, dv within atol = rtol = 1e-4 of the float64 reference
  (observed ~1e-6).
* float16 inputs (interpreter is faithful for fp16; bf16 is not and is tested on GPU only):
  inputs rounded to fp16 first, then compared with atol = rtol = 1e-2 relative to the tensor's
  max magnitude.
* bfloat16 (GPU only): 5e-2.

GPU-only tests are marked ``gpu`` and skip cleanly without CUDA.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # CPU only: run the kernels in Triton's interpreter. Must happen before triton is imported
    # (Triton fixes interpreted-vs-compiled for its own library at import time). With a GPU the
    # kernels are compiled and the interpreter tests skip.
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton", reason="triton is not installed")

from vidccnet.ops import triton_cca  # noqa: E402
from vidccnet.ops.triton_cca import (  # noqa: E402
    bandwidth_floor_bytes,
    cca_backward,
    cca_forward,
    triton_available,
)

CPU = torch.device("cpu")
_cpu_ok, _cpu_reason = triton_available(CPU)
needs_interpreter = pytest.mark.skipif(not _cpu_ok, reason=f"Triton interpreter: {_cpu_reason}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ---------------------------------------------------------------------------------------------
# Independent float64 reference: dense (N x N) masked softmax, autograd for the gradients.
# ---------------------------------------------------------------------------------------------


def _criss_cross_mask(T: int, H: int, W: int, device: torch.device) -> torch.Tensor:
    t, h, w = torch.meshgrid(
        torch.arange(T, device=device),
        torch.arange(H, device=device),
        torch.arange(W, device=device),
        indexing="ij",
    )
    t, h, w = t.reshape(-1), h.reshape(-1), w.reshape(-1)
    st = t[:, None] == t[None, :]
    sh = h[:, None] == h[None, :]
    sw = w[:, None] == w[None, :]
    # row: same (t, h); column: same (t, w); time line: same (h, w). Centre included once.
    return (st & sh) | (st & sw) | (sh & sw)  # (N, N)


def dense_cca(q, k, v, scale):
    """float64 dense criss-cross attention: returns out (B, Cv, T, H, W), lse (B, T, H, W)."""
    B, C, T, H, W = q.shape
    n = T * H * W
    qf, kf = q.double().reshape(B, C, n), k.double().reshape(B, C, n)
    vf = v.double().reshape(B, v.shape[1], n)
    e = torch.einsum("bcn,bcm->bnm", qf, kf) * scale  # (B, N, N)
    e = e.masked_fill(~_criss_cross_mask(T, H, W, q.device), float("-inf"))
    lse = torch.logsumexp(e, dim=-1)  # (B, N)
    p = torch.softmax(e, dim=-1)
    out = torch.einsum("bnm,bcm->bcn", p, vf)
    return out.reshape(B, -1, T, H, W), lse.reshape(B, T, H, W)


def dense_grads(q, k, v, grad_out, scale):
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    out, _ = dense_cca(qd, kd, vd, scale)
    out.backward(grad_out.double())
    return qd.grad, kd.grad, vd.grad


def _inputs(B, cqk, cv, T, H, W, dtype=torch.float32, device=CPU, seed=0, qk_std=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, cqk, T, H, W, generator=g) * qk_std
    k = torch.randn(B, cqk, T, H, W, generator=g) * qk_std
    v = torch.randn(B, cv, T, H, W, generator=g)
    go = torch.randn(B, cv, T, H, W, generator=g)
    return tuple(x.to(device=device, dtype=dtype) for x in (q, k, v, go))


def _close(actual, expected, tol, name):
    actual, expected = actual.double().cpu(), expected.double().cpu()
    err = (actual - expected).abs().max().item()
    bound = tol + tol * expected.abs().max().item()
    assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"


def _check_against_dense(B, cqk, cv, T, H, W, scale, dtype=torch.float32, tol=1e-4,
                         device=CPU, qk_std=1.0, **fwd_kw):
    q, k, v, go = _inputs(B, cqk, cv, T, H, W, dtype, device, qk_std=qk_std)
    out, lse = cca_forward(q, k, v, scale, **fwd_kw)
    assert out.shape == v.shape and out.dtype == dtype
    assert lse.shape == (B, T, H, W) and lse.dtype == torch.float32
    ref_out, ref_lse = dense_cca(q, k, v, scale)
    _close(out, ref_out, tol, "out")
    _close(lse, ref_lse, tol, "lse")

    dq, dk, dv = cca_backward(q, k, v, out, lse, go, scale)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert dq.dtype == dk.dtype == dv.dtype == dtype
    rq, rk, rv = dense_grads(q, k, v, go, scale)
    _close(dq, rq, tol, "dq")
    _close(dk, rk, tol, "dk")
    _close(dv, rv, tol, "dv")


# ---------------------------------------------------------------------------------------------
# CPU (interpreter) tests: small shapes, the interpreter runs programs one by one.
# ---------------------------------------------------------------------------------------------


def test_dense_reference_matches_project_reference():
    """The dense float64 mask above agrees with vidccnet.ops.reference (guards the test)."""
    from vidccnet.ops.reference import cca_reference

    q, k, v, _ = _inputs(2, 4, 3, 3, 4, 5, torch.float64)
    out, lse = dense_cca(q, k, v, 0.7)
    ref_out, ref_lse = cca_reference(q, k, v, 0.7)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-10, atol=1e-10)


@needs_interpreter
@pytest.mark.parametrize(
    "B, cqk, cv, T, H, W, scale",
    [
        (1, 8, 24, 2, 7, 13, 1.0),  # odd 7 x 13 frame, Cqk 8 (padded to 16)
        (2, 16, 24, 5, 3, 4, 0.5),  # T = 5, batch 2
        (1, 16, 20, 1, 5, 6, 1.0),  # T = 1 (2D criss-cross)
        (1, 8, 24, 3, 1, 9, 1.0),  # H = 1
        (1, 8, 24, 3, 9, 1, 1.0),  # W = 1
        (1, 8, 70, 1, 1, 1, 1.0),  # a single position; Cv = 70 > one Cv block
        (1, 256, 17, 2, 2, 3, 0.125),  # widest head
    ],
)
def test_fp32_matches_dense_reference(B, cqk, cv, T, H, W, scale):
    _check_against_dense(B, cqk, cv, T, H, W, scale)


@needs_interpreter
@pytest.mark.parametrize("T, H, W", [(1, 20, 2), (2, 2, 20)])
def test_fp32_multiple_blocks(monkeypatch, T, H, W):
    """Lines longer than one block (column / row) and Cv over several blocks (16-wide tiles)."""
    monkeypatch.setattr(triton_cca, "_launch_config", lambda *args, **kw: (16, 16, 4))
    _check_against_dense(1, 32, 20, T, H, W, 0.3)


@needs_interpreter
@pytest.mark.parametrize("fp32_partial", [True, False])
def test_fp16_matches_dense_reference(fp32_partial):
    # Moderate energies so that the fp16 rounding of P stays within the stated tolerance.
    _check_against_dense(1, 16, 20, 2, 3, 5, 1.0, dtype=torch.float16, tol=1e-2, qk_std=0.5,
                         fp32_partial=fp32_partial)


@needs_interpreter
def test_empty_batch():
    q, k, v, go = _inputs(0, 8, 4, 2, 3, 4)
    out, lse = cca_forward(q, k, v, 1.0)
    assert out.shape == v.shape and lse.shape == (0, 2, 3, 4)
    dq, dk, dv = cca_backward(q, k, v, out, lse, go, 1.0)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape


@needs_interpreter
def test_deterministic():
    q, k, v, go = _inputs(1, 8, 16, 2, 3, 4)
    out1, lse1 = cca_forward(q, k, v, 1.0)
    out2, lse2 = cca_forward(q, k, v, 1.0)
    assert torch.equal(out1, out2) and torch.equal(lse1, lse2)
    g1 = cca_backward(q, k, v, out1, lse1, go, 1.0)
    g2 = cca_backward(q, k, v, out1, lse1, go, 1.0)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


@needs_interpreter
def test_large_energies_stay_finite():
    """Huge dot products: the softmax must be computed stably (no inf / nan)."""
    q, k, v, go = _inputs(1, 8, 8, 2, 3, 4)
    out, lse = cca_forward(q * 30, k * 30, v, 1.0)
    ref_out, ref_lse = dense_cca(q * 30, k * 30, v, 1.0)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    _close(out, ref_out, 1e-4, "out")
    _close(lse, ref_lse, 1e-4, "lse")


@needs_interpreter
def test_public_operator_with_triton_backend():
    """criss_cross_attention(backend="triton") (custom op + autograd) agrees with the reference."""
    ops = pytest.importorskip("vidccnet.ops")
    if not hasattr(ops, "criss_cross_attention"):
        pytest.skip("vidccnet.ops.criss_cross_attention is not there yet")
    q, k, v, go = _inputs(1, 8, 12, 2, 3, 4)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = ops.criss_cross_attention(*leaves, scale=0.5, backend="triton")
    out.backward(go)
    ref_out, _ = dense_cca(q, k, v, 0.5)
    _close(out, ref_out, 1e-4, "out")
    for name, leaf, ref in zip(("dq", "dk", "dv"), leaves, dense_grads(q, k, v, go, 0.5)):
        _close(leaf.grad, ref, 1e-4, name)


def test_input_validation():
    q = torch.randn(1, 8, 2, 3, 4)
    v = torch.randn(1, 5, 2, 3, 4)
    with pytest.raises(ValueError, match="5-D"):
        cca_forward(q[0], q[0], v[0], 1.0)
    with pytest.raises(ValueError, match="same shape"):
        cca_forward(q, q[:, :4], v, 1.0)
    with pytest.raises(ValueError, match="B, T, H, W"):
        cca_forward(q, q, v[:, :, :1], 1.0)
    with pytest.raises(TypeError, match="dtype"):
        cca_forward(q.double(), q.double(), v.double(), 1.0)
    with pytest.raises(TypeError, match="one dtype"):
        cca_forward(q, q, v.half(), 1.0)
    wide = torch.randn(1, 300, 1, 2, 2)
    with pytest.raises(ValueError, match="Cqk"):
        cca_forward(wide, wide, torch.randn(1, 4, 1, 2, 2), 1.0)


def test_triton_available_reports_reason(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, reason = triton_available(CPU)
    assert not ok and "TRITON_INTERPRET" in reason
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if triton_cca._stdlib_mode_matches(True):  # triton was imported in interpreter mode
        assert triton_available(CPU) == (True, "")
    else:
        ok, reason = triton_available(CPU)
        assert not ok and "before" in reason
    ok, reason = triton_available(torch.device("meta"))
    assert not ok and "meta" in reason
    if not torch.cuda.is_available():
        ok, reason = triton_available(torch.device("cuda"))
        assert not ok and "CUDA" in reason


def test_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 8, 1, 2, 2)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        cca_forward(q, q, q, 1.0)


def test_bandwidth_floor_bytes():
    # B=2, T=8, H=W=64, Cqk=64, Cv=512, fp16: 65536 positions x ((128 + 1024) * 2 + 4) bytes.
    assert bandwidth_floor_bytes(2, 64, 512, 8, 64, 64, 2) == 65536 * 2308
    assert bandwidth_floor_bytes(1, 8, 3, 1, 1, 1, 4) == (2 * 8 + 2 * 3) * 4 + 4


def test_launch_config_is_gpu_valid():
    for L in (1, 5, 16, 17, 64, 97, 256):
        for cqk_pad in (16, 32, 64, 128, 256):
            for cv in (1, 24, 512, 2048):
                for nbytes, bwd in ((2, False), (4, False), (2, True), (4, True)):
                    block_l, block_v, warps = triton_cca._launch_config(L, cqk_pad, cv, nbytes, bwd)
                    for b in (block_l, block_v):
                        assert b >= 16 and b & (b - 1) == 0
                    assert warps in (4, 8)


def _nvidia_backend_reason() -> str:
    """Empty if Triton's NVIDIA compiler (with its bundled ptxas) can be used without a GPU."""
    try:
        from triton.backends import backends

        if "nvidia" not in backends:
            return "Triton has no NVIDIA backend"
        from triton.backends.nvidia.compiler import get_ptxas_version

        get_ptxas_version(90)  # runs the bundled ptxas
    except Exception as exc:  # missing backend or ptxas: nothing to check here
        return f"NVIDIA compiler unavailable: {exc}"
    return ""


_AOT_SCRIPT = r"""
import sys
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile as triton_compile
from triton.runtime.jit import JITFunction
from vidccnet.ops import triton_cca

arch = int(sys.argv[1])
block_l, block_v, warps = triton_cca._launch_config(20, 16, 24, 2)
ints = {"N", "L", "D1", "D2", "S1", "S2", "STRIDE", "CQK", "CV", "T", "HW"}
tiles = dict(BLOCK_Q=block_l, BLOCK_K=block_l, CQK_PAD=16)
variants = {
    "_fwd_lse_kernel": [dict(EXCLUDE_CENTER=True, MERGE=False, FUSE_TIME=False),
                        dict(EXCLUDE_CENTER=False, MERGE=True, FUSE_TIME=True)],
    "_fwd_out_kernel": [dict(EXCLUDE_CENTER=True, MODE=0, FUSE_TIME=False, BLOCK_V=block_v),
                        dict(EXCLUDE_CENTER=False, MODE=2, FUSE_TIME=True, BLOCK_V=block_v)],
    "_bwd_dq_kernel": [dict(EXCLUDE_CENTER=True, MODE=0, FUSE_TIME=False, BLOCK_V=block_v),
                       dict(EXCLUDE_CENTER=False, MODE=2, FUSE_TIME=True, BLOCK_V=block_v)],
    "_bwd_dk_kernel": [dict(EXCLUDE_CENTER=True, MODE=0, FUSE_TIME=False, BLOCK_V=block_v),
                       dict(EXCLUDE_CENTER=False, MODE=2, FUSE_TIME=True, BLOCK_V=block_v)],
    "_bwd_dv_kernel": [dict(EXCLUDE_CENTER=True, MODE=0, FUSE_TIME=False, BLOCK_V=block_v),
                       dict(EXCLUDE_CENTER=False, MODE=2, FUSE_TIME=True, BLOCK_V=block_v)],
}
for raw in triton_cca._KERNEL_FNS:
    fn = JITFunction(raw)
    for consts in variants[raw.__name__]:
        consts = {**consts, **tiles}
        sig = {}
        for name in fn.arg_names:
            if name in consts:
                sig[name] = "constexpr"
            elif name in ("ACC", "LSE", "DELTA"):
                sig[name] = "*fp32"
            elif name == "scale":
                sig[name] = "fp32"
            else:
                sig[name] = "i32" if name in ints else "*fp16"
        k = triton_compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32),
                           options=dict(num_warps=warps))
        assert k.asm["cubin"], raw.__name__
print("compiled", arch)
"""


@pytest.mark.skipif(bool(_nvidia_backend_reason()), reason=_nvidia_backend_reason() or "ok")
def test_kernels_compile_for_sm90():
    """GPU validity without a GPU: every kernel variant compiles to an sm_90 cubin.

    Catches what the interpreter accepts but the compiler rejects (tl.dot shapes < 16, dtype
    mismatches in dots, invalid casts). Runs in a subprocess without ``TRITON_INTERPRET`` (Triton
    fixes interpreted-vs-compiled for its own library at import time). Small fp16 configuration.
    """
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(triton_cca.__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", _AOT_SCRIPT, "90"], env=env, cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# GPU tests (skip without CUDA).
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("fp32_partial", [True, False])
@pytest.mark.parametrize(
    "dtype, tol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)]
)
@pytest.mark.parametrize(
    "B, cqk, cv, T, H, W",
    [(2, 64, 96, 5, 13, 17), (1, 8, 24, 1, 31, 33), (1, 256, 40, 3, 9, 70), (1, 16, 2048, 2, 5, 6),
     (1, 32, 64, 16, 1, 130)],
)
def test_gpu_matches_dense_reference(B, cqk, cv, T, H, W, dtype, tol, fp32_partial):
    _check_against_dense(B, cqk, cv, T, H, W, 1.0, dtype=dtype, tol=tol,
                         device=torch.device("cuda"), qk_std=0.25, fp32_partial=fp32_partial)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_large_vs_reference_and_deterministic(dtype):
    from vidccnet.ops.reference import cca_reference

    dev = torch.device("cuda")
    q, k, v, go = _inputs(2, 64, 512, 8, 48, 64, dtype, dev, qk_std=0.25)
    out, lse = cca_forward(q, k, v, 1.0)
    ref_out, ref_lse = cca_reference(q.float(), k.float(), v.float(), 1.0)
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    _close(out, ref_out, tol, "out")
    _close(lse, ref_lse, tol, "lse")
    g1 = cca_backward(q, k, v, out, lse, go, 1.0)
    g2 = cca_backward(q, k, v, out, lse, go, 1.0)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    qr, kr, vr = (x.detach().float().requires_grad_() for x in (q, k, v))
    ro, _ = cca_reference(qr, kr, vr, 1.0)
    ro.backward(go.float())
    for name, a, r in (("dq", g1[0], qr.grad), ("dk", g1[1], kr.grad), ("dv", g1[2], vr.grad)):
        _close(a, r, tol, name)
