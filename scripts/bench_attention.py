#!/usr/bin/env python
"""Benchmark criss-cross attention against its baselines, all measured in the same run.

    python scripts/bench_attention.py                      # small case (CPU: + CCNet claim)
    python scripts/bench_attention.py --case quick         # seconds
    python scripts/bench_attention.py --case camvid vspw --device cuda --dtype float16 \\
        --json bench_attention.json

Cases (B, T, H, W, Cqk, Cv): small (1, 8, 48, 48, 32, 256), camvid (2, 5, 90, 120, 64, 512),
vspw (4, 4, 60, 60, 64, 512), 2d (2, 1, 97, 97, 64, 512), quick (1, 4, 24, 24, 16, 64).

Methods: `reference` (the operator's PyTorch backend), `reference-old` (the reference path
before the channels-last rewrite, kept here as the baseline), `dense` (scaled_dot_product_attention
with the N x N criss-cross mask; skipped where it does not fit), `flex` (compiled FlexAttention
with a criss-cross mask_mod; no CPU backward), `triton` (the fused kernels, with the default
two-launch forward; CUDA only), `triton-fused` (the same with the one-launch forward,
VIDCCNET_CCA_FUSED_FORWARD=1 during its calls: timed against the default; CUDA only).

Timing: forward, and forward + backward (torch.autograd.grad of all three inputs), each method's
calls interleaved round-robin over the repeats so that drifting load hits them alike; the minimum
counts (wall clock and process CPU time; ratios use CPU time on CPU, wall time on CUDA; keep
--threads 1 on a shared CPU). Memory: peak bytes allocated during one call above what was
allocated before it (CUDA: max_memory_allocated; CPU: the profiler's allocator events). Error:
max over elements of |x - x64| / (tol * (s + |x64|)) against the float64 reference path, s the
tensor's scale max(1, RMS of x64) (gradients grow with the logits and the number of keys), tol
1e-5 (float32; its gradients 1e-4, as in the tests), 1e-2 (float16), 5e-2 (bfloat16): <= 1 is
within tolerance. The
bandwidth floor (bytes a kernel must move at least, per position): forward
(2 Cqk + 2 Cv) * bytes + 4, backward (4 Cqk + 4 Cv) * bytes + 4; on CUDA the table gives the
floor's bytes per second of measured time as a share of the GPU's peak bandwidth.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import (  # noqa: E402
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
)

from vidccnet.cli import fail, interruptible, missing_folder  # noqa: E402
from vidccnet.engine.report import write_json  # noqa: E402
from vidccnet.nn import RecurrentCrissCrossAttention  # noqa: E402
from vidccnet.ops import criss_cross_attention, triton_status  # noqa: E402
from vidccnet.ops.reference import cca_reference_backward, cca_reference_forward  # noqa: E402
from vidccnet.ops.triton_cca import FUSED_FORWARD_ENV  # noqa: E402
from vidccnet.profiling import cpu_peak_allocated  # noqa: E402

# Peak memory bandwidth (GB/s) by a pattern of the device name, the first that matches counts
# (the most specific first: "L4" must not take an L40, an H100 PCIe is not an SXM part).
PEAK_BANDWIDTH_GBS = (
    (r"H200", 4800.0), (r"H100 NVL", 3900.0), (r"H100.*PCIe", 2000.0), (r"H100", 3350.0),
    (r"A100.*(PCIE|PCIe).*40GB|A100.*40GB.*(PCIE|PCIe)", 1555.0), (r"A100.*SXM4-40GB", 1555.0),
    (r"A100.*80GB.*PCIe|A100-PCIE-80GB", 1935.0), (r"A100", 2039.0),
    (r"\bL40S?\b", 864.0), (r"\bL4\b", 300.0), (r"4090", 1008.0),
)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# float32 gradients go through dP - Delta, a difference of terms larger than the result: the
# tests (tests/ops) hold them to 1e-4, and so does the err/tol column
GRAD_TOLERANCE = {**TOLERANCE, torch.float32: 1e-4}
METHODS = ("reference", "reference-old", "dense", "flex", "triton", "triton-fused")
TRITON_METHODS = ("triton", "triton-fused")


class BenchError(Exception):
    """An expected failure: reported on one line, exit code 2."""


@dataclass(frozen=True)
class Case:
    case: str
    B: int
    T: int
    H: int
    W: int
    Cqk: int
    Cv: int

    @property
    def n(self) -> int:
        return self.T * self.H * self.W

    def floor_bytes(self, dtype_bytes: int, backward: bool) -> int:
        """Bytes a kernel must move at least (inputs read once, outputs and lse written once)."""
        per_pos = (4 * self.Cqk + 4 * self.Cv if backward else 2 * self.Cqk + 2 * self.Cv)
        return self.B * self.n * (per_pos * dtype_bytes + 4)


CASES = {
    "small": Case("small", 1, 8, 48, 48, 32, 256),
    "camvid": Case("camvid", 2, 5, 90, 120, 64, 512),
    "vspw": Case("vspw", 4, 4, 60, 60, 64, 512),
    "2d": Case("2d", 2, 1, 97, 97, 64, 512),
    "quick": Case("quick", 1, 4, 24, 24, 16, 64),
}


def _cca_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    B, Cqk, T, H, W = q_shape
    keys = T + H + W - 2
    return 2 * B * T * H * W * keys * (Cqk + v_shape[1])


if torch.ops.vidccnet.cca_fwd not in flop_registry:  # imported twice (tests): once
    register_flop_formula(torch.ops.vidccnet.cca_fwd)(_cca_flops)


# --- the reference path before the channels-last rewrite (baseline) --------------------------

_OLD_PASSES = (((0, 1, 2, 3), False), ((0, 1, 3, 2), True), ((0, 2, 3, 1), True))


def _old_to_pass(x, perm):
    return x.permute(*perm, *range(4, x.dim())).contiguous()


def _old_from_pass(x, perm):
    inv = [perm.index(i) for i in range(4)]
    return x.permute(*inv, *range(4, x.dim()))


def _old_forward(q, k, v, scale):
    """Previous reference forward: per-pass contiguous copies, energies of every pass kept."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc = (x.to(acc).permute(0, 2, 3, 4, 1) for x in (q, k, v))
    energies = []
    for perm, excl in _OLD_PASSES:
        e = _old_to_pass(qc, perm) @ _old_to_pass(kc, perm).transpose(-1, -2) * scale
        if excl:
            e = e.masked_fill(torch.eye(e.shape[-1], dtype=torch.bool, device=e.device), -torch.inf)
        energies.append(e)
    m = torch.stack([_old_from_pass(e.amax(-1), p) for e, (p, _) in zip(energies, _OLD_PASSES)])
    m = m.amax(0)
    denom = torch.zeros_like(m)
    out = torch.zeros(*m.shape, v.shape[1], dtype=acc, device=v.device)
    for e, (perm, _) in zip(energies, _OLD_PASSES):
        p = torch.exp(e - _old_to_pass(m, perm)[..., None])
        denom = denom + _old_from_pass(p.sum(-1), perm)
        out = out + _old_from_pass(p @ _old_to_pass(vc, perm), perm)
    out = out / denom[..., None]
    return out.permute(0, 4, 1, 2, 3).to(q.dtype), m + torch.log(denom)


