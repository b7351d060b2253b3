"""Benchmark criss-cross attention backends against dense and FlexAttention baselines.

    python scripts/bench_attention.py                 # the standard table (GPU if present)
    python scripts/bench_attention.py --quick         # smaller shapes, fewer repeats
    python scripts/bench_attention.py --cases cpu     # the CPU target case only

Every baseline is measured in the same run. Times are medians; memory is the extra peak memory
of one call beyond its inputs (CUDA: max_memory_allocated; CPU: peak RSS growth, see extra_memory).
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from vidccnet.nn import RecurrentCrissCrossAttention
from vidccnet.ops import criss_cross_attention, triton_status

# H100 SXM peak HBM3 bandwidth; other GPUs are looked up by name below.
PEAK_BANDWIDTH_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L4": 300.0, "4090": 1008.0}


@dataclass(frozen=True)
class Case:
    name: str
    B: int
    Cqk: int
    Cv: int
    T: int
    H: int
    W: int

    @property
    def n(self) -> int:
        return self.T * self.H * self.W


GPU_CASES = [
    Case("2D 97x97", 2, 64, 512, 1, 97, 97),
    Case("video 8x64x64", 2, 64, 512, 8, 64, 64),
    Case("video 16x60x80", 1, 64, 512, 16, 60, 80),
]
CPU_CASES = [Case("CPU target 8x48x48", 1, 32, 256, 8, 48, 48)]
QUICK_CASES = [Case("2D 33x33", 1, 16, 64, 1, 33, 33), Case("video 4x24x24", 1, 16, 64, 4, 24, 24)]


@register_flop_formula(torch.ops.vidccnet.cca_fwd)
def _cca_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    B, Cqk, T, H, W = q_shape
    keys = T + H + W - 2
    return 2 * B * T * H * W * keys * (Cqk + v_shape[1])


def make_inputs(c: Case, device, dtype, grad: bool):
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(c.B, c.Cqk, c.T, c.H, c.W, generator=g).to(device, dtype)
    k = torch.randn(c.B, c.Cqk, c.T, c.H, c.W, generator=g).to(device, dtype)
    v = torch.randn(c.B, c.Cv, c.T, c.H, c.W, generator=g).to(device, dtype)
    return [x.requires_grad_(grad) for x in (q, k, v)]


def criss_cross_mask(c: Case, device) -> torch.Tensor:
    t, h, w = torch.meshgrid(
        torch.arange(c.T), torch.arange(c.H), torch.arange(c.W), indexing="ij"
    )
    t, h, w = (x.flatten().to(device) for x in (t, h, w))
    eq = lambda a: a[:, None] == a[None, :]  # noqa: E731
    return (eq(h) & eq(w)) | (eq(t) & eq(h)) | (eq(t) & eq(w))  # (N, N) bool


def dense_fn(c: Case, device):
    mask = criss_cross_mask(c, device)

    def run(q, k, v):
        qs, ks, vs = (x.flatten(2).transpose(1, 2).unsqueeze(1) for x in (q, k, v))  # (B,1,N,C)
        o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=1.0)
        return o.squeeze(1).transpose(1, 2).reshape(c.B, c.Cv, c.T, c.H, c.W)

    return run


def flex_fn(c: Case, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    HW, W = c.H * c.W, c.W

    def mask_mod(b, hd, qi, ki):
        qt, qh, qw = qi // HW, (qi // W) % c.H, qi % W
        kt, kh, kw = ki // HW, (ki // W) % c.H, ki % W
        return ((qh == kh) & (qw == kw)) | ((qt == kt) & (qh == kh)) | ((qt == kt) & (qw == kw))

    block_mask = create_block_mask(mask_mod, None, None, c.n, c.n, device=str(device))
    flex = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v):
        qs, ks, vs = (x.flatten(2).transpose(1, 2).unsqueeze(1) for x in (q, k, v))
        o = flex(qs, ks, vs, block_mask=block_mask, scale=1.0)
        return o.squeeze(1).transpose(1, 2).reshape(c.B, c.Cv, c.T, c.H, c.W)

    return run


def method_fn(method: str, c: Case, device):
    if method in ("reference", "triton"):
        return lambda q, k, v: criss_cross_attention(q, k, v, backend=method)
    if method == "dense":
        return dense_fn(c, device)
    if method == "flex":
        return flex_fn(c, device)
    raise ValueError(method)


def dense_bytes(c: Case, backward: bool) -> int:
    # mask (bool) + scores (fp32) per batch element; backward keeps probabilities and grads.
    return c.B * c.n * c.n * (1 + 4 * (3 if backward else 1))


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, inputs, backward: bool, device, repeats: int) -> float:
    """Median milliseconds of one forward (or forward + backward)."""
    grad = None

    def once():
        out = fn(*inputs)
        if backward:
            nonlocal grad
            grad = torch.ones_like(out) if grad is None else grad
            torch.autograd.grad(out, inputs, grad)

    once()  # warm-up (compilation, autotuning, caches)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def extra_memory(fn, inputs, backward: bool, device) -> float:
    """Peak memory (MiB) of one call beyond what was allocated before it.

    CUDA: max_memory_allocated. CPU: the process's peak RSS (VmHWM, reset through
    /proc/self/clear_refs) over its RSS before the call, after a warm-up call and malloc_trim.
    """

    def once():
        out = fn(*inputs)
        if backward:
            torch.autograd.grad(out, inputs, torch.ones_like(out))

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        once()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    once()  # load libraries and warm caches, then hand freed memory back to the OS
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss0 = _proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    once()
    return (_proc_status("VmHWM") - rss0) / 2**20


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def num(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def peak_bandwidth(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, gbs in PEAK_BANDWIDTH_GBS.items():
        if key in name:
            return gbs
    return None


def floor_bytes(c: Case, dtype_bytes: int) -> int:
    """Bytes the forward must move at least: read q, k, v; write out and the fp32 lse."""
    per_pos = (2 * c.Cqk + 2 * c.Cv) * dtype_bytes + 4
    return c.B * c.n * per_pos


class NonLocal2d(torch.nn.Module):
    """Embedded-Gaussian non-local block (Wang et al.), inter channels C/2: CCNet's comparison."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.theta, self.phi, self.g = (torch.nn.Conv2d(c, c // 2, 1) for _ in range(3))
        self.out = torch.nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        th, ph, g = (m(x).flatten(2) for m in (self.theta, self.phi, self.g))  # (B, C/2, N)
        a = torch.softmax(th.transpose(1, 2) @ ph, -1)  # (B, N, N)
        return x + self.out((g @ a.transpose(1, 2)).view(x.shape[0], -1, *x.shape[2:]))


