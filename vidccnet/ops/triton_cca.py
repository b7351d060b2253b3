"""Fused Triton kernels for 3D criss-cross attention (forward and backward).

Semantics are those of :func:`vidccnet.ops.reference.cca_reference`: for a position
p = (t, h, w) the keys are its row ``(t, h, :)`` (centre included), its column ``(t, :, w)`` and
its time line ``(:, h, w)`` (centre excluded from both), ``T + H + W - 2`` keys, one softmax of
``scale * <q_p, k_j>`` over all of them.

Design
------
Everything is organised around *lines*: a line is the 1-D set of positions along one axis with
the other coordinates fixed. With inputs laid out ``(B, C, T, H, W)`` contiguous and
``N = T * H * W``, element ``(b, c, pos)`` sits at ``(b * C + c) * N + pos`` and the positions of a
line are ``base + i * stride`` for ``i < L``:

============  =====================  ======  ==========  ======================
pass          lines (grid axis 0)    L       stride      keys of query i
============  =====================  ======  ==========  ======================
row           B * T * H              W       1           all i' (centre incl.)
column        B * T * W              H       W           i' != i
time          B * H * W              T       H * W       i' != i
============  =====================  ======  ==========  ======================

The three key sets are disjoint and their union is the key set of the operator, so a position's
softmax is split into three small attentions, one per line through it (the time lines are not
launched as programs of their own: forward and backward fold them into the row programs, see
below). Each program of a pass owns one line (and a block of its queries or keys), so it does an
``L x L`` attention with ``tl.dot`` tiles read straight from the channel-major layout (channel
stride ``N``). Line ids are decomposed with the last coordinate (h for rows, w for columns and time
lines) fastest, so neighbouring programs touch neighbouring addresses: for the column pass, whose
per-program accesses are strided, the 32-byte sectors are shared by programs that run together and
are served from L2.

Forward (4 launches, no atomics, no attention map stored). The column pass runs on its own
lines; the row pass also handles the time line of each of its queries: the time keys of query
``(t, h, w)`` are ``(t', h, w)``, i.e. the same ``w`` in the rows ``(t', h)``, so a row program
loops over ``t'`` with elementwise products on contiguous (coalesced) rows. That costs
``T * (Cqk + Cv)`` CUDA-core FMAs per position, cheap for video clip lengths, and avoids a third
launch over ``B * H * W`` tiny lines (``T`` padded to a 16-wide ``tl.dot`` tile). The rows
``(t', h)`` are re-read by the ``T`` row programs of the same ``h``, which run close together
(line ids are ``(b, t, h)`` with ``h`` fastest), so the re-reads mostly hit L2.

1. ``_fwd_lse_kernel`` (grid ``(lines, cdiv(L, BLOCK_L))``): online max / sum-exp of the scaled
   energies of each query over its keys (``q`` and ``k`` only). The column launch stores its
   log-sum-exp into ``lse`` (``-inf`` when ``H = 1``); the row(+time) launch merges its own into
   it, so ``lse`` (B, T, H, W) fp32 ends as the exact global log-sum-exp (the row pass holds the
   centre, so the merge is always finite).
2. ``_fwd_out_kernel`` (grid ``(lines, cdiv(L, BLOCK_L), cdiv(Cv, BLOCK_V))``):
   ``P = exp(scale * q k^T - lse)`` is already normalised by the global softmax, so each pass
   adds ``P @ V`` of its keys to the output: the column launch stores into an fp32 accumulator,
   the row(+time) launch reads it, adds, and stores the result in the input dtype. For fp32
   inputs the accumulator is the output itself. A position belongs to exactly one row and one
   column, so the writes of a launch are disjoint and the summation order is fixed (column, row,
   time): bitwise deterministic.

Backward (``Delta = rowsum(dO * O)`` in torch, then 6 launches, no atomics): the column pass, then
the row pass with the time lines fused in, as in the forward.

* ``_bwd_dq_kernel`` (grid ``(lines, q blocks)``): recompute ``P`` from ``lse``,
  ``dP = dO V^T`` (looping over Cv blocks), ``dS = P (dP - Delta)``, ``dq += scale dS K``.
* ``_bwd_dk_kernel`` (grid ``(lines, k blocks)``): the transposed loop (over query blocks) for
  ``dk += scale dS^T Q``.
* ``_bwd_dv_kernel`` (grid ``(lines, k blocks, Cv blocks)``): ``dv += P^T dO``.

In the row launch, each kernel also handles the time lines elementwise over the rows
``(t', h)``: the keys ``(t, h, w)`` of a row program are exactly the time-line keys of the queries
``(t', h, w)`` in the same columns ``w``, so dk and dv of those keys (and dq of the row's queries)
get their time contributions from the same program, with coalesced row loads and no time-line
programs (whose loads would be strided by ``H * W``). Each of dq, dk, dv is chained like the
forward output (column stores fp32, row adds and casts): every element is written by one program
per launch, in a fixed order, so the result is deterministic.

Memory traffic (forward, per position, ``b`` bytes per element, counting each line's data once,
i.e. assuming neighbouring programs' re-reads hit L2). Floor (:func:`bandwidth_floor_bytes`):
``(2 Cqk + 2 Cv) b + 4``. The lse launches read q and k twice (``4 Cqk b``); the output launches
read q, k, v twice (``2 (2 Cqk + Cv) b``) and move the accumulator: fp32 write + read
(``8 Cv``) and the final store (``Cv b``) for half inputs; read + write of the output
(``2 Cv b``) on top of the first store for fp32. Estimates: fp16, Cqk = 64, Cv = 512: ~8.2 kB
against a 2.3 kB floor (~28 % of the floor at best); fp32: ~12.3 kB against 4.6 kB (~37 %). The
fp32 round trip of the column partial is the main excess; ``cca_forward(..., fp32_partial=False)``
stores it in the output tensor in the input dtype instead (fp16: ~6.2 kB, ~38 % of the floor, at
the cost of one extra rounding of that partial). Not measured on a GPU yet.

Backward traffic (same assumptions): per pass, dO is read by the three kernels and v by two (the
dq and dk kernels recompute ``dP`` separately; a fused dk/dv kernel would save one Cv-sized dot
and one read of dO and v), q and k by all three, plus the fp32 chain of dq, dk, dv. Not measured.

Extra memory of the forward: ``lse`` (4 bytes per position, an output) plus, for half inputs with
the default ``fp32_partial=True``, an fp32 buffer of the output's shape. The backward allocates
``Delta`` and, for half inputs, fp32 buffers of the shapes of dq, dk, dv.

GPU validity: every ``tl.dot`` has M, N, K >= 16 (line blocks and Cv blocks are >= 16; the
channel dimension is padded to a power of two >= 16 by masked loads); fp32 dots use
``input_precision="ieee"`` (no TF32) so fp32 results match the reference to ~1e-5; half inputs
feed the tensor cores with fp32 accumulation (P and dS are cast to the input dtype before their
dots, as FlashAttention does). fp32 inputs therefore run on CUDA cores (exact but slower);
half precision is the fast path. No autotuning: block sizes come from :func:`_launch_config`.

The kernels are plain Python functions wrapped by ``triton.jit`` lazily, on first use, for the
current value of ``TRITON_INTERPRET`` (Triton fixes interpreted-vs-compiled at decoration time),
so importing this module never needs Triton or a GPU.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor

try:  # Triton is optional: the reference backend covers machines without it.
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = ""
except Exception as exc:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    _TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

logger = logging.getLogger(__name__)

__all__ = ["bandwidth_floor_bytes", "cca_backward", "cca_forward", "triton_available"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_CQK = 256

# Accumulation modes of the chained launches (column pass, then row pass): store the fp32 partial,
# read-add-store it (for a longer chain; unused with two passes), read-add and store in the
# output dtype.
_STORE, _ADD, _ADD_CAST = 0, 1, 2


# --------------------------------------------------------------------------------------------
# Kernels (plain functions; see _kernels() for the lazy triton.jit wrapping).
# --------------------------------------------------------------------------------------------


def _fwd_lse_kernel(
    Q, K, LSE, scale, N, L, D1, D2, S1, S2, STRIDE, CQK, T, HW,
    EXCLUDE_CENTER: tl.constexpr, MERGE: tl.constexpr, FUSE_TIME: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, CQK_PAD: tl.constexpr,
):  # fmt: skip
    # Line id -> (b, base position); the last coordinate of the line id runs fastest.
    line = tl.program_id(0).to(tl.int64)
    rest = line // D2
    b = rest // D1
    base = (rest % D1) * S1 + (line % D2) * S2
    offs_q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask_q = offs_q < L
    pos_q = base + offs_q * STRIDE
    offs_c = tl.arange(0, CQK_PAD)
    mask_c = offs_c < CQK
    ch = offs_c.to(tl.int64) * N
    q_base = Q + b * CQK * N
    k_base = K + b * CQK * N

    q = tl.load(q_base + pos_q[:, None] + ch[None, :],
                mask=mask_q[:, None] & mask_c[None, :], other=0.0)  # (BQ, CQK_PAD)
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    for start in range(0, L, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < L
        pos_k = base + offs_k * STRIDE
        kt = tl.load(k_base + ch[:, None] + pos_k[None, :],
                     mask=mask_c[:, None] & mask_k[None, :], other=0.0)  # (CQK_PAD, BK)
        s = tl.dot(q, kt, input_precision="ieee") * scale  # (BQ, BK)
        valid = mask_k[None, :] & mask_q[:, None]
        if EXCLUDE_CENTER:
            valid = valid & (offs_k[None, :] != offs_q[:, None])
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - m_ref) + tl.sum(tl.exp(s - m_ref[:, None]), 1)
        m_i = m_new
    if FUSE_TIME:
        # Row program (line = (b, t, h)): also the time line of each query, keys (t', h, w) for
        # t' != t, as elementwise products with the rows (t', h) (contiguous loads).
        t_q = rest % D1
        qf = q.to(tl.float32)
        for tp in range(0, T):
            keep = mask_q & (tp != t_q)
            kk = tl.load(k_base + (pos_q + (tp - t_q) * HW)[:, None] + ch[None, :],
                         mask=keep[:, None] & mask_c[None, :], other=0.0)  # (BQ, CQK_PAD)
            s1 = tl.where(keep, tl.sum(qf * kk.to(tl.float32), 1) * scale, float("-inf"))
            m_new = tl.maximum(m_i, s1)
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp(m_i - m_ref) + tl.exp(s1 - m_ref)
            m_i = m_new
    # l_i >= 1 whenever a key was valid (the max term is exp(0)); otherwise m_i = -inf.
    lse = m_i + tl.log(tl.maximum(l_i, 1.0))
    lse_ptr = LSE + b * N + pos_q
    if MERGE:
        # The merging pass is the row pass, which holds the centre: lse is finite, so is mx.
        prev = tl.load(lse_ptr, mask=mask_q, other=0.0)  # may be -inf (e.g. H = 1)
        mx = tl.maximum(prev, lse)
        lse = mx + tl.log(tl.exp(prev - mx) + tl.exp(lse - mx))
    tl.store(lse_ptr, lse, mask=mask_q)


def _fwd_out_kernel(
    Q, K, V, LSE, ACC, OUT, scale, N, L, D1, D2, S1, S2, STRIDE, CQK, CV, T, HW,
    EXCLUDE_CENTER: tl.constexpr, MODE: tl.constexpr, FUSE_TIME: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, CQK_PAD: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    line = tl.program_id(0).to(tl.int64)
    rest = line // D2
    b = rest // D1
    base = (rest % D1) * S1 + (line % D2) * S2
    offs_q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask_q = offs_q < L
    pos_q = base + offs_q * STRIDE
    offs_c = tl.arange(0, CQK_PAD)
    mask_c = offs_c < CQK
    ch = offs_c.to(tl.int64) * N
    offs_v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    mask_v = offs_v < CV
    chv = offs_v.to(tl.int64) * N
    k_base = K + b * CQK * N
    v_base = V + b * CV * N

    q = tl.load(Q + b * CQK * N + pos_q[:, None] + ch[None, :],
                mask=mask_q[:, None] & mask_c[None, :], other=0.0)  # (BQ, CQK_PAD)
    lse = tl.load(LSE + b * N + pos_q, mask=mask_q, other=0.0)  # (BQ,)
    acc = tl.zeros([BLOCK_Q, BLOCK_V], tl.float32)
    for start in range(0, L, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < L
        pos_k = base + offs_k * STRIDE
        kt = tl.load(k_base + ch[:, None] + pos_k[None, :],
                     mask=mask_c[:, None] & mask_k[None, :], other=0.0)  # (CQK_PAD, BK)
        s = tl.dot(q, kt, input_precision="ieee") * scale
        valid = mask_k[None, :] & mask_q[:, None]
        if EXCLUDE_CENTER:
            valid = valid & (offs_k[None, :] != offs_q[:, None])
        p = tl.exp(tl.where(valid, s - lse[:, None], float("-inf")))  # globally normalised
        vt = tl.load(v_base + pos_k[:, None] + chv[None, :],
                     mask=mask_k[:, None] & mask_v[None, :], other=0.0)  # (BK, BV)
        acc += tl.dot(p.to(vt.dtype), vt, input_precision="ieee")
    if FUSE_TIME:
        # Time line of each query of the row, elementwise (see _fwd_lse_kernel).
        t_q = rest % D1
        qf = q.to(tl.float32)
        for tp in range(0, T):
            keep = mask_q & (tp != t_q)
            pos_t = pos_q + (tp - t_q) * HW
            kk = tl.load(k_base + pos_t[:, None] + ch[None, :],
                         mask=keep[:, None] & mask_c[None, :], other=0.0)  # (BQ, CQK_PAD)
            s1 = tl.sum(qf * kk.to(tl.float32), 1) * scale
            p1 = tl.exp(tl.where(keep, s1 - lse, float("-inf")))  # (BQ,)
            vv = tl.load(v_base + pos_t[:, None] + chv[None, :],
                         mask=keep[:, None] & mask_v[None, :], other=0.0)  # (BQ, BV)
            acc += p1[:, None] * vv.to(tl.float32)
    o_off = b * CV * N + pos_q[:, None] + chv[None, :]
    o_mask = mask_q[:, None] & mask_v[None, :]
    if MODE == 0:
        tl.store(ACC + o_off, acc.to(ACC.dtype.element_ty), mask=o_mask)
    else:
        acc += tl.load(ACC + o_off, mask=o_mask, other=0.0).to(tl.float32)
        if MODE == 1:
            tl.store(ACC + o_off, acc.to(ACC.dtype.element_ty), mask=o_mask)
        else:
            tl.store(OUT + o_off, acc.to(OUT.dtype.element_ty), mask=o_mask)


def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, ACC, DQ, scale, N, L, D1, D2, S1, S2, STRIDE, CQK, CV, T, HW,
    EXCLUDE_CENTER: tl.constexpr, MODE: tl.constexpr, FUSE_TIME: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, CQK_PAD: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    line = tl.program_id(0).to(tl.int64)
    rest = line // D2
    b = rest // D1
    base = (rest % D1) * S1 + (line % D2) * S2
    offs_q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask_q = offs_q < L
    pos_q = base + offs_q * STRIDE
    offs_c = tl.arange(0, CQK_PAD)
    mask_c = offs_c < CQK
    ch = offs_c.to(tl.int64) * N
    k_base = K + b * CQK * N
    v_base = V + b * CV * N
    do_base = DO + b * CV * N
    qk_off = b * CQK * N + pos_q[:, None] + ch[None, :]
    qk_mask = mask_q[:, None] & mask_c[None, :]

    q = tl.load(Q + qk_off, mask=qk_mask, other=0.0)  # (BQ, CQK_PAD)
    lse = tl.load(LSE + b * N + pos_q, mask=mask_q, other=0.0)
    delta = tl.load(DELTA + b * N + pos_q, mask=mask_q, other=0.0)
    dq = tl.zeros([BLOCK_Q, CQK_PAD], tl.float32)
    for start in range(0, L, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < L
        pos_k = base + offs_k * STRIDE
        kt = tl.load(k_base + ch[:, None] + pos_k[None, :],
                     mask=mask_c[:, None] & mask_k[None, :], other=0.0)  # (CQK_PAD, BK)
        s = tl.dot(q, kt, input_precision="ieee") * scale
        valid = mask_k[None, :] & mask_q[:, None]
        if EXCLUDE_CENTER:
            valid = valid & (offs_k[None, :] != offs_q[:, None])
        p = tl.exp(tl.where(valid, s - lse[:, None], float("-inf")))  # (BQ, BK)
        dp = tl.zeros([BLOCK_Q, BLOCK_K], tl.float32)
        for vstart in range(0, CV, BLOCK_V):
            offs_v = vstart + tl.arange(0, BLOCK_V)
            mask_v = offs_v < CV
            chv = offs_v.to(tl.int64) * N
            do = tl.load(do_base + pos_q[:, None] + chv[None, :],
                         mask=mask_q[:, None] & mask_v[None, :], other=0.0)  # (BQ, BV)
            vt = tl.load(v_base + chv[:, None] + pos_k[None, :],
                         mask=mask_v[:, None] & mask_k[None, :], other=0.0)  # (BV, BK)
            dp += tl.dot(do, vt, input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision="ieee")
    if FUSE_TIME:
        # Row program: also the time-line keys (t', h, w), t' != t, of each query, elementwise.
        t_q = rest % D1
        qf = q.to(tl.float32)
        for tp in range(0, T):
            keep = mask_q & (tp != t_q)
            pos_t = pos_q + (tp - t_q) * HW
            kk = tl.load(k_base + pos_t[:, None] + ch[None, :],
                         mask=keep[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
            p1 = tl.exp(tl.where(keep, tl.sum(qf * kk, 1) * scale - lse, float("-inf")))
            dp1 = tl.zeros([BLOCK_Q], tl.float32)
            for vstart in range(0, CV, BLOCK_V):
                offs_v = vstart + tl.arange(0, BLOCK_V)
                mask_v = offs_v < CV
                chv = offs_v.to(tl.int64) * N
                do = tl.load(do_base + pos_q[:, None] + chv[None, :],
                             mask=keep[:, None] & mask_v[None, :], other=0.0)  # (BQ, BV)
                vv = tl.load(v_base + pos_t[:, None] + chv[None, :],
                             mask=keep[:, None] & mask_v[None, :], other=0.0)  # (BQ, BV)
                dp1 += tl.sum(do.to(tl.float32) * vv.to(tl.float32), 1)
            dq += (p1 * (dp1 - delta))[:, None] * kk
    dq = dq * scale
    if MODE == 0:
        tl.store(ACC + qk_off, dq, mask=qk_mask)
    else:
        dq += tl.load(ACC + qk_off, mask=qk_mask, other=0.0)
        if MODE == 1:
            tl.store(ACC + qk_off, dq, mask=qk_mask)
        else:
            tl.store(DQ + qk_off, dq.to(DQ.dtype.element_ty), mask=qk_mask)


def _bwd_dk_kernel(
    Q, K, V, DO, LSE, DELTA, ACC, DK, scale, N, L, D1, D2, S1, S2, STRIDE, CQK, CV, T, HW,
    EXCLUDE_CENTER: tl.constexpr, MODE: tl.constexpr, FUSE_TIME: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, CQK_PAD: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    line = tl.program_id(0).to(tl.int64)
    rest = line // D2
    b = rest // D1
    base = (rest % D1) * S1 + (line % D2) * S2
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < L
    pos_k = base + offs_k * STRIDE
    offs_c = tl.arange(0, CQK_PAD)
    mask_c = offs_c < CQK
    ch = offs_c.to(tl.int64) * N
    q_base = Q + b * CQK * N
    v_base = V + b * CV * N
    do_base = DO + b * CV * N
    qk_off = b * CQK * N + pos_k[:, None] + ch[None, :]
    qk_mask = mask_k[:, None] & mask_c[None, :]

    k = tl.load(K + qk_off, mask=qk_mask, other=0.0)  # (BK, CQK_PAD)
    dk = tl.zeros([BLOCK_K, CQK_PAD], tl.float32)
    for start in range(0, L, BLOCK_Q):
        offs_q = start + tl.arange(0, BLOCK_Q)
        mask_q = offs_q < L
        pos_q = base + offs_q * STRIDE
        qt = tl.load(q_base + ch[:, None] + pos_q[None, :],
                     mask=mask_c[:, None] & mask_q[None, :], other=0.0)  # (CQK_PAD, BQ)
        lse = tl.load(LSE + b * N + pos_q, mask=mask_q, other=0.0)
        delta = tl.load(DELTA + b * N + pos_q, mask=mask_q, other=0.0)
        st = tl.dot(k, qt, input_precision="ieee") * scale  # (BK, BQ)
        valid = mask_k[:, None] & mask_q[None, :]
        if EXCLUDE_CENTER:
            valid = valid & (offs_k[:, None] != offs_q[None, :])
        pt = tl.exp(tl.where(valid, st - lse[None, :], float("-inf")))
        dpt = tl.zeros([BLOCK_K, BLOCK_Q], tl.float32)
        for vstart in range(0, CV, BLOCK_V):
            offs_v = vstart + tl.arange(0, BLOCK_V)
            mask_v = offs_v < CV
            chv = offs_v.to(tl.int64) * N
            v = tl.load(v_base + pos_k[:, None] + chv[None, :],
                        mask=mask_k[:, None] & mask_v[None, :], other=0.0)  # (BK, BV)
            dot_ = tl.load(do_base + chv[:, None] + pos_q[None, :],
                           mask=mask_v[:, None] & mask_q[None, :], other=0.0)  # (BV, BQ)
            dpt += tl.dot(v, dot_, input_precision="ieee")
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision="ieee")
    if FUSE_TIME:
        # Row program: these keys (t, h, w) are also time-line keys of the queries (t', h, w).
        t_k = rest % D1
        kf = k.to(tl.float32)
        for tp in range(0, T):
            keep = mask_k & (tp != t_k)
            pos_t = pos_k + (tp - t_k) * HW  # the query of each key's time line in row (t', h)
            qq = tl.load(q_base + pos_t[:, None] + ch[None, :],
                         mask=keep[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
            lse1 = tl.load(LSE + b * N + pos_t, mask=keep, other=0.0)
            delta1 = tl.load(DELTA + b * N + pos_t, mask=keep, other=0.0)
            p1 = tl.exp(tl.where(keep, tl.sum(qq * kf, 1) * scale - lse1, float("-inf")))
            dp1 = tl.zeros([BLOCK_K], tl.float32)
            for vstart in range(0, CV, BLOCK_V):
                offs_v = vstart + tl.arange(0, BLOCK_V)
                mask_v = offs_v < CV
                chv = offs_v.to(tl.int64) * N
                vv = tl.load(v_base + pos_k[:, None] + chv[None, :],
                             mask=keep[:, None] & mask_v[None, :], other=0.0)  # (BK, BV)
                do = tl.load(do_base + pos_t[:, None] + chv[None, :],
                             mask=keep[:, None] & mask_v[None, :], other=0.0)  # (BK, BV)
                dp1 += tl.sum(do.to(tl.float32) * vv.to(tl.float32), 1)
            dk += (p1 * (dp1 - delta1))[:, None] * qq
    dk = dk * scale
    if MODE == 0:
        tl.store(ACC + qk_off, dk, mask=qk_mask)
    else:
        dk += tl.load(ACC + qk_off, mask=qk_mask, other=0.0)
        if MODE == 1:
            tl.store(ACC + qk_off, dk, mask=qk_mask)
        else:
            tl.store(DK + qk_off, dk.to(DK.dtype.element_ty), mask=qk_mask)


def _bwd_dv_kernel(
    Q, K, DO, LSE, ACC, DV, scale, N, L, D1, D2, S1, S2, STRIDE, CQK, CV, T, HW,
    EXCLUDE_CENTER: tl.constexpr, MODE: tl.constexpr, FUSE_TIME: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, CQK_PAD: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    line = tl.program_id(0).to(tl.int64)
    rest = line // D2
    b = rest // D1
    base = (rest % D1) * S1 + (line % D2) * S2
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < L
    pos_k = base + offs_k * STRIDE
    offs_c = tl.arange(0, CQK_PAD)
    mask_c = offs_c < CQK
    ch = offs_c.to(tl.int64) * N
    offs_v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    mask_v = offs_v < CV
    chv = offs_v.to(tl.int64) * N
    q_base = Q + b * CQK * N
    do_base = DO + b * CV * N

    k = tl.load(K + b * CQK * N + pos_k[:, None] + ch[None, :],
                mask=mask_k[:, None] & mask_c[None, :], other=0.0)  # (BK, CQK_PAD)
    dv = tl.zeros([BLOCK_K, BLOCK_V], tl.float32)
    for start in range(0, L, BLOCK_Q):
        offs_q = start + tl.arange(0, BLOCK_Q)
        mask_q = offs_q < L
        pos_q = base + offs_q * STRIDE
        qt = tl.load(q_base + ch[:, None] + pos_q[None, :],
                     mask=mask_c[:, None] & mask_q[None, :], other=0.0)  # (CQK_PAD, BQ)
        lse = tl.load(LSE + b * N + pos_q, mask=mask_q, other=0.0)
        st = tl.dot(k, qt, input_precision="ieee") * scale  # (BK, BQ)
        valid = mask_k[:, None] & mask_q[None, :]
        if EXCLUDE_CENTER:
            valid = valid & (offs_k[:, None] != offs_q[None, :])
        pt = tl.exp(tl.where(valid, st - lse[None, :], float("-inf")))
        do = tl.load(do_base + pos_q[:, None] + chv[None, :],
                     mask=mask_q[:, None] & mask_v[None, :], other=0.0)  # (BQ, BV)
        dv += tl.dot(pt.to(do.dtype), do, input_precision="ieee")
    if FUSE_TIME:
        # Row program: time-line queries (t', h, w) of these keys, elementwise.
        t_k = rest % D1
        kf = k.to(tl.float32)
        for tp in range(0, T):
            keep = mask_k & (tp != t_k)
            pos_t = pos_k + (tp - t_k) * HW
            qq = tl.load(q_base + pos_t[:, None] + ch[None, :],
                         mask=keep[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
            lse1 = tl.load(LSE + b * N + pos_t, mask=keep, other=0.0)
            p1 = tl.exp(tl.where(keep, tl.sum(qq * kf, 1) * scale - lse1, float("-inf")))
            do = tl.load(do_base + pos_t[:, None] + chv[None, :],
                         mask=keep[:, None] & mask_v[None, :], other=0.0)  # (BK, BV)
            dv += p1[:, None] * do.to(tl.float32)
    v_off = b * CV * N + pos_k[:, None] + chv[None, :]
    v_mask = mask_k[:, None] & mask_v[None, :]
    if MODE == 0:
        tl.store(ACC + v_off, dv, mask=v_mask)
    else:
        dv += tl.load(ACC + v_off, mask=v_mask, other=0.0)
        if MODE == 1:
            tl.store(ACC + v_off, dv, mask=v_mask)
        else:
            tl.store(DV + v_off, dv.to(DV.dtype.element_ty), mask=v_mask)


_KERNEL_FNS = (_fwd_lse_kernel, _fwd_out_kernel, _bwd_dq_kernel, _bwd_dk_kernel, _bwd_dv_kernel)
_JIT_CACHE: dict[bool, dict[str, Any]] = {}


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


def _kernels() -> dict[str, Any]:
    """The kernels wrapped by ``triton.jit`` for the current interpreter setting (cached)."""
    interpret = _interpret_enabled()
    kernels = _JIT_CACHE.get(interpret)
    if kernels is None:
        kernels = {fn.__name__: triton.jit(fn) for fn in _KERNEL_FNS}
        _JIT_CACHE[interpret] = kernels
    return kernels


# --------------------------------------------------------------------------------------------
# Python side: checks, launch configuration, launchers.
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
            return False, ("TRITON_INTERPRET is (or was, when triton was imported) set: Triton "
                           "runs in its CPU interpreter; unset it to use the GPU kernels")
        index = device.index if device.index is not None else torch.cuda.current_device()
        cap = torch.cuda.get_device_capability(index)
        if cap < (7, 5):
            return False, f"GPU compute capability {cap} < (7, 5) is not supported by Triton"
        return True, ""
    if device.type == "cpu":
        if _interpret_enabled():
            if not _stdlib_mode_matches(True):
                return False, ("TRITON_INTERPRET=1 was set after triton was imported; set it "
                               "before the first 'import triton' (e.g. in the environment)")
            return True, ""
        return False, (
            "CPU tensors need TRITON_INTERPRET=1 (Triton's slow CPU interpreter, for tests); "
            "use the reference backend on CPU"
        )
    return False, f"device type {device.type!r} is not supported by the Triton kernels"


def bandwidth_floor_bytes(B: int, Cqk: int, Cv: int, T: int, H: int, W: int,
                          dtype_bytes: int) -> int:
    """Bytes the forward must move at least: read q, k, v, write out and the fp32 lse.

    ``B * T * H * W * ((2 * Cqk + 2 * Cv) * dtype_bytes + 4)``.
    """
    positions = B * T * H * W
    return positions * ((2 * Cqk + 2 * Cv) * dtype_bytes + 4)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _launch_config(L: int, cqk_pad: int, cv: int, elem_bytes: int,
                   backward: bool = False) -> tuple[int, int, int]:
    """Block sizes for a pass over lines of length ``L``: ``(BLOCK_L, BLOCK_V, num_warps)``.

    Every block is a power of two >= 16 (``tl.dot`` needs M, N, K >= 16 on a GPU). Chosen so that
    the kernels compile for sm_90 without register spills (checked with ``triton.compile`` for an
    sm_90 target and ``cuobjdump -res-usage``): about 16 tile elements per thread for half inputs,
    8 for fp32 (whose ``ieee`` dots run on CUDA cores and need more registers). The backward
    kernels (with the time loop fused into the row pass) hold more live tiles: 8 warps, and 16-row
    blocks for fp32. Tuning on a GPU may pick larger line blocks.
    """
    block_l = min(32, max(16, _next_pow2(L)))
    if cqk_pad >= 256 or (elem_bytes >= 4 and cqk_pad >= 128):
        block_l = 16
    block_v = min(64, max(16, _next_pow2(cv)))
    per_thread = 8 if elem_bytes >= 4 else 16
    warps = _next_pow2(max(1, block_l * max(cqk_pad, block_v) // (32 * per_thread)))
    if backward:
        warps = 8
        if elem_bytes >= 4:
            block_l = 16
    return block_l, block_v, min(8, max(4, warps))


def _passes(T: int, H: int, W: int) -> list[tuple[int, int, int, int, int, int, bool]]:
    """The launched passes in their fixed order, column then row (time lines fused into rows).

    Each is ``(L, D1, D2, S1, S2, stride, exclude_centre)``: line ``(b, i1, i2)`` (``i2``
    fastest, ``D1 x D2`` lines per batch) starts at position ``i1 * S1 + i2 * S2``; its ``L``
    positions are ``stride`` apart. The row pass has ``D1 = T`` so its programs know their ``t``.
    """
    hw = H * W
    column = (H, T, W, hw, 1, W, True)
    row = (W, T, H, hw, W, 1, False)
    return [column, row]


def supports(dtype: torch.dtype, head_dim: int) -> bool:
    """Whether the kernels take inputs of this dtype and query/key width Cqk."""
    return dtype in _SUPPORTED_DTYPES and head_dim <= _MAX_CQK


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(f"{name} must be 5-D (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {x.dtype}; the Triton kernels take "
                            "float32, float16 or bfloat16")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    if v.shape[0] != q.shape[0] or v.shape[2:] != q.shape[2:]:
        raise ValueError(f"v {tuple(v.shape)} must match q {tuple(q.shape)} in B, T, H, W")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[1] > _MAX_CQK:
        raise ValueError(f"Cqk = {q.shape[1]} > {_MAX_CQK} is not supported by the Triton "
                         "kernels; use the reference backend")
    if q.shape[1] < 1 or v.shape[1] < 1:
        raise ValueError(f"empty channel dimension: q {tuple(q.shape)}, v {tuple(v.shape)}")
    ok, reason = triton_available(q.device)
    if not ok:
        raise RuntimeError(f"Triton criss-cross attention cannot run on {q.device}: {reason}")


def _common_args(q: Tensor, v: Tensor) -> tuple[int, int, int, int]:
    _, cqk, T, H, W = q.shape
    cqk_pad = max(16, _next_pow2(cqk))
    return T * H * W, cqk, v.shape[1], cqk_pad


def cca_forward(q: Tensor, k: Tensor, v: Tensor, scale: float, *,
                fp32_partial: bool = True) -> tuple[Tensor, Tensor]:
    """Criss-cross attention forward with the Triton kernels.

    Args:
        q, k: (B, Cqk, T, H, W), Cqk <= 256. v: (B, Cv, T, H, W). One dtype (float32, float16 or
            bfloat16), one device (CUDA, or CPU under ``TRITON_INTERPRET=1``).
        scale: multiplies the dot products before the softmax.
        fp32_partial: for float16 / bfloat16 inputs, keep the column pass's partial output in an
            fp32 scratch buffer (exact fp32 accumulation, ``4 * Cv`` extra bytes per position).
            False stores it in the output tensor in the input dtype: no scratch and ~25 % less
            forward traffic, at the price of one extra rounding of that partial.

    Returns:
        out: (B, Cv, T, H, W) in the input dtype; lse: (B, T, H, W) float32 log-sum-exp of the
        scaled energies over the ``T + H + W - 2`` keys of each position.
    """
    _check_inputs(q, k, v)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, _, T, H, W = q.shape
    N, cqk, cv, cqk_pad = _common_args(q, v)
    scale = float(scale)
    kern = _kernels()

    lse = torch.empty((B, T, H, W), device=q.device, dtype=torch.float32)  # (B, T, H, W)
    out = torch.empty_like(v)  # (B, Cv, T, H, W)
    if out.numel() == 0:  # B, T, H or W is 0 (channels are checked to be >= 1)
        return out, lse
    if out.dtype == torch.float32 or not fp32_partial:
        acc = out
    else:
        acc = torch.empty(v.shape, device=v.device, dtype=torch.float32)
    # Column pass first, then the row pass with the time lines fused in (see module docstring).
    for i, (L, D1, D2, S1, S2, stride, excl) in enumerate(_passes(T, H, W)):
        block_l, _, num_warps = _launch_config(L, cqk_pad, cv, q.element_size())
        grid = (B * D1 * D2, triton.cdiv(L, block_l))
        kern["_fwd_lse_kernel"][grid](
            q, k, lse, scale, N, L, D1, D2, S1, S2, stride, cqk, T, H * W,
            EXCLUDE_CENTER=excl, MERGE=i == 1, FUSE_TIME=i == 1, BLOCK_Q=block_l,
            BLOCK_K=block_l, CQK_PAD=cqk_pad, num_warps=num_warps,
        )
    for i, (L, D1, D2, S1, S2, stride, excl) in enumerate(_passes(T, H, W)):
        block_l, block_v, num_warps = _launch_config(L, cqk_pad, cv, q.element_size())
        grid = (B * D1 * D2, triton.cdiv(L, block_l), triton.cdiv(cv, block_v))
        kern["_fwd_out_kernel"][grid](
            q, k, v, lse, acc, out, scale, N, L, D1, D2, S1, S2, stride, cqk, cv, T, H * W,
            EXCLUDE_CENTER=excl, MODE=_STORE if i == 0 else _ADD_CAST, FUSE_TIME=i == 1,
            BLOCK_Q=block_l, BLOCK_K=block_l, CQK_PAD=cqk_pad, BLOCK_V=block_v,
            num_warps=num_warps,
        )
    return out, lse


def cca_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grad_out: Tensor,
                 scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`cca_forward` with respect to q, k and v.

    Args:
        q, k, v: the forward inputs. out: (B, Cv, T, H, W) and lse: (B, T, H, W) float32 as
            returned by the forward. grad_out: (B, Cv, T, H, W) gradient of ``out``.
        scale: the forward's scale.

    Returns:
        dq, dk: (B, Cqk, T, H, W); dv: (B, Cv, T, H, W); all in the input dtype. Deterministic
        (no atomics; fixed summation order: column, then row with the time line fused in).
    """
    _check_inputs(q, k, v)
    if out.shape != v.shape or grad_out.shape != v.shape:
        raise ValueError(f"out {tuple(out.shape)} and grad_out {tuple(grad_out.shape)} must have "
                         f"the shape of v {tuple(v.shape)}")
    B, _, T, H, W = q.shape
    if lse.shape != (B, T, H, W):
        raise ValueError(f"lse must have shape {(B, T, H, W)}, got {tuple(lse.shape)}")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    grad_out = grad_out.to(v.dtype).contiguous()
    lse = lse.to(torch.float32).contiguous()
    N, cqk, cv, cqk_pad = _common_args(q, v)
    scale = float(scale)
    kern = _kernels()

    # Delta = rowsum(dO * O) per position, fp32.
    delta = (grad_out.float() * out.float()).sum(1).contiguous()  # (B, T, H, W)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if dv.numel() == 0:
        return dq, dk, dv
    if q.dtype == torch.float32:
        dq_acc, dk_acc, dv_acc = dq, dk, dv
    else:
        dq_acc = torch.empty(q.shape, device=q.device, dtype=torch.float32)
        dk_acc = torch.empty(k.shape, device=k.device, dtype=torch.float32)
        dv_acc = torch.empty(v.shape, device=v.device, dtype=torch.float32)

    # Column pass (stores the fp32 partials), then the row pass with the time lines fused in
    # (adds and casts), as in the forward.
    for i, (L, D1, D2, S1, S2, stride, excl) in enumerate(_passes(T, H, W)):
        block_l, block_v, num_warps = _launch_config(L, cqk_pad, cv, q.element_size(),
                                                     backward=True)
        lines, nblk = B * D1 * D2, triton.cdiv(L, block_l)
        geometry = (scale, N, L, D1, D2, S1, S2, stride, cqk, cv, T, H * W)
        meta = dict(EXCLUDE_CENTER=excl, MODE=_STORE if i == 0 else _ADD_CAST, FUSE_TIME=i == 1,
                    BLOCK_Q=block_l, BLOCK_K=block_l, CQK_PAD=cqk_pad, BLOCK_V=block_v,
                    num_warps=num_warps)
        kern["_bwd_dq_kernel"][(lines, nblk)](
            q, k, v, grad_out, lse, delta, dq_acc, dq, *geometry, **meta)
        kern["_bwd_dk_kernel"][(lines, nblk)](
            q, k, v, grad_out, lse, delta, dk_acc, dk, *geometry, **meta)
        kern["_bwd_dv_kernel"][(lines, nblk, triton.cdiv(cv, block_v))](
            q, k, grad_out, lse, dv_acc, dv, *geometry, **meta)
    return dq, dk, dv
