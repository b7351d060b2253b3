"""Neural-network layers built on the criss-cross attention operator."""

from .cca import CrissCrossAttention3d, RecurrentCrissCrossAttention

__all__ = ["CrissCrossAttention3d", "RecurrentCrissCrossAttention"]
