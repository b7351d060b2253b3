"""Public criss-cross attention operator: input checks, backend choice, torch.library custom op.

`criss_cross_attention(q, k, v)` attends, for every position (t, h, w), over the union of its
time line, its row and its column (the centre once): T + H + W - 2 keys, one softmax.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from .export import cca_export, exporting
from .reference import _check_inputs, _check_scale, cca_reference, cca_reference_backward

BACKENDS = ("auto", "reference", "triton")
ENV_VAR = "VIDCCNET_CCA_BACKEND"


def _triton_module():
    from . import triton_cca  # imported lazily: triton is optional

    return triton_cca


@torch.compiler.assume_constant_result  # torch.compile: evaluated once while tracing
def triton_status(device: torch.device) -> tuple[bool, str]:
    """Whether the Triton backend can run on `device`, and why not."""
    try:
        mod = _triton_module()
    except ImportError as exc:  # triton missing or broken
        return False, f"the Triton kernels could not be imported ({exc})"
    return mod.triton_available(device)


_SHARED_MEMORY_WARNED: set[str] = set()


@torch.compiler.assume_constant_result  # torch.compile: evaluated once while tracing
def fits_shared_memory(
    device: torch.device, dtype: torch.dtype, head_dim: int, frames: int, frame: tuple[int, int],
    v_channels: int, grads: tuple[bool, bool, bool] | None = None,
) -> bool:
    """Whether the Triton kernels for these inputs (and, given `grads`, their backward) fit the
    GPU's shared memory; warns once per case when they do not."""
    H, W = frame
    why = _triton_module().shared_memory_shortfall(device, dtype, head_dim, frames, H, W,
                                                    v_channels, grads)
    if why and why not in _SHARED_MEMORY_WARNED:
        _SHARED_MEMORY_WARNED.add(why)
        warnings.warn(f"{why}: backend 'auto' uses the reference path for these inputs",
                      stacklevel=3)
    return not why


def check_backend(backend: str) -> None:
    """Refuse a backend name that is not one of :data:`BACKENDS` (ValueError)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def resolve_backend(
    backend: str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    head_dim: int | None = None,
    frame: tuple[int, int] | None = None,
    frames: int | None = None,
    v_channels: int | None = None,
    grads: tuple[bool, bool, bool] | None = None,
) -> str:
    """Turn "auto" (or the env var) into a concrete backend for tensors on `device`.

    "auto" picks the Triton kernels on CUDA only for inputs they take (`dtype`, query/key
    width `head_dim`, frame size `frame` = (H, W), and the clip's size: `frames` = T and the
    value width `v_channels`, when given) and, when all of these are given, only if the
    kernels fit the GPU's shared memory (the backward's too for the gradients `grads` of
    (q, k, v)); anything else runs on the reference path.
    """
    check_backend(backend)
    from_env = False
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(
                f"${ENV_VAR}={backend!r} is not a backend; set it to one of {', '.join(BACKENDS)}"
            )
        from_env = backend != "auto"
    if backend == "auto":
        if device.type == "cuda" and triton_status(device)[0]:
            H, W = frame if frame is not None else (None, None)
            fits = dtype is None or head_dim is None or _triton_module().supports(
                dtype, head_dim, H, W, frames, v_channels)
            if fits and None not in (dtype, head_dim, frame, frames, v_channels):
                fits = fits_shared_memory(device, dtype, head_dim, frames, frame, v_channels,
                                          grads)
            return "triton" if fits else "reference"
        return "reference"
    if backend == "triton":
        ok, why = triton_status(device)
        if not ok:
            way = (f"set {ENV_VAR}=reference or unset it" if from_env
                   else "use backend='reference'")
            chosen = f" (chosen by {ENV_VAR}=triton)" if from_env else ""
            raise RuntimeError(f"the triton backend{chosen} cannot run here: {why}; {way}")
        H, W = frame if frame is not None else (None, None)
        if from_env and dtype is not None and head_dim is not None and not _triton_module(
                ).supports(dtype, head_dim, H, W, frames, v_channels):
            raise ValueError(
                f"{ENV_VAR}=triton chose the Triton kernels, which do not take these inputs "
                f"(dtype {dtype}, Cqk {head_dim}, frame {H}x{W}; see triton_cca.supports); set "
                f"{ENV_VAR}=reference or unset it")
    return backend


def criss_cross_attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float = 1.0, backend: str = "auto"
) -> Tensor:
    """3D criss-cross attention (2D CCNet for 4-D inputs).

    Args:
        q, k: (B, Cqk, T, H, W) or (B, Cqk, H, W).
        v: (B, Cv, T, H, W) or (B, Cv, H, W).
        scale: factor on the dot products (1.0 as in CCNet).
        backend: "auto", "reference" or "triton"; ${VIDCCNET_CCA_BACKEND} overrides "auto".

    Returns:
        (B, Cv, T, H, W) (or (B, Cv, H, W)), the dtype of the inputs.
    """
    _check_inputs(q, k, v)
    scale = _check_scale(scale)
    two_d = q.dim() == 4
    if two_d:
        q, k, v = q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2)
    if exporting():  # the custom op has no ONNX translation: standard ops
        out = cca_export(q, k, v, scale)
        return out.squeeze(2) if two_d else out
    grads = tuple(x.requires_grad for x in (q, k, v)) if torch.is_grad_enabled() else None
    name = resolve_backend(backend, q.device, q.dtype, q.shape[1], tuple(q.shape[3:]),
                           frames=q.shape[2], v_channels=v.shape[1], grads=grads)
    out, _ = cca_op(q, k, v, scale, name)
    return out.squeeze(2) if two_d else out


# --- torch.library custom op -------------------------------------------------------------------
#
# The Triton kernels work on channels-last storage: their outputs are (B, C, T, H, W) tensors in
# torch.channels_last_3d (no copy back); the fake implementations give the same strides. Outputs
# are tensors of their own, never views, so that in-place ops on them are allowed.


def _like(x: Tensor, channels: int, backend: str, dtype: torch.dtype | None = None) -> Tensor:
    """An empty (B, channels, T, H, W) tensor with the strides the backend's outputs have."""
    B, _, T, H, W = x.shape
    fmt = torch.channels_last_3d if backend == "triton" else torch.contiguous_format
    return torch.empty((B, channels, T, H, W), dtype=dtype or x.dtype, device=x.device,
                       memory_format=fmt)


