"""Pure-PyTorch criss-cross attention: three axis passes merged into one softmax.

Never builds a (THW x THW) matrix: the energies are (B, T, H, W, W + H + T), i.e.
O(B * THW * (T + H + W)) memory.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cca_reference(q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Criss-cross attention over time line, row and column (centre counted once).

    Args:
        q, k: (B, Cqk, T, H, W). v: (B, Cv, T, H, W). Same dtype and device.
        scale: multiplies the dot products before the softmax (CCNet uses 1.0).

    Returns:
        out: (B, Cv, T, H, W) in the input dtype.
        lse: (B, T, H, W) float32 (float64 for float64 inputs): log-sum-exp of the scaled
            energies over the T + H + W - 2 keys of each position.

    Half-precision inputs are computed in float32.
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
    _, _, T, H, W = q.shape
    dev = q.device

    # Row pass (keys (t, h, w'), the centre included).
    e_row = torch.einsum("bcthw,bcthx->bthwx", qf, kf) * scale  # (B, T, H, W, W)
    # Column pass (keys (t, h', w), h' != h).
    e_col = torch.einsum("bcthw,bctyw->bthwy", qf, kf) * scale  # (B, T, H, W, H)
    eye_h = torch.eye(H, dtype=torch.bool, device=dev).view(1, 1, H, 1, H)
    e_col = e_col.masked_fill(eye_h, float("-inf"))
    # Time pass (keys (t', h, w), t' != t).
    e_tim = torch.einsum("bcthw,bcshw->bthws", qf, kf) * scale  # (B, T, H, W, T)
    eye_t = torch.eye(T, dtype=torch.bool, device=dev).view(1, T, 1, 1, T)
    e_tim = e_tim.masked_fill(eye_t, float("-inf"))

    # One softmax over the union: shift by the joint max (finite: the row pass holds the centre).
    m = torch.maximum(torch.maximum(e_row.amax(-1), e_col.amax(-1)), e_tim.amax(-1)).detach()
    p_row = torch.exp(e_row - m[..., None])
    p_col = torch.exp(e_col - m[..., None])
    p_tim = torch.exp(e_tim - m[..., None])
    denom = p_row.sum(-1) + p_col.sum(-1) + p_tim.sum(-1)  # (B, T, H, W)

    out = (
        torch.einsum("bthwx,bcthx->bcthw", p_row, vf)
        + torch.einsum("bthwy,bctyw->bcthw", p_col, vf)
        + torch.einsum("bthws,bcshw->bcthw", p_tim, vf)
    ) / denom[:, None]
    lse = m + torch.log(denom)
    return out.to(q.dtype), lse
