"""What a config describes, built: the training dataset, the evaluation videos and the evaluator.

The dataset keyword arguments of ``data.kwargs`` / ``eval.kwargs`` are checked against the
dataset's signature first (unknown keys get a did-you-mean suggestion, keys the trainer sets
itself name their config key, values must have the annotated type), and a real dataset needs
``data.root``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from vidccnet.metrics import resolve_metric_convention

from .amp import amp_name, resolve_amp
from .config import Config, ConfigError
from .distributed import resolve_device

__all__ = [
    "build_evaluator",
    "build_train_dataset",
    "build_val_videos",
    "check_dataset_kwargs",
    "check_root",
    "evaluator_kwargs",
]


# dataset name -> (module, classes whose __init__ receive data.kwargs, in call order: the
# synthetic dataset passes its **kwargs on to the world)
_DATASET_CLASSES = {
    "synthetic": ("vidccnet.data.synthetic", ("SyntheticVideoDataset", "SyntheticVideoWorld")),
    "camvid": ("vidccnet.data.camvid", ("CamVid",)),
    "vspw": ("vidccnet.data.vspw", ("VSPW",)),
    "folders": ("vidccnet.data.folders", ("VideoFolders",)),
}
# keyword arguments the trainer passes itself, and the config key that sets each
_DATA_OWN = {"root": "data.root", "split": "data.train_split", "clip_len": "data.clip_len",
             "frame_stride": "data.frame_stride", "anchor": "data.anchor",
             "augment": "data.augment", "crop_size": "data.crop_size",
             "scale_range": "data.scale_range"}
_EVAL_OWN = {"root": "data.root", "split": "eval.split", "clip_len": "eval.clip_len",
             "anchor": "eval.anchor", "frame_stride": "data.frame_stride"}
_TRAINING_ONLY = ("augment", "crop_size", "scale_range")  # evaluation videos ignore them
_EVAL_EXTRA = {"camvid": {"stretch": bool}}  # eval_videos() arguments, per dataset


def _dataset_params(name: str) -> dict[str, Any] | None:
    """Keyword arguments dataset ``name`` accepts, with their annotations (None: unknown
    dataset or any keyword)."""
    import importlib

    if name.lower() not in _DATASET_CLASSES:
        return None
    module, classes = _DATASET_CLASSES[name.lower()]
    mod = importlib.import_module(module)
    params: dict[str, Any] = {}
    open_ended = False
    for cls_name in classes:
        sig = inspect.signature(getattr(mod, cls_name).__init__, eval_str=True)
        open_ended = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        params |= {n: p.annotation for n, p in sig.parameters.items()
                   if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return None if open_ended else params


def check_dataset_kwargs(cfg: Config) -> None:
    """Check ``data.kwargs`` and ``eval.kwargs`` against the dataset's signature.

    Raises:
        ConfigError: an argument the dataset does not take (with a did-you-mean suggestion),
            one the trainer sets from its own config key (naming that key), a training-only
            one in ``eval.kwargs``, or a value of another type than the dataset's annotation.
            Values are converted as config fields are (lists to tuples, 2.0 to 2), in place.
    """
    from .config import _coerce, _unknown_key

    params = _dataset_params(cfg.data.name)
    if params is None:
        return
    eval_params = {k: v for k, v in params.items() if k not in _TRAINING_ONLY}
    sections = (("data.kwargs", cfg.data.kwargs, _DATA_OWN, params),
                ("eval.kwargs", cfg.eval.kwargs, _EVAL_OWN,
                 eval_params | _EVAL_EXTRA.get(cfg.data.name.lower(), {})))
    for prefix, kwargs, own, accepted in sections:
        valid = sorted(set(accepted) - set(own))
        for key, value in kwargs.items():
            name = f"{prefix}.{key}"
            if key in own:
                raise ConfigError(f"config key '{name}' is set by {own[key]}: set {own[key]} "
                                  "instead")
            if prefix == "eval.kwargs" and key in _TRAINING_ONLY:
                raise ConfigError(f"config key '{name}' is a training-only dataset argument that "
                                  f"evaluation does not use; set data.{key} for training")
            if key not in valid:
                raise _unknown_key(name, valid)
            if accepted[key] is not inspect.Parameter.empty:  # as config fields: 2.0 -> 2
                kwargs[key] = _coerce(value, accepted[key], name)


def check_root(cfg: Config) -> None:
    """Raise ConfigError for an unknown ``data.name``, or a real dataset without ``data.root``."""
    if cfg.data.name.lower() not in _DATASET_CLASSES:  # else 'data.root is not set' misled
        raise ConfigError(f"config key 'data.name': unknown dataset {cfg.data.name!r}; choose "
                          f"one of {', '.join(_DATASET_CLASSES)}")
    if cfg.data.name == "folders" and not cfg.data.root:
        raise ConfigError(
            "data.root is not set: dataset 'folders' needs data.root=/path/to/yours, a folder "
            "holding classes.txt, data/ and train.txt / val.txt (layout in docs/design.md)"
        )
    if cfg.data.name != "synthetic" and not cfg.data.root:
        raise ConfigError(
            f"data.root is not set: dataset '{cfg.data.name}' needs data.root=/path/to/"
            f"{cfg.data.name} (layouts in docs/design.md; CamVid context frames come "
            "from scripts/prepare_camvid.py)"
        )
    if cfg.data.name != "synthetic":  # else a missing folders root said "classes.txt not found"
        root = Path(cfg.data.root)
        if not root.exists():
            raise ConfigError(f"data.root '{cfg.data.root}' does not exist; set data.root to "
                              f"the folder holding the {cfg.data.name} dataset")
        if not root.is_dir():
            raise ConfigError(f"data.root '{cfg.data.root}' is not a folder; set data.root to "
                              f"the folder holding the {cfg.data.name} dataset")


def build_train_dataset(cfg: Config) -> torch.utils.data.Dataset:
    """The training dataset of the data section (``build_dataset(name, train_split, ...)``)."""
    from vidccnet.data import build_dataset

    check_dataset_kwargs(cfg)
    check_root(cfg)
    d = cfg.data
    crop = {} if d.crop_size is None else {"crop_size": d.crop_size}  # None: the dataset's own
    return build_dataset(
        d.name,
        d.train_split,
        root=d.root,
        clip_len=d.clip_len,
        frame_stride=d.frame_stride,
        anchor=d.anchor,
        augment=d.augment,
        scale_range=d.scale_range,
        **crop,
        **d.kwargs,
    )


def build_val_videos(cfg: Config, split: str | None = None) -> list:
    """The evaluation videos of ``split`` (default ``eval.split``), limited to
    ``eval.max_videos``."""
    from vidccnet.data import build_eval_videos

    check_dataset_kwargs(cfg)
    check_root(cfg)
    kw = {**cfg.data.kwargs, **cfg.eval.kwargs}
    kw.setdefault("clip_len", cfg.eval.clip_len or cfg.data.clip_len)
    kw.setdefault("frame_stride", cfg.data.frame_stride)
    kw.setdefault("anchor", cfg.eval_anchor)
    videos = build_eval_videos(cfg.data.name, split or cfg.eval.split, root=cfg.data.root, **kw)
    return list(videos)[: cfg.eval.max_videos]


def evaluator_kwargs(cfg: Config, device: torch.device | str | None) -> dict:
    """``Evaluator`` keyword arguments (all but ``num_classes``) from the eval section
    (``runtime.amp`` resolved for ``device``: float32 off CUDA)."""
    e = cfg.eval
    return dict(
        clip_len=e.clip_len or cfg.data.clip_len,
        clip_stride=e.clip_stride,
        anchor=cfg.eval_anchor,
        scales=e.scales,
        flip=e.flip,
        crop_size=e.crop_size,
        device=device,
        amp=amp_name(resolve_amp(
            device if device is not None else resolve_device(cfg.runtime.device),
            cfg.runtime.amp)),
        ignore_index=cfg.loss.ignore_index,
        vc_windows=e.vc_windows,
        metric_convention=resolve_metric_convention(e.metric_convention, cfg.data.name),
        vc_labelled_only=e.vc_labelled_only,
        frame_stride=cfg.eval_frame_stride,
    )


def build_evaluator(cfg: Config, num_classes: int, device: torch.device) -> Any:
    """The :class:`Evaluator` of the eval section."""
    from .evaluate import Evaluator

    return Evaluator(num_classes=num_classes, **evaluator_kwargs(cfg, device))
