"""The training loop: one readable function, ``train(cfg, resume=False)``.

Per optimizer step (one "iteration"): ``optim.accum_steps`` micro-batches of
``data.batch_size`` clips per process are forwarded under autocast (``runtime.amp``, CUDA only:
``vidccnet.engine.amp.resolve_amp``), the loss
(``SegmentationCriterion``: CE or OHEM + 0.4 aux + category-consistent) is checked for finiteness
on every rank, back-propagated (DDP synchronises gradients on the last micro-batch), optionally
clipped, and the SGD step and the poly-with-warm-up LR step are taken. Every
``runtime.log_interval`` steps one JSON line goes to ``metrics.jsonl``; every
``eval.interval`` steps the model is validated with the :class:`Evaluator` on the whole
validation videos and ``best.pt`` is kept on val mIoU; every ``runtime.ckpt_interval`` steps and
at the end ``last.pt`` is written (atomically).

Exact resume: ``last.pt`` holds model, optimizer, LR scheduler, grad scaler, every rank's RNG
states (torch, numpy, python, CUDA) and the position in the data stream (epoch, batches consumed
in it). The learning rate follows the config the run is resumed with: the optimizer's
hyper-parameters (``optim.lr``, momentum, ...) and the schedule (``schedule.iterations``, ...) are
rebuilt from it at the restored iteration (identical to the stored ones when nothing changed);
a shorter schedule than the checkpoint's iteration or another ``optim.name`` is refused. The
sampler's order depends only on (seed, epoch) and each sample's augmentation seed on
(seed, epoch, index) (``vidccnet.data.loader``), so a resumed run sees the same batches, augmented
the same way, whatever the number of workers; dropout draws from the restored torch RNG. On CPU
N + resume + N iterations give bit-identical weights to 2N straight.

What is on disk in the run folder (its checks, ``metrics.jsonl``, TensorBoard, the replacement
of an earlier run with ``runtime.overwrite``) is ``vidccnet.engine.rundir``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import random
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidccnet.cli import plural
from vidccnet.nn import RecurrentCrissCrossAttention

from .amp import amp_name, autocast, resolve_amp
from .build import (  # the builders' earlier home was this module: importable from here too
    build_evaluator,
    build_train_dataset,
    build_val_videos,
    check_dataset_kwargs,
    check_root,
    evaluator_kwargs,
)
from .checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    capture_rng_state,
    init_model_from_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from .config import Config, ConfigError, OptimConfig, config_to_dict, config_to_yaml
from .distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_buffers,
    cleanup_distributed,
    init_distributed,
    is_distributed,
    mean_over_ranks,
    reduce_any,
)
from .optim import PolyWarmup, build_optimizer, build_scheduler, configure_resumed_optimizer
from .report import to_jsonable
from .rundir import (  # EARLIER_LOGS, never_trained: importable from here too (their old home)
    EARLIER_LOGS,
    JsonlWriter,
    best_so_far,
    log_train_scalars,
    never_trained,
    open_run_dir,
    prepare_output_dir,
    put_back_earlier_logs,
    replace_earlier_run,
)

__all__ = [
    "EARLIER_LOGS",
    "PolyWarmup",
    "TrainingError",
    "build_criterion",
    "build_evaluator",
    "build_optimizer",
    "build_scheduler",
    "build_train_dataset",
    "build_val_videos",
    "check_dataset_kwargs",
    "configure_resumed_optimizer",
    "evaluator_kwargs",
    "never_trained",
    "train",
]

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """``build_model`` is still importable from here (its old home), without importing the
    models (and torchvision) with this module."""
    if name == "build_model":
        from vidccnet.models.build import build_model

        return build_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, occupied output folder, empty dataset, ...)."""


# --------------------------------------------------------------------------- builders


def build_criterion(cfg: Config) -> nn.Module:
    """``SegmentationCriterion`` from the loss section."""
    from vidccnet.losses import SegmentationCriterion

    lc = cfg.loss
    return SegmentationCriterion(
        aux_weight=lc.aux_weight,
        cc_weight=lc.cc_weight,
        ohem=lc.ohem,
        ohem_thresh=lc.ohem_thresh,
        ohem_min_kept=lc.ohem_min_kept,
        class_weights=list(lc.class_weights) if lc.class_weights else None,
        ignore_index=lc.ignore_index,
        cc_kwargs=dict(lc.cc_kwargs) or None,
    )


