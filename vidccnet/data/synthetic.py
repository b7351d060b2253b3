"""A synthetic video world: textured shapes moving over a moving textured background.

Deterministic from (seed, video index); any size and length; dense labels for every frame.
It is built so that temporal context measurably helps a video model:

- `crate` and `beacon` look identical (same shape, colour and texture) except that a beacon
  flashes magenta on one frame in every `blink_period` (4) frames. On the other frames a single
  frame cannot tell them apart; a clip of >= 4 frames always contains a flash.
- Short dropouts: on some frames one object is hidden (painted with the background) or covered
  by heavy noise while its label stays; the neighbouring frames show it (objects move slowly).
  These frames are listed in `SyntheticVideo.corrupted` (pixels in `corruption_mask`).
- Per-frame sensor noise and occasional blur.

The other classes (disc, box, triangle, ring) differ by shape, colour and texture, so a small
ResNet-18 learns them in minutes on a CPU at 64x96 px.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import EvalVideo
from .clips import anchor_position, clip_indices
from .transforms import ClipAugment, make_sample

logger = logging.getLogger(__name__)

CLASS_NAMES = ["background", "disc", "box", "triangle", "ring", "crate", "beacon"]
PALETTE = [(0, 0, 0), (220, 20, 60), (0, 80, 230), (250, 200, 0), (0, 200, 200),
           (150, 100, 50), (230, 0, 230)]
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255

# base colour (RGB) and texture of each object class; crate and beacon share both
_COLOURS = {1: (200, 55, 45), 2: (45, 75, 200), 3: (215, 190, 45), 4: (45, 190, 200),
            5: (150, 120, 85), 6: (150, 120, 85)}
_BLINK_COLOUR = (235, 40, 225)
_SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}


@dataclass
class SyntheticVideo:
    """One rendered video. frames uint8 (L, H, W, 3); labels uint8 (L, H, W);
    corrupted bool (L,) frames with a dropout; corruption_mask bool (L, H, W) the affected
    pixels; ambiguous bool (L, H, W) pixels whose class one frame cannot tell: crates, and
    beacons on their non-flash frames."""

    frames: np.ndarray
    labels: np.ndarray
    corrupted: np.ndarray
    corruption_mask: np.ndarray
    ambiguous: np.ndarray


def _bounce(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions reflected into [lo, hi] (an object bouncing off the borders)."""
    d = max(hi - lo, 1e-6)
    m = np.mod(p - lo, 2 * d)
    return lo + np.where(m > d, 2 * d - m, m)


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur of float (H, W, 3) with edge replication."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    p = (p[:-2] + 2 * p[1:-1] + p[2:]) * 0.25
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) * 0.25