def _old_backward(q, k, v, out, lse, grad_out, scale):
    """Previous reference backward (analytic, per-pass copies)."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc, oc, doc = (x.to(acc).permute(0, 2, 3, 4, 1) for x in (q, k, v, out, grad_out))
    lse = lse.to(acc)
    delta = (doc * oc).sum(-1)
    dq, dk, dv = torch.zeros_like(qc), torch.zeros_like(kc), torch.zeros_like(vc)
    for perm, excl in _OLD_PASSES:
        qp, kp, vp, dop = (_old_to_pass(x, perm) for x in (qc, kc, vc, doc))
        p = torch.exp(qp @ kp.transpose(-1, -2) * scale - _old_to_pass(lse, perm)[..., None])
        if excl:
            p = p.masked_fill(torch.eye(p.shape[-1], dtype=torch.bool, device=p.device), 0.0)
        ds = p * (dop @ vp.transpose(-1, -2) - _old_to_pass(delta, perm)[..., None])
        dq += _old_from_pass(ds @ kp, perm)
        dk += _old_from_pass(ds.transpose(-1, -2) @ qp, perm)
        dv += _old_from_pass(p.transpose(-1, -2) @ dop, perm)
    back = lambda x, like: x.permute(0, 4, 1, 2, 3).to(like.dtype).contiguous()  # noqa: E731
    return back(dq * scale, q), back(dk * scale, k), back(dv, v)


class _OldReference(torch.autograd.Function):
    """The previous operator path: forward under no_grad, analytic backward from the lse."""

    @staticmethod
    def forward(ctx, q, k, v):
        with torch.no_grad():
            out, lse = _old_forward(q, k, v, 1.0)
        out = out.contiguous()
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _old_backward(*ctx.saved_tensors, grad_out, 1.0)


# --- methods -----------------------------------------------------------------------------------


def criss_cross_mask(c: Case, device: torch.device) -> torch.Tensor:
    t, h, w = torch.meshgrid(
        torch.arange(c.T), torch.arange(c.H), torch.arange(c.W), indexing="ij"
    )
    t, h, w = (x.flatten().to(device) for x in (t, h, w))
    eq = lambda a: a[:, None] == a[None, :]  # noqa: E731
    return (eq(h) & eq(w)) | (eq(t) & eq(h)) | (eq(t) & eq(w))  # (N, N) bool


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C)


def _untokens(o: torch.Tensor, c: Case) -> torch.Tensor:
    return o.squeeze(1).transpose(1, 2).reshape(c.B, c.Cv, c.T, c.H, c.W)


def dense_fn(c: Case, device: torch.device) -> Callable:
    mask = criss_cross_mask(c, device)

    def run(q, k, v):
        o = F.scaled_dot_product_attention(_tokens(q), _tokens(k), _tokens(v), mask, scale=1.0)
        return _untokens(o, c)

    return run


def flex_fn(c: Case, device: torch.device) -> Callable:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    HW, W = c.H * c.W, c.W

    def mask_mod(b, hd, qi, ki):
        qt, qh, qw = qi // HW, (qi // W) % c.H, qi % W
        kt, kh, kw = ki // HW, (ki // W) % c.H, ki % W
        return ((qh == kh) & (qw == kw)) | ((qt == kt) & (qh == kh)) | ((qt == kt) & (qw == kw))

    block_mask = create_block_mask(mask_mod, None, None, c.n, c.n, device=str(device))
    flex = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v):
        o = flex(_tokens(q), _tokens(k), _tokens(v), block_mask=block_mask, scale=1.0)
        return _untokens(o, c)

    return run


def method_fn(method: str, c: Case, device: torch.device) -> Callable:
    if method in ("reference", "triton"):
        return lambda q, k, v: criss_cross_attention(q, k, v, backend=method)
    if method == "triton-fused":

        def one_launch(q, k, v):
            with _env(FUSED_FORWARD_ENV, "1"):
                return criss_cross_attention(q, k, v, backend="triton")

        return one_launch
    if method == "reference-old":
        return _OldReference.apply
    if method == "dense":
        return dense_fn(c, device)
    return flex_fn(c, device)


def dense_bytes(c: Case) -> int:
    """Rough memory of dense fwd+bwd: the bool mask and ~3 fp32 (N x N) score tensors."""
    return c.B * c.n * c.n * (1 + 4 * 3)


# --- measurement -------------------------------------------------------------------------------


def make_inputs(c: Case, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """q, k, v (B, C, T, H, W) with unit-normal entries, and a unit-normal output gradient."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(c.B, c.Cqk, c.T, c.H, c.W)] * 2 + [(c.B, c.Cv, c.T, c.H, c.W)] * 2
    return [torch.randn(s, generator=g).to(device, dtype) for s in shapes]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(fn: Callable, inputs: list, grad_out: torch.Tensor | None):
    """One forward (grad_out None) or forward + backward; returns the output (and grads)."""
    if grad_out is None:
        with torch.no_grad():
            return fn(*inputs), None
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad_out)


