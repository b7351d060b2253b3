"""Criss-cross attention operator (reference PyTorch path and fused Triton kernels)."""

from .cca import criss_cross_attention, resolve_backend, triton_status
from .reference import cca_reference
from .weights import AttentionWeights, criss_cross_weights

__all__ = ["criss_cross_attention", "cca_reference", "resolve_backend", "triton_status"]
__all__ += ["AttentionWeights", "criss_cross_weights"]