class SyntheticVideoWorld:
    """Generator of synthetic videos with dense labels (see the module docstring).

    Args:
        seed: world seed; video `index` of a world is the same on every call and machine.
        height, width: frame size.
        num_objects: (min, max) objects per video.
        noise: (min, max) std of the per-frame Gaussian noise (uint8 units).
        blur_prob: probability that a frame is blurred.
        dropout_prob: probability that a frame (not the first) has a dropout.
        blink_period: a beacon flashes on one frame in every `blink_period`.
        speed: (min, max) object speed in pixels per frame at a 64 px short side.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    num_classes = NUM_CLASSES

    def __init__(
        self, seed: int = 0, height: int = 96, width: int = 128,
        num_objects: tuple[int, int] = (3, 6), noise: tuple[float, float] = (2.0, 8.0),
        blur_prob: float = 0.15, dropout_prob: float = 0.15, blink_period: int = 4,
        speed: tuple[float, float] = (0.4, 1.2),
    ) -> None:
        if height < 8 or width < 8:
            raise ValueError(f"frames must be at least 8x8 pixels, got {height}x{width}")
        self.seed, self.height, self.width = int(seed), int(height), int(width)
        self.num_objects, self.noise, self.speed = num_objects, noise, speed
        self.blur_prob, self.dropout_prob, self.blink_period = blur_prob, dropout_prob, blink_period

    # -- rendering -------------------------------------------------------------------------
    def video(self, index: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames uint8 (L, H, W, 3), labels uint8 (L, H, W)) of video `index`."""
        v = self.render(index, num_frames)
        return v.frames, v.labels

    def render(self, index: int, num_frames: int) -> SyntheticVideo:
        """Render video `index` with `num_frames` frames (labels are prefix-stable: the first k
        label maps of a longer render equal those of a render of k frames; noise is not)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        rng = np.random.default_rng([self.seed, int(index)])
        H, W, L = self.height, self.width, int(num_frames)
        s = min(H, W) / 64.0
        t = np.arange(L, dtype=np.float32)[:, None, None]  # (L, 1, 1)
        ys = np.arange(H, dtype=np.float32)[None, :, None]  # (1, H, 1)
        xs = np.arange(W, dtype=np.float32)[None, None, :]  # (1, 1, W)

        # background: two drifting sinusoids over a per-video colour
        bg_col = np.array([90, 110, 90], np.float32) + rng.uniform(-20, 20, 3)
        bg_v = rng.uniform(-0.6, 0.6, 2) * s
        ang = rng.uniform(0, np.pi, 2)
        freq = rng.uniform(0.15, 0.35, 2) / s
        by, bx = ys - bg_v[0] * t, xs - bg_v[1] * t
        bg_tex = (12 * np.sin(freq[0] * (np.cos(ang[0]) * bx + np.sin(ang[0]) * by))
                  + 8 * np.sin(freq[1] * (np.cos(ang[1]) * bx + np.sin(ang[1]) * by)))
        frames = np.broadcast_to(bg_col, (L, H, W, 3)) + bg_tex[..., None]  # (L, H, W, 3)
        frames = np.array(frames, np.float32)
        labels = np.zeros((L, H, W), np.uint8)
        owner = np.full((L, H, W), -1, np.int8)  # which object is visible at each pixel
        background = frames.copy()  # (L, H, W, 3), used to hide objects on dropout frames

        n_obj = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        classes = rng.integers(1, NUM_CLASSES, n_obj)
        depth_order = rng.permutation(n_obj)
        objs = []
        for k in range(n_obj):
            c = int(classes[k])
            r = float(rng.uniform(0.15, 0.26) * min(H, W))
            cy0, cx0 = rng.uniform(0, H), rng.uniform(0, W)
            sp = rng.uniform(*self.speed) * s
            th = rng.uniform(0, 2 * np.pi)
            col = np.array(_COLOURS[c], np.float32) + rng.uniform(-15, 15, 3)
            phase = int(rng.integers(0, self.blink_period))
            tex_phase = rng.uniform(0, 2 * np.pi)
            cy = _bounce(cy0 + sp * np.sin(th) * t, 0.2 * r, H - 0.2 * r)  # (L, 1, 1)
            cx = _bounce(cx0 + sp * np.cos(th) * t, 0.2 * r, W - 0.2 * r)
            objs.append((c, r, cy, cx, col, phase, tex_phase))

        for k in depth_order:  # back to front
            c, r, cy, cx, col, phase, tex_phase = objs[k]
            u, v = xs - cx, ys - cy  # (L, 1, W), (L, H, 1) object coordinates
            mask, tex = self._shape(c, r, u, v, tex_phase)  # (L, H, W) bool, float
            colour = np.broadcast_to(col, (L, 3)).copy()
            if c == 6:
                blink = ((np.arange(L) + phase) % self.blink_period) == 0
                colour[blink] = _BLINK_COLOUR
            obj_img = colour[:, None, None, :] + tex[..., None]
            frames = np.where(mask[..., None], obj_img, frames)
            labels[mask] = c
            owner[mask] = k

        # ambiguous in a single frame: crates, and beacons on their non-flash frames
        ambiguous = np.zeros((L, H, W), bool)
        for k, (c, _r, _cy, _cx, _col, phase, _tp) in enumerate(objs):
            if c == 5:
                ambiguous |= owner == k
            elif c == 6:
                dark = ((np.arange(L) + phase) % self.blink_period) != 0
                ambiguous |= (owner == k) & dark[:, None, None]

        # dropouts: hide one object (background texture) or cover it with heavy noise
        corrupted = np.zeros(L, bool)
        cmask = np.zeros((L, H, W), bool)
        drop = rng.random(L) < self.dropout_prob
        kinds = rng.integers(0, 2, L)
        picks = rng.integers(0, 1 << 30, L)
        for f in np.flatnonzero(drop):
            if f == 0:
                continue
            visible = np.unique(owner[f][owner[f] >= 0])
            if visible.size == 0:
                continue
            k = int(visible[picks[f] % visible.size])
            m = owner[f] == k
            if kinds[f] == 0:
                frames[f][m] = background[f][m]
            else:
                ys_, xs_ = np.nonzero(m)
                y0, y1 = max(ys_.min() - 2, 0), min(ys_.max() + 3, H)
                x0, x1 = max(xs_.min() - 2, 0), min(xs_.max() + 3, W)
                frames[f, y0:y1, x0:x1] = rng.uniform(0, 255, (y1 - y0, x1 - x0, 3))
                m = np.zeros((H, W), bool)
                m[y0:y1, x0:x1] = True
            corrupted[f] = True
            cmask[f] = m

        # sensor: blur and noise per frame
        for f in np.flatnonzero(rng.random(L) < self.blur_prob):
            frames[f] = _blur(frames[f])
        sigma = rng.uniform(*self.noise, L).astype(np.float32)[:, None, None, None]
        frames += rng.standard_normal(frames.shape, dtype=np.float32) * sigma
        out = np.clip(frames, 0, 255).astype(np.uint8)
        return SyntheticVideo(out, labels, corrupted, cmask, ambiguous)

    @staticmethod
    def _shape(c: int, r: float, u: np.ndarray, v: np.ndarray, tp: float):
        """Mask (L, H, W) bool and texture (L, H, W) float of class c around (u, v) = (0, 0)."""
        f = 2 * np.pi * 2.0 / r  # about two texture periods across the radius
        if c == 1:  # disc with dots
            mask = u * u + v * v <= r * r
            tex = 35 * np.sin(f * u + tp) * np.sin(f * v)
        elif c == 2:  # box with a checker
            mask = (np.abs(u) <= r) & (np.abs(v) <= 0.7 * r)
            tex = 30 * np.sign(np.sin(0.7 * f * u + tp) * np.sin(0.7 * f * v))
        elif c == 3:  # triangle with horizontal stripes
            mask = (v <= 0.8 * r) & (np.abs(u) <= 0.6 * (v + r))
            tex = 35 * np.sin(f * v + tp) + 0 * u
        elif c == 4:  # ring, plain
            d2 = u * u + v * v
            mask = (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
            tex = 10 * np.sin(0.5 * f * (u + v) + tp)
        else:  # crate / beacon: diamond with diagonal stripes
            mask = np.abs(u) + np.abs(v) <= r
            tex = 35 * np.sin(f * (u - v) + tp)
        return mask, np.broadcast_to(tex, mask.shape)

    # -- writers ---------------------------------------------------------------------------
    def write_video(
        self, out_dir: str | os.PathLike, index: int, num_frames: int, fps: float = 15.0,
        codec: str = "libx264", name: str | None = None,
    ) -> Path:
        """Write video `index` as `<out_dir>/<name>.mp4` (or .avi/.webm by codec) and its masks
        as palette PNGs `<out_dir>/<name>_masks/<t:06d>.png` (pixel value = class index).
        Returns the video path."""
        from .video import write_video

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = name or f"video_{index:05d}"
        ext = {"mjpeg": ".avi", "libvpx-vp9": ".webm", "libvpx": ".webm"}.get(codec, ".mp4")
        frames, labels = self.video(index, num_frames)
        path = out / f"{name}{ext}"
        write_video(path, frames, fps=fps, codec=codec)
        write_masks(out / f"{name}_masks", labels, PALETTE)
        return path

    def write_vspw(
        self, root: str | os.PathLike, splits: dict[str, int] | None = None,
        num_frames: int = 16, jpeg_quality: int = 95,
    ) -> Path:
        """Write videos in the VSPW layout: `ROOT/data/<video>/origin/<t:08d>.jpg`,
        `ROOT/data/<video>/mask/<t:08d>.png` (value = class + 1, as VSPW stores it) and
        `ROOT/<split>.txt`. `splits` maps split -> number of videos (default train 4, val 2)."""
        from PIL import Image

        root = Path(root)
        splits = splits or {"train": 4, "val": 2}
        for split, n in splits.items():
            names = []
            for i in range(n):
                index = _SPLIT_OFFSET.get(split, 3_000_000) + i
                name = f"syn_{split}_{i:04d}"
                frames, labels = self.video(index, num_frames)
                d = root / "data" / name
                (d / "origin").mkdir(parents=True, exist_ok=True)
                for t in range(len(frames)):
                    Image.fromarray(frames[t]).save(d / "origin" / f"{t:08d}.jpg",
                                                    quality=jpeg_quality)
                write_masks(d / "mask", labels + 1, None, name_fmt="{:08d}.png")
                names.append(name)
            (root / f"{split}.txt").write_text("".join(n + "\n" for n in names))
        return root


def write_masks(
    out_dir: str | os.PathLike, labels: np.ndarray, palette: list | None,
    name_fmt: str = "{:06d}.png",
) -> None:
    """Write label maps uint8 (L, H, W) as PNGs (palette mode when `palette` is given)."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = None
    if palette is not None:
        flat = [c for rgb in palette for c in rgb]
        flat += [0] * (768 - len(flat))
    for t, lab in enumerate(np.asarray(labels, np.uint8)):
        im = Image.fromarray(lab, mode="P" if flat else "L")
        if flat:
            im.putpalette(flat)
        im.save(out / name_fmt.format(t))


