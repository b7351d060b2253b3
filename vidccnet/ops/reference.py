"""Pure-PyTorch criss-cross attention: three axis passes merged into one softmax.

Each pass is a batch of small attentions along one axis: the row pass over W (centre
included), the column pass over H and the time pass over T (centre excluded from both). The
inputs are laid out channels-last once, and each pass permutes its axis next to the channels so
every product is one contiguous batched matmul. Memory is O(B * THW * (T + H + W)); no
(THW x THW) matrix is ever built.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Permutation of (B, T, H, W) that puts the attended axis last; the mask says whether the
# diagonal (the centre) is excluded from the pass.
PASSES: tuple[tuple[tuple[int, int, int, int], bool], ...] = (
    ((0, 1, 2, 3), False),  # row: (B, T, H, W), keys along W, centre included
    ((0, 1, 3, 2), True),  # column: (B, T, W, H), keys along H
    ((0, 2, 3, 1), True),  # time: (B, H, W, T), keys along T
)


def to_pass(x: Tensor, perm: tuple[int, ...]) -> Tensor:
    """(B, T, H, W[, C]) -> the pass layout (..., L[, C]), contiguous."""
    return x.permute(*perm, *range(4, x.dim())).contiguous()


def from_pass(x: Tensor, perm: tuple[int, ...]) -> Tensor:
    """Inverse of `to_pass` (a view)."""
    inv = [perm.index(i) for i in range(4)]
    return x.permute(*inv, *range(4, x.dim()))


def diagonal_mask(n: int, device: torch.device) -> Tensor:
    return torch.eye(n, dtype=torch.bool, device=device)


def cca_reference(q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Criss-cross attention over time line, row and column (centre counted once).

    Args:
        q, k: (B, Cqk, T, H, W). v: (B, Cv, T, H, W). Same dtype and device.
        scale: multiplies the dot products before the softmax (CCNet uses 1.0).

    Returns:
        out: (B, Cv, T, H, W) in the input dtype.
        lse: (B, T, H, W) float32 (float64 for float64 inputs): log-sum-exp of the scaled
            energies over the T + H + W - 2 keys of each position.

    Half-precision inputs are computed in float32. Differentiable by autograd.
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc = (x.to(acc).permute(0, 2, 3, 4, 1) for x in (q, k, v))  # (B, T, H, W, C)

    energies = []
    for perm, centre_excluded in PASSES:
        e = to_pass(qc, perm) @ to_pass(kc, perm).transpose(-1, -2) * scale  # (..., L, L)
        if centre_excluded:
            e = e.masked_fill(diagonal_mask(e.shape[-1], e.device), float("-inf"))
        energies.append(e)

    # One softmax over the union: shift by the joint max (finite: the row pass holds the centre).
    m = torch.stack([from_pass(e.amax(-1), p) for e, (p, _) in zip(energies, PASSES)]).amax(0)
    m = m.detach()  # (B, T, H, W)
    denom = torch.zeros_like(m)
    out = torch.zeros(*m.shape, v.shape[1], dtype=acc, device=v.device)  # (B, T, H, W, Cv)
    for e, (perm, _) in zip(energies, PASSES):
        p = torch.exp(e - to_pass(m, perm)[..., None])  # (..., L, L)
        denom = denom + from_pass(p.sum(-1), perm)
        out = out + from_pass(p @ to_pass(vc, perm), perm)
    out = out / denom[..., None]
    lse = m + torch.log(denom)
    return out.permute(0, 4, 1, 2, 3).to(q.dtype), lse


def cca_reference_backward(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grad_out: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Analytic gradients, pass by pass (the fused kernel's math in PyTorch).

    P = exp(scale * <q, k_j> - lse); dP_j = <dO, v_j>; dS = P * (dP - Delta), Delta = <dO, O>;
    dq = scale * sum_j dS_j k_j; dk_j = scale * sum_p dS_pj q_p; dv_j = sum_p P_pj dO_p.
    Returns (dq, dk, dv) as (B, C, T, H, W) in the input dtypes.
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc, oc, doc = (
        x.to(acc).permute(0, 2, 3, 4, 1) for x in (q, k, v, out, grad_out)
    )  # (B, T, H, W, C)
    lse = lse.to(acc)
    delta = (doc * oc).sum(-1)  # (B, T, H, W)
    dq, dk, dv = torch.zeros_like(qc), torch.zeros_like(kc), torch.zeros_like(vc)
    for perm, centre_excluded in PASSES:
        qp, kp, vp, dop = (to_pass(x, perm) for x in (qc, kc, vc, doc))  # (..., L, C)
        p = torch.exp(qp @ kp.transpose(-1, -2) * scale - to_pass(lse, perm)[..., None])
        if centre_excluded:
            p = p.masked_fill(diagonal_mask(p.shape[-1], p.device), 0.0)
        ds = p * (dop @ vp.transpose(-1, -2) - to_pass(delta, perm)[..., None])  # (..., L, L)
        dq += from_pass(ds @ kp, perm)
        dk += from_pass(ds.transpose(-1, -2) @ qp, perm)
        dv += from_pass(p.transpose(-1, -2) @ dop, perm)
    to_bcthw = lambda x, like: x.permute(0, 4, 1, 2, 3).to(like.dtype)  # noqa: E731
    return to_bcthw(dq * scale, q), to_bcthw(dk * scale, k), to_bcthw(dv, v)