def claim_block(name: str, device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The two blocks of CCNet's cost comparison on 97x97 features with 512 channels."""
    C, H, W = 512, 97, 97
    if name == "rcca":
        mod = RecurrentCrissCrossAttention(C, recurrence=2)
        torch.nn.init.constant_(mod.cca.gamma, 0.5)
        x = torch.randn(1, C, 1, H, W)
    else:
        mod, x = NonLocal2d(C), torch.randn(1, C, H, W)
    return mod.to(device).eval(), x.to(device)


def ccnet_claim(device) -> list[str]:
    """MACs (FlopCounterMode) and extra forward memory of RCCA (R=2) vs a non-local block."""
    rows = []
    for name in ("rcca", "nonlocal"):
        mod, x = claim_block(name, device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            mod(x)
        macs = counter.get_total_flops() / 2 / 1e9
        with torch.no_grad():
            mem = extra_memory(mod, [x], False, device)
        rows.append((name, macs, mem))
    (_, f_cc, m_cc), (_, f_nl, m_nl) = rows
    out = ["| block | GMACs | extra memory (MiB) |", "|---|---:|---:|"]
    out += [f"| {n} | {f:.1f} | {m:.0f} |" for n, f, m in rows]
    out.append(
        f"\nRCCA R=2 vs non-local: {100 * (1 - f_cc / f_nl):.0f} % fewer MACs, "
        f"{m_nl / m_cc:.1f}x less memory (paper: 85 % fewer FLOPs, ~11x less memory)."
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", choices=["auto", "gpu", "cpu", "quick"], default="auto")
    ap.add_argument("--quick", action="store_true", help="small shapes and 3 repeats")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-claim", action="store_true", help="skip the RCCA vs non-local table")
    ap.add_argument("--dense-limit-gb", type=float, default=16.0)
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    triton_ok, why = triton_status(device)
    cases = {"gpu": GPU_CASES, "cpu": CPU_CASES, "quick": QUICK_CASES}.get(
        args.cases, GPU_CASES if on_gpu else CPU_CASES
    )
    if args.quick:
        cases = QUICK_CASES
    dtype = getattr(torch, args.dtype or ("float16" if on_gpu else "float32"))
    repeats = args.repeats or (3 if args.quick else (20 if on_gpu else 5))
    methods = ["reference", "dense", "flex"] + (["triton"] if on_gpu and triton_ok else [])
    threads = torch.get_num_threads()
    dev_name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({threads} threads)"
    print(f"# device: {dev_name}; dtype {dtype}; torch {torch.__version__}; repeats {repeats}")
    if not on_gpu:
        print("# no GPU: CPU backends only (the fused Triton kernels need CUDA to be timed)")
    elif not triton_ok:
        print(f"# triton backend unavailable: {why}")
    peak_bw = peak_bandwidth(device)

    header = (
        "| case | method | fwd ms | fwd+bwd ms | fwd mem MiB | fwd+bwd mem MiB "
        "| fwd speed vs ref | fwd+bwd speed vs ref | fwd mem vs ref | % BW floor |"
    )
    print(header)
    print("|" + "---|" * 10)
    for c in cases:
        ref = {}
        for method in methods:
            if method == "dense" and dense_bytes(c, True) > args.dense_limit_gb * 2**30:
                print(f"| {c.name} | dense | skipped: N x N = {c.n}^2 does not fit |" + " |" * 7)
                continue
            row = {}
            try:
                fn = method_fn(method, c, device)
                for bwd in (False, True):
                    if method == "flex" and bwd and not on_gpu:
                        row[bwd] = (None, None)  # FlexAttention has no CPU backward
                        continue
                    inputs = make_inputs(c, device, dtype, bwd)
                    ms = time_call(fn, inputs, bwd, device, repeats)
                    mem = extra_memory(fn, inputs, bwd, device)
                    row[bwd] = (ms, mem)
            except Exception as exc:  # a baseline that cannot run is reported, not fatal
                print(f"| {c.name} | {method} | failed: {type(exc).__name__}: {exc}"[:200] + " |")
                continue
            if method == "reference":
                ref = row
            (f_ms, f_mem), (b_ms, b_mem) = row[False], row[True]
            bw = ""
            if method == "triton" and peak_bw:
                gbs = floor_bytes(c, dtype.itemsize) / (f_ms * 1e-3) / 1e9
                bw = f"{100 * gbs / peak_bw:.0f} % ({gbs:.0f} GB/s)"
            r_f, r_b = ref.get(False, (None, None)), ref.get(True, (None, None))
            print(
                f"| {c.name} | {method} | {num(f_ms, '.2f')} | {num(b_ms, '.2f')} "
                f"| {num(f_mem, '.0f')} | {num(b_mem, '.0f')} | {ratio(r_f[0], f_ms)} "
                f"| {ratio(r_b[0], b_ms)} | {ratio(f_mem, r_f[1])} | {bw} |"
            )
    print("\n(speed vs ref: reference time / method time; mem vs ref: method memory / reference)")
    if not args.no_claim:
        print("\n## CCNet claim: RCCA (R=2) vs non-local block, 97x97x512 features, forward\n")
        print("\n".join(ccnet_claim(device)))


if __name__ == "__main__":
    main()