def _attention_gammas(model: nn.Module) -> dict[str, float]:
    """The residual weights of the attention modules that run, {parameter name: value}: 0 means
    unused. An RCCA with recurrence 0 keeps its parameters but never runs: left out."""
    idle = tuple(f"{n}." for n, m in model.named_modules()
                 if isinstance(m, RecurrentCrissCrossAttention) and m.recurrence == 0)
    return {n: float(p.detach()) for n, p in model.named_parameters()
            if n.endswith("cca.gamma") and not n.startswith(idle)}


def _check_resumable(cfg: Config, ckpt: dict, where: Path) -> None:
    """Refuse a resume the new config cannot follow."""
    iteration = int(ckpt["iteration"])
    if cfg.schedule.iterations < iteration:
        raise TrainingError(
            f"--resume: schedule.iterations={cfg.schedule.iterations} but {where} is at "
            f"iteration {iteration}; set schedule.iterations to {iteration} or more"
        )
    old = ckpt.get("config") or {}
    old_name = (old.get("optim") or {}).get("name", cfg.optim.name)
    if old_name != cfg.optim.name:
        raise CheckpointError(
            f"--resume: {where} was trained with optim.name={old_name}, the config says "
            f"optim.name={cfg.optim.name}; their states differ (resume with "
            f"optim.name={old_name}, or start a new run)"
        )
    # they define the parameter groups
    for key in ("gamma_lr_mult", "attention_lr_mult", "norm_bias_decay"):
        was = (old.get("optim") or {}).get(key, getattr(OptimConfig, key))
        now = getattr(cfg.optim, key)
        if was != now:
            was, now = (str(v).lower() if isinstance(v, bool) else f"{v:g}" for v in (was, now))
            raise CheckpointError(
                f"--resume: {where} was trained with optim.{key}={was}, the config says "
                f"{now}; the optimizer state is kept per parameter group, which this "
                f"setting defines (resume with optim.{key}={was}, or start a new run "
                "with model.init_from)"
            )


def _log_resume_changes(cfg: Config, ckpt: dict) -> None:
    """Log the settings in which ``cfg`` differs from the resumed checkpoint's config."""
    from .config import config_diff

    changes = config_diff(ckpt.get("config") or {}, config_to_dict(cfg))
    if changes:
        shown = "; ".join(changes[:12]) + ("; ..." if len(changes) > 12 else "")
        logger.info("resuming with changed settings (the new values apply): %s", shown)


def _load_resumed_weights(model: nn.Module, ckpt: dict, where: Path, cfg: Config) -> None:
    """Load the resumed checkpoint's weights; where they do not fit and the model settings
    differ from the run's (an override left out), the refusal names those settings."""
    from .config import config_diff

    try:
        load_model_weights(model, ckpt["model"], source=str(where))
    except CheckpointError:
        was = (ckpt.get("config") or {}).get("model") or {}
        changes = config_diff(was, config_to_dict(cfg)["model"], "model.")
        if not changes:
            raise
        shown = "; ".join(changes[:4]) + ("; ..." if len(changes) > 4 else "")
        raise CheckpointError(
            f"--resume: {where} holds a model built with other settings ({shown}); resume with "
            f"the run's own config, --config {where.parent / 'config.yaml'} --resume, or start "
            "a new run from its weights with model.init_from") from None


def check_labelled(videos: list, split: str, dataset: str | None = None) -> None:
    """Refuse an evaluation split without a single labelled frame (its mIoU would be NaN).

    Raises:
        TrainingError: naming the split.
    """
    if not any(len(v.labelled) for v in videos):
        if dataset == "vspw" and split == "test":
            raise TrainingError("VSPW's test split has no masks: VSPW withholds them (test "
                                "figures come from its benchmark server); evaluate on val")
        raise TrainingError(
            f"the {split!r} split has no labelled frame in its {plural(len(videos), 'video')}: "
            "check its label files (names, folder, format) or choose another eval.split"
        )


# ----------------------------------------------------------------------------- helpers


def seed_everything(seed: int, rank: int = 0, iteration: int = 0) -> None:
    """Seed python, numpy and torch (all devices) of process ``rank`` starting at ``iteration``:
    with ``seed`` itself on rank 0 at the start (the draws of the runs documented so far), else
    with a hash of the three, like the sampler's seeds (``vidccnet.data.loader.sample_seed``),
    so that no two runs share a stream (``seed + rank`` gave rank 1 of seed 0 the dropout draws
    of rank 0 of seed 1)."""
    if rank or iteration:
        from vidccnet.data.loader import sample_seed

        seed = sample_seed(seed, rank, -2 - iteration)  # index < -1: no sample's, not the order's
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _floats(values: dict[str, Any], device: torch.device) -> dict[str, float]:
    """Scalars on ``device`` (and Python floats) as Python floats, read with one device sync."""
    if not values:
        return {}
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device)
                           for v in values.values()])
    return dict(zip(values, stacked.tolist()))


