"""Dilated ResNet backbone (output stride 8) with an optional TSM-style temporal shift.

Frames are folded into the batch for the 2D convolutions: a clip (B, 3, T, H, W) runs as
(B*T, 3, H, W). The temporal shift needs T, which the backbone writes into every residual block
(`block.num_frames`) at the start of each forward.

Stems (``stem=``):

- ``"torchvision"``: one 7x7 conv (3 -> 64, stride 2) + BN + ReLU; parameter names are exactly
  torchvision's (``conv1.weight``, ``bn1.*``, ``layer3.0.conv2.weight``, ...; no ``fc``), so
  torchvision ImageNet state dicts load with `load_pretrained`.
- ``"deep"``: mmsegmentation's ResNetV1c stem, three 3x3 convs 3 -> 32 -> 32 -> 64 (the first
  with stride 2), each + BN + ReLU, as ``stem.0`` / ``stem.1`` (conv, BN), ``stem.3`` /
  ``stem.4``, ``stem.6`` / ``stem.7``.
- ``"deep_ccnet"``: the official CCNet release's stem, three 3x3 convs 3 -> 64 -> 64 -> 128
  (same layout and names as ``"deep"``); layer1 then takes 128 channels.

All three end with the same 3x3 / stride-2 max pool (floor mode) and keep output stride 8.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

logger = logging.getLogger(__name__)

DEPTHS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
}


def temporal_shift(x: Tensor, num_frames: int, fraction: float) -> Tensor:
    """TSM shift of folded frames.

    Args:
        x: (N*T, C, H, W), frames of each clip consecutive in the batch.
        num_frames: T.
        fraction: share of channels moved each way; `f = int(C * fraction)` channels.

    Returns:
        (N*T, C, H, W), same memory format: channels [0, f) of frame t come from frame t + 1
        (zeros at the last frame), channels [f, 2f) come from frame t - 1 (zeros at the first
        frame), the others are unchanged. No wrap-around between clips.
    """
    nt, c, h, w = x.shape
    if nt % num_frames:
        raise ValueError(f"batch of {nt} frames is not a multiple of num_frames={num_frames}")
    f = int(c * fraction)
    if f == 0:
        return x
    n = nt // num_frames
    out = torch.empty_like(x)  # keeps channels_last if x has it
    xs, os_ = x.view(n, num_frames, c, h, w), out.view(n, num_frames, c, h, w)
    os_[:, :-1, :f] = xs[:, 1:, :f]  # from the next frame
    os_[:, -1:, :f] = 0
    os_[:, 1:, f : 2 * f] = xs[:, :-1, f : 2 * f]  # from the previous frame
    os_[:, :1, f : 2 * f] = 0
    os_[:, :, 2 * f :] = xs[:, :, 2 * f :]
    return out


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Make a 3x3 conv dilated, keeping the spatial size (padding = dilation)."""
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


class _ShiftMixin:
    """Residual shift: the residual branch sees the shifted input, the identity does not."""

    shift_fraction: float = 0.0
    num_frames: int = 1

    def _shifted(self, x: Tensor) -> Tensor:
        if self.shift_fraction > 0:  # with T == 1 both shifted groups are zero padding
            return temporal_shift(x, self.num_frames, self.shift_fraction)
        return x


