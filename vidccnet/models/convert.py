"""Convert published CCNet checkpoints (mmsegmentation, the official CCNet release) to vidccnet.

Two source formats, named after the code that wrote them:

- ``"mmseg"``: mmsegmentation's ``EncoderDecoder`` with a ``ResNetV1c`` backbone, ``CCHead`` and
  an ``FCNHead`` auxiliary head (``configs/ccnet/ccnet_r{50,101}-d8_*``). The file is a dict
  with ``state_dict`` (and ``meta``, ``optimizer``). Keys: ``backbone.stem.{0,1,3,4,6,7}.*``,
  ``backbone.layerN.M.{conv,bn}{1,2,3}.*``, ``backbone.layerN.0.downsample.{0,1}.*``,
  ``decode_head.convs.{0,1}.{conv,bn}.*``, ``decode_head.cca.{query,key,value}_conv.*``,
  ``decode_head.cca.gamma.scale``, ``decode_head.conv_cat.{conv,bn}.*``,
  ``decode_head.conv_seg.*``, ``auxiliary_head.convs.0.{conv,bn}.*``,
  ``auxiliary_head.conv_seg.*``.
- ``"ccnet"``: the official CCNet code (speedinghzl/CCNet, ``networks/ccnet.py``): a plain state
  dict with ``conv1``/``bn1``/``conv2``/``bn2``/``conv3``/``bn3`` (deep stem 64-64-128),
  ``layerN.*``, ``head.conva.{0,1}``, ``head.cca.{query,key,value}_conv``, ``head.cca.gamma``,
  ``head.convb.{0,1}``, ``head.bottleneck.{0,1,3}`` (3 = classifier) and the auxiliary ``dsn.{0,
  1,3}`` (its 3x3 conv has a bias). An optional ``module.`` prefix (DataParallel) is removed.

What changes on the way (exact unless said otherwise):

- 1x1 Conv2d attention projections become our 1x1x1 Conv3d weights (a reshape); ``gamma`` is
  reshaped to ``(1,)``.
- The official ``dsn.0`` conv bias is folded into the following BatchNorm's running mean
  (``BN(conv(x) + b) == BN'(conv(x))`` with ``running_mean' = running_mean - b``).
- The official code feeds BGR images minus a per-channel mean and no std division
  (``IMG_MEAN`` BGR 104.008, 116.669, 122.679); vidccnet feeds RGB ``(x / 255 - mean) / std``
  with the ImageNet mean / std. The channel order and scale are folded into the first stem conv
  and the mean difference into its BatchNorm's running mean: exact away from the image border;
  the zero padding of that conv then stands for our mean colour instead of theirs (a difference
  under one grey level per channel, one pixel wide). mmseg's normalisation is ours already.
- Every normalisation layer of the official network is InPlace-ABN, which scales by
  ``|weight| + eps`` (eps = 1e-5; its CUDA kernels), not by ``weight``: the BatchNorm weights
  become ``weight.abs() + 1e-5`` (a plain copy flips every channel whose weight is negative).
- The official head uses InPlace-ABN, whose default activation is LeakyReLU(0.01): the
  converted model gets ``head_activation="leaky_relu"``. Its backbone is built with
  ``stem="deep_ccnet", contract_dilation=False`` (every conv of layer3 / layer4 at dilation 2 /
  4, as there). Its max pool uses ``ceil_mode=True``; ours keeps floor mode (output stride 8),
  which drops one row / column at the bottom / right of the features for an input side S with
  S % 4 in (0, 3) (the stem's output ceil(S / 2) even); for S % 4 in (1, 2) they agree.
- BatchNorm ``num_batches_tracked`` counters absent from the source are set to 0.

Only ResNet-50 / 101 (Bottleneck) backbones convert: mmseg's BasicBlock (ResNet-18 / 34)
dilates its first 3x3 conv only, vidccnet's dilates both, so such a source is refused.

Every source tensor is either converted or listed in the error; non-weight entries of the
file (``meta``, ``optimizer``) are reported in :attr:`Conversion.ignored`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

INPLACE_ABN_EPS = 1e-5  # InPlaceABN(Sync)'s default eps, also added to |weight|

__all__ = [
    "CCNET_BGR_MEAN",
    "ConversionError",
    "Conversion",
    "FORMATS",
    "convert_file",
    "convert_state_dict",
    "recurrence_from_meta",
    "to_checkpoint",
    "fold_bgr_mean_input",
    "read_source",
]

FORMATS = ("mmseg", "ccnet")
CCNET_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)  # official CCNet IMG_MEAN, BGR
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}  # Bottleneck blocks per stage
_STEMS = {(32, 32, 64): "deep", (64, 64, 128): "deep_ccnet"}
_FOLD = "fold:"  # mapping target prefix: the tensor is folded into that target, not copied


class ConversionError(ValueError):
    """The source is not a checkpoint of the expected kind (or not readable)."""


@dataclass
class Conversion:
    """A converted checkpoint.

    Attributes:
        state_dict: tensors under vidccnet's names (``CCNet`` built with `model_kwargs`).
        depth: ResNet depth read from the number of blocks per stage.
        num_classes: K, from the classifier's shape.
        model_kwargs: ``create_model`` keyword arguments the weights need (stem, dilation,
            head / aux widths, head activation, aux).
        used: source keys that were converted (all of them, or conversion fails).
        ignored: non-weight entries of the file that were not used (e.g. ``optimizer``).
        notes: what was transformed beyond renaming (bias folds, input normalisation).
        meta: the source's ``meta`` dict, when it has one (mmseg: ``CLASSES``, ``PALETTE``).
    """

    state_dict: dict[str, Tensor]
    depth: int
    num_classes: int
    model_kwargs: dict[str, Any]
    used: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- reading


def read_source(path: str | os.PathLike, trust: bool = False) -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint file: ``(state_dict, other top-level entries)``.

    The file is read with ``torch.load(weights_only=True)``; ``trust=True`` allows full
    unpickling (arbitrary code: only for files from a source you trust) when that fails.
    A ``state_dict`` / ``model`` entry is unwrapped; a ``module.`` prefix on every key is
    removed.

    Raises:
        ConversionError: missing file, unreadable file, no mapping of names to tensors, or a
            vidccnet checkpoint already (nothing to convert).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(f"{path!r} does not exist or is not a file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save: a zip, or a legacy pickle
        raise ConversionError(
            f"{path!r} cannot be read: it is not a PyTorch file (it starts with {head!r}); pass "
            "the .pth / .pt checkpoint of the model"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "Weights only load failed" in first:  # PyTorch's first line says no more than that
            first = "it holds Python objects besides tensors, which such a load refuses"
        if not trust:
            hint = (
                "; if the file comes from a source you trust (e.g. the mmseg model zoo), rerun "
                "with --trust-source" if "weights_only" in str(exc) or "Unsupported global" in
                str(exc) else ""
            )
            raise ConversionError(
                f"{path!r} cannot be read as a torch checkpoint with weights_only=True "
                f"({first}){hint}"
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001
            raise ConversionError(
                f"{path!r} cannot be read as a torch checkpoint ({exc2})"
            ) from None
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f"{path!r} is not a checkpoint: it holds a {type(obj).__name__}, not a dict of tensors"
        )
    from vidccnet.engine.checkpoint import REQUIRED_KEYS

    if all(k in obj for k in REQUIRED_KEYS):
        raise ConversionError(
            f"{path!r} is already a vidccnet checkpoint: no conversion is needed; pass it as it "
            "is (--checkpoint, model.init_from)"
        )
    other: dict[str, Any] = {}
    state: Any = obj
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            state = obj[key]
            other = {k: v for k, v in obj.items() if k != key}
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors or len(tensors) != len(state):
        raise ConversionError(
            f"{path!r} is not a state dict (a mapping of parameter names to tensors); "
            f"top-level keys: {sorted(map(str, obj))[:8]}"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, other


# ------------------------------------------------------------------------------- mapping


def _resnet_keys(src: Mapping[str, Tensor], prefix: str) -> tuple[dict[str, str], int]:
    """Map ``{prefix}layerN.*`` keys to ``backbone.layerN.*``; returns (map, depth)."""
    mapping: dict[str, str] = {}
    blocks: dict[int, set[int]] = {1: set(), 2: set(), 3: set(), 4: set()}
    pat = re.compile(rf"^{re.escape(prefix)}layer([1-4])\.(\d+)\.(.+)$")
    for k in src:
        m = pat.match(k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
            mapping[k] = f"backbone.layer{m.group(1)}.{m.group(2)}.{m.group(3)}"
    counts = tuple(len(blocks[i]) for i in (1, 2, 3, 4))
    if f"{prefix}layer1.0.conv3.weight" not in src:
        raise ConversionError(
            f"the backbone has {counts} BasicBlocks per stage (ResNet-18/34): not supported, "
            "mmseg's BasicBlock dilates conv1 only while vidccnet's ResNet-18/34 also dilate "
            "conv2 in layer3 / layer4, so the converted model would compute another network"
        )
    depth = _DEPTHS.get(counts)
    if depth is None:
        raise ConversionError(
            f"the backbone has {counts} bottleneck blocks per stage, not a ResNet-50/101 "
            "(is this a CCNet checkpoint?)"
        )
    return mapping, depth


def _stem(src: Mapping[str, Tensor], convs: tuple[str, str, str], bns: tuple[str, str, str]
          ) -> tuple[dict[str, str], str]:
    """Map a 3-conv deep stem to ``backbone.stem.{0,1,3,4,6,7}``; returns (map, stem name)."""
    widths = []
    mapping: dict[str, str] = {}
    for i, (c, b) in enumerate(zip(convs, bns)):
        w = src.get(f"{c}.weight")
        if w is None or w.dim() != 4 or w.shape[-2:] != (3, 3):
            raise ConversionError(f"no 3x3 deep-stem conv {c}.weight in the source")
        widths.append(int(w.shape[0]))
        mapping[f"{c}.weight"] = f"backbone.stem.{3 * i}.weight"
        for s in _BN:
            if f"{b}.{s}" in src:
                mapping[f"{b}.{s}"] = f"backbone.stem.{3 * i + 1}.{s}"
    name = _STEMS.get(tuple(widths))
    if name is None:
        raise ConversionError(f"deep stem widths {tuple(widths)} match no known stem {_STEMS}")
    return mapping, name


def _conv_bn(mapping: dict[str, str], src: Mapping[str, Tensor], conv: str, bn: str,
             dst: str) -> None:
    """``conv.weight`` -> ``dst.0.weight``, ``bn.*`` -> ``dst.1.*`` (keys present only)."""
    mapping[f"{conv}.weight"] = f"{dst}.0.weight"
    for s in _BN:
        if f"{bn}.{s}" in src:
            mapping[f"{bn}.{s}"] = f"{dst}.1.{s}"


def _attention(mapping: dict[str, str], src: Mapping[str, Tensor], cca: str) -> None:
    for theirs, ours in (("query_conv", "query"), ("key_conv", "key"), ("value_conv", "value")):
        for s in ("weight", "bias"):
            mapping[f"{cca}.{theirs}.{s}"] = f"head.cca.cca.{ours}.{s}"
    gamma = f"{cca}.gamma.scale" if f"{cca}.gamma.scale" in src else f"{cca}.gamma"
    mapping[gamma] = "head.cca.cca.gamma"


def _mmseg_mapping(src: Mapping[str, Tensor]) -> tuple[dict[str, str], dict[str, Any], int]:
    if not any(k.startswith("decode_head.cca.") for k in src):
        raise ConversionError(
            "not an mmseg CCNet checkpoint: no decode_head.cca.* tensors (mmseg's CCHead)"
        )
    mapping, depth = _resnet_keys(src, "backbone.")
    kwargs: dict[str, Any] = {}
    if "backbone.stem.0.weight" in src:
        stem_map, kwargs["stem"] = _stem(
            src, ("backbone.stem.0", "backbone.stem.3", "backbone.stem.6"),
            ("backbone.stem.1", "backbone.stem.4", "backbone.stem.7"),
        )
        mapping.update(stem_map)
    else:  # ResNetV1b: torchvision's stem names
        kwargs["stem"] = "torchvision"
        mapping["backbone.conv1.weight"] = "backbone.conv1.weight"
        mapping.update({f"backbone.bn1.{s}": f"backbone.bn1.{s}" for s in _BN
                        if f"backbone.bn1.{s}" in src})
    d = "decode_head"
    _conv_bn(mapping, src, f"{d}.convs.0.conv", f"{d}.convs.0.bn", "head.conva")
    _conv_bn(mapping, src, f"{d}.convs.1.conv", f"{d}.convs.1.bn", "head.convb")
    _conv_bn(mapping, src, f"{d}.conv_cat.conv", f"{d}.conv_cat.bn", "head.bottleneck")
    _attention(mapping, src, f"{d}.cca")
    mapping[f"{d}.conv_seg.weight"] = "head.classifier.weight"
    mapping[f"{d}.conv_seg.bias"] = "head.classifier.bias"
    a = "auxiliary_head"
    if f"{a}.convs.0.conv.weight" in src:
        _conv_bn(mapping, src, f"{a}.convs.0.conv", f"{a}.convs.0.bn", "aux_head.conv")
        mapping[f"{a}.conv_seg.weight"] = "aux_head.classifier.weight"
        mapping[f"{a}.conv_seg.bias"] = "aux_head.classifier.bias"
        kwargs["aux_channels"] = int(src[f"{a}.convs.0.conv.weight"].shape[0])
    else:
        kwargs["aux"] = False
    if f"{d}.convs.0.conv.weight" in src:
        kwargs["head_channels"] = int(src[f"{d}.convs.0.conv.weight"].shape[0])
    kwargs.update(contract_dilation=True, head_activation="relu")
    return mapping, kwargs, depth


def _ccnet_mapping(src: Mapping[str, Tensor]) -> tuple[dict[str, str], dict[str, Any], int]:
    aliases = {"head.conv1a.": "head.conva.", "head.pc.": "head.cca.",
               "head.conv1b.": "head.convb."}  # the first release's names
    if not any(k.startswith(("head.cca.", "head.pc.")) for k in src):
        raise ConversionError(
            "not an official CCNet checkpoint: no head.cca.* tensors (networks/ccnet.py's "
            "RCCAModule)"
        )

    def name(k: str) -> str:
        for old, new in aliases.items():
            if k.startswith(old):
                return new + k[len(old):]
        return k

    inv = {name(k): k for k in src}  # our reading of the name -> the source key
    canon = {name(k): v for k, v in src.items()}
    mapping, depth = _resnet_keys(canon, "")
    stem_map, stem = _stem(canon, ("conv1", "conv2", "conv3"), ("bn1", "bn2", "bn3"))
    mapping.update(stem_map)
    for part in ("conva", "convb", "bottleneck"):
        _conv_bn(mapping, canon, f"head.{part}.0", f"head.{part}.1", f"head.{part}")
    _attention(mapping, canon, "head.cca")
    mapping["head.bottleneck.3.weight"] = "head.classifier.weight"
    mapping["head.bottleneck.3.bias"] = "head.classifier.bias"
    kwargs: dict[str, Any] = dict(stem=stem, contract_dilation=False,
                                  head_activation="leaky_relu")
    if "dsn.0.weight" in canon:
        _conv_bn(mapping, canon, "dsn.0", "dsn.1", "aux_head.conv")
        if "dsn.0.bias" in canon:
            mapping["dsn.0.bias"] = _FOLD + "aux_head.conv.1.running_mean"
        mapping["dsn.3.weight"] = "aux_head.classifier.weight"
        mapping["dsn.3.bias"] = "aux_head.classifier.bias"
        kwargs["aux_channels"] = int(canon["dsn.0.weight"].shape[0])
    else:
        kwargs["aux"] = False
    if "head.conva.0.weight" in canon:
        kwargs["head_channels"] = int(canon["head.conva.0.weight"].shape[0])
    return {inv[k]: v for k, v in mapping.items() if k in inv} | {
        k: v for k, v in mapping.items() if k not in inv
    }, kwargs, depth


def fold_bgr_mean_input(
    weight: Tensor, running_mean: Tensor,
    bgr_mean: tuple[float, float, float] = CCNET_BGR_MEAN,
    rgb_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    rgb_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
) -> tuple[Tensor, Tensor]:
    """Fold "BGR pixel minus ``bgr_mean``" input into a first conv + BN fed our normalisation.

    Our input is ``x = (p / 255 - rgb_mean) / rgb_std`` (RGB, p in 0..255); theirs is
    ``x'[c] = p[2 - c] - bgr_mean[c]`` (BGR). So ``x'[c] = a_c * x[2 - c] + b_c`` with
    ``a_c = 255 * rgb_std[2 - c]`` and ``b_c = 255 * rgb_mean[2 - c] - bgr_mean[c]``; the conv's
    input channels are flipped and scaled by ``a`` and ``conv(b)`` (a constant per output
    channel, exact where the kernel does not touch the zero padding) moves into the BN's
    running mean.

    Args:
        weight: (C_out, 3, k, k) first conv weight, BGR input channels, no bias.
        running_mean: (C_out,) running mean of the BatchNorm that follows it.

    Returns:
        (weight for RGB input (C_out, 3, k, k), running mean (C_out,)), in the input dtype.
    """
    w = weight.double()
    a = torch.tensor([255.0 * s for s in rgb_std[::-1]], dtype=torch.float64)  # BGR order
    b = torch.tensor([255.0 * m for m in rgb_mean[::-1]], dtype=torch.float64) - torch.tensor(
        bgr_mean, dtype=torch.float64
    )
    shift = (w * b.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))  # (C_out,) conv of the constant b
    w_rgb = (w * a.view(1, 3, 1, 1)).flip(1)  # BGR -> RGB input channels
    rm = running_mean.double() - shift
    return w_rgb.to(weight.dtype), rm.to(running_mean.dtype)


def convert_state_dict(src: Mapping[str, Tensor], fmt: str) -> Conversion:
    """Rename / reshape a source state dict into vidccnet's ``CCNet`` naming.

    Args:
        src: the source's tensors (``module.`` prefix already removed).
        fmt: "mmseg" or "ccnet".

    Returns:
        A :class:`Conversion`; ``create_model(f"ccnet2d_resnet{depth}", num_classes,
        **model_kwargs)`` loads its ``state_dict`` strictly.

    Raises:
        ConversionError: unknown format, not a CCNet checkpoint of that format, source tensors
            that map to nothing (listed), expected tensors missing, or shapes that do not fit.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    mapping, kwargs, depth = (_mmseg_mapping if fmt == "mmseg" else _ccnet_mapping)(src)
    unknown = [k for k in src if k not in mapping]
    if unknown:
        raise ConversionError(
            f"{len(unknown)} source tensors are not part of a {fmt} CCNet checkpoint "
            f"(e.g. {', '.join(unknown[:4])})"
        )
    missing_src = [k for k in mapping if k not in src]
    if missing_src:
        raise ConversionError(
            f"the source lacks {len(missing_src)} tensors of a {fmt} CCNet checkpoint "
            f"(e.g. {', '.join(missing_src[:4])})"
        )
    out: dict[str, Tensor] = {}
    for k, dst in mapping.items():
        if dst.startswith(_FOLD):
            continue
        v = src[k].detach().clone()
        if dst.startswith("head.cca.cca.") and dst.endswith(("query.weight", "key.weight",
                                                             "value.weight")):
            v = v.reshape(*v.shape, 1)  # 1x1 Conv2d -> 1x1x1 Conv3d
        elif dst == "head.cca.cca.gamma":
            v = v.reshape(1)
        out[dst] = v
    notes: list[str] = []
    if fmt == "ccnet":
        notes += _ccnet_fixups(src, mapping, out)
    cls = out.get("head.classifier.weight")
    if cls is None:
        raise ConversionError("the source has no classifier weight")
    conv = Conversion(out, depth, int(cls.shape[0]), kwargs, used=list(mapping), notes=notes)
    _check_against_model(conv)
    return conv