def _colorize(mask: np.ndarray, palette: list) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours (ignore / unknown -> black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for i, c in enumerate(palette[:255]):
        lut[i] = c
    return lut[np.clip(mask, 0, 255).astype(np.uint8)]


@torch.no_grad()
def _log_masks(writer: Any, model: nn.Module, video: Any, cfg: Config, device: torch.device,
               step: int) -> None:
    """Frames / prediction / ground truth of the first clip of ``video`` into TensorBoard."""
    from vidccnet.data.transforms import to_clip_tensor

    t = min(cfg.data.clip_len, video.num_frames)
    frames = np.stack([np.asarray(video.load_frame(i)) for i in range(t)])  # (T, H, W, 3)
    was_training = model.training
    model.eval()
    try:
        clip = to_clip_tensor(frames).unsqueeze(0).to(device)  # (1, 3, T, H, W)
        pred = model(clip).argmax(1)[0].cpu().numpy()  # (T, H, W)
    finally:
        model.train(was_training)
    palette = cfg.data.palette or []
    rows = []
    for i in range(t):
        gt = (
            _colorize(np.asarray(video.load_label(i)), palette)
            if i in set(video.labelled)
            else np.zeros_like(frames[i])
        )
        rows.append(np.concatenate([frames[i], _colorize(pred[i], palette), gt], axis=1))
    grid = np.concatenate(rows, axis=0)  # (T*H, 3*W, 3)
    writer.add_image("val/frame_pred_gt", grid, step, dataformats="HWC")


def _to_channels_last(module: nn.Module) -> None:
    """Store 4-D (conv2d) weights channels-last and 5-D (conv3d) weights channels-last-3d."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
            elif p.dim() == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)


def ddp_finds_unused_parameters(cfg: Config) -> bool:
    """Whether some parameters get no gradient, so that DDP must look for them each step (it
    fails on the second step otherwise): the loss's embedding when ``loss.cc_weight`` is 0, the
    attention when ``model.recurrence`` is 0, the auxiliary head when ``loss.aux_weight`` is 0.
    Off otherwise: the search costs a walk of the autograd graph per step."""
    return cfg.loss.cc_weight == 0 or cfg.model.recurrence == 0 or cfg.loss.aux_weight == 0


def _resume_position(train_state: dict, ckpt: dict, world_size: int, batch_size: int) -> int:
    """How many of this rank's clips of the resumed epoch were trained on. The checkpoint counts
    the clips of all ranks (``clips_in_epoch``; earlier checkpoints: ``batch_in_epoch`` batches
    of their batch size and process count), so a resume with another ``data.batch_size`` or
    another number of processes continues the epoch where it stopped."""
    old_world = len(ckpt["rng"]) if isinstance(ckpt.get("rng"), list) else 1
    done = train_state.get("clips_in_epoch")
    if done is None:
        old_bs = ((ckpt.get("config") or {}).get("data") or {}).get("batch_size", batch_size)
        done = int(train_state.get("batch_in_epoch", 0)) * int(old_bs) * old_world
    if done % world_size:
        logger.info("the resumed epoch stopped after %d clips, which %d processes cannot split "
                    "evenly: up to %d of its clips are drawn again", done, world_size,
                    world_size - 1)
    return int(done) // world_size


def _fill_dataset_info(cfg: Config) -> Config:
    from vidccnet.data import dataset_info  # looked up at call time: tests swap the datasets

    check_root(cfg)
    info = dataset_info(cfg.data.name, cfg.data.root)
    given, names = cfg.data.class_names, list(info["class_names"])
    if given is not None and list(given) != names:  # else silently replaced
        source = (f"'{Path(cfg.data.root) / 'classes.txt'}'" if cfg.data.name == "folders"
                  else f"dataset '{cfg.data.name}'")
        raise ConfigError(
            f"data.class_names {list(given)} ({len(given)}) are not the dataset's classes "
            f"{names} ({len(names)}, from {source}): the classes come from the dataset; drop "
            "data.class_names from the config (resuming, restore the classes the run trained "
            "on)")
    data = dataclasses.replace(
        cfg.data,
        class_names=list(info["class_names"]),
        palette=[tuple(int(v) for v in c) for c in info["palette"]],
    )
    return dataclasses.replace(cfg, data=data)


def _fill_frame_short_side(cfg: Config, train_set: Any) -> Config:
    """``data.frame_short_side`` from a dataset used at its stored size (its frames' short
    side, the model's scale); other datasets leave the config as it is. Warns when the crop is
    larger than those frames at any rescale (that side is known only here)."""
    side = getattr(train_set, "frame_short_side", None)
    if side is None:
        return cfg
    augment = getattr(train_set, "augment", None)  # the crop it uses (null: its default)
    crop = getattr(augment, "crop_size", None) or cfg.data.crop_size
    high = max(getattr(augment, "scale_range", None) or cfg.data.scale_range)
    if cfg.data.augment and crop and min(crop) > side * high:  # the crop is an augmentation
        logger.warning(
            "data.crop_size %dx%d%s is larger than the training frames even at the largest "
            "random rescale (short side %d px x %g): most of each clip is padding, which costs "
            "time and trains nothing; set data.crop_size to at most the frames' size", crop[0],
            crop[1], "" if cfg.data.crop_size else " (the dataset's default)", side, high)
    if cfg.data.frame_short_side not in (None, side):
        logger.info("data.frame_short_side: the training frames' short side is %d px (the "
                    "config says %d); %d is recorded", side, cfg.data.frame_short_side, side)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                             frame_short_side=int(side)))


def _check_num_workers(num_workers: int, say: bool) -> None:
    """One warning naming ``data.num_workers`` when it exceeds the CPU cores this process may
    use, in place of PyTorch's generic one (said when the loader is built and again when it is
    first iterated), which stays silenced until ``train`` returns (it restores the warnings
    filters). ``say``: log it (rank 0)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores or num_workers <= cores:
        return
    if say:
        logger.warning(
            "data.num_workers=%d is more than the %s this process may use: the loader's "
            "workers compete with training for them, which can slow the run down; set "
            "data.num_workers=%d or fewer", num_workers, plural(cores, "CPU core"), cores)
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)


