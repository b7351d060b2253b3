"""Fused Triton kernels for 3D criss-cross attention (forward and backward).

Semantics are those of :func:`vidccnet.ops.reference.cca_reference`: for a position
p = (t, h, w) the keys are its row ``(t, h, :)`` (centre included), its column ``(t, :, w)`` and
its time line ``(:, h, w)`` (centre excluded from both), ``T + H + W - 2`` keys, one softmax of
``scale * <q_p, k_j>`` over all of them.

Layout
------
The kernels work on **channels-last** tensors ``(B, T, H, W, C)``: every position's channels are
one contiguous row (``Cqk * b`` or ``Cv * b`` bytes), so every tile a program loads or stores is a
set of whole rows, whatever the axis it walks along (the channel-major layout made the column
pass pull one 32-byte sector per 2-byte element). :func:`cca_forward` and :func:`cca_backward`
take and return ``(B, C, T, H, W)`` tensors; inputs whose storage is already channels-last (a
``permute`` of a contiguous ``(B, T, H, W, C)`` tensor) are used without a copy, others are
copied once, and the outputs are ``(B, C, T, H, W)`` tensors in ``torch.channels_last_3d``.

Passes
------
A *line* is the set of positions along one axis with the other coordinates fixed. One program
owns one whole line (``L <= 256`` positions, one ``BLOCK_L`` tile: ``tl.dot`` over the line's
queries and keys), computes ``P`` once and loops over ``Cv`` inside. There are two kinds of line
program (the forward's math is written once, in the device function ``_fwd_line``):

============  =====================  ======  ==================================================
pass          programs               L       work
============  =====================  ======  ==================================================
column        B * T * W lines        H       keys of the column (centre excluded)
row           B * T * H lines        W       keys of the row (centre included) + the time line
                                             of every query, elementwise over the rows (t', h)
============  =====================  ======  ==================================================

The time keys of query ``(t, h, w)`` are ``(t', h, w)``: the same ``w`` in the rows ``(t', h)``,
so the row program handles them with coalesced row loads and ``T (Cqk + Cv)`` CUDA-core FMAs per
position (no launch over ``B * H * W`` lines of length ``T``). The row launch numbers its
lines ``(b, h, t)``, frames fastest: the ``T`` programs of a row ``(b, h)`` run side by side and
each reads the others' rows as its time lines, so that a row can come from DRAM once and then
from L2. Frame-major order (before 2026-12-04) read them T times over: on an H200 (Nsight Compute,
CamVid shape, fp16) its row backward hit L2 for 21 % of its requests and took 66 % of a
forward + backward; in a model of the launches (``results/l2_order/``: the kernels' own loads,
recorded in the interpreter, replayed through an LRU L2 with the GPU's programs in flight) the
new order reads 4.5x less from DRAM in the row backward and 2.3x less in the row forward. Its
speed on a GPU is not measured yet.

Forward: a column program stores its pass's own softmax output (normalised within the pass, in
the input dtype, into ``out``) and its log-sum-exp (``lse``, fp32, ``-inf`` when ``H = 1``). A row
program computes the row and time energies, reads the column partial of its positions, merges the
three parts exactly (log-sum-exp), writes the global ``lse`` and
``out = P_row V_row + P_time V_time + exp(lse_col - lse) * out_col``.

By default the forward is **two launches** (``_fwd_kernel``: the column launch, then the row
launch; no counters). ``VIDCCNET_CCA_FUSED_FORWARD=1`` selects **one launch**
(``_fwd_fused_kernel``), grid ``B T (W + H)`` in
frame-major order: program ``pid`` works on frame ``f = pid // (W + H)`` (``f = b T + t``); its
first ``W`` programs are the frame's column lines, the next ``H`` its row lines. A column program,
after its stores, does ``tl.debug_barrier()`` and ``atomic_add(CNT[f], 1)`` with release
semantics; a row program computes its row and time energies, then spins on an acquire read of
``CNT[f]`` until it reaches ``W`` and reads the partial past L1 (``.cg``) -- the decoupled
look-back pattern of single-pass scans. ``CNT`` holds one int32 per frame and, last, a ticket,
zeroed by the host for every call (and by the autotuner before each timed run). A program takes
its tile id ``pid`` from the ticket (an atomic increment), not from ``tl.program_id``: every
tile below ``pid`` is held by a program that has already started, so all column programs of
frame ``f`` (lower ids than its row programs, and never waiting) are running or finished when a
row program of ``f`` waits. The wait therefore ends whatever order the GPU dispatches thread
blocks in (CUDA does not document one), at the cost of one 4-byte atomic per program.
Triton's interpreter runs programs one by one, so there the tickets
follow the program ids and the wait ends at once.

Why one launch was built: each launch reads q, k, v once from DRAM at best; in one launch the row
programs of frame ``f`` read q, k, v and the column partial that the frame's column programs have
just touched, which stay in L2 when a frame's working set fits (CamVid, 90 x 120 x (64 + 64 + 512)
fp16: ~13.8 MB of q, k, v and ~11 MB of partial, vs 50 MB of L2 on an H200). Measured on an H200
(Triton 3.6, the CamVid shape in fp16, ``scripts/bench_attention.py``, the minimum of 10
interleaved calls), two launches were faster in both runs: 1.03 ms against 1.23 ms, and 1.1
against 1.2 ms (forward + backward 4.17 against 4.48 ms), so the two-launch forward is the
default (docs/benchmarks.md). The time lines also read k and v of the clip's other frames
(T x 12.4 MB per CamVid clip), which L2 cannot all hold. The traffic meter (below), which
assumes re-reads inside a launch hit L2, counts the partial's read as distinct bytes anyway.

Backward (two launches, no atomics, deterministic): the column launch computes
``Delta = rowsum(dO * O)`` of its positions in-kernel, in a loop of its own (see the comment
there), and stores it (4 bytes per position). ``O`` is the forward's output in the input dtype
(FlashAttention's formulation; the PyTorch path does the same), and for 16-bit inputs the
kernel's ``O`` is less exact than the PyTorch path's (``P`` rounded to the input dtype before
``P V``, the column partial stored in it: forward err/tol 0.10 against 0.04 at the CamVid shape
on an H200). That ``O``, through ``Delta``, accounts for the kernel's dq error beyond the PyTorch
path's, measured in the interpreter against float64 (``results/precision_16bit/``): a float64
dq that takes ``Delta`` from the kernel's ``O`` reproduces the kernel's worst dq error to 4
digits (bf16, Cv 96: 0.120; from the exact ``O``: 0.061, the PyTorch path's error; fp16, Cv
2048: 0.047 and 0.016, the PyTorch path 0.038). Then each program recomputes ``P`` from ``lse``
once, ``dP = dO V^T`` over Cv chunks, ``dS``, and writes ``dq = scale dS K``,
``dk = scale dS^T Q``, ``dv = P^T dO`` of its own line. The row launch
does the same for the row and adds the time lines elementwise (the row's positions as queries of
the keys ``(t', h, w)`` for dq, and as keys of the queries ``(t', h, w)`` for dk, dv), reads the
column partials and stores the sums. Every element is written by one program per launch in a
fixed order (column, then row + time). Partials are kept in the input dtype (one extra rounding
for half precision), except the dq, dk partials of bf16 inputs, kept in fp32 buffers (``4 Cqk``
bytes each per position). ``dS`` enters its two dots in fp16 for fp16 inputs, in fp32 for fp32
inputs, and for bf16 inputs as two bf16 terms, ``dS = hi + lo`` (16 significant bits, two bf16
dots each). In the interpreter the split's worst dq, dk errors equal those of an fp32 ``dS``
within 1 %, while the hi term alone (a single bf16 ``dS``) gives up to 16 % more on dk
(``test_bf16_split_ds_is_as_exact_as_an_fp32_ds``); and fp32 ``dS`` tiles of 256-wide lines
need 327680 bytes of shared memory per block on sm_90 (163840 split, with one pipelining
stage), more than an H100 has. Note that Triton 3.8's interpreter
converts float32 to bf16 by truncation, not to nearest as a GPU does (twice the error): the
saved ``out`` that ``Delta`` uses comes out 3x less exact than one rounding, and dq misses its
bound by up to 38 % on small shapes (0.088 where 0.063 is allowed). The test suite gives the
interpreter a GPU's rounding, and then every bf16 case passes; the GPU tests run the same
shapes compiled. Only the
requested gradients are computed (``need``), e.g. ``dv`` alone skips ``dP`` entirely.

Memory traffic is measured, not estimated: ``scripts/kernel_traffic.py`` runs these kernels in
Triton's interpreter with every load, store and atomic instrumented (see ``docs/benchmarks.md``).

GPU validity: every ``tl.dot`` has M, N, K >= 16 (``BLOCK_L`` and ``BLOCK_V`` >= 16, channels
padded to a power of two >= 16 by masked loads); fp32 dots use ``input_precision="ieee"`` (no
TF32). Offsets inside a batch item are int32 (the host checks ``T H W C < 2**31``); the batch
offset is int64. On CUDA ``BLOCK_V`` and ``num_warps`` are autotuned over a small Hopper set
(:data:`GPU_CONFIGS`, with ``num_stages``; ``VIDCCNET_CCA_AUTOTUNE=0`` picks ``GPU_CONFIGS[1]``
without tuning, e.g. for tests); the interpreter (which cannot autotune) uses :data:`CPU_CONFIG`.
The autotuner skips configs whose shared memory exceeds the GPU's; :func:`shared_memory_shortfall`
tells, before a launch, whether any config fits (the backend ``auto`` uses the reference path
otherwise).

The kernels and their device function are plain Python functions wrapped by ``triton.jit``
lazily, on first use, for the current value of ``TRITON_INTERPRET`` (Triton fixes
interpreted-vs-compiled at decoration time), so importing this module never needs Triton or a GPU
(:func:`jit_functions`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import types
from typing import Any

import torch
from torch import Tensor

from .reference import _check_inputs as check_common

try:  # Triton is optional: the reference backend covers machines without it.
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = ""
except Exception as exc:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    _TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

logger = logging.getLogger(__name__)

__all__ = [
    "backward_floor_bytes",
    "bandwidth_floor_bytes",
    "cca_backward",
    "cca_forward",
    "supports",
    "triton_available",
]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_CQK = 256
MAX_LINE = 256  # H and W: one line is one tile
# (BLOCK_V, num_warps, num_stages): autotuned on CUDA; the interpreter runs the single
# CPU_CONFIG (BLOCK_V, num_warps). Triton pipelines the Cv loops' loads over num_stages shared
# memory buffers: the last config (no pipelining) is the one whose backward fits an H100 block
# at 256-wide 16-bit lines (163840 bytes; 245760-262144 with 3 stages; docs/benchmarks.md).
GPU_CONFIGS = ((64, 4, 3), (64, 8, 3), (128, 8, 3), (64, 8, 1))
CPU_CONFIG = (64, 4)
# --------------------------------------------------------------------------------------------
# Kernels (plain functions; see _kernels() for the lazy triton.jit wrapping).
# --------------------------------------------------------------------------------------------


def _fwd_line(
    Q, K, V, OUT, LSE, CNT, scale, pos0, t, f, L, STRIDE, HW, T, CQK, CV, NWAIT,
    LAST: tl.constexpr, SYNC: tl.constexpr, BLOCK_L: tl.constexpr, CQK_PAD: tl.constexpr,
    BLOCK_V: tl.constexpr, T_PAD: tl.constexpr, DOT_TY: tl.constexpr,
):  # fmt: skip
    # One line: its L <= BLOCK_L positions (``STRIDE`` apart from position ``pos0``, int64, of
    # frame ``t``) as queries and keys. LAST=False: the column pass; LAST=True: the row pass with
    # the time lines, merged with the column partial. SYNC (row pass of the fused kernel): wait
    # until the counter CNT[f] reaches NWAIT (the frame's column programs have all stored)
    # before reading the column partial.
    qb, kb, vb, ob = Q + pos0 * CQK, K + pos0 * CQK, V + pos0 * CV, OUT + pos0 * CV
    lb = LSE + pos0
    offs = tl.arange(0, BLOCK_L)
    mask = offs < L
    rel = offs * STRIDE  # int32 position offsets inside the line
    offs_c = tl.arange(0, CQK_PAD)
    mask_qk = mask[:, None] & (offs_c < CQK)[None, :]

    q = tl.load(qb + rel[:, None] * CQK + offs_c[None, :], mask=mask_qk, other=0.0)  # (BL, CP)
    k = tl.load(kb + rel[:, None] * CQK + offs_c[None, :], mask=mask_qk, other=0.0)  # (BL, CP)
    s = tl.dot(q.to(DOT_TY), tl.trans(k.to(DOT_TY)), input_precision="ieee") * scale  # (BL, BL)
    valid = mask[:, None] & mask[None, :]
    if not LAST:  # column pass: centre excluded (the row pass holds it)
        valid = valid & (offs[:, None] != offs[None, :])
    s = tl.where(valid, s, float("-inf"))
    m = tl.max(s, 1)  # (BL,)
    if LAST:
        # Row program (line (b, t, h)): the time line of each query (t', h, w), t' != t, as
        # elementwise products with the rows (t', h) (contiguous loads), kept as (BL, T_PAD).
        offs_t = tl.arange(0, T_PAD)
        qf = q.to(tl.float32)
        st = tl.full([BLOCK_L, T_PAD], float("-inf"), tl.float32)
        for tp in range(0, T):
            keep = mask & (tp != t)
            rt = (tp - t) * HW + rel
            kt = tl.load(
                kb + rt[:, None] * CQK + offs_c[None, :],
                mask=keep[:, None] & (offs_c < CQK)[None, :],
                other=0.0,
            )
            s1 = tl.where(keep, tl.sum(qf * kt.to(tl.float32), 1) * scale, float("-inf"))
            st = tl.where(offs_t[None, :] == tp, s1[:, None], st)
        if SYNC:
            # Decoupled look-back: the frame's column programs signal CNT[f] after their stores
            # (release); acquire it before reading their partial, then read it past L1 (.cg).
            done = tl.atomic_add(CNT + f, 0, sem="acquire")
            while done < NWAIT:
                done = tl.atomic_add(CNT + f, 0, sem="acquire")
        # column pass lse (-inf when H = 1)
        prev = tl.load(lb + rel, mask=mask, other=0.0, cache_modifier=".cg")
        m = tl.maximum(tl.maximum(m, tl.max(st, 1)), prev)  # finite: the row holds the centre
        m = tl.where(mask, m, 0.0)
        total = (
            tl.sum(tl.exp(s - m[:, None]), 1)
            + tl.sum(tl.exp(st - m[:, None]), 1)
            + tl.exp(prev - m)
        )
        lse = m + tl.log(total)
        pt = tl.exp(st - lse[:, None])  # (BL, T_PAD) time probabilities
        w_prev = tl.exp(prev - lse)  # weight of the column partial
    else:
        m_ref = tl.where(m == float("-inf"), 0.0, m)  # a line of length 1 has no key
        total = tl.sum(tl.exp(s - m_ref[:, None]), 1)
        has_keys = total > 0.0
        lse = tl.where(has_keys, m_ref + tl.log(tl.maximum(total, 1e-30)), float("-inf"))
        lse_ref = tl.where(has_keys, lse, 0.0)
    if LAST:
        p = tl.exp(s - lse[:, None])
    else:
        p = tl.exp(s - lse_ref[:, None])  # normalised within the pass
    p = p.to(V.dtype.element_ty).to(DOT_TY)
    tl.store(lb + rel, lse, mask=mask)

    for c0 in range(0, CV, BLOCK_V):
        offs_v = c0 + tl.arange(0, BLOCK_V)
        mask_v = mask[:, None] & (offs_v < CV)[None, :]
        vv = tl.load(vb + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0)
        acc = tl.dot(p, vv.to(DOT_TY), input_precision="ieee")  # (BL, BV) fp32
        if LAST:
            for tp in range(0, T):
                keep = mask & (tp != t)
                rt = (tp - t) * HW + rel
                vt = tl.load(
                    vb + rt[:, None] * CV + offs_v[None, :],
                    mask=keep[:, None] & (offs_v < CV)[None, :],
                    other=0.0,
                )
                p1 = tl.sum(tl.where(offs_t[None, :] == tp, pt, 0.0), 1)
                acc += p1[:, None] * vt.to(tl.float32)
            o_prev = tl.load(
                ob + rel[:, None] * CV + offs_v[None, :],
                mask=mask_v,
                other=0.0,
                cache_modifier=".cg",
            )
            acc += w_prev[:, None] * o_prev.to(tl.float32)
        tl.store(
            ob + rel[:, None] * CV + offs_v[None, :], acc.to(OUT.dtype.element_ty), mask=mask_v
        )


def _fwd_kernel(
    Q, K, V, OUT, LSE, scale, L, D1, D2, S1, S2, STRIDE, NPB, HW, T, CQK, CV,
    LAST: tl.constexpr, BLOCK_L: tl.constexpr, CQK_PAD: tl.constexpr, BLOCK_V: tl.constexpr,
    T_PAD: tl.constexpr, DOT_TY: tl.constexpr,
):  # fmt: skip
    # Two-launch forward (the default): one program = one line of one pass (LAST: row pass).
    line = tl.program_id(0)
    i2 = line % D2
    rest = line // D2
    i1 = rest % D1
    rel0 = i1 * S1 + i2 * S2  # first position of the line in its batch item, frame rel0 // HW
    pos0 = (rest // D1).to(tl.int64) * NPB + rel0
    _fwd_line(
        Q, K, V, OUT, LSE, LSE, scale, pos0, rel0 // HW, 0, L, STRIDE, HW, T, CQK, CV, 0,
        LAST=LAST, SYNC=False, BLOCK_L=BLOCK_L, CQK_PAD=CQK_PAD, BLOCK_V=BLOCK_V, T_PAD=T_PAD,
        DOT_TY=DOT_TY,
    )  # fmt: skip


def _fwd_fused_kernel(
    Q, K, V, OUT, LSE, CNT, scale, H, W, NPB, HW, T, CQK, CV,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, CQK_PAD: tl.constexpr, BLOCK_V: tl.constexpr,
    T_PAD: tl.constexpr, DOT_TY: tl.constexpr,
):  # fmt: skip
    # One-launch forward, frame-major: tile pid -> frame f = (b, t) = pid // (W + H); the
    # first W tiles of a frame are its column lines, the next H its row lines (+ time lines).
    # Tiles are numbered by a ticket (CNT's last entry), not by program_id: the tiles below
    # pid belong to programs that have started, so the column programs a row program waits
    # for are running or done, whatever order the GPU dispatches blocks in.
    pid = tl.atomic_add(CNT + tl.num_programs(0) // (W + H), 1, sem="relaxed")
    f = pid // (W + H)
    j = pid - f * (W + H)
    t = f % T
    base = (f // T).to(tl.int64) * NPB + t * HW  # first position of the frame
    if j < W:  # column line (b, t, w = j): H positions, W apart
        _fwd_line(
            Q, K, V, OUT, LSE, CNT, scale, base + j, t, f, H, W, HW, T, CQK, CV, 0,
            LAST=False, SYNC=False, BLOCK_L=BLOCK_H, CQK_PAD=CQK_PAD, BLOCK_V=BLOCK_V,
            T_PAD=T_PAD, DOT_TY=DOT_TY,
        )  # fmt: skip
        tl.debug_barrier()  # every thread's stores of out / lse issued before the signal
        tl.atomic_add(CNT + f, 1, sem="release")
    else:  # row line (b, t, h = j - W): W contiguous positions, after the frame's W columns
        _fwd_line(
            Q, K, V, OUT, LSE, CNT, scale, base + (j - W) * W, t, f, W, 1, HW, T, CQK, CV, W,
            LAST=True, SYNC=True, BLOCK_L=BLOCK_W, CQK_PAD=CQK_PAD, BLOCK_V=BLOCK_V,
            T_PAD=T_PAD, DOT_TY=DOT_TY,
        )  # fmt: skip


def _bwd_kernel(
    Q, K, V, OUT, DO, LSE, DELTA, DQP, DKP, DQ, DK, DV, scale, L, D1, D2, S1, S2, STRIDE, NPB,
    HW, T, CQK, CV,
    LAST: tl.constexpr, NEED_DQ: tl.constexpr, NEED_DK: tl.constexpr, NEED_DV: tl.constexpr,
    NEED_DS: tl.constexpr, BLOCK_L: tl.constexpr, CQK_PAD: tl.constexpr, BLOCK_V: tl.constexpr,
    T_PAD: tl.constexpr, DOT_TY: tl.constexpr, DS_SPLIT: tl.constexpr,
):  # fmt: skip
    line = tl.program_id(0)
    i2 = line % D2
    rest = line // D2
    i1 = rest % D1
    rel0 = i1 * S1 + i2 * S2
    pos0 = (rest // D1).to(tl.int64) * NPB + rel0
    qb, kb, vb = Q + pos0 * CQK, K + pos0 * CQK, V + pos0 * CV
    dob, lb, db = DO + pos0 * CV, LSE + pos0, DELTA + pos0
    offs = tl.arange(0, BLOCK_L)
    mask = offs < L
    rel = offs * STRIDE
    offs_c = tl.arange(0, CQK_PAD)
    mask_c = offs_c < CQK
    mask_qk = mask[:, None] & mask_c[None, :]

    q = tl.load(qb + rel[:, None] * CQK + offs_c[None, :], mask=mask_qk, other=0.0)  # (BL, CP)
    k = tl.load(kb + rel[:, None] * CQK + offs_c[None, :], mask=mask_qk, other=0.0)
    lse = tl.load(lb + rel, mask=mask, other=0.0)  # (BL,) global log-sum-exp
    s = tl.dot(q.to(DOT_TY), tl.trans(k.to(DOT_TY)), input_precision="ieee") * scale
    valid = mask[:, None] & mask[None, :]
    if not LAST:
        valid = valid & (offs[:, None] != offs[None, :])
    p = tl.exp(tl.where(valid, s - lse[:, None], float("-inf")))  # (BL, BL) global softmax

    dq = tl.zeros([BLOCK_L, CQK_PAD], tl.float32)
    dk = tl.zeros([BLOCK_L, CQK_PAD], tl.float32)
    if NEED_DS:
        # dP = dO V^T over Cv; Delta = rowsum(dO * O): computed by the first (column) pass,
        # stored for the second.
        dp = tl.zeros([BLOCK_L, BLOCK_L], tl.float32)
        for c0 in range(0, CV, BLOCK_V):
            offs_v = c0 + tl.arange(0, BLOCK_V)
            mask_v = mask[:, None] & (offs_v < CV)[None, :]
            do = tl.load(dob + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0)
            vv = tl.load(vb + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0)
            dp += tl.dot(do.to(DOT_TY), tl.trans(vv.to(DOT_TY)), input_precision="ieee")
        if LAST:
            delta = tl.load(db + rel, mask=mask, other=0.0)
        else:
            # Delta in a loop of its own, not in the dP loop: there, dO was a pipelined wgmma
            # operand used elementwise too, and Triton 3.6 on an H200 (sm_90, num_stages >= 2,
            # 128-wide lines) gave wrong, run-to-run different Delta, hence dq and dk (dv
            # exact); num_stages = 1, or no wgmma, or this loop fixed it (docs/benchmarks.md).
            delta = tl.zeros([BLOCK_L], tl.float32)
            for c0 in range(0, CV, BLOCK_V):
                offs_v = c0 + tl.arange(0, BLOCK_V)
                mask_v = mask[:, None] & (offs_v < CV)[None, :]
                do = tl.load(dob + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0)
                o = tl.load(
                    OUT + pos0 * CV + rel[:, None] * CV + offs_v[None, :], mask=mask_v, other=0.0
                )
                delta += tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
            tl.store(db + rel, delta, mask=mask)
        # dS feeds two dots in the dot type. For bf16 (DS_SPLIT) one bf16 dS (8 significant
        # bits) loses accuracy and fp32 dS tiles of a 256-wide line exceed an H100 block's
        # shared memory: dS is split into bf16 hi + lo (16 significant bits), each dotted with
        # the bf16 K or Q.
        ds = p * (dp - delta[:, None])  # (BL, BL) fp32
        if DS_SPLIT:
            ds_hi = ds.to(tl.bfloat16)
            ds_lo = (ds - ds_hi.to(tl.float32)).to(tl.bfloat16).to(DOT_TY)
            ds_hi = ds_hi.to(DOT_TY)
        else:
            ds_hi = ds.to(DOT_TY)
        if NEED_DQ:
            dq = tl.dot(ds_hi, k.to(DOT_TY), input_precision="ieee")
            if DS_SPLIT:
                dq = tl.dot(ds_lo, k.to(DOT_TY), dq, input_precision="ieee")
        if NEED_DK:
            dk = tl.dot(tl.trans(ds_hi), q.to(DOT_TY), input_precision="ieee")
            if DS_SPLIT:
                dk = tl.dot(tl.trans(ds_lo), q.to(DOT_TY), dk, input_precision="ieee")
    if LAST:
        # Time lines, elementwise over the rows (t', h): the row's positions as queries of the
        # keys (t', h, w) (dq) and as keys of the queries (t', h, w) (dk, dv).
        t = rel0 // HW
        offs_t = tl.arange(0, T_PAD)
        qf = q.to(tl.float32)
        kf = k.to(tl.float32)
        pk_all = tl.zeros([BLOCK_L, T_PAD], tl.float32)
        for tp in range(0, T):
            keep = mask & (tp != t)
            rt = (tp - t) * HW + rel
            keep_qk = keep[:, None] & mask_c[None, :]
            qt = tl.load(qb + rt[:, None] * CQK + offs_c[None, :], mask=keep_qk, other=0.0)
            lse_t = tl.load(lb + rt, mask=keep, other=0.0)
            pk = tl.exp(
                tl.where(keep, tl.sum(qt.to(tl.float32) * kf, 1) * scale - lse_t, float("-inf"))
            )  # query (t', h, w), key of this row
            pk_all = tl.where(offs_t[None, :] == tp, pk[:, None], pk_all)
            if NEED_DS:
                kt = tl.load(kb + rt[:, None] * CQK + offs_c[None, :], mask=keep_qk, other=0.0)
                pq = tl.exp(
                    tl.where(keep, tl.sum(qf * kt.to(tl.float32), 1) * scale - lse, float("-inf"))
                )  # query of this row, key (t', h, w)
                dpq = tl.zeros([BLOCK_L], tl.float32)
                dpk = tl.zeros([BLOCK_L], tl.float32)
                for c0 in range(0, CV, BLOCK_V):
                    offs_v = c0 + tl.arange(0, BLOCK_V)
                    mv = (offs_v < CV)[None, :]
                    do = tl.load(
                        dob + rel[:, None] * CV + offs_v[None, :],
                        mask=mask[:, None] & mv,
                        other=0.0,
                    ).to(tl.float32)
                    vv = tl.load(
                        vb + rel[:, None] * CV + offs_v[None, :], mask=mask[:, None] & mv, other=0.0
                    ).to(tl.float32)
                    dot_ = tl.load(
                        dob + rt[:, None] * CV + offs_v[None, :], mask=keep[:, None] & mv, other=0.0
                    ).to(tl.float32)
                    vt = tl.load(
                        vb + rt[:, None] * CV + offs_v[None, :], mask=keep[:, None] & mv, other=0.0
                    ).to(tl.float32)
                    dpq += tl.sum(do * vt, 1)
                    dpk += tl.sum(dot_ * vv, 1)
                delta_t = tl.load(db + rt, mask=keep, other=0.0)
                dsq = pq * (dpq - delta)
                dsk = pk * (dpk - delta_t)
                dq += dsq[:, None] * kt.to(tl.float32)
                dk += dsk[:, None] * qt.to(tl.float32)

    qk_off = rel[:, None] * CQK + offs_c[None, :]
    # dq, dk: the column launch stores its partials in DQP, DKP (DQ, DK themselves, or fp32
    # buffers for bf16); the row launch adds them and stores the sums in DQ, DK.
    if NEED_DQ:
        dq = dq * scale
        if LAST:
            dq += tl.load(DQP + pos0 * CQK + qk_off, mask=mask_qk, other=0.0).to(tl.float32)
            tl.store(DQ + pos0 * CQK + qk_off, dq.to(DQ.dtype.element_ty), mask=mask_qk)
        else:
            tl.store(DQP + pos0 * CQK + qk_off, dq.to(DQP.dtype.element_ty), mask=mask_qk)
    if NEED_DK:
        dk = dk * scale
        if LAST:
            dk += tl.load(DKP + pos0 * CQK + qk_off, mask=mask_qk, other=0.0).to(tl.float32)
            tl.store(DK + pos0 * CQK + qk_off, dk.to(DK.dtype.element_ty), mask=mask_qk)
        else:
            tl.store(DKP + pos0 * CQK + qk_off, dk.to(DKP.dtype.element_ty), mask=mask_qk)
    if NEED_DV:
        pt16 = tl.trans(p).to(DO.dtype.element_ty).to(DOT_TY)  # (keys, queries)
        for c0 in range(0, CV, BLOCK_V):
            offs_v = c0 + tl.arange(0, BLOCK_V)
            mask_v = mask[:, None] & (offs_v < CV)[None, :]
            v_off = rel[:, None] * CV + offs_v[None, :]
            do = tl.load(dob + v_off, mask=mask_v, other=0.0)
            dv = tl.dot(pt16, do.to(DOT_TY), input_precision="ieee")  # (BL, BV)
            if LAST:
                for tp in range(0, T):
                    keep = mask & (tp != t)
                    rt = (tp - t) * HW + rel
                    dot_ = tl.load(
                        dob + rt[:, None] * CV + offs_v[None, :],
                        mask=keep[:, None] & (offs_v < CV)[None, :],
                        other=0.0,
                    )
                    p1 = tl.sum(tl.where(offs_t[None, :] == tp, pk_all, 0.0), 1)
                    dv += p1[:, None] * dot_.to(tl.float32)
                dv += tl.load(DV + pos0 * CV + v_off, mask=mask_v, other=0.0).to(tl.float32)
            tl.store(DV + pos0 * CV + v_off, dv.to(DV.dtype.element_ty), mask=mask_v)


_HELPER_FNS = (_fwd_line,)  # device functions called by the kernels
_KERNEL_FNS = (_fwd_kernel, _fwd_fused_kernel, _bwd_kernel)
_JIT_CACHE: dict[tuple[bool, bool], dict[str, Any]] = {}
AUTOTUNE_ENV = "VIDCCNET_CCA_AUTOTUNE"  # off: one config (GPU_CONFIGS[1]) on CUDA, no tuning
FUSED_FORWARD_ENV = "VIDCCNET_CCA_FUSED_FORWARD"  # on: the one-launch forward


def _env_switch(name: str, default: bool) -> bool:
    """The on / off environment variable ``name``: 1, true, on, yes or 0, false, off, no (any
    case); unset or empty: ``default``; anything else is refused (ValueError)."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"${name}={os.environ[name]!r} is not a switch; set it to 1 or 0 "
                     "(or unset it)")


