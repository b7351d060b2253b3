"""Video data: readers, clips, transforms, datasets (synthetic, CamVid, VSPW, your
own folders) and loaders.

Factory used by the trainer and the evaluator:

    build_dataset(name, split, root=None, clip_len=4, **kw) -> torch Dataset
    build_eval_videos(name, split, root=None, **kw) -> list[EvalVideo]
    dataset_info(name, root=None) -> dict(class_names=..., palette=..., num_classes=...)

`name` is "synthetic" (needs no root; kwargs num_videos, num_frames, height, width, seed,
frame_stride, anchor, augment, crop_size, scale_range, label_all_frames), "camvid", "vspw" or
"folders" (your own videos in VSPW's layout with a classes.txt; see `vidccnet.data.folders`)
(root required; kwargs frame_stride, anchor, augment, crop_size, scale_range, ...).
"""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from .base import EvalVideo
from .loader import EpochSampler, build_loader
from .transforms import IMAGENET_MEAN, IMAGENET_STD, to_clip_tensor
from .video import VideoReader, VideoReadError, open_video

DATASETS = ("synthetic", "camvid", "vspw", "folders")

__all__ = [
    "DATASETS", "EpochSampler", "EvalVideo", "IMAGENET_MEAN", "IMAGENET_STD", "VideoReadError",
    "VideoReader", "build_dataset", "build_eval_videos", "build_loader", "dataset_info",
    "open_video", "to_clip_tensor",
]


def _check_name(name: str) -> str:
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    return key


def _need_root(name: str, root: str | os.PathLike | None) -> None:
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<folder> (layouts in docs/design.md)")


def build_dataset(
    name: str, split: str, root: str | os.PathLike | None = None, clip_len: int = 4, **kw
) -> Dataset:
    """A training/validation clip dataset; items `{"clip": (3, T, H, W), "labels": (T, H, W)}`.

    Unknown keyword arguments raise TypeError naming the argument.
    """
    key = _check_name(name)
    if key == "synthetic":
        from .synthetic import SyntheticVideoDataset

        return SyntheticVideoDataset(split=split, clip_len=clip_len, **kw)
    _need_root(key, root)
    if key == "camvid":
        from .camvid import CamVid

        return CamVid(root, split=split, clip_len=clip_len, **kw)
    if key == "folders":
        from .folders import VideoFolders

        return VideoFolders(root, split=split, clip_len=clip_len, **kw)
    from .vspw import VSPW

    return VSPW(root, split=split, clip_len=clip_len, **kw)


def build_eval_videos(
    name: str, split: str, root: str | os.PathLike | None = None, **kw
) -> list[EvalVideo]:
    """Evaluation sources of a split (see each dataset's `eval_videos`). Training-only kwargs
    (augment, crop_size, scale_range) are accepted and ignored."""
    for k in ("augment", "crop_size", "scale_range"):
        kw.pop(k, None)
    stretch = kw.pop("stretch", True)
    ds = build_dataset(name, split, root=root, **kw)
    if _check_name(name) == "camvid":
        return ds.eval_videos(stretch=stretch)
    return ds.eval_videos()


def dataset_info(name: str, root: str | os.PathLike | None = None) -> dict:
    """`dict(class_names=[...], palette=[(r, g, b), ...], num_classes=K)` of a dataset.

    "folders" reads them from `root`/classes.txt (root required); the others ignore `root`.
    """
    key = _check_name(name)
    if key == "folders":
        from .folders import read_classes

        _need_root(key, root)
        names, palette = read_classes(root)
        return {"class_names": names, "palette": palette, "num_classes": len(names)}
    if key == "synthetic":
        from . import synthetic as mod
    elif key == "camvid":
        from . import camvid as mod
    else:
        from . import vspw as mod
    return {"class_names": list(mod.CLASS_NAMES), "palette": [tuple(c) for c in mod.PALETTE],
            "num_classes": int(mod.NUM_CLASSES)}
