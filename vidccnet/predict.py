"""Streaming video segmentation with a trained model: :class:`VideoSegmenter`.

The video is decoded frame by frame, each frame resized for inference, and frames are grouped
into overlapping clips of ``T = clip_len`` frames with a *causal* schedule:

- a forward pass takes the clip of the ``T`` frames ending at frame ``e`` and emits the last
  ``s = stride`` frames of it (``e - s + 1 ... e``); the next clip ends at ``e + s``;
- so every frame is predicted in a clip that contains at least ``T - s`` of its predecessors and
  at most ``s - 1`` of its successors (``s = 1``: strictly causal, one forward pass per frame);
- clip positions before the first frame repeat the first frame (every pass sees exactly ``T``
  frames, so the compute per pass is constant); the last clip ends on the last frame;
- the default stride is ``ceil(T / 2)`` (at least ``floor(T / 2)`` predecessors per frame, about
  ``2x`` the compute of non-overlapping clips); per-frame models (``ccnet2d_*``) use ``s = T``;
- a model trained on clips of every ``d``-th frame (``data.frame_stride = d > 1``) gets such
  clips: frame ``e`` is predicted at the last position of ``e - (T-1) d, ..., e - d, e``, one
  forward pass per frame (``s = 1``: the positions of one clip are ``d`` frames apart).

Only ``(T - 1) d + 1`` resized frames, at most ``s`` pending source frames and one clip's logits
are alive at any time, so memory does not grow with the video's length. Logits are upsampled to
the source frame size (bilinear, in bands of rows for large frames) before the argmax.

Inference size: by default frames are resized (aspect kept, sides multiples of 8) so that their
short side is the one of the frames the checkpoint was evaluated on, the scale it learned
(:func:`training_short_side`: ``data.frame_short_side`` as the trainer recorded it for your own
data and VSPW, else the synthetic world's ``height`` / ``width``, CamVid's 360x480, VSPW's 480p;
times a single ``eval.scales`` factor), as mmseg's test pipelines resize to the
training scale. ``size="source"`` keeps the source size, ``size=N`` sets the short side;
``max_size`` caps the short side in every case.

Example::

    seg = VideoSegmenter("runs/demo/best.pt", device="auto")
    for index, mask in seg.segment("input.mp4"):   # mask: np.uint8 (H, W) class indices
        ...
    seg.write("input.mp4", "masks/", overlay="overlay.mp4")  # staged, all-or-nothing output
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidccnet.engine.amp import autocast, resolve_amp
from vidccnet.visualize import default_palette

__all__ = [
    "DEFAULT_CLIP_LEN",
    "SegmentationStream",
    "TruncatedVideoError",
    "VideoSegmenter",
    "clip_schedule",
    "default_stride",
    "inference_size",
    "resolve_device",
    "training_short_side",
    "upsample_argmax",
]

log = logging.getLogger(__name__)

DEFAULT_CLIP_LEN = 5  # the paper's T for 3D-CCNet on CamVid; used when the config names none
SIZE_MULTIPLE = 8  # the backbone's output stride: inference sizes are multiples of it
UPSAMPLE_MAX_ELEMENTS = 1 << 24  # logits elements (K * rows * W) upsampled at once


class TruncatedVideoError(RuntimeError):
    """The video ended (or failed to decode) before all of its announced frames were read."""


def _video_api() -> tuple[Any, type[BaseException]]:
    """``(open_video, VideoReadError)`` from :mod:`vidccnet.data.video` (imported lazily)."""
    from vidccnet.data.video import VideoReadError, open_video

    return open_video, VideoReadError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given.

    Raises:
        ValueError: for an unknown device string or CUDA requested without a usable GPU.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda") from exc
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no data (shapes only); use auto, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no usable GPU is available; use the CPU "
                         "(device='cpu', or --device cpu in the scripts)")
    return dev


def default_stride(clip_len: int, per_frame_model: bool = False) -> int:
    """Frames emitted per forward pass: ``ceil(T / 2)``, or ``T`` for per-frame (2D) models."""
    if per_frame_model:
        return clip_len
    return max(1, (clip_len + 1) // 2)


def clip_schedule(num_frames: int, clip_len: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """The causal clip schedule used by :class:`VideoSegmenter`, as explicit frame indices.

    Args:
        num_frames: L, frames of the video (>= 0).
        clip_len: T, frames per forward pass.
        stride: s, frames emitted per forward pass (1 <= s <= T).

    Returns:
        One ``(clip, emitted)`` pair per forward pass: ``clip`` the T frame indices fed to the
        model (indices before 0 clamped to 0), ``emitted`` the frames whose masks come from the
        last ``len(emitted)`` positions of that clip. Every frame is emitted exactly once, in order.
    """
    if clip_len < 1 or not 1 <= stride <= clip_len:
        raise ValueError(
            f"need clip_len >= 1 and 1 <= stride <= clip_len, got {clip_len}, {stride}"
        )
    passes = []
    done = 0  # frames emitted so far
    while done < num_frames:
        end = min(done + stride, num_frames) - 1  # last frame of this clip
        clip = [max(0, i) for i in range(end - clip_len + 1, end + 1)]
        passes.append((clip, list(range(done, end + 1))))
        done = end + 1
    return passes


def inference_size(
    height: int,
    width: int,
    max_size: int | None = None,
    multiple: int = SIZE_MULTIPLE,
    short_side: int | None = None,
) -> tuple[int, int]:
    """The size frames are resized to before the model: aspect kept, sides multiples of 8.

    Args:
        height, width: source frame size.
        max_size: cap on the short side (frames are shrunk, never enlarged; where it binds,
            the sides are rounded down to multiples of 8); None: no cap.
        multiple: both sides are rounded to a multiple of this (the backbone's output stride).
        short_side: resize (up or down) so that the short side is this; None keeps the size.

    Returns:
        ``(h, w)``, each at least ``multiple``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    scale = 1.0
    if short_side is not None:
        if short_side < multiple:
            raise ValueError(f"short_side must be >= {multiple}, got {short_side}")
        scale = short_side / min(height, width)
    if max_size is not None:
        if max_size < multiple:
            raise ValueError(f"max_size must be >= {multiple}, got {max_size}")
        scale = min(scale, max_size / min(height, width))

    def fit(side: int, rounding=round) -> int:
        return max(multiple, int(rounding(side * scale / multiple)) * multiple)

    h, w = fit(height), fit(width)
    if max_size is not None and min(h, w) > max_size:  # rounded past the cap: round down
        h, w = fit(height, math.floor), fit(width, math.floor)
    return h, w


def upsample_argmax(
    logits: torch.Tensor, size: tuple[int, int], max_elements: int = UPSAMPLE_MAX_ELEMENTS
) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of one frame's logits, then argmax.

    Large outputs are processed in bands of rows so that at most about ``max_elements`` upsampled
    logits exist at once (a 1080p frame with 124 classes would otherwise need 1 GB); the result
    equals ``F.interpolate(logits[None], size, mode="bilinear").argmax(1)`` up to rounding.

    Args:
        logits: ``(K, h, w)`` float logits.
        size: output ``(H, W)``.

    Returns:
        ``(H, W)`` int64 class indices on the logits' device.
    """
    k, h, w = logits.shape
    out_h, out_w = int(size[0]), int(size[1])
    logits = logits.float()
    if (h, w) == (out_h, out_w):
        return logits.argmax(0)
    if k * out_h * out_w <= max_elements:
        up = F.interpolate(logits[None], size=(out_h, out_w), mode="bilinear", align_corners=False)
        return up[0].argmax(0)  # (H, W)
    # Separable bilinear: vertical source rows (PyTorch's align_corners=False convention) ...
    dev = logits.device
    src = ((torch.arange(out_h, device=dev, dtype=torch.float64) + 0.5) * (h / out_h) - 0.5)
    src = src.clamp(min=0.0)
    y0 = src.floor().long().clamp(max=h - 1)
    y1 = torch.where(y0 < h - 1, y0 + 1, y0)
    wy = (src - y0.double()).float()  # (H,)
    band = max(1, max_elements // max(1, k * out_w * 2))
    result = torch.empty(out_h, out_w, dtype=torch.long, device=dev)
    for r0 in range(0, out_h, band):
        r1 = min(out_h, r0 + band)
        lo, hi = int(y0[r0]), int(y1[r1 - 1])
        # ... horizontal interpolation of the source rows this band needs (height unchanged) ...
        rows = F.interpolate(
            logits[None, :, lo : hi + 1], size=(hi - lo + 1, out_w), mode="bilinear",
            align_corners=False,
        )[0]  # (K, n, W)
        top = rows[:, y0[r0:r1] - lo]  # (K, b, W)
        bottom = rows[:, y1[r0:r1] - lo]
        weight = wy[r0:r1].view(1, -1, 1)
        result[r0:r1] = (top + (bottom - top) * weight).argmax(0)
    return result


def _cfg_get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg.a.b`` for dataclasses or dicts; ``default`` when any part is missing or None."""
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return default if node is None else node


def _is_per_frame(model: nn.Module, cfg: Any) -> bool:
    """Whether ``model`` segments each frame on its own: read from a CCNet itself (no temporal
    shift, no attention along time), else from ``cfg`` (a ``ccnet2d`` name or its flags)."""
    from vidccnet.models.ccnet import CCNet

    if isinstance(model, CCNet):
        rcca = model.head.cca
        return not model.backbone.temporal_shift and not (rcca.temporal and rcca.recurrence)
    is_2d = str(_cfg_get(cfg, "model.name") or "").startswith("ccnet2d")
    shift = _cfg_get(cfg, "model.temporal_shift", not is_2d)
    attention = _cfg_get(cfg, "model.temporal_attention", not is_2d)
    return not shift and not attention


def _dataset_info(name: str) -> dict[str, Any]:
    """Class names and palette of a known dataset ({} when unknown or unavailable)."""
    try:
        from vidccnet.data import dataset_info

        return dict(dataset_info(name))
    except (ImportError, KeyError, ValueError) as exc:
        log.debug("no dataset info for %r: %s", name, exc)
        return {}


# Short side of the evaluation frames of the datasets with a fixed frame size: the SegNet CamVid
# split is 360x480, VSPW's usual release is 480p (frames are used at their stored size).
_DATASET_SHORT_SIDE = {"camvid": 360, "vspw": 480}


def training_short_side(cfg: Any) -> int | None:
    """Short side (pixels) of the frames a checkpoint's config evaluates on: the model's scale.

    The evaluator feeds validation frames at their stored size times ``eval.scales``: the
    trainer records that size as ``data.frame_short_side`` for datasets used at their stored
    size (``folders``, ``vspw``); otherwise ``synthetic`` frames are ``height`` x ``width`` of
    ``{**data.kwargs, **eval.kwargs}`` (the dataset's defaults when unset), CamVid's 360x480,
    VSPW's 480p. A single eval scale multiplies the result; with several (multi-scale testing)
    the base scale 1 is used.

    Returns:
        The short side, at least 8, or None when the config names no known dataset and no
        ``data.frame_short_side``.
    """
    name = str(_cfg_get(cfg, "data.name") or "").lower()
    if _cfg_get(cfg, "data.frame_short_side"):  # recorded by the trainer
        side = float(_cfg_get(cfg, "data.frame_short_side"))
    elif name == "synthetic":
        import inspect

        from vidccnet.data.synthetic import SyntheticVideoDataset

        kw = {**(_cfg_get(cfg, "data.kwargs") or {}), **(_cfg_get(cfg, "eval.kwargs") or {})}
        defaults = inspect.signature(SyntheticVideoDataset).parameters
        side = float(min(int(kw.get("height", defaults["height"].default)),
                         int(kw.get("width", defaults["width"].default))))
    elif name in _DATASET_SHORT_SIDE:
        side = float(_DATASET_SHORT_SIDE[name])
    else:
        return None
    scales = list(_cfg_get(cfg, "eval.scales") or [1.0])
    if len(scales) == 1:
        side *= float(scales[0])
    return max(SIZE_MULTIPLE, int(round(side)))


def _parse_size(size: str | int) -> str | int:
    """``"model"``, ``"source"`` or a short side >= 8 (int, or a string of digits)."""
    if isinstance(size, str) and size in ("model", "source"):
        return size
    try:
        value = int(size)
    except (TypeError, ValueError):
        raise ValueError(
            f"size must be 'model', 'source' or a short side in pixels, got {size!r}"
        ) from None
    if value < SIZE_MULTIPLE:
        raise ValueError(f"size must be at least {SIZE_MULTIPLE} pixels, got {value}")
    return value


@dataclass
class _Pending:
    index: int
    size: tuple[int, int]  # (H, W) of the source frame
    frame: np.ndarray | None  # (H, W, 3) uint8, kept only when the caller asked for frames


class VideoSegmenter:
    """Segments videos or frame folders with a trained vidccnet model, streaming.

    Args:
        checkpoint: path of a training checkpoint (``best.pt`` / ``last.pt``) or the already
            loaded checkpoint dict (keys ``model``, ``config``, ...; see docs/design.md).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        clip_len: T, frames per forward pass; default from the checkpoint's config
            (``eval.clip_len``, then ``data.clip_len``), else 5.
        stride: s, frames emitted per forward pass (1 <= s <= T); default ``ceil(T / 2)``, ``T``
            for per-frame models; 1 with a frame stride > 1. See the module docstring.
        frame_stride: d, the spacing of a clip's frames in source frames; default the
            checkpoint's ``data.frame_stride`` (the spacing it was trained on), else 1. Per-frame
            models ignore it.
        amp: run the model under float16 autocast on CUDA; ignored with a warning on other
            devices (CPU autocast is bfloat16, slower than float32 on most CPUs).
        max_size: shrink frames so that the short side is at most this for inference.
        backend: video decoding backend for :func:`vidccnet.data.video.open_video`.
        size: inference scale: ``"model"`` (default) resizes frames so that their short side
            is the checkpoint's (:func:`training_short_side`; the source size when the config
            names none), ``"source"`` keeps the source size, an int sets the short side.
            ``max_size`` caps the result.

    Attributes:
        class_names, palette, num_classes: from the checkpoint's config (``data.class_names``,
            ``data.palette``); generic names and a default palette where it has none.
        clip_len, stride, frame_stride, device, model, config, amp (whether autocast is on).
        size_mode: ``"model"``, ``"source"`` or the short side in use; ``model_short_side``:
            the checkpoint's scale (None when unknown).

    Raises:
        vidccnet.engine.checkpoint.CheckpointError: missing, corrupt or incompatible checkpoint.
        ValueError: invalid options.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | dict[str, Any],
        device: str | torch.device = "auto",
        clip_len: int | None = None,
        stride: int | None = None,
        amp: bool = False,
        max_size: int | None = None,
        backend: str = "av",
        size: str | int = "model",
        frame_stride: int | None = None,
    ) -> None:
        from vidccnet.engine.checkpoint import (
            CheckpointError,
            build_model_from_checkpoint,
            check_version,
            load_checkpoint,
        )

        dev = resolve_device(device)
        self.checkpoint_path: str | None = None
        if isinstance(checkpoint, dict):
            ckpt = checkpoint
            if "model" not in ckpt or "config" not in ckpt:
                raise CheckpointError(
                    "the checkpoint dict needs the keys 'model' and 'config' (as written by "
                    f"scripts/train.py); got {sorted(ckpt)[:8]}"
                )
            check_version(ckpt, "the checkpoint dict")
        else:
            self.checkpoint_path = os.fspath(checkpoint)
            ckpt = load_checkpoint(self.checkpoint_path, map_location="cpu")
        model, cfg = build_model_from_checkpoint(ckpt, dev)
        self._setup(model, cfg, dev, clip_len, stride, amp, max_size, backend, size,
                    frame_stride=frame_stride)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        config: Any = None,
        device: str | torch.device = "auto",
        clip_len: int | None = None,
        stride: int | None = None,
        amp: bool = False,
        max_size: int | None = None,
        backend: str = "av",
        size: str | int = "model",
        frame_stride: int | None = None,
    ) -> VideoSegmenter:
        """A segmenter around an in-memory model (``(B, 3, T, H, W)`` -> ``(B, K, T, H, W)``).

        ``class_names`` / ``palette`` override the ones in ``config`` (a Config or plain dict);
        there must be one name per class the model predicts. The model is moved to ``device``
        and put in eval() mode (pass a copy to keep training the original); clips are given
        to it in its parameters' dtype.
        """
        self = cls.__new__(cls)
        self.checkpoint_path = None
        dev = resolve_device(device)
        self._setup(
            model.to(dev), config, dev, clip_len, stride, amp, max_size, backend, size,
            class_names=class_names, palette=palette, frame_stride=frame_stride,
        )
        return self

    def _setup(
        self,
        model: nn.Module,
        cfg: Any,
        device: torch.device,
        clip_len: int | None,
        stride: int | None,
        amp: bool,
        max_size: int | None,
        backend: str,
        size: str | int = "model",
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        frame_stride: int | None = None,
    ) -> None:
        self.model = model.eval()
        param = next(model.parameters(), None)
        # the model's dtype (float32 unless the caller converted it); autocast picks its own
        self.input_dtype = param.dtype if param is not None and param.is_floating_point() \
            else torch.float32
        self.config = cfg
        self.device = device
        self.backend = backend
        if max_size is not None and max_size < SIZE_MULTIPLE:
            raise ValueError(f"max_size must be >= {SIZE_MULTIPLE}, got {max_size}")
        self.max_size = max_size
        size = _parse_size(size)
        self.model_short_side = training_short_side(cfg)
        if size == "model" and self.model_short_side is None:
            log.info("the model's config names no training frame size: using the source size")
            size = "source"
        self.size_mode: str | int = size
        self.amp_dtype = resolve_amp(device, bool(amp))  # float16 on CUDA, None elsewhere
        self.amp = self.amp_dtype is not None
        self.model_name = _cfg_get(cfg, "model.name")
        if clip_len is None:
            clip_len = _cfg_get(cfg, "eval.clip_len") or _cfg_get(cfg, "data.clip_len")
            clip_len = int(clip_len) if clip_len else DEFAULT_CLIP_LEN
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        per_frame = _is_per_frame(model, cfg)  # frames independent: no overlap needed
        if frame_stride is None:
            frame_stride = int(_cfg_get(cfg, "data.frame_stride", 1))
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        if per_frame:
            frame_stride = 1  # no frame sees another
        if stride is None:
            stride = 1 if frame_stride > 1 else default_stride(clip_len, per_frame)
        if frame_stride > 1 and stride != 1:
            raise ValueError(
                f"with frame_stride {frame_stride} each frame needs its own clip: stride must "
                f"be 1, got {stride}"
            )
        if not 1 <= stride <= clip_len:
            raise ValueError(
                f"stride must be between 1 and clip_len={clip_len}, got {stride}; "
                "stride = frames emitted per forward pass"
            )
        self.clip_len = int(clip_len)
        self.stride = int(stride)
        self.frame_stride = int(frame_stride)
        names = class_names or _cfg_get(cfg, "data.class_names")
        palette = palette or _cfg_get(cfg, "data.palette")
        if not names and _cfg_get(cfg, "data.name"):
            info = _dataset_info(str(_cfg_get(cfg, "data.name")))
            names, palette = info.get("class_names"), palette or info.get("palette")
        self.class_names: list[str] = [str(n) for n in names] if names else []
        num = None if class_names else (
            _cfg_get(cfg, "model.num_classes") or _cfg_get(cfg, "data.num_classes")
        )
        self.num_classes = int(num) if num else len(self.class_names)
        if self.num_classes == 0:
            self.num_classes = self._probe_num_classes()
        predicted = getattr(model, "num_classes", None)  # a CCNet says it; others: first clip
        if isinstance(predicted, int):
            self._check_classes(predicted)
        palette = palette or []
        self.palette: list[tuple[int, int, int]] = [tuple(int(v) for v in c) for c in palette]
        self._fill_palette()
        if self.num_classes > 256:
            raise ValueError(f"{self.num_classes} classes do not fit uint8 masks (at most 256)")

    def _check_classes(self, predicted: int) -> None:
        if predicted != self.num_classes:
            raise ValueError(
                f"the model predicts {predicted} classes but the segmenter has "
                f"{self.num_classes} class names; give one name per class (class_names=...)"
            )

    def _fill_palette(self) -> None:
        k = self.num_classes
        if len(self.class_names) < k:
            self.class_names += [f"class_{i}" for i in range(len(self.class_names), k)]
        if len(self.palette) < k:
            self.palette += default_palette(k)[len(self.palette) :]

    def inference_size_for(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` a ``height`` x ``width`` source is resized to for the model."""
        if self.size_mode == "source":
            short = None
        elif self.size_mode == "model":
            short = self.model_short_side
        else:
            short = int(self.size_mode)
        return inference_size(height, width, self.max_size, short_side=short)

    def describe_size(self, height: int, width: int) -> str:
        """One line: the inference size for this source and why (printed by the scripts)."""
        h, w = self.inference_size_for(height, width)
        if self.size_mode == "model":
            why = f"the checkpoint's scale: short side {self.model_short_side}"
        elif self.size_mode == "source":
            why = "the source size"
        else:
            why = f"short side {self.size_mode}"
        if self.max_size is not None:
            why += f", at most {self.max_size}"
        return f"inference size {h}x{w} ({why}; source {height}x{width})"

    def write(
        self, source: str | os.PathLike[str] | Any, out: str | os.PathLike[str], **kwargs: Any
    ) -> dict[str, Any]:
        """Segment ``source`` into the folder ``out``, safely: staged, all or nothing.

        Same as :func:`vidccnet.writer.write_segmentation` (``overlay``, ``alpha``, ``fmt``,
        ``start``, ``end``, ``strict``, ``overwrite``, ``progress``, ``fps``, ``cli``); returns
        the summary.
        """
        from vidccnet.writer import write_segmentation

        return write_segmentation(self, source, out, **kwargs)

    @torch.inference_mode()
    def _probe_num_classes(self) -> int:
        probe = torch.zeros(1, 3, 1, 16, 16, device=self.device)  # (B, C, T, H, W)
        return int(self.model(probe).shape[1])

    # ------------------------------------------------------------------ streaming
    def stream(
        self,
        source: str | os.PathLike[str] | Any,
        start: int | None = None,
        end: int | None = None,
        *,
        with_frames: bool = False,
        strict: bool = False,
    ) -> SegmentationStream:
        """Open ``source`` and return an iterable over its masks (see :class:`SegmentationStream`).

        Args:
            source: video file or frame folder path, or an opened reader (``len``, ``fps``,
                ``size``, iteration over ``(H, W, 3)`` uint8 frames).
            start, end: frame range ``[start, end)`` (source indices; None = from the first / to
                the last frame). Up to ``(T - 1) d`` frames before ``start`` are context.
            with_frames: yield ``(index, frame, mask)`` instead of ``(index, mask)``.
            strict: raise :class:`TruncatedVideoError` when the video ends early or a frame
                fails to decode, instead of stopping and recording the lost frames.

        Raises:
            vidccnet.data.video.VideoReadError: the source cannot be opened as a video.
        """
        return SegmentationStream(self, source, start, end, with_frames, strict)

    def segment(
        self, path: str | os.PathLike[str] | Any, start: int | None = None, end: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_index, mask)`` for every frame, in order; mask ``np.uint8 (H, W)``.

        Frames that fail to decode at the end of a truncated video are skipped (logged); use
        :meth:`stream` with ``strict=True`` to get an error instead.
        """
        with self.stream(path, start, end) as stream:
            yield from stream

    def _prepare(self, frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """uint8 (H, W, 3) RGB -> normalised float32 (3, h, w) on the device at ``size``."""
        from vidccnet.data.transforms import to_clip_tensor

        frame = np.ascontiguousarray(frame)
        if not frame.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on those
            frame = frame.copy()
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (H, W, 3) RGB, got {frame.dtype} {tuple(frame.shape)}"
            )
        x = to_clip_tensor(frame[None]).to(self.device)  # (3, 1, H, W)
        x = x.permute(1, 0, 2, 3)  # (1, 3, H, W)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x[0]  # (3, h, w)

    @torch.inference_mode()
    def _predict(
        self, window: Sequence[torch.Tensor], pending: Sequence[_Pending]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Run one clip and yield the masks of its last ``len(pending)`` frames."""
        clip = torch.stack(list(window), dim=1)[None]  # (1, 3, T, h, w)
        if self.amp_dtype is None:
            clip = clip.to(self.input_dtype)
        with autocast(self.device, self.amp_dtype):
            logits = self.model(clip)  # (1, K, T, h, w)
        if isinstance(logits, dict):  # a model left in train mode by a custom wrapper
            logits = logits["out"]
        self._check_classes(logits.shape[1])
        t = logits.shape[2]
        r = len(pending)
        for j, item in enumerate(pending):
            frame_logits = logits[0, :, t - r + j]  # (K, h, w)
            mask = upsample_argmax(frame_logits, item.size)  # (H, W)
            yield item.index, mask.to(torch.uint8).cpu().numpy()


class SegmentationStream:
    """One segmentation run over one source; iterate it to get the masks.

    Opening reads the video's header only. Iterating yields ``(index, mask)`` (or
    ``(index, frame, mask)`` with ``with_frames``), in frame order. After (or during) iteration:

    Attributes:
        fps: frames per second of the source.
        size: ``(H, W)`` source frame size (after rotation).
        inference_size: ``(h, w)`` the model sees.
        expected_frames: frames the source announces in ``[start, end)`` (None if unknown).
        frames_done: masks yielded so far.
        frames_lost: frames announced but not decoded (0 until the end is reached).
        decode_error: message of the decoding error that stopped a truncated video, if any.
    """

    def __init__(
        self,
        segmenter: VideoSegmenter,
        source: Any,
        start: int | None,
        end: int | None,
        with_frames: bool,
        strict: bool,
    ) -> None:
        open_video, _ = _video_api()
        self.segmenter = segmenter
        self._owns_reader = isinstance(source, (str, os.PathLike))
        self.reader = open_video(source, backend=segmenter.backend) if self._owns_reader else source
        self.start = max(0, int(start or 0))
        self.end = None if end is None else int(end)
        if self.end is not None and self.end < self.start:
            self.close()
            raise ValueError(f"end ({self.end}) must not be before start ({self.start})")
        self.with_frames = with_frames
        self.strict = strict
        self.fps = float(getattr(self.reader, "fps", 0.0) or 0.0)
        size = tuple(int(v) for v in self.reader.size)
        self.size: tuple[int, int] = (size[0], size[1])
        self.inference_size = segmenter.inference_size_for(*self.size)
        try:
            total: int | None = int(len(self.reader))
        except (TypeError, ValueError):
            total = None
        # frames the container announces but that cannot be decoded (cut-off file)
        missing = int(getattr(self.reader, "frames_lost", 0) or 0)
        self.total_frames = total  # decodable frames according to the reader
        self.announced_frames = None if total is None else total + missing
        if self.announced_frames is None:
            self.expected_frames: int | None = None
        else:
            stop = self.announced_frames if self.end is None else min(
                self.announced_frames, self.end
            )
            self.expected_frames = max(0, stop - self.start)
        if strict and missing and total is not None and (self.end is None or self.end > total):
            self.close()
            raise TruncatedVideoError(
                f"the video is truncated: its header announces {total + missing} frames but the "
                f"file holds only {total} (without strict mode the frames that decode are kept)"
            )
        self.frames_done = 0
        self.frames_lost = 0
        self.decode_error: str | None = None
        self._failed_at: int | None = None
        self._started = False

    # context manager / cleanup
    def close(self) -> None:
        """Close the reader if this stream opened it."""
        if self._owns_reader and hasattr(self.reader, "close"):
            self.reader.close()

    def __enter__(self) -> SegmentationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.expected_frames or 0

    def __iter__(self) -> Iterator[tuple]:
        if self._started:
            raise RuntimeError("a SegmentationStream can be iterated once; call stream() again")
        self._started = True
        return self._run()

    def _frames(self, first: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) from frame ``first`` on; decoding errors end the stream (or raise if
        strict); a bad file of a frame folder (``FrameFileError``) always raises. Readers with
        random access (``reader[i]``, as the PyAV, decord and frame-folder readers) start at
        ``first`` (PyAV seeks to the keyframe before it); others are iterated from frame 0."""
        from vidccnet.data.video import FrameFileError

        _, video_read_error = _video_api()
        reader = self.reader
        if first > 0 and callable(getattr(reader, "__getitem__", None)):
            n = len(reader)
            it: Iterator[np.ndarray] = (reader[i] for i in range(first, n))
            index = first
        else:
            it = iter(reader)
            index = 0
        while True:
            try:
                frame = next(it)
            except StopIteration:
                return
            except FrameFileError:
                raise  # each frame is its own file: not a truncated video
            except video_read_error as exc:
                self.decode_error = str(exc)
                self._failed_at = index
                if self.strict:
                    raise TruncatedVideoError(
                        f"frame {index} failed to decode ({exc}); the video looks truncated or "
                        "corrupt (without strict mode the frames that decode are kept)"
                    ) from exc
                return  # reported once, with the count, at the end of the stream
            yield index, frame
            index += 1

    def _run(self) -> Iterator[tuple]:
        seg = self.segmenter
        t, s, d = seg.clip_len, seg.stride, seg.frame_stride
        span = (t - 1) * d + 1  # source frames from a clip's first to its last
        first_context = max(0, self.start - (span - 1))
        window: deque[torch.Tensor] = deque(maxlen=span)  # (3, h, w) each
        pending: deque[_Pending] = deque()
        last_index = self.start - 1

        def flush() -> Iterator[tuple]:
            clip = list(window)[::d]  # T frames, d apart, the newest last
            for (index, mask), item in zip(seg._predict(clip, pending), pending):
                self.frames_done += 1
                if self.with_frames:
                    yield index, item.frame, mask
                else:
                    yield index, mask
            pending.clear()

        try:
            empty = self.end is not None and self.end <= 0
            frames = iter(()) if empty else self._frames(first_context)
            for index, frame in frames:
                last_index = index
                if index < first_context:
                    continue  # decoded but not needed as context
                x = seg._prepare(frame, self.inference_size)  # (3, h, w)
                if not window:
                    window.extend([x] * (span - 1))  # positions before the video: frame repeated
                window.append(x)
                if index >= self.start:
                    pending.append(
                        _Pending(index, frame.shape[:2], frame if self.with_frames else None)
                    )
                del frame
                if len(pending) == s:
                    yield from flush()
                if self.end is not None and index + 1 >= self.end:
                    break  # do not decode beyond the range
            if pending:
                yield from flush()
        finally:
            window.clear()
            pending.clear()
        if self.expected_frames is not None:
            self.frames_lost = max(0, self.expected_frames - self.frames_done)
        if self.frames_lost:
            # one account of the loss, the same in strict and non-strict mode
            reasons = []
            total, announced = self.total_frames, self.announced_frames
            if total is not None and announced is not None and announced > total:
                reasons.append(f"the header announces {announced} frames, the file holds {total}")
            if self._failed_at is not None:
                reasons.append(f"decoding failed at frame {self._failed_at}: {self.decode_error}")
            if not reasons:
                reasons.append(f"the video ended after frame {last_index}")
            self.decode_error = "; ".join(reasons)
            if self.strict:
                raise TruncatedVideoError(
                    f"{self.frames_lost} of the {self.expected_frames} frames could not be "
                    f"decoded ({self.decode_error}); without strict mode the "
                    f"{self.frames_done} that decode are kept"
                )
            log.warning("%d of the %d frames could not be decoded: %s", self.frames_lost,
                        self.expected_frames, self.decode_error)