def fused_forward_enabled() -> bool:
    """Whether :func:`cca_forward` uses the one-launch kernel (``$VIDCCNET_CCA_FUSED_FORWARD``
    on) rather than the two-launch default (faster on an H200, see the module docstring)."""
    return _env_switch(FUSED_FORWARD_ENV, False)


def jit_functions() -> dict[str, Any]:
    """The kernels and their device functions wrapped by ``triton.jit`` for the current
    ``TRITON_INTERPRET`` setting, not autotuned (e.g. to compile them ahead of time).

    Each function gets its own copy of this module's globals in which the names of
    :data:`_HELPER_FNS` are the jitted helpers: a kernel calls ``_fwd_line`` and Triton (the
    compiler and the interpreter alike) needs that name to resolve to a jitted function, while
    the module itself keeps plain functions (importing it needs no Triton mode decided).
    """
    scope = dict(globals())
    jitted: dict[str, Any] = {}
    for fn in (*_HELPER_FNS, *_KERNEL_FNS):
        rebound = types.FunctionType(
            fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__
        )
        rebound.__qualname__, rebound.__module__ = fn.__qualname__, fn.__module__
        rebound.__annotations__ = dict(fn.__annotations__)  # tl.constexpr marks
        jitted[fn.__name__] = triton.jit(rebound)
        if fn in _HELPER_FNS:
            scope[fn.__name__] = jitted[fn.__name__]
    return jitted


