"""Pure-PyTorch criss-cross attention: three axis passes merged into one softmax.

A position (t, h, w) attends over its row (the W positions of (t, h), centre included), its
column (the H positions of (t, w)) and its time line (the T positions of (h, w)); the centre
is excluded from the last two, so there are T + H + W - 2 keys and one softmax over them.

Layout (what makes it fast on CPU): each input is copied once to channels-last (B, T, H, W, C)
in the accumulation dtype (a 2-D blocked transpose per batch element), so every line of every
pass is a matrix with contiguous channel rows. The energies of all passes share one buffer E
(B, T, H, W, K), K = W + H + T (a pass of length 1 is skipped: it only holds the centre); each
pass fills its block of E with batched matmuls over strided views of the inputs. The softmax is
taken in place on E, and the output is accumulated pass by pass with batched matmuls into a
channels-last buffer, copied once to (B, C, T, H, W) at the end. Memory is
O(B * THW * (T + H + W + C)); no (THW x THW) matrix is ever built.

The backward recomputes the probabilities from the saved log-sum-exp, in the same layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

_TIME_BLOCKS = 8  # the time pass runs in this many blocks of image rows per batch element


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _channels_last(x: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, C, T, H, W), any strides -> a new contiguous (B, T, H, W, C) tensor in `dtype`.

    One (C, THW) -> (THW, C) transpose per batch element: a 2-D transposed copy takes
    PyTorch's blocked transpose kernel, several times faster on CPU than a 5-D permuted copy.
    Half-precision inputs are transposed first and converted after (same-dtype fast path).
    """
    B, C, T, H, W = x.shape
    src = x.reshape(B, C, T * H * W)  # a view for contiguous inputs
    out = torch.empty(B, T * H * W, C, dtype=x.dtype, device=x.device)
    for b in range(B):
        out[b].copy_(src[b].t())
    return out.to(dtype).view(B, T, H, W, C)