class ShiftBasicBlock(_ShiftMixin, tv_resnet.BasicBlock):
    """torchvision BasicBlock with residual temporal shift and dilation support.

    torchvision's BasicBlock refuses dilation > 1; here both 3x3 convs get `dilation` (stride
    stays on conv1; `DilatedResNet` then sets conv2 of a stage's first block to the stage's
    dilation). Parameter names and shapes are unchanged.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, 1, norm_layer)
        _set_dilation(self.conv1, dilation)
        _set_dilation(self.conv2, dilation)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N*T, C, H, W) -> (N*T, C', H', W')."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self._shifted(x))))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ShiftBottleneck(_ShiftMixin, tv_resnet.Bottleneck):
    """torchvision Bottleneck (stride and dilation on conv2) with residual temporal shift."""

    def forward(self, x: Tensor) -> Tensor:
        """x: (N*T, C, H, W) -> (N*T, C', H', W')."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self._shifted(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


STEMS: dict[str, tuple[int, int, int] | None] = {
    "torchvision": None,  # one 7x7 conv, 3 -> 64
    "deep": (32, 32, 64),  # mmseg ResNetV1c (stem_channels=64)
    "deep_ccnet": (64, 64, 128),  # official CCNet ResNet (conv1/conv2/conv3 there)
}


def deep_stem(widths: Sequence[int]) -> nn.Sequential:
    """Three 3x3 convs (the first with stride 2), each + BN + ReLU: (N, 3, H, W) ->
    (N, widths[2], ceil(H/2), ceil(W/2)). Indices 0/1, 3/4, 6/7 are conv/BN (mmseg's naming)."""
    layers: list[nn.Module] = []
    cin = 3
    for i, cout in enumerate(widths):
        layers += [
            nn.Conv2d(cin, cout, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        cin = cout
    return nn.Sequential(*layers)


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision ResNet's initialisation: Kaiming-normal (fan_out) convs, BN weight 1 bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def tsm_shift_every(num_layer3_blocks: int) -> int:
    """TSM's rule (``make_temporal_shift``, place "blockres"): shift every other block
    (``n_round = 2``) when layer3 has 23 or more blocks (ResNet-101), else every block."""
    return 2 if num_layer3_blocks >= 23 else 1


class DilatedResNet(nn.Module):
    """ResNet-18/34/50/101 at output stride 8 (layer3 dilation 2, layer4 dilation 4).

    With ``contract_dilation=True`` (default) dilation follows torchvision's
    `replace_stride_with_dilation=[False, True, True]` and mmseg's ``contract_dilation=True``:
    the first block of layer3 / layer4 keeps the previous dilation (1 / 2) on its formerly
    strided conv, all other 3x3 convs of layer3 / layer4 use 2 / 4. ``False`` gives every 3x3
    conv of layer3 / layer4 dilation 2 / 4, as the official CCNet ResNet does.

    Args:
        depth: 18, 34, 50 or 101.
        temporal_shift: enable the residual temporal shift.
        shift_fraction: share of channels shifted each way (TSM: 1/8).
        shift_stages: which of layer1..layer4 shift (default all four, as TSM's "blockres").
        stem: "torchvision" (7x7 conv), "deep" (mmseg ResNetV1c, 32-32-64) or "deep_ccnet"
            (official CCNet, 64-64-128); see the module docstring.
        contract_dilation: see above.
        shift_every: within each shifting stage, shift blocks ``i`` with ``i % shift_every ==
            0``; None follows TSM: 2 for ResNet-101 (layer3 has 23 blocks), else 1 (all blocks).
        width: channels of the torchvision stem and layer1 (64 in ResNet; layer2..4 have 2x, 4x,
            8x). Other widths give narrower / wider networks without published weights, e.g.
            for CPU studies.

    Attributes:
        channels: (layer3 channels, layer4 channels).
    """

    def __init__(
        self,
        depth: int = 50,
        temporal_shift: bool = True,
        shift_fraction: float = 0.125,
        shift_stages: Sequence[int] = (1, 2, 3, 4),
        stem: str = "torchvision",
        contract_dilation: bool = True,
        shift_every: int | None = None,
        width: int = 64,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if depth not in DEPTHS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(DEPTHS)}")
        if not 0.0 <= shift_fraction <= 0.5:
            raise ValueError(f"shift_fraction must be in [0, 0.5], got {shift_fraction}")
        stages = tuple(int(s) for s in shift_stages)
        if any(s not in (1, 2, 3, 4) for s in stages):
            raise ValueError(f"shift_stages must be a subset of (1, 2, 3, 4), got {shift_stages}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
        if width != 64 and stem != "torchvision":
            raise ValueError(f"stem {stem!r} needs width 64 (the published networks), got {width}")
        if shift_every is not None and (isinstance(shift_every, bool) or int(shift_every) < 1):
            raise ValueError(f"shift_every must be a positive integer or None, got {shift_every}")
        kind, layers = DEPTHS[depth]
        block = ShiftBasicBlock if kind == "basic" else ShiftBottleneck
        net = tv_resnet.ResNet(block, layers, replace_stride_with_dilation=[False, True, True])
        if width != 64:
            _rebuild_with_width(net, block, layers, width)
        widths = STEMS[stem]
        if widths is None:
            self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        else:
            self.stem = deep_stem(widths)
            _init_like_torchvision(self.stem)
            if widths[-1] != net.layer1[0].conv1.in_channels:  # rebuild layer1 for the stem
                net.inplanes, net.dilation = widths[-1], 1
                net.layer1 = net._make_layer(block, 64, layers[0])
                _init_like_torchvision(net.layer1)
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4,
        )
        if kind == "basic":  # the first block's conv2 is not the formerly strided conv
            _set_dilation(self.layer3[0].conv2, 2)
            _set_dilation(self.layer4[0].conv2, 4)
        if not contract_dilation:  # the formerly strided conv gets the stage's dilation too
            first = "conv1" if kind == "basic" else "conv2"
            _set_dilation(getattr(self.layer3[0], first), 2)
            _set_dilation(getattr(self.layer4[0], first), 4)
        self.depth = depth
        self.stem_type = stem
        self.contract_dilation = bool(contract_dilation)
        self.temporal_shift = bool(temporal_shift) and shift_fraction > 0
        self.shift_fraction = float(shift_fraction)
        self.shift_stages = stages
        self.shift_every = (
            tsm_shift_every(len(self.layer3)) if shift_every is None else int(shift_every)
        )
        for i in (1, 2, 3, 4):
            for j, blk in enumerate(getattr(self, f"layer{i}")):
                blk.shift_fraction = self.shift_fraction if (
                    self.temporal_shift and i in stages and j % self.shift_every == 0
                ) else 0.0
        expansion = block.expansion
        self.width = int(width)
        self.channels = (4 * width * expansion, 8 * width * expansion)

    def forward(self, clip: Tensor) -> tuple[Tensor, Tensor]:
        """clip: (B, 3, T, H, W) -> (c3, c4), each (B*T, C, ceil(H/8), ceil(W/8)) folded."""
        B, C, T, H, W = clip.shape
        x = clip.transpose(1, 2).reshape(B * T, C, H, W)  # (B*T, 3, H, W)
        if self.first_conv.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        for i in (1, 2, 3, 4):
            for blk in getattr(self, f"layer{i}"):
                blk.num_frames = T
        x = self.maxpool(self.stem_forward(x))
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)  # (B*T, C3, h, w)
        c4 = self.layer4(c3)  # (B*T, C4, h, w)
        return c3, c4

    @property
    def first_conv(self) -> nn.Conv2d:
        """The stem's first convolution (3 input channels)."""
        return self.conv1 if self.stem_type == "torchvision" else self.stem[0]

    def stem_forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, C, ceil(H/2), ceil(W/2)): the stem before the max pool."""
        if self.stem_type == "torchvision":
            return self.relu(self.bn1(self.conv1(x)))
        return self.stem(x)

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """Load a torchvision ImageNet ResNet state dict from a local file (`fc.*` is ignored).

        Raises:
            FileNotFoundError: no file at `path`.
            ValueError: the file is not a state dict, or its keys / shapes do not match.
        """
        load_backbone_state(self, path)


def _rebuild_with_width(net: tv_resnet.ResNet, block: type, layers: list[int], width: int) -> None:
    """Replace the stem and the four stages of a torchvision ResNet (built at width 64, dilation
    [False, True, True]) by ones of base width `width`, initialised as torchvision does."""
    net.inplanes, net.dilation = width, 1
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(block, width, layers[0])
    net.layer2 = net._make_layer(block, 2 * width, layers[1], stride=2)
    net.layer3 = net._make_layer(block, 4 * width, layers[2], stride=2, dilate=True)
    net.layer4 = net._make_layer(block, 8 * width, layers[3], stride=2, dilate=True)
    for part in (net.conv1, net.bn1, net.layer1, net.layer2, net.layer3, net.layer4):
        _init_like_torchvision(part)


def _read_state_dict(path: str | os.PathLike) -> Mapping[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained_backbone file {str(path)!r} does not exist; give the path of a local "
            "torchvision ResNet state dict (e.g. saved with torch.save(model.state_dict(), PATH)), "
            "or set model.pretrained_backbone=null to train from scratch"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors come in many types
        raise ValueError(
            f"pretrained_backbone file {str(path)!r} could not be read as a torch state dict "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) and "config" in obj:
        raise ValueError(
            f"pretrained_backbone file {str(path)!r} is a vidccnet checkpoint (a whole model), "
            "not a torchvision ResNet state dict; start from its weights with "
            f"model.init_from={path} (and model.pretrained_backbone=null)"
        )
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"pretrained_backbone file {str(path)!r} is not a state dict (a mapping of parameter "
            f"names to tensors); got {type(obj).__name__}"
        )
    return obj


def load_backbone_state(backbone: nn.Module, path: str | os.PathLike, max_names: int = 5) -> None:
    """Copy a torchvision ResNet state dict from `path` into `backbone` (strict except `fc.*`)."""
    state = {
        (k[len("module."):] if k.startswith("module.") else k): v
        for k, v in _read_state_dict(path).items()
    }
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    for what, names in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatches", shapes)):
        if names:
            more = f" (+{len(names) - max_names} more)" if len(names) > max_names else ""
            problems.append(f"{len(names)} {what}: {', '.join(names[:max_names])}{more}")
    if problems:
        depth = getattr(backbone, "depth", "?")
        raise ValueError(
            f"pretrained_backbone {str(path)!r} does not match a torchvision ResNet-{depth}: "
            + "; ".join(problems)
        )
    backbone.load_state_dict(state, strict=True)
    logger.info("loaded backbone weights from %s (%d tensors)", path, len(state))