def timed(fn: Callable, inputs: list, grad_out, device: torch.device) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    sync(device)
    c0, w0 = time.process_time(), time.perf_counter()
    run_once(fn, inputs, grad_out)
    sync(device)
    return (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set the environment variable `name` to `value` for the duration of the block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def peak_memory_mib(fn: Callable, inputs: list, grad_out, device: torch.device) -> float:
    """Peak bytes allocated during one call above what was allocated before it (MiB)."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run_once(fn, inputs, grad_out)
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return cpu_peak_allocated(lambda: run_once(fn, inputs, grad_out)) / 2**20


def error_vs_float64(results, reference, tol: float) -> float:
    """max |x - x64| / (tol * (s + |x64|)) over the output (and the gradients when given), s
    the tensor's scale: max(1, RMS of x64). Rounding errors of a sum scale with its terms, not
    with the element's own value, and the gradients' magnitude grows with the logits and the
    number of keys: a fixed absolute tol would flag elements near 0."""
    worst = 0.0
    for x, r in zip(results, reference):
        scale = max(1.0, r.pow(2).mean().sqrt().item())
        err = (x.double() - r).abs() / (tol * (scale + r.abs()))
        worst = max(worst, err.max().item())
    return worst


def float64_reference(inputs: list) -> tuple[torch.Tensor, tuple]:
    """Output and (dq, dk, dv) of the reference path in float64 (tests check it against dense)."""
    q, k, v, go = (x.double() for x in inputs)
    out, lse = cca_reference_forward(q, k, v, 1.0)
    return out, cca_reference_backward(q, k, v, out, lse, go, 1.0)


def bench_case(c: Case, methods: list[str], args, device: torch.device,
               progress: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    """The rows of one case, one per method. `progress(rows so far)` is called before each
    method's warm-up and after each timing mode, so that --json keeps them if a later step is
    cut (first-use compilation on a GPU can be slow)."""
    dtype = getattr(torch, args.dtype)
    *inputs, grad_out = make_inputs(c, device, dtype)
    ref_out, ref_grads = float64_reference(inputs + [grad_out])
    grad_inputs = [x.detach().clone().requires_grad_() for x in inputs]
    rows: dict[str, dict] = {}
    fns: dict[str, Callable] = {}
    for m in methods:
        row = rows.setdefault(m, {"method": m, **asdict(c)})
        progress(list(rows.values()))  # the file names the method being set up
        if m == "dense" and dense_bytes(c) > args.dense_limit_gb * 2**30:
            row["skipped"] = f"N x N = {c.n}^2 does not fit under --dense-limit-gb"
            continue
        try:
            fns[m] = method_fn(m, c, device)
            out, _ = run_once(fns[m], inputs, None)  # warm-up: compilation, autotuning, caches
            row["fwd_err_over_tol"] = error_vs_float64([out], [ref_out], TOLERANCE[dtype])
            del out
            if m == "flex" and device.type == "cpu":
                row["bwd_skipped"] = "FlexAttention has no CPU backward"
                continue
            _, grads = run_once(fns[m], grad_inputs, grad_out)
            row["bwd_err_over_tol"] = error_vs_float64(grads, ref_grads, GRAD_TOLERANCE[dtype])
            row["has_bwd"] = True
        except Exception as exc:  # a baseline that cannot run is reported, not fatal
            row["failed"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            fns.pop(m, None)
    del ref_out, ref_grads
    for mode, grad in (("fwd", None), ("fwd_bwd", grad_out)):
        active = [m for m in fns if mode == "fwd" or rows[m].get("has_bwd")]
        xs = inputs if grad is None else grad_inputs
        walls: dict[str, list] = {m: [] for m in active}
        cpus: dict[str, list] = {m: [] for m in active}
        for _ in range(args.repeats):
            for m in active:
                wall, cpu = timed(fns[m], xs, grad, device)
                walls[m].append(wall)
                cpus[m].append(cpu)
        for m in active:
            rows[m][f"{mode}_wall_ms"] = min(walls[m])
            rows[m][f"{mode}_cpu_ms"] = min(cpus[m])
            rows[m][f"{mode}_mem_mib"] = peak_memory_mib(fns[m], xs, grad, device)
        progress(list(rows.values()))
    metric = "cpu" if device.type == "cpu" else "wall"
    peak_bw = peak_bandwidth(device)
    for row in rows.values():
        row["speedup_vs"], row["memory_vs"] = {}, {}
        for mode in ("fwd", "fwd_bwd"):
            t = row.get(f"{mode}_{metric}_ms")
            for other, o in rows.items():
                if other != row["method"] and t and o.get(f"{mode}_{metric}_ms"):
                    row["speedup_vs"].setdefault(other, {})[mode] = o[f"{mode}_{metric}_ms"] / t
                    mem, omem = row[f"{mode}_mem_mib"], o[f"{mode}_mem_mib"]
                    row["memory_vs"].setdefault(other, {})[mode] = mem / omem if omem else None
            if t:
                floor = c.floor_bytes(dtype.itemsize, False)
                if mode == "fwd_bwd":
                    floor += c.floor_bytes(dtype.itemsize, True)
                row[f"{mode}_floor_gbs"] = floor / (t * 1e-3) / 1e9
                if peak_bw:
                    row[f"{mode}_pct_of_floor"] = 100 * row[f"{mode}_floor_gbs"] / peak_bw
    return list(rows.values())


def peak_bandwidth(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_bandwidth_of(torch.cuda.get_device_name(device))


def peak_bandwidth_of(name: str) -> float | None:
    """Peak memory bandwidth (GB/s) of a GPU by its name; None when it is not in the table."""
    return next((gbs for pattern, gbs in PEAK_BANDWIDTH_GBS if re.search(pattern, name)), None)


# --- CCNet's cost claim ------------------------------------------------------------------------


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


def ccnet_claim(device: torch.device) -> list[str]:
    """MACs (FlopCounterMode) and extra forward memory of RCCA (R=2) vs a non-local block."""
    C, H, W = 512, 97, 97
    rows = []
    for name in ("rcca", "nonlocal"):
        if name == "rcca":
            mod = RecurrentCrissCrossAttention(C, recurrence=2)
            torch.nn.init.constant_(mod.cca.gamma, 0.5)
            x = torch.randn(1, C, 1, H, W)
        else:
            mod, x = NonLocal2d(C), torch.randn(1, C, H, W)
        mod, x = mod.to(device).eval(), x.to(device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            mod(x)
        macs = counter.get_total_flops() / 2 / 1e9
        with torch.no_grad():
            mem = peak_memory_mib(mod, [x], None, device)
        rows.append((name, macs, mem))
    (_, f_cc, m_cc), (_, f_nl, m_nl) = rows
    out = ["| block | GMACs | extra memory (MiB) |", "|---|---:|---:|"]
    out += [f"| {n} | {f:.1f} | {m:.0f} |" for n, f, m in rows]
    out.append(
        f"\nRCCA R=2 vs non-local: {100 * (1 - f_cc / f_nl):.0f} % fewer MACs, "
        f"{m_nl / m_cc:.1f}x less memory (paper: 85 % fewer FLOPs, ~11x less memory)."
    )
    return out


# --- output ------------------------------------------------------------------------------------


def _fmt(x, spec: str, suffix: str = "") -> str:
    return "n/a" if x is None else format(x, spec) + suffix


def format_table(rows: list[dict], metric: str, baseline: str) -> str:
    vs = f"vs {baseline}"
    lines = [
        f"| case | method | fwd ms ({metric}) | fwd+bwd ms ({metric}) | fwd MiB | fwd+bwd MiB "
        f"| fwd speed {vs} | fwd+bwd speed {vs} | fwd mem {vs} | fwd+bwd mem {vs} "
        "| err/tol fwd | err/tol bwd | % floor fwd | % floor fwd+bwd |",
        "|---|---|" + "---:|" * 12,
    ]
    for r in rows:
        why = r.get("skipped") or r.get("failed")
        if why:
            lines.append(f"| {r['case']} | {r['method']} | {why} |" + " |" * 11)
            continue
        sp, mv = r["speedup_vs"].get(baseline, {}), r["memory_vs"].get(baseline, {})
        if r["method"] == baseline:
            sp = mv = {"fwd": 1.0, "fwd_bwd": 1.0 if r.get("has_bwd") else None}
        cells = [
            _fmt(r.get(f"fwd_{metric}_ms"), ".1f"), _fmt(r.get(f"fwd_bwd_{metric}_ms"), ".1f"),
            _fmt(r.get("fwd_mem_mib"), ".1f"), _fmt(r.get("fwd_bwd_mem_mib"), ".1f"),
            _fmt(sp.get("fwd"), ".2f", "x"), _fmt(sp.get("fwd_bwd"), ".2f", "x"),
            _fmt(mv.get("fwd"), ".2f", "x"), _fmt(mv.get("fwd_bwd"), ".2f", "x"),
            _fmt(r.get("fwd_err_over_tol"), ".2g"), _fmt(r.get("bwd_err_over_tol"), ".2g"),
            _fmt(r.get("fwd_pct_of_floor"), ".1f"), _fmt(r.get("fwd_bwd_pct_of_floor"), ".1f"),
        ]
        lines.append(f"| {r['case']} | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench_attention.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--case", nargs="+", choices=sorted(CASES), default=None,
                    help="cases to run (default: small)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                    help="default: all that can run on the device")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                    help="default: float16 on CUDA, float32 on CPU")
    ap.add_argument("--repeats", type=int, default=None, help="default: 20 on CUDA, 5 on CPU")
    ap.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    ap.add_argument("--dense-limit-gb", type=float, default=None,
                    help="skip dense SDPA above this estimate (default: 60 on CUDA, 6 on CPU)")
    ap.add_argument("--claim", action=argparse.BooleanOptionalAction, default=None,
                    help="RCCA vs non-local cost table (default: on without --case)")
    ap.add_argument("--json", type=Path, default=None, help="write all results to this file")
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads is not None and args.threads < 0:
        ap.error(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.dense_limit_gb is not None and not args.dense_limit_gb >= 0:
        ap.error(f"--dense-limit-gb must be >= 0 (0: never run dense), got {args.dense_limit_gb}")
    if msg := missing_folder(args.json, "--json"):
        ap.error(msg)
    return args


@interruptible("bench_attention.py", 'the --json file, if any, holds the rows measured so far '
               '("complete": false)')
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("bench_attention.py", BenchError("--device cuda: CUDA is not available"))
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    on_gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = args.dtype or ("float16" if on_gpu else "float32")
    args.repeats = args.repeats or (20 if on_gpu else 5)
    if args.dense_limit_gb is None:  # 0 is a limit: dense never runs
        args.dense_limit_gb = 60.0 if on_gpu else 6.0
    claim = args.claim if args.claim is not None else args.case is None
    cases = [CASES[n] for n in (args.case or ["small"])]
    triton_ok, why = triton_status(device)
    methods = list(args.methods or METHODS)
    for m in TRITON_METHODS:
        if m in methods and not (on_gpu and triton_ok):
            if args.methods:
                return fail("bench_attention.py", BenchError(f"--methods {m}: {why}"))
            methods.remove(m)

    name = torch.cuda.get_device_name(device) if on_gpu else platform.processor() or "CPU"
    meta = {
        "device": name, "device_type": device.type, "dtype": args.dtype,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(), "peak_bandwidth_gbs": peak_bandwidth(device),
        "timing": "min over repeats, methods interleaved", "triton": triton_ok or why,
    }
    metric = "cpu" if device.type == "cpu" else "wall"
    print(
        f"# {name}; {args.dtype}; torch {torch.__version__}; {meta['threads']} threads; "
        f"min of {args.repeats} interleaved calls ({metric} time); "
        f"load average {' '.join(f'{x:.1f}' for x in meta['load_average'])}"
    )
    if not on_gpu:
        print("# no GPU: the fused Triton kernels are not timed")
    rows: list[dict] = []
    payload = {"meta": meta, "rows": rows, "complete": False,
               "rows_planned": len(cases) * len(set(methods)), "rows_finished": 0}

    def save(in_progress: Sequence[dict] = (), complete: bool = False) -> None:
        """--json as measured so far, whole (a run cut by a time limit or an error keeps its
        finished rows): "complete" is false, and the case under way's rows are in
        "rows_in_progress", until the end."""
        if args.json:
            payload.update(complete=complete, rows_finished=len(rows))
            write_json(args.json, {**payload, **({"rows_in_progress": list(in_progress)}
                                                 if in_progress else {})})

    save()
    for c in cases:
        rows += bench_case(c, methods, args, device, save)
        save()
    baseline = "reference-old" if "reference-old" in methods else methods[0]
    print(format_table(rows, metric, baseline))
    print(f"\n(speed vs {baseline}: its time / the method's; mem: the method's / its; "
          "err/tol <= 1: within tolerance of float64)")
    if claim:
        print("\n## CCNet claim: RCCA (R=2) vs non-local block, 97x97x512 features, forward\n")
        lines = ccnet_claim(device)
        print("\n".join(lines))
        payload["ccnet_claim"] = lines
    save(complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
