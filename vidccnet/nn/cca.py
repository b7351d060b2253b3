"""Criss-cross attention layers: a 3D CCA block and its recurrent (shared-weight) form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..ops import criss_cross_attention


class CrissCrossAttention3d(nn.Module):
    """CCNet's criss-cross attention block over time line, row and column.

    q, k: 1x1x1 convs C -> C // reduction (with bias); v: 1x1x1 conv C -> C;
    y = gamma * cca(q, k, v) + x with gamma a scalar initialised to 0 (identity at init).

    Args:
        in_channels: C.
        reduction: channel reduction of the query/key projections (8 in CCNet).
        backend: operator backend ("auto", "reference", "triton").
    """

    def __init__(self, in_channels: int, reduction: int = 8, backend: str = "auto") -> None:
        super().__init__()
        if in_channels < reduction or in_channels % reduction:
            raise ValueError(
                f"in_channels={in_channels} must be a positive multiple of reduction={reduction}"
            )
        qk = in_channels // reduction
        self.query = nn.Conv3d(in_channels, qk, 1)
        self.key = nn.Conv3d(in_channels, qk, 1)
        self.value = nn.Conv3d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.backend = backend

    def forward(self, x: Tensor, temporal: bool = True) -> Tensor:
        """x: (B, C, T, H, W) -> (B, C, T, H, W). `temporal=False` attends within each frame."""
        if x.dim() != 5:
            raise ValueError(f"expected input (B, C, T, H, W), got shape {tuple(x.shape)}")
        xc = x.contiguous()  # one copy for the three projections (their reshapes are views)
        q, k, v = (_pointwise(conv, xc) for conv in (self.query, self.key, self.value))
        if temporal:
            out = criss_cross_attention(q, k, v, backend=self.backend)
        else:  # each frame on its own: fold T into the batch, 2D CCA
            T = x.shape[2]
            q, k, v = (rearrange(z, "b c t h w -> (b t) c h w") for z in (q, k, v))
            out = criss_cross_attention(q, k, v, backend=self.backend)
            out = rearrange(out, "(b t) c h w -> b c t h w", t=T)
        return self.gamma * out + x


def _pointwise(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """A 1x1x1 Conv3d as a 1x1 Conv2d over (B, C, T*H, W): same result, fast CPU kernels."""
    B, C, T, H, W = x.shape
    weight = conv.weight.view(conv.out_channels, C, 1, 1)
    return F.conv2d(x.reshape(B, C, T * H, W), weight, conv.bias).view(B, -1, T, H, W)


class RecurrentCrissCrossAttention(nn.Module):
    """One shared `CrissCrossAttention3d` applied `recurrence` times (RCCA).

    With R = 2 every position gathers context from the whole (T, H, W) volume.
    `temporal=False` runs per-frame 2D attention with the same parameters, so checkpoints are
    interchangeable between the two settings.
    """

    def __init__(
        self,
        in_channels: int,
        recurrence: int = 2,
        reduction: int = 8,
        temporal: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if recurrence < 0:
            raise ValueError(f"recurrence must be >= 0, got {recurrence}")
        self.cca = CrissCrossAttention3d(in_channels, reduction, backend)
        self.recurrence = recurrence
        self.temporal = temporal

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, T, H, W) -> (B, C, T, H, W)."""
        for _ in range(self.recurrence):
            x = self.cca(x, temporal=self.temporal)
        return x

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}, temporal={self.temporal}"
