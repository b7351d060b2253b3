"""The (3D) CCNet video segmentation network: dilated ResNet + RCCA head + auxiliary FCN head."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.cca import check_int
from .backbone import DilatedResNet
from .head import FCNHead, RCCAHead, unfold_frames

HEAD_SLOPES = {"relu": 0.0, "leaky_relu": 0.01}  # negative slope after the heads' BNs


class CCNet(nn.Module):
    """CCNet for clips: per-frame logits, optionally mixing frames through the temporal shift
    in the backbone and the 3D criss-cross attention in the head.

    `temporal_shift=False, temporal_attention=False` is the per-frame 2D CCNet: in eval() each
    frame's logits depend on that frame alone (in train() BatchNorm statistics are taken over
    all B*T frames, as over any batch). The switches change no parameter, so state dicts are
    interchangeable between all settings of the same depth, head width and `aux`.
    With the shift on, the shifted channel groups are zero at clip ends, also for T = 1.

    Args:
        num_classes: K.
        depth: ResNet depth (18, 34, 50, 101).
        recurrence: R, criss-cross attention loops (0: no attention).
        temporal_shift: TSM residual shift in the backbone.
        temporal_attention: 3D criss-cross attention (time line, row, column) vs per frame.
        shift_fraction: share of channels shifted each way.
        shift_stages: backbone stages (1..4) with the shift.
        head_channels: RCCA head width (512 in CCNet).
        attention_backend: criss-cross attention backend ("auto", "reference", "triton").
        aux: build the auxiliary FCN head on layer3.
        pretrained_backbone: local torchvision ResNet state dict to load into the backbone.
        stem: backbone stem, "torchvision" (7x7 conv), "deep" (mmseg ResNetV1c) or
            "deep_ccnet" (official CCNet release); see `vidccnet.models.backbone`.
        contract_dilation: first block of layer3 / layer4 at dilation 1 / 2 (torchvision,
            mmseg) or, False, at 2 / 4 like the rest of the stage (official CCNet).
        shift_every: shift every n-th block of a stage; None follows TSM (2 for ResNet-101,
            else 1).
        aux_channels: auxiliary head width; None = head_channels // 2 (256 with the default
            head, as mmseg's CCNet; the official CCNet uses 512).
        head_activation: "relu" (mmseg) or "leaky_relu" (slope 0.01, the official CCNet's
            InPlace-ABN default) after each BN of both heads.
        embed_dim: D, the training-only embedding on which the category-consistent loss
            works (16).
        embed_from: where that embedding is taken: "attention" (the output of the R attention
            loops) or "head" (the fused head features the classifier reads); see
            docs/training.md.
        attention_init: "identity" (default: value projection = identity, gamma = 1, chosen by
            measurement, docs/training.md) or "ccnet" (gamma = 0, CCNet's exact init).
        backbone_width: base width of the ResNet (64; narrower for CPU studies).
        attention_reduction: the attention's query / key width is head_channels // this (8 in
            CCNet: 64 channels with the 512-wide head, 4 with a 32-wide one).
    """

    # state-dict prefixes of training-only parts (the category-consistent loss's embedding): a
    # state dict without them loads strictly, the model keeping their current values
    training_only_prefixes: tuple[str, ...] = ("head.embed.",)

    def __init__(
        self,
        num_classes: int,
        depth: int = 50,
        recurrence: int = 2,
        temporal_shift: bool = True,
        temporal_attention: bool = True,
        shift_fraction: float = 0.125,
        shift_stages: Sequence[int] = (1, 2, 3, 4),
        head_channels: int = 512,
        attention_backend: str = "auto",
        aux: bool = True,
        pretrained_backbone: str | os.PathLike | None = None,
        stem: str = "torchvision",
        contract_dilation: bool = True,
        shift_every: int | None = None,
        aux_channels: int | None = None,
        head_activation: str = "relu",
        embed_dim: int = 16,
        attention_init: str = "identity",
        backbone_width: int = 64,
        attention_reduction: int = 8,
        embed_from: str = "attention",
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("head_channels", head_channels),
                            ("recurrence", recurrence),
                            ("attention_reduction", attention_reduction),
                            ("backbone_width", backbone_width)):
            check_int(name, value)
        if backbone_width < 1:
            raise ValueError(f"backbone_width must be >= 1, got {backbone_width}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if head_channels < 8 or head_channels % 8:
            raise ValueError(f"head_channels must be a positive multiple of 8, got {head_channels}")
        if attention_reduction < 1 or head_channels % attention_reduction:
            raise ValueError(
                f"attention_reduction must divide head_channels={head_channels}, got "
                f"{attention_reduction}"
            )
        if head_activation not in HEAD_SLOPES:
            raise ValueError(
                f"head_activation must be one of {', '.join(HEAD_SLOPES)}, got {head_activation!r}"
            )
        if aux_channels is not None and aux_channels < 1:
            raise ValueError(f"aux_channels must be >= 1, got {aux_channels}")
        self.num_classes = num_classes
        self.backbone = DilatedResNet(
            depth, temporal_shift, shift_fraction, shift_stages, stem=stem,
            contract_dilation=contract_dilation, shift_every=shift_every, width=backbone_width,
        )
        if pretrained_backbone is not None:
            self.backbone.load_pretrained(pretrained_backbone)
        c3, c4 = self.backbone.channels
        slope = HEAD_SLOPES[head_activation]
        self.head = RCCAHead(
            c4, num_classes, head_channels, recurrence, temporal_attention, attention_reduction,
            attention_backend,
            negative_slope=slope, embed_dim=embed_dim, attention_init=attention_init,
            embed_from=embed_from,
        )
        aux_width = head_channels // 2 if aux_channels is None else aux_channels
        self.aux_head = (
            FCNHead(c3, num_classes, aux_width, negative_slope=slope) if aux else None
        )
        self.register_load_state_dict_pre_hook(_keep_missing_embedding)

    def to_channels_last(self) -> CCNet:
        """Store the 2D conv weights channels_last (the backbone then runs channels_last).

        Use this instead of `model.to(memory_format=torch.channels_last)`, which PyTorch
        refuses for the 5-D weights of the attention's 1x1x1 Conv3d projections.
        """
        with torch.no_grad():
            for mod in self.modules():
                if isinstance(mod, nn.Conv2d):
                    mod.weight.data = mod.weight.data.contiguous(memory_format=torch.channels_last)
        return self

    def to(self, *args: Any, **kwargs: Any) -> CCNet:
        """`nn.Module.to` (device, dtype), except for channels-last memory formats.

        Raises:
            ValueError: for `memory_format=torch.channels_last` or `torch.channels_last_3d`:
                the model holds 4-D (2D conv) and 5-D (the attention's 1x1x1 Conv3d) weights,
                which no single memory format fits; `to_channels_last()` is the supported way.
        """
        memory_format = torch._C._nn._parse_to(*args, **kwargs)[3]
        if memory_format in (torch.channels_last, torch.channels_last_3d):
            raise ValueError(
                f"CCNet.to(memory_format={memory_format}) is not supported: the model has 4-D "
                "(2D conv) and 5-D (attention Conv3d) weights and no memory format fits both; "
                "use model.to(device).to_channels_last(), which stores the 2D conv weights "
                "channels_last so that the backbone and heads run channels_last"
            )
        return super().to(*args, **kwargs)

    def forward(self, clip: Tensor) -> Tensor | dict[str, Tensor]:
        """clip: normalised (B, 3, T, H, W).

        Returns:
            eval(): logits (B, K, T, H, W), bilinear-upsampled to the input size (a
            transposed view of (B*T, K, H, W) storage: not contiguous).
            train(): {"out": (B, K, T, H, W), "aux": (B, K, T, H, W) (when `aux`),
            "features": (B, D, T, h, w) the embedding of the attention output at output
            stride 8, for the category-consistent loss}.
        """
        if clip.dim() != 5 or clip.shape[1] != 3:
            raise ValueError(
                f"expected a clip (B, 3, T, H, W), got shape {tuple(clip.shape)}; "
                "for single images use clip.unsqueeze(2)"
            )
        if not clip.is_floating_point():
            raise TypeError(
                f"expected a normalised float clip, got {clip.dtype}; convert frames with "
                "vidccnet.data.transforms.to_clip_tensor"
            )
        if clip.numel() == 0:
            raise ValueError(f"empty clip {tuple(clip.shape)}: give at least one clip of one "
                             "frame (B, T, H, W >= 1)")
        T, size = clip.shape[2], clip.shape[-2:]
        c3, c4 = self.backbone(clip)  # (B*T, C3, h, w), (B*T, C4, h, w)
        logits, feats = self.head(c4, T)  # (B*T, K, h, w), train(): (B*T, D, h, w)
        out = _upsample(logits, size, T)  # (B, K, T, H, W)
        if not self.training:
            return out
        result = {"out": out, "features": unfold_frames(feats, T)}
        if self.aux_head is not None:
            result["aux"] = _upsample(self.aux_head(c3), size, T)
        return result


def _keep_missing_embedding(module: CCNet, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints made before the embedding existed (or stripped of it) load strictly: the
    training-only `head.embed` keeps its current values (it does not affect predictions)."""
    if not any(k.startswith(prefix + "head.") for k in state_dict):
        return
    own = module.state_dict()
    for part in module.training_only_prefixes:
        for name, tensor in own.items():
            if name.startswith(part):
                state_dict.setdefault(prefix + name, tensor.detach().clone())


def _upsample(x: Tensor, size: Sequence[int], num_frames: int) -> Tensor:
    """(B*T, K, h, w) -> (B, K, T, H, W), bilinear (align_corners=False)."""
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return unfold_frames(y, num_frames)
