"""Neural-network layers built on the criss-cross attention operator."""

from .attention_weights import QueryAttention, model_attention_weights, pixel_to_cell
from .cca import ATTENTION_INITS, CrissCrossAttention3d, RecurrentCrissCrossAttention, attention_off

__all__ = [
    "ATTENTION_INITS",
    "CrissCrossAttention3d",
    "QueryAttention",
    "RecurrentCrissCrossAttention",
    "attention_off",
    "model_attention_weights",
    "pixel_to_cell",
]