@dataclass
class SyntheticEvalVideo(EvalVideo):
    """An `EvalVideo` that also knows its dropout frames.

    Extra attributes: `corrupted` (sorted frame indices with a dropout) and
    `load_corruption_mask(i) -> bool (H, W)` (the affected pixels of frame i)."""

    corrupted: list[int] = field(default_factory=list)
    load_corruption_mask: Callable[[int], np.ndarray] | None = None


class _LazyVideo:
    def __init__(self, world: SyntheticVideoWorld, index: int, num_frames: int) -> None:
        self.world, self.index, self.num_frames = world, index, num_frames
        self._v: SyntheticVideo | None = None

    @property
    def v(self) -> SyntheticVideo:
        if self._v is None:
            self._v = self.world.render(self.index, self.num_frames)
        return self._v

    def frame(self, i: int) -> np.ndarray:
        return self.v.frames[i]

    def label(self, i: int) -> np.ndarray:
        return self.v.labels[i].astype(np.int64)

    def corruption(self, i: int) -> np.ndarray:
        return self.v.corruption_mask[i]


class SyntheticVideoDataset(Dataset):
    """Clips of the synthetic world as a torch Dataset.

    Item `i` is the clip whose anchor is frame `i % num_frames` of video `i // num_frames`:
    `{"clip": float32 (3, T, H, W) normalised, "labels": int64 (T, H, W)}`. Every frame is
    labelled (`label_all_frames=True`), otherwise only the anchor frame. Videos of split
    "train", "val", "test" are disjoint (different video indices of the same world).
    An item may also be requested as `(index, seed)` (see `vidccnet.data.loader`): the
    augmentation then draws from a generator seeded with `seed`.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(
        self, split: str = "train", num_videos: int = 32, num_frames: int = 16,
        height: int = 64, width: int = 96, seed: int = 0, clip_len: int = 4,
        frame_stride: int = 1, anchor: str = "causal", augment: bool = False,
        crop_size: tuple[int, int] | int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0), label_all_frames: bool = True,
        cache_videos: int = 256, **world_kwargs,
    ) -> None:
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"unknown split {split!r}; choose one of {list(_SPLIT_OFFSET)}")
        self.split, self.num_videos, self.num_frames = split, int(num_videos), int(num_frames)
        self.clip_len, self.frame_stride, self.anchor = int(clip_len), int(frame_stride), anchor
        self.label_all_frames = label_all_frames
        self.world = SyntheticVideoWorld(seed=seed, height=height, width=width, **world_kwargs)
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.augment = ClipAugment(crop_size=tuple(crop_size) if crop_size else (height, width),
                                   scale_range=tuple(scale_range)) if augment else None
        self._cache: OrderedDict[int, SyntheticVideo] = OrderedDict()
        self._cache_size = cache_videos
        clip_indices(0, 1, self.clip_len, self.frame_stride, anchor)  # validate arguments

    def _video_index(self, v: int) -> int:
        return _SPLIT_OFFSET[self.split] + v

    def get_video(self, v: int) -> SyntheticVideo:
        """Rendered video `v` of this split (cached)."""
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        vid = self.world.render(self._video_index(v), self.num_frames)
        self._cache[v] = vid
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return vid

    def __len__(self) -> int:
        return self.num_videos * self.num_frames

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range ({len(self)} clips)")
        v, a = divmod(int(index), self.num_frames)
        vid = self.get_video(v)
        idx = clip_indices(a, self.num_frames, self.clip_len, self.frame_stride, self.anchor)
        frames = vid.frames[idx]  # (T, H, W, 3)
        labels = vid.labels[idx].copy()  # (T, H, W)
        if not self.label_all_frames:
            pos = anchor_position(self.clip_len, self.anchor)
            labels[np.arange(len(idx)) != pos] = IGNORE_INDEX
        return make_sample(frames, labels, self.augment, seed)

    def eval_videos(self) -> list[SyntheticEvalVideo]:
        """Each video of the split as one consecutive, fully labelled `SyntheticEvalVideo`."""
        out = []
        for v in range(self.num_videos):
            lazy = _LazyVideo(self.world, self._video_index(v), self.num_frames)
            corrupted = [int(i) for i in np.flatnonzero(lazy.v.corrupted)]
            out.append(SyntheticEvalVideo(
                name=f"synthetic_{self.split}_{v:04d}", num_frames=self.num_frames,
                load_frame=lazy.frame, load_label=lazy.label,
                labelled=list(range(self.num_frames)), consecutive=True,
                corrupted=corrupted, load_corruption_mask=lazy.corruption,
            ))
        return out


def corrupted_frames(video: EvalVideo) -> list[int]:
    """Dropout frame indices of an eval video (empty for non-synthetic videos)."""
    return list(getattr(video, "corrupted", []))
