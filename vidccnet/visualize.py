"""Palette and overlay helpers for class-index masks (no plotting library needed).

A mask is an ``np.uint8`` array ``(H, W)`` of class indices; a palette is a list of ``(r, g, b)``
tuples, one per class. Colours of classes beyond the palette come from :func:`default_palette`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["colorize", "default_palette", "mask_to_image", "overlay", "palette_array"]


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A deterministic, well-spread palette (the PASCAL VOC bit-interleaving scheme).

    Args:
        num_classes: number of colours to return (>= 0).

    Returns:
        ``num_classes`` distinct ``(r, g, b)`` tuples for up to 256 classes.
    """
    colours = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return colours


def palette_array(palette: Sequence[Sequence[int]] | None, num_colours: int = 256) -> np.ndarray:
    """A ``(num_colours, 3)`` uint8 lookup table: ``palette`` first, then :func:`default_palette`.

    Raises:
        ValueError: when an entry is not three integers in [0, 255].
    """
    table = np.asarray(default_palette(num_colours), dtype=np.uint8).reshape(num_colours, 3)
    for i, colour in enumerate(list(palette or [])[:num_colours]):
        rgb = [int(v) for v in colour]
        if len(rgb) != 3 or min(rgb) < 0 or max(rgb) > 255:
            raise ValueError(
                f"palette entry {i} is {tuple(colour)!r}; expected three integers in [0, 255]"
            )
        table[i] = rgb
    return table


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]] | None) -> np.ndarray:
    """Colour a class-index mask.

    Args:
        mask: ``(H, W)`` integer class indices in [0, 255].
        palette: per-class colours (missing classes get default colours).

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    return palette_array(palette)[np.asarray(mask, dtype=np.uint8)]


def mask_to_image(mask: np.ndarray, palette: Sequence[Sequence[int]] | None) -> Image.Image:
    """A mode ``"P"`` PIL image whose pixel values are the class indices, with ``palette`` attached.

    Args:
        mask: ``(H, W)`` uint8 class indices.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    image = Image.fromarray(mask.astype(np.uint8, copy=False), mode="P")
    image.putpalette(palette_array(palette).reshape(-1).tolist())
    return image


def overlay(
    frame: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]] | None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend the coloured mask into the frame: ``(1 - alpha) * frame + alpha * colour``.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` class indices.
        alpha: weight of the mask colour in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if frame.shape[:2] != mask.shape:
        raise ValueError(f"frame {frame.shape[:2]} and mask {mask.shape} sizes differ")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = colorize(mask, palette).astype(np.float32)
    blended = (1.0 - alpha) * frame.astype(np.float32) + alpha * colour
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
