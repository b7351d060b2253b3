"""The global-memory traffic meter (vidccnet.ops.traffic) on toy kernels with known traffic."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

triton = pytest.importorskip("triton", reason="triton is not installed")
import triton.language as tl  # noqa: E402

from vidccnet.ops.traffic import TrafficMeter, _interpreting  # noqa: E402

pytestmark = pytest.mark.skipif(
    not _interpreting(), reason="needs TRITON_INTERPRET=1 before triton is imported"
)


@triton.jit
def _gather_copy(X, Y, n, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(X + offs * STRIDE, mask=m)
    tl.store(Y + offs, x, mask=m)


@triton.jit
def _reread(X, Y, BLOCK: tl.constexpr):
    # Every program reads the same block and writes its own.
    offs = tl.arange(0, BLOCK)
    x = tl.load(X + offs)
    tl.store(Y + tl.program_id(0) * BLOCK + offs, x)


def _site(launch, kind):
    (site,) = [s for s in launch.sites.values() if s.kind == kind]
    return site


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_contiguous_copy_is_coalesced_and_exact(dtype):
    n, block = 1000, 64  # the last program is partly masked
    x, y = torch.randn(n, dtype=torch.float32).to(dtype), torch.empty(n, dtype=dtype)
    with TrafficMeter() as meter:
        _gather_copy[(triton.cdiv(n, block),)](x, y, n, STRIDE=1, BLOCK=block)
    (launch,) = meter.launches
    nbytes = n * x.element_size()
    assert launch.kernel == "_gather_copy" and launch.grid == (16, 1, 1)
    assert (
        launch.buffers["X"].read_requested == nbytes and launch.buffers["X"].distinct_read == nbytes
    )
    assert launch.buffers["Y"].write_requested == nbytes
    assert launch.buffers["Y"].distinct_written == nbytes
    assert launch.requested == launch.distinct == 2 * nbytes
    sectors = -(-nbytes // 32)  # whole sectors, the last one partly used (fp16: 2000 bytes)
    assert _site(launch, "load").sectors == _site(launch, "store").sectors == sectors
    assert _site(launch, "load").amplification == sectors * 32 / nbytes
    torch.testing.assert_close(y, x)


@pytest.mark.parametrize("stride, amplification", [(2, 2.0), (4, 4.0), (8, 8.0), (16, 8.0)])
def test_strided_gather_amplification(stride, amplification):
    """fp32 elements `stride` apart: a 32-byte sector serves 8 // stride of them (at least 1)."""
    n, block = 512, 64
    x, y = torch.randn(n * stride), torch.empty(n)
    with TrafficMeter() as meter:
        _gather_copy[(n // block,)](x, y, n, STRIDE=stride, BLOCK=block)
    (launch,) = meter.launches
    assert _site(launch, "load").amplification == amplification
    assert _site(launch, "store").amplification == 1.0
    assert launch.buffers["X"].distinct_read == n * 4  # only the gathered elements
    torch.testing.assert_close(y, x[::stride])


def test_rereads_count_as_requested_not_distinct():
    x, y = torch.randn(32), torch.empty(4 * 32)
    with TrafficMeter() as meter:
        _reread[(4,)](x, y, BLOCK=32)
    (launch,) = meter.launches
    assert launch.buffers["X"].read_requested == 4 * 32 * 4
    assert launch.buffers["X"].distinct_read == 32 * 4
    totals = meter.totals()
    assert totals["launches"] == 1
    assert totals["requested_bytes"] == 4 * 128 + 4 * 128
    assert totals["distinct_bytes"] == 128 + 4 * 128


def test_meter_restores_the_interpreter():
    from triton.runtime import interpreter

    before = interpreter.GridExecutor.__call__
    with TrafficMeter():
        assert interpreter.GridExecutor.__call__ is not before
    assert interpreter.GridExecutor.__call__ is before
    assert "create_masked_load" not in vars(interpreter.interpreter_builder)


def test_cca_kernels_are_coalesced():
    """Every main load / store of the criss-cross kernels moves whole channel rows (<= 1.25)."""
    from vidccnet.ops import triton_cca

    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 16, 2, 3, 5, generator=g).half() for _ in range(2))
    v, go = (torch.randn(1, 32, 2, 3, 5, generator=g).half() for _ in range(2))
    with TrafficMeter() as meter:
        out, lse = triton_cca.cca_forward(q, k, v, 1.0)
        triton_cca.cca_backward(q, k, v, out, lse, go, 1.0)
    assert [lt.kernel for lt in meter.launches] == ["_fwd_kernel"] * 2 + ["_bwd_kernel"] * 2
    # The channel-row tensors; lse / Delta (4 bytes per position) are read along columns.
    rows = {"Q", "K", "V", "OUT", "DO", "DQ", "DK", "DV", "DQP", "DKP"}
    checked = 0
    for launch in meter.launches:
        for site in launch.sites.values():
            if site.buffer in rows and site.bytes:
                assert site.amplification <= 1.25, (launch.kernel, site)
                checked += 1
    assert checked >= 20
