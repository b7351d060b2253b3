"""Reading single image files: RGB frames and index-valued label PNGs."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as np.uint8 (H, W, 3) RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file, read from its header (no decoding)."""
    with Image.open(path) as im:
        return im.height, im.width


def load_index_png(path: str | os.PathLike) -> np.ndarray:
    """A label image's stored values as np.uint8 (H, W) (palette indices for mode "P")."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            im = im.convert("L")
        return np.asarray(im)
