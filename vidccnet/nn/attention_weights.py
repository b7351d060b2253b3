"""What a trained CCNet attends to: the exact weights of one query, for every recurrence.

`model_attention_weights(model, clip, frame, pixel)` runs the model once on a clip, captures the
input of the shared criss-cross attention block at each of its R loops (forward pre-hooks on
`model.head.cca.cca`), recomputes that loop's queries and keys with the block's own 1x1x1
projections in float64 and returns `vidccnet.ops.criss_cross_weights` of the feature cell under
the pixel. Per-frame (2D, `temporal=False`) attention has no time-line keys: its `time` part is
all zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.weights import AttentionWeights, criss_cross_weights
from .cca import CrissCrossAttention3d, RecurrentCrissCrossAttention

__all__ = ["QueryAttention", "model_attention_weights", "pixel_to_cell"]

OUTPUT_STRIDE = 8  # the dilated backbone's output stride


@dataclass
class QueryAttention:
    """Attention weights of one feature cell of a clip.

    Attributes:
        cell: (t, h, w) of the query on the feature grid.
        grid: (T, h, w) size of the feature grid (h = ceil(H / 8), w = ceil(W / 8)).
        temporal: whether the model attends along the time line (3D) or per frame (2D).
        loops: one `AttentionWeights` per recurrence, in order (time (T,), row (w,),
            column (h,); the centre's weight in `row`).
    """

    cell: tuple[int, int, int]
    grid: tuple[int, int, int]
    temporal: bool
    loops: list[AttentionWeights]


def pixel_to_cell(
    pixel: tuple[int, int], size: tuple[int, int], stride: int = OUTPUT_STRIDE
) -> tuple[int, int]:
    """Feature cell (h, w) = (y // stride, x // stride) of pixel (y, x) in a frame of `size`
    (H, W), whose feature map is ceil(H / stride) x ceil(W / stride)."""
    y, x = (int(v) for v in pixel)
    H, W = (int(v) for v in size)
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f"pixel (y={y}, x={x}) is outside the {H}x{W} frame")
    return y // stride, x // stride


def _attention_of(model: nn.Module) -> RecurrentCrissCrossAttention:
    rcca = getattr(getattr(model, "head", None), "cca", None)
    if not isinstance(rcca, RecurrentCrissCrossAttention):
        raise ValueError(
            f"{type(model).__name__} has no criss-cross attention head (model.head.cca); "
            "expected a CCNet from vidccnet.models.create_model"
        )
    if rcca.recurrence == 0:
        raise ValueError(
            "the model has no attention to show: it was built with recurrence 0 (attention off)"
        )
    return rcca


def _project(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """The block's 1x1x1 projection in float64: (B, C, T, h, w) -> (B, C', T, h, w)."""
    bias = None if conv.bias is None else conv.bias.double()
    return F.conv3d(x.double(), conv.weight.double(), bias)


@torch.no_grad()
def model_attention_weights(
    model: nn.Module, clip: Tensor, frame: int, pixel: tuple[int, int]
) -> QueryAttention:
    """Exact attention weights of the feature cell under `pixel` of clip frame `frame`.

    Args:
        model: a CCNet (`vidccnet.models.create_model`) with recurrence >= 1; it is run in
            eval() mode (its mode is restored afterwards).
        clip: normalised (1, 3, T, H, W), as the model takes it.
        frame: index of the query frame in the clip, 0 <= frame < T.
        pixel: (y, x) in the clip's H x W frames; mapped to cell (y // 8, x // 8).

    Returns:
        `QueryAttention` with one `AttentionWeights` per recurrence.

    Raises:
        ValueError: a model without attention (or with recurrence 0), a bad clip, frame or pixel.
    """
    rcca = _attention_of(model)
    if clip.dim() != 5 or clip.shape[0] != 1 or clip.shape[1] != 3:
        raise ValueError(f"expected one clip (1, 3, T, H, W), got shape {tuple(clip.shape)}")
    T, H, W = clip.shape[2:]
    if not 0 <= frame < T:
        raise ValueError(f"frame {frame} is outside the clip of {T} frames")
    h, w = pixel_to_cell(pixel, (H, W))

    block: CrissCrossAttention3d = rcca.cca
    inputs: list[Tensor] = []  # (1, C, T, h, w) at each loop
    handle = block.register_forward_pre_hook(lambda _mod, args: inputs.append(args[0]))
    was_training = model.training
    try:
        model.eval()
        model(clip)
    finally:
        handle.remove()
        model.train(was_training)
    if len(inputs) != rcca.recurrence:
        raise RuntimeError(
            f"the attention block ran {len(inputs)} times for recurrence {rcca.recurrence}"
        )

    grid = (T, *inputs[0].shape[-2:])
    loops = []
    for x in inputs:
        q, k = _project(block.query, x), _project(block.key, x)  # (1, Cqk, T, h, w) float64
        if rcca.temporal:
            loops.append(criss_cross_weights(q, k, (frame, h, w)))
        else:  # per-frame attention: the query frame's row and column only
            one = criss_cross_weights(q[:, :, frame : frame + 1], k[:, :, frame : frame + 1],
                                      (0, h, w))
            loops.append(AttentionWeights(torch.zeros(T, dtype=torch.float64,
                                                      device=one.row.device), one.row, one.column))
    return QueryAttention((int(frame), h, w), grid, rcca.temporal, loops)