def _interpret_enabled() -> bool:
    """Whether Triton would run kernels in its CPU interpreter (``TRITON_INTERPRET``)."""
    if triton is not None:
        try:
            return bool(triton.knobs.runtime.interpret)
        except AttributeError:  # older Triton without knobs
            pass
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _stdlib_mode_matches(interpret: bool) -> bool:
    """Whether Triton's own jitted library (``tl.zeros``, ``tl.max``, ...) matches ``interpret``.

    Triton decorates its library when it is first imported, so ``TRITON_INTERPRET`` only takes
    full effect if it is set before ``import triton``.
    """
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - layout of other Triton versions
        return True
    return isinstance(tl.zeros, InterpretedFunction) == interpret


def _autotune_enabled() -> bool:
    """Whether the kernels are autotuned: compiled (not interpreted) and
    ``$VIDCCNET_CCA_AUTOTUNE`` not switched off."""
    return not _interpret_enabled() and _env_switch(AUTOTUNE_ENV, True)


def _kernels() -> dict[str, Any]:
    """The kernels for the current interpreter setting (cached): jitted, autotuned on a GPU
    unless ``$VIDCCNET_CCA_AUTOTUNE`` is ``0``."""
    interpret = _interpret_enabled()
    autotune = _autotune_enabled()
    kernels = _JIT_CACHE.get((interpret, autotune))
    if kernels is None:
        kernels = jit_functions()
        if autotune:
            configs = [triton.Config({"BLOCK_V": bv}, num_warps=w, num_stages=st)
                       for bv, w, st in GPU_CONFIGS]
            kernels["_fwd_kernel"] = triton.autotune(
                configs,
                key=["L", "T", "CQK", "CV", "LAST"],
                restore_value=["OUT", "LSE"],
            )(kernels["_fwd_kernel"])
            # CNT (the per-frame column counters) restarts at zero for every timed run.
            kernels["_fwd_fused_kernel"] = triton.autotune(
                configs,
                key=["H", "W", "T", "CQK", "CV"],
                reset_to_zero=["CNT"],
                restore_value=["OUT", "LSE"],
            )(kernels["_fwd_fused_kernel"])
            kernels["_bwd_kernel"] = triton.autotune(
                configs,
                key=["L", "T", "CQK", "CV", "LAST", "NEED_DQ", "NEED_DK", "NEED_DV"],
                restore_value=["DQ", "DK", "DV"],
            )(kernels["_bwd_kernel"])
        _JIT_CACHE[(interpret, autotune)] = kernels
    return kernels


