"""Mixed precision: the one decision every entry point shares (training, evaluation, inference).

Autocast is used only where it is fast, on CUDA. On CPU, PyTorch's bfloat16 autocast runs the
convolutions far slower than float32 on processors without native bf16 instructions (see
docs/training.md, "Mixed precision"), so a request for it there is dropped with one warning and
the model runs in float32. ``resolve_amp`` makes that decision; ``autocast`` turns its answer
into a context manager.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

__all__ = ["amp_name", "autocast", "resolve_amp"]

logger = logging.getLogger(__name__)

_NAMES = {"none": None, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_warned: set[tuple[str, str]] = set()


def _warn_once(key: tuple[str, str], msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(msg, *args)


def resolve_amp(device: torch.device | str, requested: bool | str | None) -> torch.dtype | None:
    """The autocast dtype to run with on ``device`` for the ``requested`` mode, or None (float32).

    Args:
        device: where the model runs.
        requested: ``False`` / ``None`` / ``"none"`` (float32), ``True`` (float16 on CUDA),
            ``"fp16"`` / ``"float16"`` or ``"bf16"`` / ``"bfloat16"``.

    Returns:
        ``torch.float16`` or ``torch.bfloat16`` on a CUDA device (bfloat16 only where the GPU
        has it natively), else None. Every request that is dropped logs one warning (once per
        device type and mode in a process) saying why.

    Raises:
        ValueError: an unknown mode.
    """
    if requested is None or requested is False:
        return None
    if requested is True:
        dtype: torch.dtype | None = torch.float16
        label = "on"
    else:
        key = str(requested).lower()
        if key not in _NAMES:
            raise ValueError(
                f"amp must be true/false or one of none, bf16, fp16; got {requested!r}"
            )
        dtype, label = _NAMES[key], key
    if dtype is None:
        return None
    dev = torch.device(device)
    if dev.type != "cuda":
        _warn_once((dev.type, label),
                   "amp=%s ignored on %s: autocast is used on CUDA only (on CPU it is much "
                   "slower than float32); running in float32", label, dev.type)
        return None
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        _warn_once((dev.type, label), "amp=%s ignored: this GPU has no native bfloat16; running "
                   "in float32 (amp=fp16 uses float16 with a gradient scaler)", label)
        return None
    return dtype


def amp_name(dtype: torch.dtype | None) -> str:
    """``"none"``, ``"fp16"`` or ``"bf16"`` for a :func:`resolve_amp` answer."""
    return {None: "none", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
