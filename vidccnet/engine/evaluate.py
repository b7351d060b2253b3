"""Whole-video evaluation with sliding clips: mIoU / fwIoU / per-class IoU, mVC_n and flicker.

Which clip predicts which frame (``plan_clips``)
------------------------------------------------

Let T = ``clip_len``, s = ``clip_stride`` (1 <= s <= T) and L the video length. Only the frames
that are needed are predicted: the labelled frames of every video. The needed frames are taken in
increasing order; the first one not yet predicted, i, opens a forward pass on the clip of frame
indices ``start .. start + T - 1`` with

- ``anchor="causal"``: ``start = i - (T - s)``, i.e. frame i sits at clip position T - s;
- ``anchor="centre"``: ``start = i - (T - s + 1) // 2`` (for s = 1: position T // 2, where
  training puts the labelled frame of a centre-anchored clip: for even T one more past than
  future frame, ``vidccnet.data.clips.anchor_position``);
- with ``frame_stride`` d > 1 (``data.frame_stride``) s is 1 and frame i's clip is the one
  training builds around a label at i: frames d apart (``vidccnet.data.clips.clip_indices``).

Indices outside [0, L - 1] are clamped (repetition padding: the first frame repeats at the start,
the last frame at the end). That forward pass predicts every needed frame j with
``i <= j <= i + s - 1`` (from clip position ``j - start``). So with s = 1 and the causal anchor
every frame is predicted from itself and its T - 1 predecessors only (strictly causal); with
s > 1 one pass predicts up to s frames (the last s positions of a causal clip), and frame j sees
at least T - s + 1 frames up to itself plus at most s - 1 later frames. This saves a factor s of
compute on densely labelled videos.

Memory
------

Frames are read in increasing order through a small cache of decoded uint8 frames; a frame is
dropped as soon as no later clip can use it, so at most about ``T + (batch_size - 1) * s`` frames
are held for densely labelled videos (``batch_size * T`` for sparse ones) whatever the video
length. Predictions are consumed at once by the confusion matrix and by streaming mVC / flicker
meters (per-pixel run lengths, see ``vidccnet.metrics.VideoConsistency``); nothing grows with L.

Test-time augmentation
----------------------

As mmsegmentation's inference: for every scale the clip is resized (bilinear per frame; the
scaled size is ``int(size * scale + 0.5)``, as mmcv's), optionally also flipped left-right; for
frames larger than ``crop_size`` the (scaled) clip is covered by overlapping tiles (stride 2/3 of
the crop) whose logits are averaged where they overlap. The logits of every (scale, flip) pass
are resized back to the frame size (bilinear), turned into softmax probabilities, and the
probabilities of all passes averaged; the prediction is their argmax. mVC / flicker are
computed on the labelled frames of videos with ``consecutive=True`` (VSPW videos, the CamVid
15 Hz stretch), in order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vidccnet.cli import plural
from vidccnet.data.base import EvalVideo
from vidccnet.data.clips import anchor_position, clip_indices
from vidccnet.metrics import (
    METRIC_CONVENTIONS,
    ConfusionMatrix,
    FlickerMeter,
    VideoConsistency,
    all_reduce_sum,
)

try:  # the data package's constants, when present, so training and evaluation agree
    from vidccnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
except ImportError:  # same values as vidccnet.data.transforms
    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["ClipPlan", "Evaluator", "clip_tensor", "normalise_clips", "plan_clips"]

logger = logging.getLogger(__name__)


def normalise_clips(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, T, H, W, 3) -> float32 (B, 3, T, H, W), ImageNet mean/std, on its device.

    The same arithmetic as ``vidccnet.data.transforms.to_clip_tensor`` (x / 255, minus mean,
    divided by std), batched and on the frames' device so only uint8 crosses to the GPU.
    """
    if frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (B, T, H, W, 3), got {tuple(frames.shape)}")
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0)  # (B, 3, T, H, W)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


def clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (3, T, H, W) float32 normalised (as the evaluator feeds it)."""
    return normalise_clips(torch.from_numpy(np.ascontiguousarray(frames))[None])[0]


@dataclass(frozen=True)
class ClipPlan:
    """One forward pass: the clip's frame indices and the frames it predicts.

    Attributes:
        indices: T frame indices (clamped into [0, L - 1]) in clip order.
        targets: (frame index, clip position) pairs, frames in increasing order.
    """

    indices: tuple[int, ...]
    targets: tuple[tuple[int, int], ...]


def _normalise_anchor(anchor: str) -> str:
    if anchor in ("centre", "center"):
        return "centre"
    if anchor == "causal":
        return "causal"
    raise ValueError(f"anchor must be 'causal' or 'centre', got {anchor!r}")


def plan_clips(
    needed: Sequence[int],
    num_frames: int,
    clip_len: int,
    clip_stride: int = 1,
    anchor: str = "causal",
    frame_stride: int = 1,
) -> list[ClipPlan]:
    """The forward passes that predict the ``needed`` frames (rule in the module docstring).

    Args:
        needed: frame indices to predict (any order, duplicates ignored), each in [0, L).
        num_frames: L.
        clip_len: T >= 1.
        clip_stride: s, 1 <= s <= T.
        anchor: "causal" or "centre".
        frame_stride: d, the spacing of a clip's frames (``data.frame_stride``). With d > 1
            each frame is predicted from the clip training gives a label at that frame
            (``vidccnet.data.clips.clip_indices``); s must be 1.

    Returns:
        Plans in increasing frame order; their clip starts never decrease.
    """
    anchor = _normalise_anchor(anchor)
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if not 1 <= clip_stride <= clip_len:
        raise ValueError(f"clip_stride must be in [1, clip_len={clip_len}], got {clip_stride}")
    frames = sorted({int(i) for i in needed})
    if frames and (frames[0] < 0 or frames[-1] >= num_frames):
        raise ValueError(
            f"needed frame indices must lie in [0, {num_frames}); got {frames[0]}..{frames[-1]}"
        )
    if frame_stride > 1:
        if clip_stride != 1:
            raise ValueError(f"clip_stride must be 1 with frame_stride={frame_stride} (each clip "
                             f"predicts one frame), got {clip_stride}")
        pos = anchor_position(clip_len, anchor)
        return [ClipPlan(indices=tuple(clip_indices(f, num_frames, clip_len, frame_stride,
                                                    anchor)), targets=((f, pos),))
                for f in frames]
    offset = clip_len - clip_stride if anchor == "causal" else (clip_len - clip_stride + 1) // 2
    plans: list[ClipPlan] = []
    k = 0
    while k < len(frames):
        first = frames[k]
        start = first - offset
        targets = []
        while k < len(frames) and frames[k] <= first + clip_stride - 1:
            targets.append((frames[k], frames[k] - start))
            k += 1
        indices = tuple(min(max(start + p, 0), num_frames - 1) for p in range(clip_len))
        plans.append(ClipPlan(indices=indices, targets=tuple(targets)))
    return plans


def _amp_mode(amp: bool | str) -> str:
    if isinstance(amp, bool):
        return "auto" if amp else "none"
    aliases = {
        "none": "none",
        "bf16": "bf16",
        "bfloat16": "bf16",
        "fp16": "fp16",
        "float16": "fp16",
    }
    if amp not in aliases:
        raise ValueError(f"amp must be a bool or one of 'none', 'bf16', 'fp16'; got {amp!r}")
    return aliases[amp]


def _tile_starts(size: int, tile: int) -> list[int]:
    """Starts of overlapping tiles of length ``tile`` covering [0, size) (stride 2/3 tile)."""
    if size <= tile:
        return [0]
    step = max(1, tile - tile // 3)
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


class Evaluator:
    """Evaluates a clip model on whole videos (see the module docstring for the exact rules).

    Args:
        num_classes: K.
        clip_len: T, frames per forward pass.
        clip_stride: s, frames predicted per forward pass (1 = one pass per frame).
        anchor: "causal" (frame at the end of its clip) or "centre".
        scales: test scales; probabilities are averaged at the frame size.
        flip: also average the left-right flipped prediction.
        crop_size: int or (h, w); (scaled) frames larger than this are processed in overlapping
            tiles. None: whole frames.
        device: where the model runs; None: the device of the model's first parameter.
        amp: autocast for the forward passes: "bf16", "fp16", "none", or True (fp16 on CUDA,
            bf16 on CPU) / False.
        ignore_index: label value of unlabelled pixels.
        vc_windows: the n of the mVC_n figures.
        batch_size: clips per forward pass.
        metric_convention: "mmseg" (mIoU over classes with a non-empty union) or "vspw"
            (VSPW's official evaluator: mIoU over the classes present in the ground truth); mVC
            is VSPW's definition (constant void pixels counted) in both; see docs/metrics.md.
        frame_stride: the spacing of a clip's frames, as in training (``data.frame_stride``;
            1 for videos that are already strided views, as CamVid's); needs clip_stride 1.
        vc_labelled_only: the stricter mVC variant that counts labelled pixels only (an
            option with a name: published figures use VSPW's definition).
    """

    def __init__(
        self,
        num_classes: int,
        clip_len: int,
        clip_stride: int = 1,
        anchor: str = "causal",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        crop_size: int | Sequence[int] | None = None,
        device: str | torch.device | None = None,
        amp: bool | str = False,
        ignore_index: int = 255,
        vc_windows: Sequence[int] = (8, 16),
        batch_size: int = 1,
        metric_convention: str = "mmseg",
        vc_labelled_only: bool = False,
        frame_stride: int = 1,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        plan_clips([], 1, clip_len, clip_stride, anchor, frame_stride)  # validates them
        if not scales or any(float(s) <= 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if crop_size is not None:
            crop = (
                (int(crop_size), int(crop_size))
                if isinstance(crop_size, int)
                else tuple(int(c) for c in crop_size)
            )
            if len(crop) != 2 or min(crop) < 1:
                raise ValueError(f"crop_size must be a positive int or (h, w), got {crop_size}")
            crop_size = crop
        if metric_convention not in METRIC_CONVENTIONS:
            raise ValueError(
                f"metric_convention must be one of {', '.join(METRIC_CONVENTIONS)}, got "
                f"{metric_convention!r} ('auto' is resolved from the dataset by the config: "
                "vidccnet.metrics.resolve_metric_convention)"
            )
        if any(int(n) < 1 for n in vc_windows):
            raise ValueError(f"vc_windows must be positive integers, got {vc_windows}")
        self.num_classes = int(num_classes)
        self.clip_len = int(clip_len)
        self.clip_stride = int(clip_stride)
        self.frame_stride = int(frame_stride)
        self.anchor = _normalise_anchor(anchor)
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.crop_size: tuple[int, int] | None = crop_size  # type: ignore[assignment]
        self.device = torch.device(device) if device is not None else None
        self.amp = _amp_mode(amp)
        self.ignore_index = int(ignore_index)
        self.vc_windows = tuple(int(n) for n in vc_windows)
        self.batch_size = int(batch_size)
        self.metric_convention = metric_convention
        self.vc_count_ignored = not vc_labelled_only  # VSPW's mVC unless the variant is asked
        self.stats: dict = {}

    # ------------------------------------------------------------------ inference

    def _device_for(self, model: nn.Module) -> torch.device:
        if self.device is not None:
            return self.device
        for p in model.parameters():
            return p.device
        return torch.device("cpu")

    def _forward(self, model: nn.Module, clip: torch.Tensor) -> torch.Tensor:
        """clip (B, 3, T, h, w) -> logits (B, K, T, h, w) float32."""
        if self.amp != "none":
            if self.amp == "auto":
                dtype = torch.float16 if clip.device.type == "cuda" else torch.bfloat16
            else:
                dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
            ctx = torch.autocast(device_type=clip.device.type, dtype=dtype)
        else:
            ctx = nullcontext()
        with ctx:
            out = model(clip)
        if isinstance(out, dict):
            out = out["out"]
        b, _, t, h, w = clip.shape
        if out.shape != (b, self.num_classes, t, h, w):
            raise ValueError(
                f"model returned shape {tuple(out.shape)} for a clip of shape {tuple(clip.shape)}; "
                f"expected (B, K={self.num_classes}, T, H, W) logits at the input size in eval() "
                "mode (check num_classes)"
            )
        self.stats["forward_passes"] = self.stats.get("forward_passes", 0) + 1
        return out.float()

    def _tiled_logits(
        self, model: nn.Module, clip: torch.Tensor, select: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Logits (N, K, h, w) of the selected (batch, position) pairs, averaged over the
        overlapping tiles (mmsegmentation's sliding inference)."""
        bsel, tsel = select
        _, _, _, h, w = clip.shape  # (B, 3, T, h, w)
        if self.crop_size is None or (h <= self.crop_size[0] and w <= self.crop_size[1]):
            return self._forward(model, clip)[bsel, :, tsel]  # (N, K, h, w)
        th, tw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        total = clip.new_zeros((bsel.numel(), self.num_classes, h, w))  # (N, K, h, w)
        count = clip.new_zeros((1, 1, h, w))
        for y in _tile_starts(h, th):
            for x in _tile_starts(w, tw):
                tile = clip[..., y : y + th, x : x + tw]  # (B, 3, T, th, tw)
                total[..., y : y + th, x : x + tw] += self._forward(model, tile)[bsel, :, tsel]
                count[..., y : y + th, x : x + tw] += 1
        return total / count

    @torch.inference_mode()
    def _predict(
        self, model: nn.Module, clip: torch.Tensor, select: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """clip (B, 3, T, H, W) -> class maps (N, H, W) int64 of the selected frames."""
        _, _, t, h, w = clip.shape
        acc = None
        passes = 0
        for scale in self.scales:
            size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))  # as mmcv
            scaled = clip
            if size != (h, w):
                scaled = F.interpolate(clip, size=(t, *size), mode="trilinear", align_corners=False)
            for flipped in (False, True) if self.flip else (False,):
                x = scaled.flip(-1) if flipped else scaled
                logits = self._tiled_logits(model, x, select)  # (N, K, h', w')
                if flipped:
                    logits = logits.flip(-1)
                if size != (h, w):
                    logits = F.interpolate(logits, size=(h, w), mode="bilinear",
                                           align_corners=False)
                probs = logits.softmax(dim=1)  # (N, K, H, W)
                acc = probs if acc is None else acc + probs
                passes += 1
        return (acc / passes).argmax(dim=1)  # (N, H, W)

    def predict_video(
        self,
        model: nn.Module,
        video: EvalVideo,
        frames: Sequence[int] | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Predict ``frames`` (default: the labelled frames) of one video, in increasing order.

        Puts ``model`` in eval mode (``run`` restores the previous mode afterwards).

        Yields:
            (frame index, class map (H, W) int64 on the evaluation device).
        """
        device = self._device_for(model)
        model.eval()
        needed = list(video.labelled) if frames is None else list(frames)
        plans = plan_clips(needed, video.num_frames, self.clip_len, self.clip_stride, self.anchor,
                           self.frame_stride)
        cache: dict[int, np.ndarray] = {}
        frame_shape = None
        max_cached = self.stats.get("max_cached_frames", 0)
        for b0 in range(0, len(plans), self.batch_size):
            batch = plans[b0 : b0 + self.batch_size]
            for idx in sorted({i for p in batch for i in p.indices}):
                if idx not in cache:
                    frame = np.asarray(video.load_frame(idx))
                    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                        raise ValueError(
                            f"video {video.name!r}: load_frame({idx}) returned "
                            f"{frame.dtype} {frame.shape}; expected uint8 (H, W, 3) RGB"
                        )
                    if frame_shape is None:
                        frame_shape = frame.shape
                    elif frame.shape != frame_shape:
                        raise ValueError(
                            f"video {video.name!r}: frame {idx} has shape {frame.shape}, "
                            f"earlier frames {frame_shape}; all frames of a video must share "
                            "one size"
                        )
                    cache[idx] = frame
            max_cached = max(max_cached, len(cache))
            frames_u8 = np.stack([np.stack([cache[i] for i in p.indices]) for p in batch])
            clip = normalise_clips(torch.from_numpy(frames_u8).to(device))  # (B, 3, T, H, W)
            del frames_u8
            bsel = torch.tensor([b for b, p in enumerate(batch) for _ in p.targets], device=device)
            tsel = torch.tensor([pos for p in batch for _, pos in p.targets], device=device)
            preds = self._predict(model, clip, (bsel, tsel))  # (N, H, W)
            del clip
            # Drop frames no later clip can use (clip starts never decrease).
            nxt = b0 + self.batch_size
            keep_from = plans[nxt].indices[0] if nxt < len(plans) else math.inf
            for idx in [i for i in cache if i < keep_from]:
                del cache[idx]
            targets = [f for p in batch for f, _ in p.targets]
            self.stats["frames_predicted"] = self.stats.get("frames_predicted", 0) + len(targets)
            self.stats["max_cached_frames"] = max_cached
            for n, f in enumerate(targets):
                yield f, preds[n]

    # ------------------------------------------------------------------ evaluation

    def run(
        self, model: nn.Module, videos: Sequence[EvalVideo], distributed: bool | None = None
    ) -> dict:
        """Evaluate ``model`` on ``videos``.

        With ``distributed`` True (default None: whenever a ``torch.distributed`` process group
        is initialised) each rank evaluates ``videos[rank::world]`` and the figures are reduced
        over the ranks: every rank must then call ``run`` with the same videos, passing the
        plain module (not the DDP wrapper, whose forward synchronises buffers). False evaluates
        all videos locally with no collective call.

        Returns:
            dict with ``mIoU``, ``IoU`` (K floats, NaN for classes absent from prediction and
            ground truth), ``fwIoU``, ``pixel_acc``, ``mAcc``, ``Acc``, ``mVC_<n>`` for each n in
            ``vc_windows`` and ``flicker`` (None when no video has ``consecutive=True`` or no
            window qualifies), ``frames`` (labelled frames evaluated), ``videos``,
            ``consecutive_videos``, ``longest_consecutive`` (labelled frames of the longest of
            them), ``forward_passes``, ``max_cached_frames``, ``seconds``,
            ``fps`` (evaluated frames per second), ``metric_convention`` (its name). Accuracy
            figures are fractions in [0, 1].
        """
        if not videos:
            raise ValueError("Evaluator.run got no videos; check the dataset root and split")
        if distributed is None:
            distributed = dist.is_available() and dist.is_initialized()
        rank, world = 0, 1
        if distributed:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError(
                    "Evaluator.run(distributed=True) needs an initialised torch.distributed "
                    "process group; call init_process_group first or pass distributed=False"
                )
            rank, world = dist.get_rank(), dist.get_world_size()
        mine = list(videos)[rank::world]
        device = self._device_for(model)
        convention = METRIC_CONVENTIONS[self.metric_convention]
        cm = ConfusionMatrix(self.num_classes, self.ignore_index, convention["miou_over"])
        vcs = {
            n: VideoConsistency(n, self.ignore_index, self.vc_count_ignored)
            for n in self.vc_windows
        }
        flicker = FlickerMeter()
        self.stats = {"forward_passes": 0, "frames_predicted": 0, "max_cached_frames": 0}
        frames = 0
        consecutive = 0
        longest = 0  # labelled frames of the longest consecutive video (says why mVC_n is n/a)
        was_training = model.training
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        try:
            for video in mine:
                if video.consecutive:
                    consecutive += 1
                    longest = max(longest, len(video.labelled))
                    for vc in vcs.values():
                        vc.start_video()
                    flicker.start_video()
                for index, pred in self.predict_video(model, video):
                    label = np.asarray(video.load_label(index))
                    if label.shape != tuple(pred.shape):
                        raise ValueError(
                            f"video {video.name!r}: label of frame {index} has shape "
                            f"{label.shape}, the frame is {tuple(pred.shape)}; labels must "
                            "match the frame size"
                        )
                    target = torch.from_numpy(label.astype(np.int64)).to(device)  # (H, W)
                    cm.update(pred, target)
                    if video.consecutive:
                        for vc in vcs.values():
                            vc.push(pred, target)
                        flicker.update(pred)
                    frames += 1
                if video.consecutive:
                    for vc in vcs.values():
                        vc.end_video()
                logger.debug("evaluated %s (%d labelled frames)", video.name, len(video.labelled))
        finally:
            model.train(was_training)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0

        counters = torch.tensor(
            [frames, consecutive, len(mine), self.stats["forward_passes"]], dtype=torch.float64
        )
        if distributed:
            cm.all_reduce()
            for vc in vcs.values():
                vc.all_reduce()
            flicker.all_reduce()
            counters = all_reduce_sum(counters)
            longest = int(all_reduce_sum(torch.tensor([longest], dtype=torch.float64), "max"))
            # wall time: the slowest rank decides
            seconds = float(all_reduce_sum(torch.tensor([seconds], dtype=torch.float64), "max"))
        frames, consecutive, n_videos, passes = (int(round(v)) for v in counters.tolist())

        results = cm.compute()
        for n, vc in vcs.items():
            value = vc.compute() if consecutive else math.nan
            results[f"mVC_{n}"] = None if math.isnan(value) else value
        results["flicker"] = flicker.compute() if consecutive and flicker.pairs else None
        results.update(
            frames=frames,
            videos=n_videos,
            consecutive_videos=consecutive,
            longest_consecutive=longest,
            forward_passes=passes,
            max_cached_frames=self.stats["max_cached_frames"],
            seconds=seconds,
            fps=frames / seconds if seconds > 0 else math.nan,
            metric_convention=self.metric_convention,
        )
        logger.info(
            "evaluated %s of %s in %.1f s: mIoU %.4f",
            plural(frames, "frame"),
            plural(n_videos, "video"),
            seconds,
            results["mIoU"],
        )
        return results

    def config(self) -> dict:
        """The evaluator's settings as a plain dict (for reports)."""
        return {
            "num_classes": self.num_classes,
            "clip_len": self.clip_len,
            "clip_stride": self.clip_stride,
            "frame_stride": self.frame_stride,
            "anchor": self.anchor,
            "scales": list(self.scales),
            "flip": self.flip,
            "crop_size": list(self.crop_size) if self.crop_size else None,
            "amp": self.amp,
            "ignore_index": self.ignore_index,
            "vc_windows": list(self.vc_windows),
            "batch_size": self.batch_size,
            "metric_convention": self.metric_convention,
            **METRIC_CONVENTIONS[self.metric_convention],
            "vc_count_ignored": self.vc_count_ignored,
        }