def convert_file(path: str | os.PathLike, fmt: str, trust: bool = False) -> Conversion:
    """:func:`read_source` + :func:`convert_state_dict`; the file's other top-level entries are
    listed in ``ignored`` (``meta`` is also kept in ``meta``)."""
    src, other = read_source(path, trust=trust)
    conv = convert_state_dict(src, fmt)
    conv.ignored = sorted(str(k) for k in other)
    meta = other.get("meta")
    conv.meta = dict(meta) if isinstance(meta, Mapping) else {}
    return conv


def _ccnet_fixups(src: Mapping[str, Tensor], mapping: dict[str, str],
                  out: dict[str, Tensor]) -> list[str]:
    """Official CCNet only: fold the dsn conv bias, InPlace-ABN's scale and the BGR / mean
    input convention."""
    notes = []
    inv = {v: k for k, v in mapping.items()}
    for k, dst in mapping.items():
        if dst.startswith(_FOLD):  # a conv bias followed by a BN: BN(y + b) = BN'(y)
            target = dst[len(_FOLD):]
            rm = out[target]
            out[target] = (rm.double() - src[k].double()).to(rm.dtype)
            notes.append(f"{k} folded into {target}")
    scales = [dst for dst in out if dst.endswith(".weight")
              and dst.removesuffix("weight") + "running_var" in out]
    for dst in scales:  # InPlace-ABN scales by |weight| + eps, BatchNorm by weight
        out[dst] = (out[dst].double().abs() + INPLACE_ABN_EPS).to(out[dst].dtype)
    notes.append(f"the {len(scales)} InPlace-ABN scales became BatchNorm weights |weight| + "
                 f"{INPLACE_ABN_EPS:g}, as InPlace-ABN applies them")
    w, rm = fold_bgr_mean_input(out["backbone.stem.0.weight"], out["backbone.stem.1.running_mean"])
    out["backbone.stem.0.weight"], out["backbone.stem.1.running_mean"] = w, rm
    notes.append(
        f"input convention (BGR, minus {CCNET_BGR_MEAN}) folded into "
        f"{inv['backbone.stem.0.weight']} and the first BN's running mean: the model takes "
        "vidccnet's RGB ImageNet normalisation"
    )
    return notes


