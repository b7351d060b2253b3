"""Neural-network layers built on the criss-cross attention operator."""

from .attention_weights import QueryAttention, model_attention_weights, pixel_to_cell
from .cca import CrissCrossAttention3d, RecurrentCrissCrossAttention

__all__ = ["CrissCrossAttention3d", "RecurrentCrissCrossAttention"]
__all__ += ["QueryAttention", "model_attention_weights", "pixel_to_cell"]
