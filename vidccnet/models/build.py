"""``build_model(cfg, num_classes)``: the network a training config describes.

It lives with the models (not in the trainer) so that checkpoint loading, inference and export
rebuild a network without importing the training loop. ``cfg`` is a
:class:`vidccnet.engine.config.Config` (only its ``model`` section is read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:  # the engine imports this module; no import back at run time
    from vidccnet.engine.config import Config

__all__ = ["build_model"]


def build_model(cfg: Config, num_classes: int, pretrained: bool = True) -> nn.Module:
    """``create_model`` with the model section's arguments (backbone file only if
    ``pretrained``).

    Returns:
        A ``CCNet``: input (B, 3, T, H, W) -> logits (B, K, T, H, W) in eval mode.
    """
    from . import create_model

    m = cfg.model
    kwargs: dict[str, Any] = dict(
        recurrence=m.recurrence,
        shift_fraction=m.shift_fraction,
        attention_backend=m.attention_backend,
    )
    if m.temporal_shift is not None:
        kwargs["temporal_shift"] = m.temporal_shift
    if m.temporal_attention is not None:
        kwargs["temporal_attention"] = m.temporal_attention
    if pretrained and m.pretrained_backbone:
        kwargs["pretrained_backbone"] = m.pretrained_backbone
    kwargs.update(m.kwargs)
    try:
        return create_model(m.name, num_classes, **kwargs)
    except TypeError as exc:  # an unknown or mistyped model.kwargs entry
        from vidccnet.engine.config import ConfigError

        raise ConfigError(f"model.kwargs do not fit model '{m.name}': {exc}") from None