@torch.library.custom_op("vidccnet::cca_fwd", mutates_args=())
def cca_op(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str) -> tuple[Tensor, Tensor]:
    """Forward of the op: (out (B, Cv, T, H, W), lse (B, T, H, W) float32/float64)."""
    if backend == "triton":
        return _triton_module().cca_forward(q, k, v, scale)
    with torch.no_grad():
        out, lse = cca_reference(q, k, v, scale)
    return out.contiguous(), lse.contiguous()


@cca_op.register_fake
def _(q, k, v, scale, backend):
    B, _, T, H, W = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return _like(v, v.shape[1], backend), q.new_empty((B, T, H, W), dtype=lse_dtype)


@torch.library.custom_op("vidccnet::cca_bwd", mutates_args=())
def cca_bwd_op(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grad_out: Tensor,
    scale: float, backend: str, need_q: bool, need_k: bool, need_v: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of the op: (dq, dk, dv), recomputing probabilities from the saved lse.

    Only the gradients flagged by ``need_*`` are computed; the others are empty tensors.
    """
    need = (need_q, need_k, need_v)
    if backend == "triton":
        grads = _triton_module().cca_backward(q, k, v, out, lse, grad_out, scale, need)
    else:
        grads = cca_reference_backward(q, k, v, out, lse, grad_out, scale, needs_grad=need)
        grads = tuple(g.contiguous() if n else None for g, n in zip(grads, need))
    return tuple(g if g is not None else x.new_empty(0) for g, x in zip(grads, (q, k, v)))


@cca_bwd_op.register_fake
def _(q, k, v, out, lse, grad_out, scale, backend, need_q, need_k, need_v):
    return tuple(_like(x, x.shape[1], backend) if n else x.new_empty(0)
                 for x, n in zip((q, k, v), (need_q, need_k, need_v)))


def _setup_context(ctx, inputs, output):
    q, k, v, scale, backend = inputs
    out, lse = output
    if not any(ctx.needs_input_grad[:2]):  # only dq / dk read it: out stays free to change
        out = None
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale, ctx.backend = scale, backend
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    need_q, need_k, need_v = ctx.needs_input_grad[:3]
    if not (need_q or need_k or need_v):
        return None, None, None, None, None
    if out is None:  # not saved: only dq / dk read it, and any tensor of its shape stands in
        out = grad_out
    dq, dk, dv = cca_bwd_op(q, k, v, out, lse, grad_out, ctx.scale, ctx.backend,
                            bool(need_q), bool(need_k), bool(need_v))
    return (dq if need_q else None, dk if need_k else None, dv if need_v else None, None, None)


cca_op.register_autograd(_backward, setup_context=_setup_context)


def _bwd_setup_context(ctx, inputs, output):
    pass


def _double_backward(ctx, *grads):
    raise RuntimeError(
        "criss_cross_attention does not support double backward (second-order gradients); "
        "differentiate it once, without create_graph=True through its backward"
    )


cca_bwd_op.register_autograd(_double_backward, setup_context=_bwd_setup_context)
