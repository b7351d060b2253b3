"""Reading single image files: RGB frames and index-valued label PNGs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps


class ImageReadError(ValueError):
    """An image file that exists but cannot be decoded (empty, truncated, not an image)."""


@contextmanager
def _open(path: str | os.PathLike, upright: bool = False) -> Iterator[Image.Image]:
    """``Image.open`` whose decoding errors name the file (a missing file stays
    FileNotFoundError); ``upright``: turned by the EXIF orientation its header holds (the one
    ``image_size`` reads)."""
    try:
        with Image.open(path) as im:
            turn = _orientation(im) != 1 if upright else False  # before load() reads further
            im.load()
            yield ImageOps.exif_transpose(im) if turn else im
    except FileNotFoundError:
        raise
    except OSError as exc:  # PIL.UnidentifiedImageError, truncated data
        raise ImageReadError(f"cannot read image '{path}': {exc}") from None


EXIF_ORIENTATION = 0x0112  # values 5-8 turn the image by 90 degrees (width and height swap)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1 = upright), read from the header: a PNG's only from an eXIf
    chunk before its pixels (``getexif`` would decode the whole PNG to look further)."""
    if im.format == "PNG":
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(EXIF_ORIENTATION, 1))
    return int(im.getexif().get(EXIF_ORIENTATION, 1))


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as np.uint8 (H, W, 3) RGB, upright as viewers show it (an EXIF orientation,
    as phone photos store it, is applied); 16-bit grey is scaled to 8 bits, not clipped.

    Raises:
        ImageReadError: the file is not a readable image.
    """
    with _open(path, upright=True) as im:
        if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey: the top 8 bits
            grey = np.asarray(im).astype(np.int64)
            # I;16 is 16-bit whatever the values (every frame of a sequence scales alike);
            # Pillow's 32-bit "I" holds 8-bit data in some files
            if im.mode.startswith("I;16") or grey.max(initial=0) > 255:
                grey = grey >> 8
            grey = grey.clip(0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.array(im.convert("RGB"))  # the caller's own, writable (asarray: read-only)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file as ``load_rgb`` returns it (EXIF orientation applied), read from
    its header (no decoding).

    Raises:
        ImageReadError: the file is not a readable image.
    """
    try:
        with Image.open(path) as im:
            turned = _orientation(im) in (5, 6, 7, 8)
            return (im.width, im.height) if turned else (im.height, im.width)
    except FileNotFoundError:
        raise
    except OSError as exc:  # PIL.UnidentifiedImageError, an empty file
        raise ImageReadError(f"cannot read image '{path}': {exc}") from None


def load_index_png(path: str | os.PathLike) -> np.ndarray:
    """A label image's stored values as np.uint8 (H, W) (palette indices for mode "P"; 0 / 1 for
    a 1-bit image; 16-bit images must hold values <= 255).

    Raises:
        ValueError: a colour image (RGB with channels that differ): not class indices; a 16-bit
            image with values above 255.
    """
    with _open(path) as im:
        if im.mode == "1":
            return np.asarray(im).astype(np.uint8)
        if im.mode.startswith("I"):  # 16 / 32-bit integers: convert("L") would clip them
            values = np.asarray(im).astype(np.int64)
            if values.size and (values.min() < 0 or values.max() > 255):
                bad = np.unique(values[(values < 0) | (values > 255)])[:8].tolist()
                raise ValueError(f"label '{path}' holds values {bad} outside 0-255: class "
                                 "indices must fit in 8 bits (255 = ignore)")
            return values.astype(np.uint8)
        if im.mode in ("RGB", "RGBA"):
            rgb = np.asarray(im.convert("RGB"))
            if (rgb != rgb[..., :1]).any():
                raise ValueError(
                    f"label '{path}' is a colour image; label PNGs must be single-channel class "
                    "indices (grey or palette PNGs), not a colour rendering of the classes "
                    "(scripts/colour_masks.py converts colour masks with the colours of a "
                    "classes.txt)"
                )
            return rgb[..., 0].copy()
        if im.mode not in ("P", "L"):
            im = im.convert("L")
        return np.array(im)  # writable, as above


def png_palette(path: str | os.PathLike) -> list[tuple[int, int, int]] | None:
    """The RGB colour of each palette index of a palette ("P") image, None for other modes."""
    with _open(path) as im:
        if im.mode != "P":
            return None
        flat = im.getpalette("RGB") or []
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat) - 2, 3)]


def check_label_values(label: np.ndarray, num_values: int, path: str | os.PathLike,
                       dataset: str, hint: str = "is it from another label set?") -> np.ndarray:
    """Return ``label`` (stored uint8 values) if it holds only 0..num_values-1 and 255.
    ``hint`` ends the message (what to do).

    Raises:
        ValueError: naming the file and the values outside that set (a label from another
            label set would otherwise become 'ignore' without a word).
    """
    bad = np.unique(label[(label >= num_values) & (label != 255)])
    if bad.size:
        listed = bad[:8].tolist()
        raise ValueError(
            f"label '{path}' holds values {listed}{' ...' if bad.size > 8 else ''} that {dataset} "
            f"does not use (0-{num_values - 1} and 255); {hint}"
        )
    return label