def _channels_first(x: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, T, H, W, C) contiguous -> a new contiguous (B, C, T, H, W) tensor in `dtype`.

    Converted first (half-precision outputs: the transpose then moves half the bytes).
    """
    B, T, H, W, C = x.shape
    src = x.to(dtype).view(B, T * H * W, C)
    out = torch.empty(B, C, T, H, W, dtype=dtype, device=x.device)  # a tensor, not a view
    for b in range(B):
        out[b].view(C, T * H * W).copy_(src[b].t())
    return out


def _passes(T: int, H: int, W: int) -> list[tuple[str, int, int]]:
    """(axis, offset of its keys in E, length) for the passes that have keys besides the centre.

    The row pass comes first and always exists: it holds the centre.
    """
    passes, offset = [("row", 0, W)], W
    for axis, n in (("col", H), ("time", T)):
        if n > 1:
            passes.append((axis, offset, n))
            offset += n
    return passes


def _lines(x: Tensor, axis: str) -> Iterator[Tensor]:
    """Views of x (B, T, H, W, C) as batches of lines along `axis`: (lines, L, C) each.

    C may be a slice of a wider last dimension (a block of E). No copies: writing into a
    yielded view writes into x.
    """
    B, T, H, W, C = x.shape
    if axis == "row":
        yield x.view(B * T * H, W, C)
    elif axis == "col":
        for b in range(B):
            for t in range(T):
                yield x[b, t].transpose(0, 1)  # (W, H, C)
    else:  # blocks of rows keep _bmm_into's temporaries at ~1/8 of a batch element
        rows = -(-H // _TIME_BLOCKS)
        for b in range(B):
            for h in range(0, H, rows):
                block = x[b, :, h : h + rows]  # (T, rows, W, C)
                yield block.view(T, -1, C).transpose(0, 1)  # (rows * W, T, C)


def _pass_blocks(x: Tensor, e: Tensor, axis: str, offset: int, n: int):
    """Pairs (lines of x, lines of the pass's block of e) for one pass."""
    return zip(_lines(x, axis), _lines(e[..., offset : offset + n], axis))


def _bmm_into(out: Tensor, a: Tensor, b: Tensor, accumulate: bool = False) -> None:
    """out (+)= a @ b for a batch of lines; out may be a strided view.

    PyTorch's CPU bmm runs a batch as one batched GEMM only into a contiguous result; into a
    strided one it falls back to one matrix product per line. Strided results therefore go
    through a contiguous temporary (one frame, or one block of rows of the time pass).
    """
    if out.is_contiguous():
        if accumulate:
            out.baddbmm_(a, b)
        else:
            torch.bmm(a, b, out=out)
    elif accumulate:
        out.add_(torch.bmm(a, b))
    else:
        out.copy_(torch.bmm(a, b))


def _probabilities(qc: Tensor, kc: Tensor, lse: Tensor | None) -> tuple[Tensor, Tensor]:
    """Softmax probabilities P (B, T, H, W, K) over the key blocks, and the log-sum-exp.

    qc (already scaled), kc: (B, T, H, W, Cqk) channels-last. With `lse` given (the backward),
    it is used instead of being computed. Masked centres hold probability 0.
    """
    B, T, H, W, _ = qc.shape
    passes = _passes(T, H, W)
    K = sum(n for _, _, n in passes)
    e = torch.empty(B, T, H, W, K, dtype=qc.dtype, device=qc.device)
    for axis, offset, n in passes:
        for (q_l, e_l), (k_l, _) in zip(
            _pass_blocks(qc, e, axis, offset, n), _pass_blocks(kc, e, axis, offset, n)
        ):
            _bmm_into(e_l, q_l, k_l.transpose(1, 2))  # (lines, L, L)
            if axis != "row":  # the centre is counted once, in the row pass
                torch.diagonal(e_l, dim1=1, dim2=2).fill_(float("-inf"))
    if lse is not None:  # the backward: recompute from the saved log-sum-exp
        return e.sub_(lse.unsqueeze(-1)).exp_(), lse
    # Shift by the max (finite: the row block holds the centre) and divide by the sum: the
    # largest probabilities are then rounded once, not through exp(e - lse) with |lse| >> 1.
    m = e.amax(dim=-1, keepdim=True)
    e.sub_(m).exp_()
    denom = e.sum(dim=-1, keepdim=True)
    e.div_(denom)
    return e, (m + denom.log()).squeeze(-1)


def _accumulate(out: Tensor, a: Tensor, b: Tensor, passes, transpose_a: bool) -> None:
    """out (B, T, H, W, C) = sum over passes of A_line @ b_line (A: (B, T, H, W, K) blocks).

    With `transpose_a`, A's blocks are transposed (the key side receives: dk, dv).
    """
    for i, (axis, offset, n) in enumerate(passes):
        for (o_l, a_l), (b_l, _) in zip(
            _pass_blocks(out, a, axis, offset, n), _pass_blocks(b, a, axis, offset, n)
        ):
            a_l = a_l.transpose(1, 2) if transpose_a else a_l
            _bmm_into(o_l, a_l, b_l, accumulate=i > 0)  # the row pass covers every position


def _rows_last(x: Tensor, dtype: torch.dtype) -> Tensor:
    """(C, ...) any strides -> a contiguous (prod(...), C) copy in `dtype`.

    A contiguous copy, then a 2-D transpose (PyTorch's blocked transpose kernel).
    """
    return x.to(dtype).contiguous().view(x.shape[0], -1).t().contiguous()


def _attend_values(p: Tensor, v: Tensor, acc: torch.dtype) -> Tensor:
    """out (B, T, H, W, Cv) = P @ V over the passes' blocks; v: (B, Cv, T, H, W) any strides.

    v is brought to channels-last one frame (row and column passes) or one block of rows (time
    pass) at a time, so no full channels-last copy of v is ever held.
    """
    B, Cv, T, H, W = v.shape
    out = torch.empty(B, T, H, W, Cv, dtype=acc, device=v.device)
    passes = {axis: (offset, n) for axis, offset, n in _passes(T, H, W)}
    rows = -(-H // _TIME_BLOCKS)
    for b in range(B):
        for t in range(T):
            vt, o, pt = _rows_last(v[b, :, t], acc).view(H, W, Cv), out[b, t], p[b, t]
            torch.bmm(pt[..., :W], vt, out=o)  # row pass: (H lines, W, W) @ (H lines, W, Cv)
            if "col" in passes:
                off, n = passes["col"]
                _bmm_into(
                    o.transpose(0, 1), pt[..., off : off + n].transpose(0, 1),
                    vt.transpose(0, 1), accumulate=True,
                )  # (W lines, H, H) @ (W lines, H, Cv)
        if "time" in passes:
            off, n = passes["time"]
            for h in range(0, H, rows):
                vb = _rows_last(v[b, :, :, h : h + rows], acc).view(T, -1, Cv).transpose(0, 1)
                o = out[b, :, h : h + rows].view(T, -1, Cv).transpose(0, 1)
                pb = p[b, :, h : h + rows, :, off : off + n].view(T, -1, n).transpose(0, 1)
                _bmm_into(o, pb, vb, accumulate=True)  # (rows*W lines, T, T) @ (.., T, Cv)
    return out


def cca_reference_forward(
    q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Forward of the reference path without autograd (see `cca_reference`)."""
    acc = _acc_dtype(q.dtype)
    with torch.no_grad():
        qc, kc = _channels_last(q, acc), _channels_last(k, acc)
        if scale != 1.0:
            qc.mul_(scale)
        p, lse = _probabilities(qc, kc, None)
        del qc, kc
        out_cl = _attend_values(p, v, acc)
        del p
        return _channels_first(out_cl, v.dtype), lse


def cca_reference_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad_out: Tensor,
    scale: float,
    needs_grad: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Analytic gradients, recomputing the probabilities from the saved log-sum-exp.

    P = exp(scale * <q, k_j> - lse); dP_j = <dO, v_j>; dS = P * (dP - Delta);
    Delta = <dO, O>; dq = scale * sum_j dS_j k_j; dk_j = scale * sum_p dS_pj q_p;
    dv_j = sum_p P_pj dO_p. (Delta from the forward's output, not as sum_j P_j dP_j: with the
    recomputed P the latter rounded 2-3x worse in float32 on random inputs.)

    Args:
        q, k: (B, Cqk, T, H, W). v, out, grad_out: (B, Cv, T, H, W). lse: (B, T, H, W).
        needs_grad: which of (dq, dk, dv) to compute; the others are returned as None.

    Returns:
        (dq, dk, dv) as contiguous (B, C, T, H, W) tensors in the input dtypes (or None).
    """
    need_q, need_k, need_v = needs_grad
    acc = _acc_dtype(q.dtype)
    B, _, T, H, W = q.shape
    passes = _passes(T, H, W)
    with torch.no_grad():
        delta = _delta(out, grad_out, acc) if need_q or need_k else None  # (B, T, H, W)
        qc, kc = _channels_last(q, acc), _channels_last(k, acc)
        if scale != 1.0:
            qc.mul_(scale)
        p, _ = _probabilities(qc, kc, lse.to(acc))
        doc = _channels_last(grad_out, acc)
        dq = dk = dv = None
        if need_q or need_k:
            vc = _channels_last(v, acc)
            ds = torch.empty_like(p)  # dP, then dS in place
            _accumulate_scores(ds, doc, vc, passes)
            del vc
            ds.sub_(delta.unsqueeze(-1)).mul_(p)
        if need_v:
            dv_cl = torch.empty(B, T, H, W, v.shape[1], dtype=acc, device=v.device)
            _accumulate(dv_cl, p, doc, passes, transpose_a=True)
            del p, doc
            dv = _channels_first(dv_cl, v.dtype)
            del dv_cl
        else:
            del p, doc
        if need_q:
            dq_cl = torch.empty_like(qc)
            _accumulate(dq_cl, ds, kc, passes, transpose_a=False)
            dq = _channels_first(dq_cl.mul_(scale), q.dtype)
            del dq_cl
        if need_k:
            dk_cl = torch.empty_like(kc)
            _accumulate(dk_cl, ds, qc, passes, transpose_a=True)  # qc carries the scale
            dk = _channels_first(dk_cl, k.dtype)
    return dq, dk, dv


def _delta(out: Tensor, grad_out: Tensor, acc: torch.dtype) -> Tensor:
    """Delta = <dO, O> per position: (B, Cv, T, H, W) x2 -> (B, T, H, W) in `acc`."""
    return (grad_out.to(acc) * out.to(acc)).sum(1)


def _accumulate_scores(s: Tensor, x: Tensor, y: Tensor, passes) -> None:
    """s (B, T, H, W, K): per pass, the block of line products x_line @ y_line^T."""
    for axis, offset, n in passes:
        for (x_l, s_l), (y_l, _) in zip(
            _pass_blocks(x, s, axis, offset, n), _pass_blocks(y, s, axis, offset, n)
        ):
            _bmm_into(s_l, x_l, y_l.transpose(1, 2))


class _ReferenceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float):
        out, lse = cca_reference_forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_lse: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a double backward was asked for
            raise RuntimeError(
                "cca_reference is not twice differentiable: its backward is analytic, so "
                "double backward (create_graph=True) is not supported"
            )
        q, k, v, out, lse = ctx.saved_tensors
        grads = cca_reference_backward(
            q, k, v, out, lse, grad_out, ctx.scale, tuple(ctx.needs_input_grad[:3])
        )
        return (*grads, None)


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """What every backend requires of q, k, v: tensors of one floating dtype and device, of
    shape (B, Cqk, [T,] H, W) / (B, Cv, [T,] H, W); B may be 0, no other dimension."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _DTYPES:
            raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, "
                            f"float32 or float64), got dtype {x.dtype}")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.dim() not in (4, 5) or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(
            f"expected q, k, v of shape (B, C, T, H, W) or (B, C, H, W), all the same rank; "
            f"got {shapes}"
        )
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, Cqk, ...); got {shapes}")
    if v.shape[0] != q.shape[0] or v.shape[2:] != q.shape[2:]:
        raise ValueError(f"v must match q in batch and in (T, H, W); got {shapes}")
    if min(q.shape[1:]) == 0 or v.shape[1] == 0:
        raise ValueError(f"empty input: {shapes}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")


def _check_scale(scale: float | Tensor) -> float:
    if isinstance(scale, (str, bytes, bool)):
        raise TypeError(f"scale must be a number, got {type(scale).__name__} {scale!r}")
    if isinstance(scale, Tensor) and scale.requires_grad:
        raise TypeError("scale must be a number: a tensor scale would get no gradient; to learn "
                        "a temperature, multiply q by it and pass scale=1")
    value = float(scale)
    # not math.isfinite: torch.compile(dynamic=True) cannot trace it (fullgraph: an error)
    if value != value or value in (math.inf, -math.inf):
        raise ValueError(f"scale must be finite, got {value}")
    return value


def cca_reference(q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Criss-cross attention over time line, row and column (centre counted once).

    Args:
        q, k: (B, Cqk, T, H, W). v: (B, Cv, T, H, W). Same dtype and device; any strides.
        scale: multiplies the dot products before the softmax (CCNet uses 1.0).

    Returns:
        out: (B, Cv, T, H, W) in the input dtype, contiguous.
        lse: (B, T, H, W) float32 (float64 for float64 inputs): log-sum-exp of the scaled
            energies over the T + H + W - 2 keys of each position.

    Half-precision inputs are computed in float32. Differentiable (analytic backward,
    `cca_reference_backward`); not twice differentiable.

    Raises:
        TypeError / ValueError: inputs of other ranks, shapes, dtypes or devices.
    """
    _check_inputs(q, k, v)
    if q.dim() != 5:
        raise ValueError(f"cca_reference takes (B, C, T, H, W) inputs; got {tuple(q.shape)} "
                         "(criss_cross_attention also takes 4-D ones)")
    return _ReferenceFunction.apply(q, k, v, _check_scale(scale))
