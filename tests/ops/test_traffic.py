"""The global-memory traffic meter (vidccnet.ops.traffic) on toy kernels with known traffic."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

triton = pytest.importorskip("triton", reason="triton is not installed")
import triton.language as tl  # noqa: E402

from vidccnet.ops.traffic import TrafficMeter, _interpreting  # noqa: E402
from vidccnet.ops.triton_cca import triton_available  # noqa: E402

pytestmark = pytest.mark.skipif(
    not _interpreting(), reason="needs TRITON_INTERPRET=1 before triton is imported"
)
_cca_ok, _cca_reason = triton_available(torch.device("cpu"))
needs_cca_kernels = pytest.mark.skipif(not _cca_ok, reason=f"Triton interpreter: {_cca_reason}")


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


@triton.jit
def _count(X, CNT, n, BLOCK: tl.constexpr):
    # Each program reads its block and bumps one shared counter (one scalar atomic).
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.load(X + offs, mask=offs < n)
    tl.atomic_add(CNT, 1)


@triton.jit
def _copy_row(X, Y, row, BLOCK: tl.constexpr):
    offs = row * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs))


@triton.jit
def _two_calls(X, Y, BLOCK: tl.constexpr):
    # One device function, reached from two lines of the kernel: two sites per instruction.
    if tl.program_id(0) == 0:
        _copy_row(X, Y, 0, BLOCK)
    else:
        _copy_row(X, Y, 1, BLOCK)


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


def test_atomics_count_as_read_and_written():
    x, cnt = torch.randn(100), torch.zeros(1, dtype=torch.int32)
    with TrafficMeter() as meter:
        _count[(4,)](x, cnt, 100, BLOCK=32)
    (launch,) = meter.launches
    assert cnt.item() == 4
    site = _site(launch, "atomic")
    assert site.buffer == "CNT" and site.executions == 4 and site.bytes == 4 * 4
    b = launch.buffers["CNT"]
    assert b.read_requested == b.write_requested == 4 * 4
    assert b.distinct_read == b.distinct_written == 4
    assert launch.distinct == 100 * 4 + 4 + 4


def test_device_function_sites_split_by_call_line():
    x, y = torch.randn(64), torch.empty(64)
    with TrafficMeter() as meter:
        _two_calls[(2,)](x, y, BLOCK=32)
    (launch,) = meter.launches
    loads = [s for s in launch.sites.values() if s.kind == "load"]
    assert len(loads) == 2 and len({s.line for s in loads}) == 1  # one line in _copy_row
    assert len({s.call_line for s in loads}) == 2 and all(s.call_line != s.line for s in loads)
    assert all(s.bytes == 32 * 4 and s.amplification == 1.0 for s in loads)
    torch.testing.assert_close(y, x)


def test_meter_restores_the_interpreter():
    from triton.runtime import interpreter

    before = interpreter.GridExecutor.__call__
    with TrafficMeter():
        assert interpreter.GridExecutor.__call__ is not before
    assert interpreter.GridExecutor.__call__ is before
    for name in ("create_masked_load", "create_masked_store", "create_atomic_rmw"):
        assert name not in vars(interpreter.interpreter_builder)


@needs_cca_kernels
@pytest.mark.parametrize("fused", [True, False])
def test_cca_kernels_are_coalesced(fused, monkeypatch):
    """Every main load / store of the criss-cross kernels moves whole channel rows (<= 1.25);
    the fused forward is one launch (per program one ticket atomic, plus the column program's
    signal or, in the interpreter, the row program's one wait), the default two."""
    from vidccnet.ops import triton_cca

    monkeypatch.setenv(triton_cca.FUSED_FORWARD_ENV, "1" if fused else "0")
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 16, 2, 3, 5, generator=g).half() for _ in range(2))
    v, go = (torch.randn(1, 32, 2, 3, 5, generator=g).half() for _ in range(2))
    with TrafficMeter() as meter:
        out, lse = triton_cca.cca_forward(q, k, v, 1.0)
        triton_cca.cca_backward(q, k, v, out, lse, go, 1.0)
    fwd = ["_fwd_fused_kernel"] if fused else ["_fwd_kernel"] * 2
    assert [lt.kernel for lt in meter.launches] == fwd + ["_bwd_kernel"] * 2
    atomics = [s for lt in meter.launches for s in lt.sites.values() if s.kind == "atomic"]
    if fused:  # B T (W + H) = 2 * 8 programs: a ticket each, W signals + H waits per frame
        assert sum(s.executions for s in atomics) == 2 * 16
        assert meter.launches[0].buffers["CNT"].distinct_written == (2 + 1) * 4
    else:
        assert not atomics
    # The channel-row tensors; lse / Delta (4 bytes per position) are read along columns.
    rows = {"Q", "K", "V", "OUT", "DO", "DQ", "DK", "DV", "DQP", "DKP"}
    checked = 0
    for launch in meter.launches:
        for site in launch.sites.values():
            if site.buffer in rows and site.bytes:
                assert site.amplification <= 1.25, (launch.kernel, site)
                checked += 1
    assert checked >= 20


@needs_cca_kernels
@pytest.mark.parametrize("fused", [True, False])
def test_kernel_traffic_script_forward_figures(load_script, fused, monkeypatch):
    """scripts/kernel_traffic.py on the CamVid widths (Cqk 64, Cv 512, fp16) at 2 x 3, T = 2:
    exact distinct bytes of the forward. One launch: q, k, v read (1280 B/pos), out and lse
    written (1028) and read back (the column partial, 1028), plus the counters (2 frames and
    the ticket, 4 bytes each, read and written); two launches: q, k, v read twice, out and lse
    written twice and read once."""
    from vidccnet.ops import triton_cca

    script = load_script("kernel_traffic")
    monkeypatch.setenv(triton_cca.FUSED_FORWARD_ENV, "1" if fused else "0")
    monkeypatch.setattr(triton_cca, "CPU_CONFIG", (512, 4))  # one Cv chunk: fast, same bytes
    r = script.measure("camvid", 1, 2, backward=False, size=(2, 3))
    f = r["forward"]
    assert r["positions"] == 12 and f["floor_per_position"] == 2308
    assert f["launch_count"] == (1 if fused else 2)
    distinct = f["distinct_per_position"] * 12
    assert round(distinct) == (12 * 3336 + 3 * 8 if fused else 12 * 5644)
    assert f["max_main_site_amplification"] <= 1.25


def test_kernel_traffic_json_into_a_missing_folder_is_refused_before_measuring(
    load_script, tmp_path, capsys, monkeypatch
):
    script = load_script("kernel_traffic")
    monkeypatch.setattr(script, "measure", lambda *a, **k: pytest.fail("measured before the check"))
    assert script.main(["--json", str(tmp_path / "missing" / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--json" in err and "missing" in err
