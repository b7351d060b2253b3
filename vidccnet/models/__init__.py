"""Model registry: `create_model(name, num_classes, **kwargs)` and `list_models()`.

Names: `ccnet3d_resnet{18,50,101}` (temporal shift + 3D criss-cross attention) and the per-frame
baselines `ccnet2d_resnet{18,50,101}` (no shift, per-frame attention). `recurrence=0` gives the
same network without attention.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from torch import nn

from .backbone import DilatedResNet, temporal_shift
from .ccnet import CCNet
from .head import FCNHead, RCCAHead

_DEPTHS = (18, 50, 101)
_MODELS: dict[str, dict[str, Any]] = {}
for _d in _DEPTHS:
    _MODELS[f"ccnet3d_resnet{_d}"] = dict(depth=_d, temporal_shift=True, temporal_attention=True)
    _MODELS[f"ccnet2d_resnet{_d}"] = dict(depth=_d, temporal_shift=False, temporal_attention=False)

_ALLOWED = tuple(
    p
    for p in inspect.signature(CCNet.__init__).parameters
    if p not in ("self", "num_classes", "depth")
)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of `list_models()`.
        num_classes: K.
        **kwargs: `pretrained_backbone`, `recurrence` (2), `temporal_shift`,
            `temporal_attention` (defaults from the name), `shift_fraction` (0.125),
            `shift_stages` ((1, 2, 3, 4)), `head_channels` (512), `attention_backend` ("auto"),
            `aux` (True), `stem` ("torchvision" | "deep" | "deep_ccnet"), `contract_dilation`
            (True), `shift_every` (None: TSM's rule), `aux_channels` (None: head_channels // 2),
            `head_activation` ("relu" | "leaky_relu"), `attention_reduction` (8),
            `attention_init` ("identity" | "ccnet"), `embed_dim` (16), `embed_from`
            ("attention" | "head"), `backbone_width` (64). See `CCNet`.

    Returns:
        A `CCNet`: input (B, 3, T, H, W); eval() -> logits (B, K, T, H, W); train() -> dict
        {"out", "aux", "features"}.

    Raises:
        ValueError: unknown name (with a suggestion). TypeError: unknown keyword argument.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list_models(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (available: {', '.join(list_models())})")
    unknown = [k for k in kwargs if k not in _ALLOWED]
    if unknown:
        bad = unknown[0]
        close = difflib.get_close_matches(bad, _ALLOWED, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TypeError(
            f"create_model({name!r}) got an unexpected keyword argument {bad!r}{hint} "
            f"(accepted: {', '.join(_ALLOWED)})"
        )
    return CCNet(num_classes, **{**_MODELS[name], **kwargs})


__all__ = [
    "CCNet",
    "DilatedResNet",
    "FCNHead",
    "RCCAHead",
    "create_model",
    "list_models",
    "temporal_shift",
]
