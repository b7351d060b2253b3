"""CCNet heads: the recurrent criss-cross attention (RCCA) head and the auxiliary FCN head.

All 3x3 convolutions run per frame on folded frames (B*T, C, h, w); only the criss-cross
attention sees the clip as (B, C, T, h, w) and, in temporal mode, mixes frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn import RecurrentCrissCrossAttention

EMBED_SOURCES = ("attention", "head")


def conv_bn_relu(
    in_channels: int, out_channels: int, negative_slope: float = 0.0
) -> nn.Sequential:
    """3x3 conv (no bias, padding 1) + BatchNorm2d + ReLU on (N, C, h, w).

    ``negative_slope > 0`` uses LeakyReLU instead (the official CCNet head's InPlace-ABN
    default is 0.01); the parameters and their names are the same either way.
    """
    act = nn.LeakyReLU(negative_slope, inplace=True) if negative_slope else nn.ReLU(inplace=True)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        act,
    )


def fold_frames(x: Tensor) -> Tensor:
    """(B, C, T, h, w) -> (B*T, C, h, w)."""
    B, C, T, h, w = x.shape
    return x.transpose(1, 2).reshape(B * T, C, h, w)


def unfold_frames(x: Tensor, num_frames: int) -> Tensor:
    """(B*T, C, h, w) -> (B, C, T, h, w) (a view)."""
    BT, C, h, w = x.shape
    return x.view(BT // num_frames, num_frames, C, h, w).transpose(1, 2)


class RCCAHead(nn.Module):
    """Official CCNet head with a (3D or per-frame) recurrent criss-cross attention.

    conva: conv3x3 C_in -> C + BN + ReLU; cca: R shared criss-cross attention loops;
    convb: conv3x3 C -> C + BN + ReLU; bottleneck: concat(input, convb) (C_in + C) -> conv3x3
    -> C + BN + ReLU; dropout: Dropout2d(0.1); classifier: 1x1 conv C -> K.
    embed: a training-only 1x1 conv C -> D on the output of the R attention loops
    (`embed_from="attention"`) or on the fused features the classifier reads
    (`embed_from="head"`); its output is the low-dimensional embedding on which the
    category-consistent loss works.

    Args:
        in_channels: C_in (backbone layer4 channels).
        num_classes: K.
        channels: head width C (512 in CCNet).
        recurrence: R (0 turns the attention off).
        temporal: attend along the time line too (3D) or within each frame only.
        reduction: query/key channel reduction of the attention (8).
        backend: criss-cross attention backend.
        dropout: Dropout2d probability before the classifier.
        negative_slope: LeakyReLU slope after each BN (0: ReLU, as mmseg's CCHead).
        embed_dim: D, width of the category-consistent loss's embedding (16).
        attention_init: "ccnet" (gamma = 0) or "identity" (see `CrissCrossAttention3d`).
        gamma_init: gamma's initial value for attention_init="identity".
        embed_from: "attention" or "head": where the embedding is taken (see above).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 512,
        recurrence: int = 2,
        temporal: bool = True,
        reduction: int = 8,
        backend: str = "auto",
        dropout: float = 0.1,
        negative_slope: float = 0.0,
        embed_dim: int = 16,
        attention_init: str = "ccnet",
        gamma_init: float = 1.0,
        embed_from: str = "attention",
    ) -> None:
        super().__init__()
        if embed_from not in EMBED_SOURCES:
            raise ValueError(f"embed_from must be one of {EMBED_SOURCES}, got {embed_from!r}")
        self.embed_from = embed_from
        self.conva = conv_bn_relu(in_channels, channels, negative_slope)
        self.cca = RecurrentCrissCrossAttention(
            channels, recurrence=recurrence, reduction=reduction, temporal=temporal,
            backend=backend, init=attention_init, gamma_init=gamma_init,
        )
        self.embed = nn.Conv2d(channels, embed_dim, 1)
        self.convb = conv_bn_relu(channels, channels, negative_slope)
        self.bottleneck = conv_bn_relu(in_channels + channels, channels, negative_slope)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor, num_frames: int) -> tuple[Tensor, Tensor | None]:
        """x: (B*T, C_in, h, w) folded -> (logits (B*T, K, h, w), embedding (B*T, D, h, w) in
        train() mode, None in eval() mode)."""
        y = self.conva(x)  # (B*T, C, h, w)
        if self.cca.recurrence > 0:
            y5 = self.cca(unfold_frames(y, num_frames))  # (B, C, T, h, w)
            y = fold_frames(y5).contiguous(memory_format=_format_of(x))
        feats = self.bottleneck(torch.cat([x, self.convb(y)], dim=1))  # (B*T, C, h, w)
        emb = None
        if self.training:  # (B*T, D, h, w)
            emb = self.embed(y if self.embed_from == "attention" else feats)
        return self.classifier(self.dropout(feats)), emb


class FCNHead(nn.Module):
    """Auxiliary FCN head on layer3: conv3x3 -> C + BN + ReLU, Dropout2d(0.1), 1x1 classifier."""

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1,
        negative_slope: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels, negative_slope)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C_in, h, w) -> (N, K, h, w)."""
        return self.classifier(self.dropout(self.conv(x)))


def _format_of(x: Tensor) -> torch.memory_format:
    """channels_last if the folded (N, C, h, w) tensor is stored that way, else contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