# ------------------------------------------------------------------------------- train


def train(cfg: Config, resume: bool = False, name: str | None = None) -> dict:
    """Train as configured; returns the final metrics.

    Logs (rank 0, logger ``vidccnet.engine.train``) a start line (``name``, e.g. the config
    file, model and its parameter count, device, data size, schedule) and, every
    ``runtime.log_interval`` iterations, the iteration, loss, lr, clips/s and ETA. With
    ``runtime.progress`` and a terminal on stderr those figures go on a tqdm bar instead, and
    log records are written above the bar (never onto its line).

    Joins the torchrun process group when launched with ``WORLD_SIZE`` > 1 (and leaves it at
    the end if it created it).

    Returns:
        dict with ``iteration``, ``loss`` (last logged mean loss), ``best_mIoU`` (None without
        validation), ``val`` (last validation figures or None), ``skipped`` (non-finite steps
        skipped), ``output_dir``.

    Raises:
        TrainingError: non-finite loss (without ``runtime.skip_nonfinite``), occupied output
            folder, dataset smaller than one batch.
        CheckpointError: ``resume`` without a usable ``last.pt``.
    """
    created = not is_distributed()
    info = init_distributed(cfg.runtime.device)
    try:
        with warnings.catch_warnings():  # _check_num_workers' filter: for this run only
            return _train(cfg, resume, info, name)
    except BaseException:
        if info.is_main:
            put_back_earlier_logs(Path(cfg.runtime.output_dir))
        raise
    finally:
        if created and is_distributed():
            cleanup_distributed()


