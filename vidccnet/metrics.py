"""Segmentation metrics: confusion-matrix IoU figures and temporal consistency (mVC, flicker).

All meters follow the same small protocol: ``reset()``, ``update(...)`` (alias ``process``),
``compute()`` (alias ``evaluate``) and ``all_reduce()``, which sums the meter's state over the
ranks of an initialised ``torch.distributed`` process group (a no-op otherwise). The state is kept
as sums and counts so meters of different ranks or shards merge exactly.

Definitions (docs/metrics.md has them in full, with the conventions' names; docs/design.md
summarises them):

- IoU of class c = TP / (TP + FP + FN), NaN when c occurs neither in prediction nor ground truth.
  mIoU is the mean of the per-class IoU over either the classes with a non-empty union
  (``miou_over="union"``, mmsegmentation's convention: a class that is only predicted counts with
  IoU 0) or the classes present in the ground truth (``miou_over="gt"``, VSPW's evaluator: such a
  class is left out). fwIoU = sum_c freq_c * IoU_c with freq_c the share of ground-truth pixels of
  class c; pixel accuracy = TP / labelled pixels; mAcc = nan-mean of the per-class recall.
- mVC_n (VSPW's video consistency): for every window of n consecutive annotated frames starting at
  ``i in range(L - n)``, ``g`` = pixels whose ground truth is identical in the n frames, ``p`` =
  pixels whose prediction is identical in the n frames; the window ratio is ``|g & p| / |g|``
  (NaN, i.e. skipped, when ``g`` is empty); mVC_n is the mean of all ratios of all windows of all
  videos. With ``count_ignored=True`` (VSPW's code) a pixel that is ``ignore_index`` in all n
  frames belongs to ``g``; with ``count_ignored=False`` ``g`` holds labelled pixels only. Note
  ``range(L - n)``: as in VSPW's code the window that ends on the last frame is not counted, so a
  video with ``L <= n`` frames has no window.
- Flicker rate: fraction of pixels whose predicted class changes between consecutive frames,
  averaged over the consecutive pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "METRIC_CONVENTIONS",
    "ConfusionMatrix",
    "FlickerMeter",
    "VideoConsistency",
    "all_reduce_sum",
    "flicker_rate",
    "resolve_metric_convention",
]


MIOU_OVER = ("union", "gt")

# Named mIoU conventions (docs/metrics.md): the ConfusionMatrix setting each implies. mVC is
# VSPW's definition (VideoConsistency(count_ignored=True)) under both: mmsegmentation has no
# mVC; the labelled-pixels-only variant is the Evaluator's option ``vc_labelled_only``.
METRIC_CONVENTIONS: dict[str, dict[str, Any]] = {
    # VSPW's official evaluator: mIoU over the classes present in the ground truth
    "vspw": {"miou_over": "gt"},
    # mmsegmentation's mIoU: over the classes with a non-empty union
    "mmseg": {"miou_over": "union"},
}


def resolve_metric_convention(name: str, dataset: str | None = None) -> str:
    """The convention to use: ``"auto"`` is ``"vspw"`` for the dataset ``"vspw"``, else
    ``"mmseg"``; ``"vspw"`` and ``"mmseg"`` are returned as they are.

    Raises:
        ValueError: on any other name.
    """
    if name == "auto":
        return "vspw" if dataset == "vspw" else "mmseg"
    if name not in METRIC_CONVENTIONS:
        raise ValueError(
            f"metric convention must be 'auto' or one of {', '.join(METRIC_CONVENTIONS)}; "
            f"got {name!r}"
        )
    return name


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``values`` over all ranks (returns the input unchanged without a process group).

    ``op`` is "sum" or "max".

    The reduction runs on the tensor's device, except that CPU tensors are moved to CUDA when the
    backend is NCCL (which cannot reduce CPU tensors).
    """
    if not _dist_ready():
        return values
    work = values
    if dist.get_backend() == "nccl" and not values.is_cuda:
        work = values.to(torch.device("cuda", torch.cuda.current_device()))
    work = work.clone()
    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    dist.all_reduce(work, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return work.to(values.device)


def _check_same_shape(pred: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{what}: prediction shape {tuple(pred.shape)} differs from ground-truth shape "
            f"{tuple(target.shape)}; resize the prediction to the label size first"
        )


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


class ConfusionMatrix:
    """Accumulates a (K, K) confusion matrix (rows: ground truth, columns: prediction).

    The matrix lives on the device of the first ``update`` (GPU when the model is) and is filled
    with one ``torch.bincount`` per update (on CUDA it reads its input's min and max: with the
    range check, an update waits for the device three times).

    Args:
        num_classes: K.
        ignore_index: ground-truth value of pixels that are not counted.
        miou_over: which classes mIoU averages over: ``"union"`` (classes with a non-empty union,
            mmsegmentation) or ``"gt"`` (classes present in the ground truth, VSPW's evaluator).
            Only ``mIoU`` depends on it; the per-class ``IoU`` list is the same.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, miou_over: str = "union") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if miou_over not in MIOU_OVER:
            raise ValueError(f"miou_over must be one of {MIOU_OVER}, got {miou_over!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.miou_over = miou_over
        self.mat: torch.Tensor | None = None  # (K, K) int64

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.mat = None

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add predictions and ground truth of any matching shape (e.g. (H, W) or (B, T, H, W)).

        Args:
            pred: integer class indices in [0, K).
            target: integer labels in [0, K) or ``ignore_index``.

        Raises:
            ValueError: on a shape mismatch or on a value outside the valid range.
        """
        pred = _as_tensor(pred)
        target = _as_tensor(target)
        _check_same_shape(pred, target, "ConfusionMatrix.update")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError(
                "ConfusionMatrix.update expects integer class maps; take argmax over the class "
                "dimension of the logits first"
            )
        k = self.num_classes
        target = target.to(pred.device).reshape(-1).long()
        pred = pred.reshape(-1).long()
        valid = target != self.ignore_index
        bad_target = valid & ((target < 0) | (target >= k))
        bad_pred = valid & ((pred < 0) | (pred >= k))
        if bool((bad_target | bad_pred).any()):
            which = "ground truth" if bool(bad_target.any()) else "prediction"
            raise ValueError(
                f"ConfusionMatrix.update: {which} holds values outside [0, {k}) that are not "
                f"ignore_index={self.ignore_index}; map void labels to ignore_index or check "
                "num_classes"
            )
        # unlabelled pixels go to a spare last bin: no boolean-mask selection (on a GPU, a
        # nonzero() each, which waits for the device)
        idx = torch.where(valid, target * k + pred, k * k)
        counts = torch.bincount(idx, minlength=k * k + 1)[: k * k].reshape(k, k)
        if self.mat is None:
            self.mat = counts
        else:
            self.mat += counts.to(self.mat.device)

    process = update

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks (no-op without an initialised process group)."""
        mat = self.mat
        if mat is None:
            mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.mat = all_reduce_sum(mat)

    def matrix(self) -> np.ndarray:
        """The accumulated matrix as int64 numpy (K, K); zeros before any update."""
        if self.mat is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self.mat.detach().cpu().numpy().astype(np.int64)

    def compute(self) -> dict:
        """Figures from the accumulated matrix (fractions in [0, 1], computed in float64).

        Returns:
            dict with ``mIoU`` (float: mean IoU over the classes ``miou_over`` selects; NaN when
            there is none), ``IoU`` (list of K floats, NaN where a class occurs neither in
            prediction nor ground truth), ``fwIoU``,
            ``pixel_acc``, ``mAcc``, ``Acc`` (per-class recall, NaN for classes absent from the
            ground truth) and ``pixels`` (labelled pixels counted).
        """
        m = self.matrix().astype(np.float64)
        tp = np.diag(m)
        gt = m.sum(axis=1)
        pr = m.sum(axis=0)
        total = gt.sum()
        union = gt + pr - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        averaged = gt > 0 if self.miou_over == "gt" else union > 0  # gt > 0 implies union > 0
        miou = float(iou[averaged].mean()) if averaged.any() else math.nan
        if total > 0:
            freq = gt / total
            fw = float(np.sum(freq[gt > 0] * iou[gt > 0]))
            pixel_acc = float(tp.sum() / total)
        else:
            fw = math.nan
            pixel_acc = math.nan
        has_gt = ~np.isnan(acc)
        macc = float(acc[has_gt].mean()) if has_gt.any() else math.nan
        return {
            "mIoU": miou,
            "IoU": [float(v) for v in iou],
            "fwIoU": fw,
            "pixel_acc": pixel_acc,
            "mAcc": macc,
            "Acc": [float(v) for v in acc],
            "pixels": int(total),
        }

    evaluate = compute


class VideoConsistency:
    """VSPW's video consistency mVC_n, computed in a streaming way.

    Instead of holding the whole video, the meter keeps, per pixel, the length of the current run
    of identical ground truth and of identical prediction. The window of n frames ending at frame
    e then has ``g = gt_run[e] >= n`` and ``p = pred_run[e] >= n``; it is scored when frame e + 1
    arrives, which realises ``range(L - n)`` without knowing L in advance. Memory is O(H * W)
    whatever the video length. The sums stay on the frames' device (float64): ``push`` makes no
    host synchronisation; ``compute`` makes one.

    Use either ``update(pred_video, gt_video)`` for a whole video, or ``start_video()``,
    ``push(pred_frame, gt_frame)`` for each annotated frame in order, ``end_video()``.

    Args:
        n: window length (8 and 16 in VSPW).
        ignore_index: ground-truth value of unlabelled pixels.
        count_ignored: True (VSPW's official definition): a pixel whose ground truth is
            ``ignore_index`` in all n frames of a window is ground-truth-consistent like any
            other constant value. False (stricter): ``ignore_index`` never counts as consistent,
            so ``g`` holds labelled pixels only.
    """

    def __init__(self, n: int, ignore_index: int = 255, count_ignored: bool = True) -> None:
        if n < 1:
            raise ValueError(f"VideoConsistency window n must be >= 1, got {n}")
        self.n = int(n)
        self.ignore_index = int(ignore_index)
        self.count_ignored = bool(count_ignored)
        self.reset()

    def reset(self) -> None:
        """Forget all videos (and any video in progress)."""
        self._state: torch.Tensor | None = None  # float64 [sum of ratios, windows scored]
        self._end_stream()

    @property
    def ratio_sum(self) -> float:
        """Sum of the ratios of the windows scored so far."""
        return 0.0 if self._state is None else float(self._state[0])

    @property
    def windows(self) -> int:
        """Number of windows scored so far (windows with an empty ``g`` are not scored)."""
        return 0 if self._state is None else int(self._state[1])

    def _end_stream(self) -> None:
        self._prev_pred: torch.Tensor | None = None  # (H, W)
        self._prev_gt: torch.Tensor | None = None  # (H, W)
        self._pred_run: torch.Tensor | None = None  # (H, W) int32
        self._gt_run: torch.Tensor | None = None  # (H, W) int32
        self._frames = 0

    def start_video(self) -> None:
        """Begin a new video (ends the previous one, if any)."""
        self._end_stream()

    def end_video(self) -> None:
        """Finish the current video; its last window (ending on the last frame) is not scored."""
        self._end_stream()

    def _score_window(self) -> None:
        """Add the ratio of the window ending on the previous frame (skipped if ``g`` is empty)."""
        g = self._gt_run >= self.n
        g_count = g.sum()
        both = (g & (self._pred_run >= self.n)).sum()
        scored = g_count > 0
        ratio = torch.where(scored, both.double() / g_count.clamp_min(1).double(), 0.0)
        if self._state is None or self._state.device != ratio.device:
            state = torch.zeros(2, dtype=torch.float64, device=ratio.device)
            if self._state is not None:
                state += self._state.to(ratio.device)
            self._state = state
        self._state[0] += ratio
        self._state[1] += scored.double()

    def push(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> None:
        """Add the next annotated frame of the current video.

        Args:
            pred: (H, W) integer prediction.
            gt: (H, W) integer ground truth (``ignore_index`` allowed).
        """
        pred = _as_tensor(pred)
        gt = _as_tensor(gt).to(pred.device)
        _check_same_shape(pred, gt, "VideoConsistency.push")
        if pred.dim() != 2:
            raise ValueError(
                f"VideoConsistency.push expects one (H, W) frame, got shape {tuple(pred.shape)}"
            )
        if self._prev_pred is not None and self._prev_pred.shape != pred.shape:
            raise ValueError(
                f"VideoConsistency.push: frame size {tuple(pred.shape)} differs from the "
                f"previous frame's {tuple(self._prev_pred.shape)} within one video; call "
                "start_video() between videos"
            )
        # The window ending on the previous frame is complete and is not the video's last one.
        if self._frames >= self.n:
            self._score_window()
        # A run starts at 1 on every counted pixel; uncounted (ignored) pixels hold run 0.
        start = (
            torch.ones(gt.shape, dtype=torch.int32, device=gt.device)
            if self.count_ignored
            else (gt != self.ignore_index).to(torch.int32)
        )
        if self._prev_pred is None:
            self._pred_run = torch.ones(pred.shape, dtype=torch.int32, device=pred.device)
            self._gt_run = start
        else:
            same_p = pred == self._prev_pred
            self._pred_run = torch.where(same_p, self._pred_run + 1, 1).to(torch.int32)
            same_g = (gt == self._prev_gt) & (start > 0)
            self._gt_run = torch.where(same_g, self._gt_run + 1, start).to(torch.int32)
        self._prev_pred = pred.clone()
        self._prev_gt = gt.clone()
        self._frames += 1

    def update(
        self, pred_video: torch.Tensor | np.ndarray, gt_video: torch.Tensor | np.ndarray
    ) -> None:
        """Add one whole video of consecutive annotated frames.

        Args:
            pred_video: (L, H, W) integer predictions.
            gt_video: (L, H, W) integer ground truth.
        """
        pred_video = _as_tensor(pred_video)
        gt_video = _as_tensor(gt_video)
        _check_same_shape(pred_video, gt_video, "VideoConsistency.update")
        if pred_video.dim() != 3:
            raise ValueError(
                "VideoConsistency.update expects (L, H, W) videos, got shape "
                f"{tuple(pred_video.shape)}"
            )
        self.start_video()
        for t in range(pred_video.shape[0]):
            self.push(pred_video[t], gt_video[t])
        self.end_video()

    process = update

    def all_reduce(self) -> None:
        """Sum ratio sums and window counts over all ranks (no-op without a process group)."""
        state = self._state if self._state is not None else torch.zeros(2, dtype=torch.float64)
        self._state = all_reduce_sum(state)

    def compute(self) -> float:
        """mVC_n in [0, 1]; NaN when no window with non-empty ``g`` was seen."""
        if self._state is None:
            return math.nan
        ratio_sum, windows = self._state.tolist()  # one host synchronisation
        return ratio_sum / windows if windows > 0 else math.nan

    evaluate = compute


def flicker_rate(pred_video: torch.Tensor | np.ndarray) -> float:
    """Mean over consecutive frame pairs of the fraction of pixels whose class changes.

    Args:
        pred_video: (L, H, W) integer predictions.

    Returns:
        A float in [0, 1]; 0.0 for videos with fewer than two frames.
    """
    pred_video = _as_tensor(pred_video)
    if pred_video.dim() != 3:
        raise ValueError(
            f"flicker_rate expects an (L, H, W) video, got shape {tuple(pred_video.shape)}"
        )
    if pred_video.shape[0] < 2:
        return 0.0
    changed = (pred_video[1:] != pred_video[:-1]).flatten(1)  # (L-1, H*W)
    return float(changed.double().mean(dim=1).mean())


class FlickerMeter:
    """Streaming flicker rate: feed frames one at a time, O(1) frames of memory.

    The rate is pooled over all consecutive pairs of all videos (each pair weighs the same).
    Call ``start_video()`` (or ``end_video()``) between videos so that no pair spans two videos.
    The sum stays on the frames' device (float64): ``update`` makes no host synchronisation.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all videos."""
        self._sum: torch.Tensor | None = None  # float64 scalar, sum of the pairs' rates
        self.pairs = 0
        self._prev: torch.Tensor | None = None

    @property
    def changed_sum(self) -> float:
        """Sum over the pairs seen of the fraction of pixels that changed."""
        return 0.0 if self._sum is None else float(self._sum)

    def start_video(self) -> None:
        """Begin a new video."""
        self._prev = None

    end_video = start_video

    def update(self, pred: torch.Tensor | np.ndarray) -> torch.Tensor | None:
        """Add the next (H, W) predicted frame.

        Returns:
            The pair's changed fraction as a float64 0-dim tensor on the frame's device (no
            host synchronisation; ``float()`` it if needed), None for a video's first frame.
        """
        pred = _as_tensor(pred)
        if pred.dim() != 2:
            raise ValueError(
                f"FlickerMeter.update expects an (H, W) frame, got shape {tuple(pred.shape)}"
            )
        rate = None
        if self._prev is not None:
            if self._prev.shape != pred.shape:
                raise ValueError(
                    f"FlickerMeter.update: frame size {tuple(pred.shape)} differs from the "
                    f"previous frame's {tuple(self._prev.shape)}; call start_video() between videos"
                )
            rate = (pred != self._prev.to(pred.device)).double().mean()
            if self._sum is None:
                self._sum = torch.zeros((), dtype=torch.float64, device=rate.device)
            self._sum = self._sum.to(rate.device) + rate
            self.pairs += 1
        self._prev = pred.clone()
        return rate

    process = update

    def all_reduce(self) -> None:
        """Sum over all ranks (no-op without a process group)."""
        state = torch.stack(
            [
                self._sum.cpu() if self._sum is not None else torch.zeros((), dtype=torch.float64),
                torch.tensor(float(self.pairs), dtype=torch.float64),
            ]
        )
        state = all_reduce_sum(state)
        self._sum = state[0].clone()
        self.pairs = int(round(float(state[1])))

    def compute(self) -> float:
        """Mean changed fraction over all pairs seen; 0.0 when there was no pair."""
        if self.pairs == 0:
            return 0.0
        return self.changed_sum / self.pairs

    evaluate = compute
