"""Criss-cross attention layers: a 3D CCA block and its recurrent (shared-weight) form."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..ops import criss_cross_attention
from ..ops.cca import check_backend

ATTENTION_INITS = ("ccnet", "identity")


def check_int(name: str, value: object) -> None:
    """Refuse a size given as a float (or bool): torch fails on it later, far from the cause."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")


class CrissCrossAttention3d(nn.Module):
    """CCNet's criss-cross attention block over time line, row and column.

    q, k: 1x1x1 convs C -> C // reduction (with bias); v: 1x1x1 conv C -> C;
    y = gamma * cca(q, k, v) + x with gamma a learned scalar.

    Initialisations (`init`):
        "ccnet": gamma = 0, PyTorch's default conv init: the block starts as the identity, as
            in CCNet. gamma = 0 is a saddle: q, k, v get no gradient until gamma moves.
        "identity": the value projection starts as the identity (weight I, bias 0) and gamma
            at `gamma_init` (1): the block starts as x + (attention-weighted mean of x over the
            time line, row and column), so q, k and v learn from the first step.

    Args:
        in_channels: C.
        reduction: channel reduction of the query/key projections (8 in CCNet).
        backend: operator backend ("auto", "reference", "triton").
        init: "ccnet" or "identity" (see above).
        gamma_init: gamma's initial value for init="identity".
    """

    def __init__(
        self, in_channels: int, reduction: int = 8, backend: str = "auto",
        init: str = "ccnet", gamma_init: float = 1.0,
    ) -> None:
        super().__init__()
        if init not in ATTENTION_INITS:
            raise ValueError(f"unknown attention init {init!r}; choose one of {ATTENTION_INITS}")
        check_int("in_channels", in_channels)
        check_int("reduction", reduction)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        check_backend(backend)  # at build time, not at the first forward
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
        if init == "identity":
            with torch.no_grad():
                self.value.weight.copy_(torch.eye(in_channels).view_as(self.value.weight))
                self.value.bias.zero_()
                self.gamma.fill_(gamma_init)

    def forward(self, x: Tensor, temporal: bool = True) -> Tensor:
        """x: (B, C, T, H, W) -> (B, C, T, H, W). `temporal=False` attends within each frame."""
        self.check_input(x)
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

    def check_input(self, x: Tensor) -> None:
        """Refuse what is not (B, C, T, H, W) with this block's C and T, H, W >= 1 (B may be 0)."""
        if x.dim() != 5:
            raise ValueError(f"expected input (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.value.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels but the attention was built for "
                             f"{self.value.in_channels} (shape {tuple(x.shape)})")
        if min(x.shape[2:]) == 0:
            raise ValueError(f"empty input {tuple(x.shape)}: T, H and W must be >= 1")


def _pointwise(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """A 1x1x1 Conv3d as a 1x1 Conv2d over (B, C, T*H, W): same result, fast CPU kernels.

    Under torch.compile it stays a Conv3d: inductor failed on the reshaped Conv2d once sizes
    became dynamic ("cannot determine truth value of Relational"), as on clips of new sizes.
    """
    if torch.compiler.is_compiling():
        return F.conv3d(x, conv.weight, conv.bias)
    B, C, T, H, W = x.shape
    Co = conv.out_channels
    y = F.conv2d(x.reshape(B, C, T * H, W), conv.weight.view(Co, C, 1, 1), conv.bias)
    return y.view(B, Co, T, H, W)


class RecurrentCrissCrossAttention(nn.Module):
    """One shared `CrissCrossAttention3d` applied `recurrence` times (RCCA).

    Each pass moves context along one axis of each key line, so after R passes a position has
    context from every position that differs from it in at most R of (t, h, w): R = 2 reaches
    its whole frame and every position sharing its row or column index, R = 3 the whole
    (T, H, W) volume (per frame, R = 2 reaches the whole frame, as in CCNet).
    `temporal=False` runs per-frame 2D attention with the same parameters, so checkpoints are
    interchangeable between the two settings. `init` / `gamma_init`: see
    `CrissCrossAttention3d`.
    """

    def __init__(
        self,
        in_channels: int,
        recurrence: int = 2,
        reduction: int = 8,
        temporal: bool = True,
        backend: str = "auto",
        init: str = "ccnet",
        gamma_init: float = 1.0,
    ) -> None:
        super().__init__()
        check_int("recurrence", recurrence)
        if recurrence < 0:
            raise ValueError(f"recurrence must be >= 0, got {recurrence}")
        self.cca = CrissCrossAttention3d(in_channels, reduction, backend, init, gamma_init)
        self.recurrence = recurrence
        self.temporal = temporal

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, T, H, W) -> (B, C, T, H, W)."""
        self.cca.check_input(x)  # also when recurrence = 0 makes this the identity
        for _ in range(self.recurrence):
            x = self.cca(x, temporal=self.temporal)
        return x

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}, temporal={self.temporal}"


@contextmanager
def attention_off(model: nn.Module) -> Iterator[int]:
    """Within the block, every `CrissCrossAttention3d` of `model` has gamma = 0 (its output is
    its input: a test-time ablation of the attention). Yields the number of blocks switched
    off; the trained gammas are restored on exit. A forward run on one side of the block
    cannot be differentiated on the other (autograd refuses: gamma is changed in place)."""
    blocks = [m for m in model.modules() if isinstance(m, CrissCrossAttention3d)]
    saved = [b.gamma.detach().clone() for b in blocks]
    try:
        with torch.no_grad():
            for b in blocks:
                b.gamma.zero_()
        yield len(blocks)
    finally:
        with torch.no_grad():
            for b, g in zip(blocks, saved):
                b.gamma.copy_(g)