# --------------------------------------------------------------------------------------------
# Python side: checks, launch geometry, launchers.
# --------------------------------------------------------------------------------------------


def triton_available(device: torch.device | str) -> tuple[bool, str]:
    """Whether the Triton kernels can run on ``device``.

    Returns ``(True, "")`` or ``(False, reason)``. CUDA devices need Triton and a GPU of compute
    capability >= 7.5; CPU tensors need ``TRITON_INTERPRET=1`` (Triton's interpreter, slow, meant
    for tests).
    """
    if triton is None:
        return False, f"triton is not importable ({_TRITON_IMPORT_ERROR}); install triton"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available in this PyTorch build or on this machine"
        if _interpret_enabled() or not _stdlib_mode_matches(False):
            return False, (
                "TRITON_INTERPRET is (or was, when triton was imported) set: Triton "
                "runs in its CPU interpreter; unset it to use the GPU kernels"
            )
        index = device.index if device.index is not None else torch.cuda.current_device()
        cap = torch.cuda.get_device_capability(index)
        if cap < (7, 5):
            return False, f"GPU compute capability {cap} < (7, 5) is not supported by Triton"
        return True, ""
    if device.type == "cpu":
        if _interpret_enabled():
            if not _stdlib_mode_matches(True):
                return False, (
                    "TRITON_INTERPRET=1 was set after triton was imported; set it "
                    "before the first 'import triton' (e.g. in the environment)"
                )
            return _interpreter_numpy_check()
        return False, (
            "CPU tensors need TRITON_INTERPRET=1 (Triton's slow CPU interpreter, for tests); "
            "use the reference backend on CPU"
        )
    return False, f"device type {device.type!r} is not supported by the Triton kernels"