def _check_against_model(conv: Conversion) -> None:
    """Build the target model and check every name and shape; fill absent BN counters."""
    from . import create_model  # local import: the registry imports this package

    try:
        with torch.device("meta"):  # names, shapes and dtypes only: no memory, no init cost
            model = create_model(
                f"ccnet2d_resnet{conv.depth}", conv.num_classes, **conv.model_kwargs
            )
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"no vidccnet model fits the source: {exc}") from None
    own = model.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in conv.state_dict:
            conv.state_dict[k] = torch.zeros(v.shape, dtype=v.dtype)
    # training-only parts (the category-consistent loss's embedding) are in no source: the
    # model keeps their initial values when such a state dict loads
    missing = [k for k in own if k not in conv.state_dict
               and not k.startswith(model.training_only_prefixes)]
    extra = [k for k in conv.state_dict if k not in own]
    shapes = [
        f"{k}: {tuple(conv.state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items() if k in conv.state_dict and conv.state_dict[k].shape != v.shape
    ]
    if missing or extra or shapes:
        parts = [f"{len(x)} {what} (e.g. {x[0]})" for what, x in
                 (("missing", missing), ("unexpected", extra), ("shape mismatches", shapes)) if x]
        raise ConversionError(f"the converted weights do not fit the model: {'; '.join(parts)}")
    conv.state_dict = {  # model order
        k: conv.state_dict[k].to(own[k].dtype) for k in own if k in conv.state_dict
    }


