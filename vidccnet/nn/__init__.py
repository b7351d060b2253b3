"""Neural-network layers built on the criss-cross attention operator."""

from .cca import ATTENTION_INITS, CrissCrossAttention3d, RecurrentCrissCrossAttention, attention_off

__all__ = [
    "ATTENTION_INITS",
    "CrissCrossAttention3d",
    "RecurrentCrissCrossAttention",
    "attention_off",
]
