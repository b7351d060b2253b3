"""The exact criss-cross attention weights of one query position, for inspection.

`criss_cross_weights(q, k, (t, h, w))` evaluates the operator's definition for a single query in
float64: one softmax over the T + H + W - 2 keys of p = (t, h, w) (its time line, row and column,
the centre once), returned split by axis. It never builds anything larger than the key set, so
it works on feature maps of any size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["AttentionWeights", "criss_cross_weights"]


class AttentionWeights(NamedTuple):
    """Softmax weights of one query p = (t, h, w) over its criss-cross keys (float64).

    Attributes:
        time: (T,) weight of key (t', h, w) for each frame t'. `time[t]` is 0: the centre
            is reported in `row`.
        row: (W,) weight of key (t, h, w') for each column w'; `row[w]` is the centre's weight.
        column: (H,) weight of key (t, h', w) for each row h'. `column[h]` is 0 (centre in `row`).

    `time.sum() + row.sum() + column.sum() == 1`.
    """

    time: Tensor
    row: Tensor
    column: Tensor


def criss_cross_weights(
    q: Tensor, k: Tensor, position: tuple[int, ...], *, scale: float = 1.0, batch: int = 0
) -> AttentionWeights:
    """Attention weights of query `position` = (t, h, w) as `criss_cross_attention` defines them.

    Args:
        q, k: (B, Cqk, T, H, W) queries and keys (any float dtype; computed in float64), or
            (B, Cqk, H, W) for 2D criss-cross attention.
        position: (t, h, w) of the query, 0 <= t < T, 0 <= h < H, 0 <= w < W; (h, w) for 4-D
            inputs.
        scale: factor on the dot products, as in `criss_cross_attention` (CCNet: 1.0).
        batch: which batch element.

    Returns:
        `AttentionWeights` (time (T,), row (W,), column (H,); time (0,) for 4-D inputs),
        float64 on q's device, such that out[batch, :, t, h, w] = sum over the three parts of
        weight * v at that key.
    """
    if q.dim() not in (4, 5) or q.shape != k.shape:
        raise ValueError(
            f"expected q and k of one shape (B, Cqk, T, H, W) or (B, Cqk, H, W); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}"
        )
    two_d = q.dim() == 4
    names = "(h, w)" if two_d else "(t, h, w)"
    if len(position) != q.dim() - 2:
        raise ValueError(f"expected the query's position {names}, got {tuple(position)}")
    if two_d:
        weights = criss_cross_weights(q.unsqueeze(2), k.unsqueeze(2), (0, *position),
                                      scale=scale, batch=batch)
        return weights._replace(time=weights.time[:0])
    B, _, T, H, W = q.shape
    t, h, w = (int(i) for i in position)
    if not (0 <= batch < B and 0 <= t < T and 0 <= h < H and 0 <= w < W):
        raise ValueError(
            f"query (batch {batch}, t {t}, h {h}, w {w}) is outside (B, T, H, W) = "
            f"({B}, {T}, {H}, {W})"
        )
    qp = q[batch, :, t, h, w].double()  # (Cqk,)
    kb = k[batch].double()  # (Cqk, T, H, W)
    time = scale * (qp @ kb[:, :, h, w])  # (T,)
    row = scale * (qp @ kb[:, t, h, :])  # (W,)
    column = scale * (qp @ kb[:, t, :, w])  # (H,)
    time[t] = float("-inf")  # the centre is counted once, in the row
    column[h] = float("-inf")
    p = torch.softmax(torch.cat([time, row, column]), dim=0)  # (T + W + H,)
    return AttentionWeights(*torch.split(p, [T, W, H]))