# ---------------------------------------------------------------------------- checkpoint


def recurrence_from_meta(meta: Mapping[str, Any]) -> int | None:
    """R from an mmseg checkpoint's ``meta["config"]`` text (``recurrence=2``), if stated."""
    text = meta.get("config") if isinstance(meta, Mapping) else None
    if isinstance(text, str):
        m = re.search(r"recurrence\s*=\s*(\d+)", text)
        if m:
            return int(m.group(1))
    return None


def to_checkpoint(
    conv: Conversion,
    *,
    class_names: list[str],
    palette: list[tuple[int, int, int]],
    dataset: str,
    recurrence: int = 2,
    source: Mapping[str, Any] | None = None,
) -> dict:
    """A vidccnet checkpoint dict (``weights_only``-safe) for a converted model.

    The config names ``ccnet2d_resnet{depth}`` with ``model.recurrence`` and the model kwargs
    the weights need; ``data`` carries the class names and palette (``data.name`` = `dataset`,
    for the record). ``converted_from`` records the source and what was transformed.
    """
    from vidccnet.engine.checkpoint import CHECKPOINT_VERSION
    from vidccnet.engine.config import Config, DataConfig, ModelConfig, config_to_dict

    if len(class_names) != conv.num_classes or len(palette) != conv.num_classes:
        raise ConversionError(
            f"the model predicts {conv.num_classes} classes but {len(class_names)} class names / "
            f"{len(palette)} colours were given"
        )
    cfg = Config(
        model=ModelConfig(
            name=f"ccnet2d_resnet{conv.depth}", recurrence=int(recurrence),
            kwargs=dict(conv.model_kwargs),
        ),
        data=DataConfig(
            name=dataset, class_names=[str(n) for n in class_names],
            palette=[tuple(int(v) for v in c) for c in palette],
        ),
    )
    return {
        "model": conv.state_dict,
        "optimizer": None,
        "lr_scheduler": None,
        "scaler": None,
        "iteration": 0,
        "config": config_to_dict(cfg),
        "metrics": {},
        "version": CHECKPOINT_VERSION,
        "converted_from": {
            **{str(k): v for k, v in (source or {}).items()},
            "tensors_used": len(conv.used),
            "ignored_entries": list(conv.ignored),
            "notes": list(conv.notes),
            "input_normalisation": "RGB, x / 255, ImageNet mean (0.485, 0.456, 0.406) and "
            "std (0.229, 0.224, 0.225)",
        },
    }