def _train(  # noqa: C901 - the loop, in order
    cfg: Config, resume: bool, info: DistInfo, name: str | None
) -> dict:
    rt = cfg.runtime
    device = info.device
    check_dataset_kwargs(cfg)  # before anything is built or written
    if rt.num_threads:
        torch.set_num_threads(rt.num_threads)
    if rt.deterministic:
        # cuBLAS reads it when its handle is made, at the first matmul on the device: before that
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if info.is_main:  # a run killed before its first checkpoint left them aside
        put_back_earlier_logs(Path(rt.output_dir))
    out = prepare_output_dir(cfg, resume)
    seed_everything(rt.seed, info.rank)

    cfg = _fill_dataset_info(cfg)
    num_classes = len(cfg.data.class_names or [])
    ckpt: dict | None = None
    finished = False  # a resume of a run already at schedule.iterations: nothing to train
    if resume:  # refused before the dataset is read
        ckpt = load_checkpoint(out / "last.pt")
        _check_resumable(cfg, ckpt, out / "last.pt")
        finished = int(ckpt["iteration"]) >= cfg.schedule.iterations
    from vidccnet.data.loader import build_loader

    train_set = build_train_dataset(cfg)
    cfg = _fill_frame_short_side(cfg, train_set)
    if ckpt is not None and not finished:  # else the resume says that nothing trains
        _log_resume_changes(cfg, ckpt)
    bs = cfg.data.batch_size
    _check_num_workers(cfg.data.num_workers, info.is_main)
    loader = build_loader(
        train_set, batch_size=bs, shuffle=True, num_workers=cfg.data.num_workers,
        distributed=info.distributed, seed=rt.seed, drop_last=True,
        pin_memory=device.type == "cuda",
    )
    batches_per_epoch = len(loader.sampler) // bs
    if batches_per_epoch < 1:
        raise TrainingError(
            f"the training set has {len(train_set)} clips, fewer than one batch of {bs} per "
            f"process x {info.world_size} processes; lower data.batch_size or add data"
        )

    # the validation split, read before training (not found after it); RNG untouched
    val_videos: list = []
    if cfg.eval.interval > 0 or cfg.eval.at_end:  # the only cases that validate
        rng = capture_rng_state()
        val_videos = build_val_videos(cfg)
        restore_rng_state(rng)
        check_labelled(val_videos, cfg.eval.split, cfg.data.name)

    # model, optimisation
    from vidccnet.models.build import build_model

    core = build_model(cfg, num_classes, pretrained=not resume)  # a resume loads last.pt
    if cfg.model.init_from and not resume:
        init_model_from_checkpoint(core, cfg.model.init_from, dict(cfg.model.kwargs))
    core = core.to(device)
    if info.distributed and rt.sync_bn:
        if device.type == "cuda":
            core = nn.SyncBatchNorm.convert_sync_batchnorm(core)
        else:  # PyTorch's SyncBatchNorm works with CUDA modules only
            logger.warning("runtime.sync_bn ignored: SyncBatchNorm needs CUDA devices")
    elif rt.sync_bn:
        logger.info("runtime.sync_bn: one process, no statistics to synchronise (it applies "
                    "under torchrun with several processes)")
    if rt.channels_last:
        _to_channels_last(core)
    weights = cfg.loss.class_weights
    if weights and len(weights) != num_classes:
        raise ConfigError(
            f"loss.class_weights has {len(weights)} entries but dataset '{cfg.data.name}' has "
            f"{num_classes} classes; give one weight per class"
        )
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(cfg, core)
    amp_dtype = resolve_amp(device, rt.amp)  # None (float32) on CPU, with a warning
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    iteration, epoch, clips_in_epoch, skipped = 0, 0, 0, 0  # clips_in_epoch: this rank's
    best_miou: float | None = None
    pending_val, pending_loss = False, None  # resumed from a save made just before a validation
    if ckpt is not None:
        _load_resumed_weights(core, ckpt, out / "last.pt", cfg)
        try:
            # the new config's lr / momentum / weight decay and schedule apply from here on
            configure_resumed_optimizer(optimizer, ckpt["optimizer"], list(core.parameters()))
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"cannot restore the optimizer / scheduler state from {out / 'last.pt'}: {exc}"
            ) from None
        iteration = int(ckpt["iteration"])
        ts = ckpt.get("train_state", {})
        epoch = int(ts.get("epoch", 0))
        clips_in_epoch = _resume_position(ts, ckpt, info.world_size, bs)
        skipped = int(ts.get("skipped", 0))
        # rank 0's: a node may lack best.pt (only last.pt is copied between nodes), and ranks
        # that disagreed on whether a validation improved fell out of step in the checkpoint
        # collectives (a hang)
        best_miou = all_gather_objects(best_so_far(ts.get("best_mIoU"), out / "best.pt"))[0]
        rng = ckpt.get("rng")
        if isinstance(rng, list) and len(rng) == info.world_size:
            restore_rng_state(rng[info.rank])
        else:
            logger.warning("checkpoint RNG states do not match %d process%s; reseeding",
                           info.world_size, "" if info.world_size == 1 else "es")
            seed_everything(rt.seed, info.rank, iteration)
        if finished:
            logger.info("nothing to train: %s is already at iteration %d, schedule.iterations=%d; "
                        "raise schedule.iterations to train longer", out / "last.pt", iteration,
                        cfg.schedule.iterations)
        else:
            logger.info("resumed from %s at iteration %d of %d", out / "last.pt", iteration,
                        cfg.schedule.iterations)
        log_state = (ts.get("log_sums") or {}, ts.get("log_steps", 0), ts.get("log_pending", 0))
        if ts.get("val_pending"):  # saved just before a validation that did not finish
            pending_val, pending_loss = True, (ckpt.get("metrics") or {}).get("loss")
        ckpt = None  # its tensors are in the model and optimizer now: not kept twice
    scheduler = build_scheduler(cfg, optimizer, start=iteration)

    model: nn.Module = core
    if rt.compile:
        model = torch.compile(core)
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=ddp_finds_unused_parameters(cfg),
        )

    # output files (rank 0 only); `replaced`: an earlier run's files (runtime.overwrite), which
    # stay until this run comes to save its first checkpoint (vidccnet.engine.rundir)
    config_text = config_to_yaml(cfg)
    jsonl, writer, replaced = JsonlWriter(None), None, []
    if info.is_main:
        jsonl, writer, replaced = open_run_dir(
            out, config_text, resume=resume, iteration=iteration,
            rerun_val=pending_val, tensorboard=rt.tensorboard)
    barrier()

    config_pending = info.is_main and resume and not finished  # written with the first save

    def save(name: str, state: dict) -> None:
        nonlocal config_pending
        if not replaced and not config_pending:
            save_checkpoint(out / name, state)
            return
        # this run's first checkpoint replaces the earlier run (or, resumed, its config):
        # written aside first (a failed save keeps the earlier run; a `.*.pt.*.tmp` name, which
        # the next start removes), then the earlier run goes (its config first), this run's
        # config is written and the checkpoint moved in. Wherever this is cut, the folder holds
        # one run's files, and config.yaml describes last.pt.
        staged = out / f".{name}.staged.tmp"
        save_checkpoint(staged, state)
        replace_earlier_run(out, staged, name, replaced, config_text)
        config_pending = False

    # validation
    evaluator = None
    val_metrics: dict | None = None

    def validate(step: int) -> dict:
        """Evaluate at ``step``, log the figures, and save best.pt when the mIoU improved."""
        nonlocal evaluator, best_miou
        if evaluator is None:
            evaluator = build_evaluator(cfg, num_classes, device)
        broadcast_buffers(core)  # every rank evaluates with rank 0's BatchNorm statistics
        res = evaluator.run(core, val_videos)
        miou = float(res["mIoU"])
        record = {"type": "val", "iteration": step}
        record.update({k: res.get(k) for k in ("mIoU", "fwIoU", "pixel_acc", "mAcc", "flicker")})
        record.update({k: v for k, v in res.items() if k.startswith("mVC_")})
        record["IoU"] = res.get("IoU")
        record["metric_convention"] = res.get("metric_convention")
        record["seconds"] = res.get("seconds")
        jsonl.write(record)
        if writer is not None:
            for k in ("mIoU", "fwIoU", "pixel_acc"):
                if res.get(k) is not None and math.isfinite(res[k]):
                    writer.add_scalar(f"val/{k}", res[k], step)
            if val_videos:
                _log_masks(writer, core, val_videos[0], cfg, device, step)
        improved = math.isfinite(miou) and (best_miou is None or miou > best_miou)
        if improved:
            best_miou = miou
        logger.info("iteration %d: val mIoU %.4f (%s)", step, miou,
                    "no best yet: no finite mIoU" if best_miou is None else f"best {best_miou:.4f}")
        res = {**res, "improved": improved}
        if improved:
            state = checkpoint_state(step, res)  # collective: every rank calls it
            if info.is_main:
                save("best.pt", state)
        return res

    def save_last(step: int, val: dict | None, val_pending: bool = False,
                  loss: float | None = None) -> None:
        """last.pt at ``step``, with the latest validation's figures (collective);
        ``val_pending``: saved before the validation of ``step``, which a resume then runs."""
        metrics = {"loss": last_loss if loss is None else loss}
        if val is not None:
            metrics.update({k: val.get(k) for k in ("mIoU", "fwIoU", "pixel_acc")})
        state = checkpoint_state(step, metrics, val_pending)
        if info.is_main:
            save("last.pt", state)

    def checkpoint_state(step: int, metrics: dict, val_pending: bool = False) -> dict:
        rng = all_gather_objects(capture_rng_state())  # collective: every rank calls it
        return {
            "model": core.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "iteration": step,
            "config": config_to_dict(cfg),
            "metrics": {k: to_jsonable(v) for k, v in metrics.items()
                        if isinstance(v, (int, float, list, str)) or v is None},
            "version": CHECKPOINT_VERSION,
            "rng": rng,
            "train_state": {"epoch": epoch, "clips_in_epoch": clips_in_epoch * info.world_size,
                            # the losses summed since the last log line, averaged over the
                            # ranks (collective): each rank resumes with them, and the first
                            # line's mean over ranks is then the global batch's
                            "log_sums": mean_over_ranks(_floats(sums, device), device),
                            "log_steps": n_logged,
                            "log_pending": steps_since_log,
                            "skipped": skipped, "best_mIoU": best_miou,
                            "val_pending": val_pending},
        }

    # data stream: order and augmentation seeds depend on (seed, epoch, index) only, so a
    # resumed run continues exactly where it stopped (vidccnet.data.loader.EpochSampler)
    def make_iter() -> Any:
        loader.sampler.set_epoch(epoch, start=clips_in_epoch)
        return iter(loader)

    stream = make_iter()

    def next_batch() -> dict:
        nonlocal stream, epoch, clips_in_epoch
        try:
            batch = next(stream)
        except StopIteration:
            epoch, clips_in_epoch = epoch + 1, 0
            stream = make_iter()
            batch = next(stream)
        clips_in_epoch += bs
        return batch

    # the loop
    total = cfg.schedule.iterations
    accum = cfg.optim.accum_steps
    clips_per_step = bs * accum * info.world_size
    show = rt.progress and info.is_main and sys.stderr.isatty()
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    if info.is_main and not finished:
        n_params = sum(p.numel() for p in core.parameters())
        logger.info(
            "start: %smodel %s (%.2fM params) on %s%s, amp %s; data %s %s: %s, "
            "%s of %d per epoch, global batch %d; %s (from %d); output %s",
            f"config {name}, " if name else "", cfg.model.name, n_params / 1e6, device,
            f" x {info.world_size} processes" if info.distributed else "", amp_name(amp_dtype),
            cfg.data.name, cfg.data.train_split, plural(len(train_set), "clip"),
            f"{batches_per_epoch} batch{'' if batches_per_epoch == 1 else 'es'}", bs,
            clips_per_step, plural(total, "iteration"), iteration, out)
        if cfg.schedule.warmup_iters > total:
            logger.warning("schedule.warmup_iters=%d is longer than the run (%s): the learning "
                           "rate never reaches optim.lr", cfg.schedule.warmup_iters,
                           plural(total, "iteration"))
    t_start, start_iteration = time.perf_counter(), iteration

    bar = tqdm(total=total, initial=iteration, disable=not show, desc="train", unit="it",
               dynamic_ncols=True)
    sums: dict[str, Any] = defaultdict(float)  # float64 device scalars (floats after a resume)
    n_logged = 0
    train_time = 0.0  # seconds spent in training steps since the last log line
    timed_steps = 0  # the steps train_time measured (after a resume, fewer than since the log)
    steps_since_log = 0
    if resume:  # stopped between two log lines: the next one averages all their steps
        sums.update({k: float(v) for k, v in log_state[0].items()})
        n_logged, steps_since_log = int(log_state[1]), int(log_state[2])
    last_loss = math.nan
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with contextlib.ExitStack() as stack:
        if show:  # log lines (validation, warnings) go above the bar, not onto its line
            stack.enter_context(logging_redirect_tqdm())
        stack.callback(bar.close)
        if pending_val and val_videos:
            logger.info("running the validation of iteration %d, which the interrupted run "
                        "did not finish", iteration)
            val_metrics = validate(iteration)
            save_last(iteration, val_metrics, loss=pending_loss)
            model.train()
        while iteration < total:
            t_step = time.perf_counter()
            bad = ""  # what was not finite: the step is not applied
            parts_acc: dict[str, Any] = defaultdict(float)  # float64 device scalars
            for micro in range(accum):
                batch = next_batch()
                clip = batch["clip"].to(device, non_blocking=True)  # (B, 3, T, H, W)
                labels = batch["labels"].to(device, non_blocking=True)  # (B, T, H, W)
                sync = micro == accum - 1 or not info.distributed
                ctx = model.no_sync() if not sync else contextlib.nullcontext()
                with ctx:
                    with autocast(device, amp_dtype):
                        outputs = model(clip)
                        loss, parts = criterion(outputs, labels)
                    nonfinite = reduce_any(not bool(torch.isfinite(loss.detach()).all()), device)
                    if nonfinite:
                        bad = "loss"
                        break
                    scaler.scale(loss / accum).backward()
                # on the device, in float64 as Python floats were: read at a log line only
                for k, v in {**parts, "loss": loss.detach()}.items():
                    parts_acc[k] += v.double() / accum
            if not bad:
                norm = None
                if cfg.optim.grad_clip:
                    scaler.unscale_(optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(core.parameters(), cfg.optim.grad_clip)
                if not scaler.is_enabled():  # a GradScaler skips such steps itself (fp16)
                    if norm is None:
                        norm = torch.nn.utils.get_total_norm(
                            [p.grad for p in core.parameters() if p.grad is not None])
                    if not bool(torch.isfinite(norm)):
                        bad = "gradients"
            if bad:
                optimizer.zero_grad(set_to_none=True)
                if not rt.skip_nonfinite:
                    where = out / "last.pt"
                    if replaced:  # no save yet: what out holds is the run this one replaces
                        kept = (f"no checkpoint of this run was written yet ({out} still holds "
                                "the earlier run it was to replace)")
                    elif where.exists():
                        kept = f"the last good checkpoint {where} is kept"
                    else:
                        kept = "no checkpoint was written yet"
                    raise TrainingError(
                        f"non-finite {bad} at iteration {iteration + 1}; {kept}. Lower "
                        "optim.lr, enable optim.grad_clip, use runtime.amp=bf16 instead of fp16, "
                        "or set runtime.skip_nonfinite=true to skip such steps"
                    )
                skipped += 1
                logger.warning("non-finite %s at iteration %d: step skipped (%d so far)",
                               bad, iteration + 1, skipped)
            else:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                for k, v in parts_acc.items():
                    sums[k] += v
                n_logged += 1
            step_lr = optimizer.param_groups[0]["lr"]  # the LR this step used
            scheduler.step()
            iteration += 1
            steps_since_log += 1
            timed_steps += 1
            train_time += time.perf_counter() - t_step
            bar.update(1)

            if iteration % rt.log_interval == 0 or iteration == total:
                dt = train_time
                means = mean_over_ranks(_floats({k: v / max(n_logged, 1)  # one device sync
                                                 for k, v in sums.items()}, device),
                                        device)  # the global batch's losses, not rank 0's
                last_loss = means.get("loss", math.nan)
                rate = clips_per_step * timed_steps / dt if dt > 0 else math.nan
                lr = step_lr
                gammas = _attention_gammas(core)
                record = {"type": "train", "iteration": iteration, "epoch": epoch, "lr": lr,
                          "clips_per_s": rate, "skipped": skipped, **means}
                if gammas:
                    record["gamma"] = gammas
                jsonl.write(record)
                if writer is not None:
                    log_train_scalars(writer, record)
                gamma_text = "/".join(f"{v:.3f}" for v in gammas.values())
                loss_text = f"{last_loss:.4f}" if n_logged else (  # no step of it trained
                    f"- (all {steps_since_log} steps skipped: non-finite loss or gradients)")
                post = {"loss": loss_text, "lr": f"{lr:.2e}", "clips_s": f"{rate:.2f}"}
                if gammas:
                    post["gamma"] = gamma_text
                bar.set_postfix(post)
                if info.is_main:  # on the bar when there is one, else one log line
                    done = iteration - start_iteration
                    eta = (time.perf_counter() - t_start) / done * (total - iteration)
                    logger.log(
                        logging.DEBUG if show else logging.INFO,
                        "iteration %d/%d  loss %s  lr %.3g  %.2f clips/s  ETA %s%s",
                        iteration, total, loss_text, lr, rate,
                        datetime.timedelta(seconds=round(eta)),
                        f"  gamma {gamma_text}" if gammas else "")
                sums.clear()
                n_logged = 0
                steps_since_log = timed_steps = 0
                train_time = 0.0

            do_val = (cfg.eval.interval > 0 and iteration % cfg.eval.interval == 0) or (
                iteration == total and cfg.eval.at_end)
            ckpt_step = iteration % rt.ckpt_interval == 0 or iteration == total
            if do_val:
                if ckpt_step:  # validation reads files training did not: if it fails, the
                    save_last(iteration, val_metrics, val_pending=True)  # steps are kept
                val_metrics = validate(iteration)
            if ckpt_step:
                save_last(iteration, val_metrics)
    if writer is not None:
        writer.close()
    barrier()
    result = {
        "iteration": iteration,
        "loss": last_loss,
        "best_mIoU": best_miou,
        "val": None if val_metrics is None else {
            k: v for k, v in val_metrics.items() if k != "improved"},
        "skipped": skipped,
        "output_dir": str(out),
    }
    return result