def _version(text: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", text).groups()
    return int(major), int(minor)


def _interpreter_numpy_check() -> tuple[bool, str]:
    """Triton < 3.7's interpreter takes ``int()`` of 1-element arrays (a kernel's runtime loop
    bounds), which NumPy >= 2.4 refuses: every kernel would fail with a TypeError."""
    import numpy

    if _version(triton.__version__) < (3, 7) and _version(numpy.__version__) >= (2, 4):
        return False, (
            f"Triton {triton.__version__}'s interpreter cannot run under NumPy "
            f"{numpy.__version__}; install numpy<2.4 or triton>=3.7"
        )
    return True, ""


def bandwidth_floor_bytes(
    B: int, Cqk: int, Cv: int, T: int, H: int, W: int, dtype_bytes: int
) -> int:
    """Bytes the forward must move at least: read q, k, v, write out and the fp32 lse.

    ``B * T * H * W * ((2 * Cqk + 2 * Cv) * dtype_bytes + 4)``.
    """
    return B * T * H * W * ((2 * Cqk + 2 * Cv) * dtype_bytes + 4)


def backward_floor_bytes(
    B: int, Cqk: int, Cv: int, T: int, H: int, W: int, dtype_bytes: int
) -> int:
    """Bytes the backward must move at least: read q, k, v, out, dO, lse, write dq, dk, dv.

    ``B * T * H * W * ((4 * Cqk + 4 * Cv) * dtype_bytes + 4)``.
    """
    return B * T * H * W * ((4 * Cqk + 4 * Cv) * dtype_bytes + 4)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _passes(T: int, H: int, W: int) -> list[tuple[int, int, int, int, int, int]]:
    """The two launches in their fixed order: column, then row (time lines fused in).

    Each is ``(L, D1, D2, S1, S2, stride)``: line ``(b, i1, i2)`` (``i2`` fastest, ``D1 x D2``
    lines per batch item) starts at position ``i1 * S1 + i2 * S2`` of its batch item (its frame:
    that position // ``H W``); its ``L`` positions are ``stride`` apart. Columns ``(b, t, w)``;
    rows ``(b, h, t)``, frames fastest: the T programs of a row ``(b, h)`` run side by side and
    read each other's rows as their time lines, from L2 after the first.
    """
    hw = H * W
    return [(H, T, W, hw, 1, W), (W, H, T, W, hw, 1)]


def _item_elements(T: int, H: int, W: int, cqk: int, cv: int) -> int:
    """Elements of a batch item's widest tensor: the kernels' int32 offsets must hold them."""
    return T * H * W * max(cqk, cv)


def supports(dtype: torch.dtype, head_dim: int, H: int | None = None, W: int | None = None,
             T: int | None = None, v_channels: int | None = None) -> bool:
    """Whether the kernels take inputs of this dtype, query/key width Cqk, frame size and (when
    T and the value width Cv are given) clip size: T * H * W * C < 2**31 (int32 offsets)."""
    lines_ok = H is None or W is None or max(H, W) <= MAX_LINE
    size_ok = None in (H, W, T, v_channels) or _item_elements(T, H, W, head_dim, v_channels) < 2**31
    return dtype in _SUPPORTED_DTYPES and head_dim <= MAX_CQK and lines_ok and size_ok


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """The checks of every backend (`reference._check_inputs`), then the kernels' own limits."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if isinstance(x, Tensor) and x.dim() != 5:
            raise ValueError(f"{name} must be 5-D (B, C, T, H, W), got shape {tuple(x.shape)}")
    check_common(q, k, v)
    if q.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"dtype {q.dtype}: the Triton kernels take float32, float16 or bfloat16")
    _, cqk, T, H, W = q.shape
    if cqk > MAX_CQK:
        raise ValueError(
            f"Cqk = {cqk} > {MAX_CQK} is not supported by the Triton "
            "kernels; use the reference backend"
        )
    if max(H, W) > MAX_LINE:
        raise ValueError(
            f"H = {H}, W = {W}: lines longer than {MAX_LINE} are not supported by "
            "the Triton kernels; use the reference backend"
        )
    elements = _item_elements(T, H, W, cqk, v.shape[1])
    if elements >= 2**31:
        raise ValueError(
            f"T * H * W * C = {elements} >= 2**31 elements per batch item: too large for the "
            "kernels' int32 offsets"
        )
    ok, reason = triton_available(q.device)
    if not ok:
        raise RuntimeError(f"Triton criss-cross attention cannot run on {q.device}: {reason}")


def _cl(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> contiguous (B, T, H, W, C); no copy if the storage already is."""
    return x.permute(0, 2, 3, 4, 1).contiguous()


def _empty_cl(like: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """A new (B, C, T, H, W) tensor shaped as ``like`` in channels-last-3d storage (a tensor of
    its own, not a view: in-place ops on the op's outputs are allowed), and its (B, T, H, W, C)
    contiguous view for the kernels to write."""
    x = torch.empty(like.shape, dtype=dtype or like.dtype, device=like.device,
                    memory_format=torch.channels_last_3d)
    return x, x.permute(0, 2, 3, 4, 1)


def _dot_type(dtype: torch.dtype) -> Any:
    """Operand type of the kernels' ``tl.dot``: the input dtype, except bfloat16 in the
    interpreter, whose ``dot`` multiplies bf16 bit patterns as integers (Triton 3.x): there the
    operands are widened to fp32, which gives the same exact products as a bf16 MMA."""
    if dtype == torch.bfloat16 and _interpret_enabled():
        return tl.float32
    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[
        dtype
    ]


def _ds_split(dtype: torch.dtype) -> bool:
    """Whether dS enters the backward's dots (dq = dS K, dk = dS^T Q) as two bf16 terms."""
    return dtype == torch.bfloat16


def _block(n: int) -> int:
    """Tile size for ``n`` lanes: a power of two >= 16 (``tl.dot`` needs M, N, K >= 16)."""
    return max(16, _next_pow2(n))


def _tile_consts(cqk: int, T: int, dtype: torch.dtype) -> dict[str, Any]:
    """The constexprs every kernel takes besides its line tiles and ``BLOCK_V``."""
    return dict(CQK_PAD=_block(cqk), T_PAD=max(2, _next_pow2(T)), DOT_TY=_dot_type(dtype))


def _line_launches(
    B: int, T: int, H: int, W: int, cqk: int, cv: int, dtype: torch.dtype
) -> list[tuple[tuple[int], tuple[int, ...], dict]]:
    """The two-launch schedule (column, then row) of ``_fwd_kernel`` / ``_bwd_kernel``.

    Each launch is ``(grid, geometry, consts)``: ``geometry`` is the kernels' positional
    ``L, D1, D2, S1, S2, STRIDE, NPB, HW, T, CQK, CV`` (see :func:`_passes`), ``consts`` their
    constexprs (``LAST`` for the row launch) without ``BLOCK_V``.
    """
    launches = []
    for i, (L, D1, D2, S1, S2, stride) in enumerate(_passes(T, H, W)):
        geometry = (L, D1, D2, S1, S2, stride, T * H * W, H * W, T, cqk, cv)
        consts = dict(_tile_consts(cqk, T, dtype), BLOCK_L=_block(L), LAST=i == 1)
        launches.append(((B * D1 * D2,), geometry, consts))
    return launches


def _tuning(kern: Any) -> dict[str, int]:
    """Launch options for kernels that are not autotuned."""
    if isinstance(kern, triton.runtime.Autotuner):
        return {}
    if _interpret_enabled():
        block_v, warps = CPU_CONFIG
        return dict(BLOCK_V=block_v, num_warps=warps)
    block_v, warps, stages = GPU_CONFIGS[1]
    return dict(BLOCK_V=block_v, num_warps=warps, num_stages=stages)


# A launch: (kernel, grid, positional args, keyword args).
Launch = tuple[Any, tuple[int], tuple, dict]


def _forward_launches(bufs: tuple, scale: float, shape: tuple[int, ...]) -> list[Launch]:
    """The forward's launches.

    ``bufs`` = ``(qc, kc, vc, out, lse, cnt)``: the channels-last (B, T, H, W, C) inputs and
    output, the (B, T, H, W) fp32 lse and the int32 counters of the fused kernel (one per frame
    and the tile ticket, zeroed); ``shape`` = ``(B, T, H, W, Cqk, Cv)``.
    """
    B, T, H, W, cqk, cv = shape
    dtype = bufs[0].dtype
    if fused_forward_enabled():
        # Grid B T (W + H), frame-major (see the module docstring).
        kern = _kernels()["_fwd_fused_kernel"]
        args = (*bufs, scale, H, W, T * H * W, H * W, T, cqk, cv)
        consts = dict(BLOCK_H=_block(H), BLOCK_W=_block(W), **_tile_consts(cqk, T, dtype))
        return [(kern, (B * T * (W + H),), args, {**consts, **_tuning(kern)})]
    kern = _kernels()["_fwd_kernel"]
    return [
        (kern, grid, (*bufs[:5], scale, *geometry), {**consts, **_tuning(kern)})
        for grid, geometry, consts in _line_launches(B, T, H, W, cqk, cv, dtype)
    ]


def _backward_launches(
    bufs: tuple, scale: float, shape: tuple[int, ...], need: tuple[bool, bool, bool]
) -> list[Launch]:
    """The backward's two launches (column, then row) for the gradients ``need``.

    ``bufs`` = ``(qc, kc, vc, oc, doc, lse, delta, dqp, dkp, dq, dk, dv)`` (see
    :func:`cca_backward`); ``shape`` = ``(B, T, H, W, Cqk, Cv)``.
    """
    need_dq, need_dk, need_dv = need
    dtype = bufs[0].dtype
    kern = _kernels()["_bwd_kernel"]
    flags = dict(NEED_DQ=need_dq, NEED_DK=need_dk, NEED_DV=need_dv, NEED_DS=need_dq or need_dk,
                 DS_SPLIT=_ds_split(dtype))
    return [
        (kern, grid, (*bufs, scale, *geometry), {**flags, **consts, **_tuning(kern)})
        for grid, geometry, consts in _line_launches(*shape, dtype)
    ]


def _launch(launches: list[Launch]) -> None:
    for kern, grid, args, kwargs in launches:
        kern[grid](*args, **kwargs)


def _stand_ins(dtype: torch.dtype, need: tuple[bool, bool, bool] | None = None) -> tuple:
    """Small CPU tensors with the dtypes of the forward's buffers (or, given ``need``, the
    backward's): all that Triton's warm-up compile reads of them is dtype and alignment."""
    x, f32, i32 = (torch.empty(16, dtype=dt) for dt in (dtype, torch.float32, torch.int32))
    if need is None:
        return (x, x, x, x, f32, i32)
    # The dq, dk column partials of bf16 inputs are fp32 buffers (see cca_backward).
    dqp, dkp = (f32 if dtype == torch.bfloat16 and n else x for n in need[:2])
    return (x, x, x, x, x, f32, f32, dqp, dkp, x, x, x)


def _compiled(launch: Launch) -> Any:
    """A launch's kernel compiled by Triton's warm-up for the current device (the compile the
    launch itself does, then cached); of an autotuned kernel, the config with the least shared
    memory (the autotuner skips configs that do not fit)."""
    kern, grid, args, kwargs = launch
    compiled = kern.warmup(*args, grid=grid, **kwargs)
    if not isinstance(compiled, list):
        return compiled
    return min(compiled, key=lambda c: c.metadata.shared)


def _max_shared_memory(index: int) -> int:
    """Shared memory per block (bytes) a kernel may use on CUDA device ``index``."""
    return triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]


def shared_memory_shortfall(
    device: torch.device | str, dtype: torch.dtype, head_dim: int, T: int, H: int, W: int,
    v_channels: int, need: tuple[bool, bool, bool] | None = None,
) -> str:
    """Why the kernels for these inputs do not fit the GPU's shared memory, or ``""``.

    Compiles (Triton's warm-up: the launch's own compile, cached by Triton) the forward's
    kernels and, when ``need`` names gradients, the backward's, and compares each one's shared
    memory per block with ``device``'s limit. Large tiles exceed it: e.g. for sm_90 the
    float32 backward of 128-position lines with Cqk = 64 needs 262144 bytes, and an H100 allows
    232448 (see ``docs/benchmarks.md``). Always ``""`` off CUDA (the interpreter has no limit).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return ""
    index = device.index if device.index is not None else torch.cuda.current_device()
    need = None if need is None or not any(need) else tuple(bool(n) for n in need)
    return _shortfall(index, dtype, head_dim, T, H, W, v_channels, need,
                      fused_forward_enabled(), _autotune_enabled())


@functools.lru_cache(maxsize=256)
def _shortfall(index: int, dtype: torch.dtype, cqk: int, T: int, H: int, W: int, cv: int,
               need: tuple[bool, bool, bool] | None, fused: bool, autotune: bool) -> str:
    # fused and autotune (which kernels _forward_launches picks) only key the cache.
    limit = _max_shared_memory(index)
    shape = (1, T, H, W, cqk, cv)
    launches = [("forward", x) for x in _forward_launches(_stand_ins(dtype), 1.0, shape)]
    if need is not None:
        launches += [("backward", x) for x in _backward_launches(
            _stand_ins(dtype, need), 1.0, shape, need)]
    with torch.cuda.device(index):  # Triton compiles for the current device
        for what, launch in launches:
            shared = _compiled(launch).metadata.shared
            if shared > limit:
                tiles = ", ".join(f"{n}={launch[3][n]}" for n in
                                  ("BLOCK_L", "BLOCK_H", "BLOCK_W", "CQK_PAD") if n in launch[3])
                return (
                    f"the Triton {what} kernel for {str(dtype).replace('torch.', '')} inputs "
                    f"with Cqk = {cqk}, Cv = {cv}, T = {T}, H = {H}, W = {W} (tiles {tiles}) "
                    f"needs {shared} bytes of shared memory per block; this GPU allows {limit}"
                )
    return ""


def _check_shared_memory(
    q: Tensor, cv: int, need: tuple[bool, bool, bool] | None = None
) -> None:
    B, cqk, T, H, W = q.shape
    reason = shared_memory_shortfall(q.device, q.dtype, cqk, T, H, W, cv, need)
    if reason:
        raise RuntimeError(
            f"{reason}: use the reference backend (backend='reference', or 'auto', which "
            "chooses it for these inputs), or a smaller frame, head_dim or a 16-bit dtype"
        )


def _on_inputs_device(fn: Any) -> Any:
    """Run ``fn(q, ...)`` with ``q``'s CUDA device current: Triton launches on the current
    device, which need not be the tensors' (a model on ``cuda:1`` without ``set_device``)."""

    @functools.wraps(fn)
    def wrapper(q: Tensor, *args: Any, **kwargs: Any) -> Any:
        if not q.is_cuda:
            return fn(q, *args, **kwargs)
        with torch.cuda.device(q.device):
            return fn(q, *args, **kwargs)

    return wrapper


@_on_inputs_device
def cca_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Criss-cross attention forward with the Triton kernels.

    Args:
        q, k: (B, Cqk, T, H, W), Cqk <= 256. v: (B, Cv, T, H, W). H, W <= 256. One dtype
            (float32, float16 or bfloat16), one device (CUDA, or CPU under
            ``TRITON_INTERPRET=1``). Any strides; channels-last storage avoids a copy. On a
            GPU the kernels must fit its shared memory (:func:`shared_memory_shortfall`).
        scale: multiplies the dot products before the softmax.

    Returns:
        out: (B, Cv, T, H, W) in the input dtype (channels-last-3d storage); lse:
        (B, T, H, W) float32 log-sum-exp of the scaled energies over the ``T + H + W - 2``
        keys of each position.
    """
    _check_inputs(q, k, v)
    B, cqk, T, H, W = q.shape
    qc, kc, vc = _cl(q), _cl(k), _cl(v)  # (B, T, H, W, C)
    out, oc = _empty_cl(v)  # (B, Cv, T, H, W), (B, T, H, W, Cv)
    lse = torch.empty((B, T, H, W), device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse
    _check_shared_memory(q, v.shape[1])
    cnt = torch.zeros(B * T + 1, device=q.device, dtype=torch.int32)  # fused forward only
    _launch(_forward_launches((qc, kc, vc, oc, lse, cnt), float(scale),
                              (B, T, H, W, cqk, v.shape[1])))
    return out, lse


@_on_inputs_device
def cca_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad_out: Tensor,
    scale: float,
    need: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of :func:`cca_forward` with respect to q, k and v.

    Args:
        q, k, v: the forward inputs. out: (B, Cv, T, H, W) and lse: (B, T, H, W) float32 as
            returned by the forward. grad_out: (B, Cv, T, H, W) gradient of ``out``.
        scale: the forward's scale.
        need: which of (dq, dk, dv) to compute; the others are returned as None.

    Returns:
        dq, dk: (B, Cqk, T, H, W); dv: (B, Cv, T, H, W); in the input dtype, in
        channels-last-3d storage. Deterministic (no atomics; fixed summation order: column, then
        row with the time line fused in).
    """
    _check_inputs(q, k, v)
    if out.shape != v.shape or grad_out.shape != v.shape:
        raise ValueError(
            f"out {tuple(out.shape)} and grad_out {tuple(grad_out.shape)} must have "
            f"the shape of v {tuple(v.shape)}"
        )
    B, cqk, T, H, W = q.shape
    if lse.shape != (B, T, H, W):
        raise ValueError(f"lse must have shape {(B, T, H, W)}, got {tuple(lse.shape)}")
    need = tuple(bool(n) for n in need)
    need_dq, need_dk, need_dv = need
    qc, kc, vc = _cl(q), _cl(k), _cl(v)
    oc, doc = _cl(out.to(v.dtype)), _cl(grad_out.to(v.dtype))
    lse = lse.to(torch.float32).contiguous()
    (dq_, dq), (dk_, dk), (dv_, dv) = _empty_cl(q), _empty_cl(k), _empty_cl(v)
    # Column partials of dq, dk: in place, except for bf16 (fp32; see the module docstring).
    if q.dtype == torch.bfloat16:
        dqp = torch.empty(qc.shape, device=q.device, dtype=torch.float32) if need_dq else dq
        dkp = torch.empty(kc.shape, device=q.device, dtype=torch.float32) if need_dk else dk
    else:
        dqp, dkp = dq, dk
    delta = torch.empty_like(lse)  # (B, T, H, W) rowsum(dO * O), written by the column launch
    if dv.numel() and any(need):
        _check_shared_memory(q, v.shape[1], need)
        bufs = (qc, kc, vc, oc, doc, lse, delta, dqp, dkp, dq, dk, dv)
        _launch(_backward_launches(bufs, float(scale), (B, T, H, W, cqk, v.shape[1]), need))
    return dq_ if need_dq else None, dk_ if need_dk else None, dv_ if need_dv else None
