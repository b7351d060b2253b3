"""Criss-cross attention from standard operators, for exporters (ONNX).

The custom op `vidccnet::cca_fwd` (fused Triton kernels or the reference path) has no ONNX
translation. `cca_export` computes the same attention with einsum, a mask and one softmax:
operators every ONNX runtime has, and no shape-dependent Python control flow, so `torch.export`
keeps T, H and W symbolic. `criss_cross_attention` switches to it while `torch.onnx.export`
traces a model (`exporting()`), which is why `torch.onnx.export(model, clip, dynamo=True)` works
unchanged where the exporter says it exports (`torch.onnx.is_in_onnx_export()`: torch 2.14; not
torch 2.6 / 2.7, whose dynamo exporter leaves it False); `vidccnet.export.export_onnx` switches it
itself (`export_formulation()`), on every torch.

It materialises the (B, T, H, W, T + H + W - 2) attention map (CCNet's own layout), so it is
meant for inference graphs, not for training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

_FORCED = False  # inside export_formulation()


@contextlib.contextmanager
def export_formulation() -> Iterator[None]:
    """Within it, `criss_cross_attention` runs `cca_export` (for an exporter that does not set
    `torch.onnx.is_in_onnx_export()`)."""
    global _FORCED
    previous, _FORCED = _FORCED, True
    try:
        yield
    finally:
        _FORCED = previous


def exporting() -> bool:
    """Whether `criss_cross_attention` takes the standard-op formulation now: while
    `torch.onnx.export` traces (where it says so) or inside `export_formulation()`."""
    return _FORCED or torch.onnx.is_in_onnx_export()


def cca_export(q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0) -> Tensor:
    """Criss-cross attention (time line, row, column, the centre once) with standard ops.

    Args:
        q, k: (B, Cqk, T, H, W). v: (B, Cv, T, H, W). Same dtype.
        scale: factor on the dot products (1.0 as in CCNet).

    Returns:
        (B, Cv, T, H, W) in the dtype of the inputs (computed in float32, or float64 for
        float64 inputs).
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    T, H, W = q.shape[2], q.shape[3], q.shape[4]
    # Energies of each position (b, t, h, w) against its row (W keys, centre included), its
    # column (H keys) and its time line (T keys); the last two drop the centre with -inf.
    e_row = torch.einsum("bcthw,bcthx->bthwx", qa, ka) * scale  # (B, T, H, W, W)
    e_col = torch.einsum("bcthw,bctyw->bthwy", qa, ka) * scale  # (B, T, H, W, H)
    e_time = torch.einsum("bcthw,bcshw->bthws", qa, ka) * scale  # (B, T, H, W, T)
    neg_inf = torch.tensor(float("-inf"), dtype=acc, device=q.device)
    h_idx = torch.arange(H, device=q.device)
    t_idx = torch.arange(T, device=q.device)
    centre_col = (h_idx[:, None] == h_idx[None, :])[None, None, :, None, :]  # (1, 1, H, 1, H)
    centre_time = (t_idx[:, None] == t_idx[None, :])[None, :, None, None, :]  # (1, T, 1, 1, T)
    e_col = torch.where(centre_col, neg_inf, e_col)
    e_time = torch.where(centre_time, neg_inf, e_time)
    # One softmax over the union of the three key sets (finite: the row holds the centre).
    attn = torch.softmax(torch.cat([e_row, e_col, e_time], dim=-1), dim=-1)
    a_row, a_col, a_time = attn[..., :W], attn[..., W : W + H], attn[..., W + H :]
    out = (
        torch.einsum("bthwx,bcthx->bcthw", a_row, va)
        + torch.einsum("bthwy,bctyw->bcthw", a_col, va)
        + torch.einsum("bthws,bcshw->bcthw", a_time, va)
    )  # (B, Cv, T, H, W)
    return out.to(q.dtype)
