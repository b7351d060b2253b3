"""Clip tensors, normalisation and clip-consistent augmentation.

Every frame of a clip (and its labels) gets the same random scale, crop, flip and photometric
jitter. Images resize bilinearly (antialiased), labels with nearest neighbour; padding uses the
mean colour for images and the ignore index (255) for labels. The geometric and photometric
operations are torchvision.transforms.v2 functionals applied to the whole clip at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_U8 = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)
# (x / 255 - mean) / std == x * _SCALE - _BIAS, per channel, shaped for (3, T, H, W)
_SCALE = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD]).view(3, 1, 1, 1)
_BIAS = torch.tensor([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1, 1, 1)


def to_clip_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB frames uint8 (T, H, W, 3) -> normalised float32 tensor (3, T, H, W)."""
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {tuple(x.shape)}")
    x = x.permute(3, 0, 1, 2).contiguous().float()  # (3, T, H, W); permute the uint8 copy
    return x.mul_(_SCALE).sub_(_BIAS)


def from_clip_tensor(clip: torch.Tensor) -> np.ndarray:
    """Inverse of `to_clip_tensor`: (3, T, H, W) normalised -> uint8 (T, H, W, 3)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    x = (clip.detach().cpu().float() * std + mean).mul(255).round().clamp(0, 255)
    return x.to(torch.uint8).permute(1, 2, 3, 0).numpy()


def make_sample(frames: np.ndarray, labels: np.ndarray, augment: ClipAugment | None,
                seed: int | None = None) -> dict[str, torch.Tensor]:
    """A dataset item from uint8 frames (T, H, W, 3) and labels (T, H, W): ``{"clip": float32
    (3, T, H, W), "labels": int64 (T, H, W)}``, through ``augment`` (seeded by ``seed`` when
    given) or normalised as they are."""
    if augment is not None:
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        clip, lab = augment(frames, labels.astype(np.uint8), g)
    else:
        clip, lab = to_clip_tensor(frames), torch.from_numpy(labels.astype(np.int64))
    return {"clip": clip, "labels": lab}


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g).item())


@dataclass
class ClipAugment:
    """Clip-consistent training augmentation.

    Args:
        crop_size: (h, w) output size, or None to keep the (scaled) size.
        scale_range: random scale factor range (the same factor for all frames).
        flip: random horizontal flip with probability 0.5.
        brightness, contrast, saturation: jitter strengths (factor in [1 - s, 1 + s]).
        hue: hue shift range [-hue, hue] (0 disables; hue is the slowest operation).
        ignore_index: label value for padded pixels.
    """

    crop_size: tuple[int, int] | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.0
    ignore_index: int = 255

    def sample_params(self, size: tuple[int, int], g: torch.Generator) -> dict:
        """Draw the random parameters of one clip for input size (H, W)."""
        h, w = size
        s = _uniform(g, *self.scale_range)
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        ch, cw = self.crop_size if self.crop_size is not None else (nh, nw)
        top = int(torch.randint(0, max(nh - ch, 0) + 1, (), generator=g))
        left = int(torch.randint(0, max(nw - cw, 0) + 1, (), generator=g))
        order = torch.randperm(4, generator=g).tolist()
        return {
            "scaled": (nh, nw), "crop": (top, left, ch, cw),
            "flip": bool(self.flip and torch.rand((), generator=g).item() < 0.5),
            "brightness": _uniform(g, 1 - self.brightness, 1 + self.brightness),
            "contrast": _uniform(g, 1 - self.contrast, 1 + self.contrast),
            "saturation": _uniform(g, 1 - self.saturation, 1 + self.saturation),
            "hue": _uniform(g, -self.hue, self.hue), "order": order,
        }

    def __call__(
        self, frames: np.ndarray, labels: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames uint8 (T, H, W, 3), labels (T, H, W) -> (clip float32 (3, T, h, w) normalised,
        labels int64 (T, h, w))."""
        g = generator if generator is not None else torch.default_generator
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
        mask = torch.from_numpy(np.ascontiguousarray(labels)).to(torch.uint8)  # (T, H, W)
        p = self.sample_params(tuple(video.shape[-2:]), g)
        video, mask = apply_geometry(video, mask, p, self.ignore_index)
        video = apply_photometric(video, p)
        clip = to_clip_tensor(video.permute(0, 2, 3, 1))
        return clip, mask.long()


def apply_geometry(
    video: torch.Tensor, mask: torch.Tensor, p: dict, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale, pad, crop and flip a clip uint8 (T, 3, H, W) and its labels (T, H, W) alike."""
    nh, nw = p["scaled"]
    if (nh, nw) != tuple(video.shape[-2:]):
        video = F.resize(video, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize(mask, [nh, nw], interpolation=InterpolationMode.NEAREST_EXACT)
    top, left, ch, cw = p["crop"]
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        pads = [0, 0, pw, ph]  # left, top, right, bottom
        video = torch.stack([F.pad(video[:, c], pads, fill=_MEAN_U8[c]) for c in range(3)], 1)
        mask = F.pad(mask, pads, fill=ignore_index)
    video = F.crop(video, top, left, ch, cw)
    mask = F.crop(mask, top, left, ch, cw)
    if p["flip"]:
        video, mask = F.horizontal_flip(video), F.horizontal_flip(mask)
    return video.contiguous(), mask.contiguous()


def apply_photometric(video: torch.Tensor, p: dict) -> torch.Tensor:
    """Brightness/contrast/saturation/hue jitter with one set of factors for the clip
    uint8 (T, 3, H, W), in the random order `p["order"]`."""
    ops = {
        0: lambda v: F.adjust_brightness(v, p["brightness"]),
        1: lambda v: F.adjust_contrast(v, p["contrast"]),
        2: lambda v: F.adjust_saturation(v, p["saturation"]),
        3: lambda v: F.adjust_hue(v, p["hue"]) if p["hue"] else v,
    }
    for k in p["order"]:
        video = ops[k](video)
    return video
