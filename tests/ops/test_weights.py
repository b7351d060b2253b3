"""criss_cross_weights vs a dense float64 masked softmax over all N = T*H*W positions."""

import pytest
import torch

from vidccnet.ops import criss_cross_attention, criss_cross_weights

SHAPES = [  # (B, Cqk, T, H, W)
    (1, 4, 1, 7, 13),
    (2, 3, 5, 1, 6),
    (1, 2, 3, 5, 1),
    (1, 4, 4, 7, 13),
]


def dense_weights(q, k, scale):
    """(B, N, N) float64 softmax over the criss-cross key set of every query, N = T*H*W."""
    B, C, T, H, W = q.shape
    t, h, w = (a.flatten() for a in torch.meshgrid(
        torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"))
    eq = lambda a: a[:, None] == a[None, :]  # noqa: E731
    mask = (eq(h) & eq(w)) | (eq(t) & eq(h)) | (eq(t) & eq(w))  # time line | row | column
    e = torch.einsum("bcn,bcm->bnm", q.double().flatten(2), k.double().flatten(2)) * scale
    return e.masked_fill(~mask, float("-inf")).softmax(-1)


def positions(T, H, W):
    return sorted({(0, 0, 0), (T - 1, H - 1, W - 1), (T // 2, H // 2, W // 3), (0, H - 1, 0)})


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 0.35])
def test_weights_equal_dense_softmax(shape, scale):
    B, C, T, H, W = shape
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 for _ in range(2))
    dense = dense_weights(q, k, scale).view(B, T, H, W, T, H, W)
    for b in range(B):
        for t, h, w in positions(T, H, W):
            got = criss_cross_weights(q, k, (t, h, w), scale=scale, batch=b)
            d = dense[b, t, h, w]  # (T, H, W) weights of every key, 0 off the criss-cross
            assert (got.time.shape, got.row.shape, got.column.shape) == ((T,), (W,), (H,))
            assert got.time.dtype == torch.float64
            time, column = d[:, h, w].clone(), d[t, :, w].clone()
            time[t] = column[h] = 0.0  # the centre is reported once, in the row
            torch.testing.assert_close(got.time, time, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(got.row, d[t, h, :], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(got.column, column, rtol=1e-12, atol=1e-14)
            total = got.time.sum() + got.row.sum() + got.column.sum()
            assert total.item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_weighted_values_equal_operator_output(shape, dtype, tol):
    B, C, T, H, W = shape
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, 3, T, H, W, generator=g, dtype=dtype)
    out = criss_cross_attention(q, k, v, backend="reference")
    vd = v.double()
    for t, h, w in positions(T, H, W):
        wt = criss_cross_weights(q, k, (t, h, w), batch=B - 1)
        vb = vd[B - 1]  # (Cv, T, H, W)
        mixed = vb[:, :, h, w] @ wt.time + vb[:, t, h, :] @ wt.row + vb[:, t, :, w] @ wt.column
        torch.testing.assert_close(mixed, out[B - 1, :, t, h, w].double(), rtol=tol, atol=tol)


def test_bad_query_raises():
    q = torch.zeros(1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="outside"):
        criss_cross_weights(q, q, (3, 0, 0))
    with pytest.raises(ValueError, match="outside"):
        criss_cross_weights(q, q, (0, 0, 0), batch=1)
    with pytest.raises(ValueError, match="one shape"):
        criss_cross_weights(q, q[:, :1], (0, 0, 0))
    with pytest.raises(ValueError, match=r"position \(t, h, w\).*got \(0, 0\)"):
        criss_cross_weights(q, q, (0, 0))  # not an unpacking error


def test_weights_of_2d_inputs():
    """4-D (B, Cqk, H, W) inputs, as criss_cross_attention takes for 2D CCNet: position (h, w),
    weights over the row and the column (an empty time part); they reproduce the output."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, c, 5, 7, generator=g, dtype=torch.float64) for c in (3, 3, 4))
    out = criss_cross_attention(q, k, v, backend="reference")
    wt = criss_cross_weights(q, k, (4, 2), batch=1)
    assert (wt.time.shape, wt.row.shape, wt.column.shape) == ((0,), (7,), (5,))
    mixed = v[1, :, 4, :] @ wt.row + v[1, :, :, 2] @ wt.column
    torch.testing.assert_close(mixed, out[1, :, 4, 2], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"position \(h, w\)"):
        criss_cross_weights(q, k, (0, 4, 2))
