"""VSPW (Miao et al., CVPR 2021) in its official layout.

`ROOT/data/<video>/origin/<frame>.jpg`, `ROOT/data/<video>/mask/<frame>.png`, split lists
`ROOT/{train,val,test}.txt`. Mask value 0 ("others") and 255 -> ignore (255); v in 1..124 ->
class v - 1; anything else -> ignore. Images are used at their stored size (480p release).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..visualize import default_palette
from .base import EvalVideo
from .clips import anchor_position, clip_indices
from .images import check_label_values, load_index_png, load_rgb
from .transforms import ClipAugment, to_clip_tensor
from .video import IMAGE_EXTENSIONS, order_frames

logger = logging.getLogger(__name__)

CLASS_NAMES = [
    "wall", "ceiling", "door", "stair", "ladder", "escalator", "playground_slide",
    "handrail_or_fence", "window", "rail", "goal", "pillar", "pole", "floor", "ground", "grass",
    "sand", "athletic_field", "road", "path", "crosswalk", "building", "house", "bridge", "tower",
    "windmill", "well_or_well_lid", "other_construction", "sky", "mountain", "stone", "wood",
    "ice", "snowfield", "grandstand", "sea", "river", "lake", "waterfall", "water",
    "billboard_or_bulletin_board", "sculpture", "pipeline", "flag", "parasol_or_umbrella",
    "cushion_or_carpet", "tent", "roadblock", "car", "bus", "truck", "bicycle", "motorcycle",
    "wheeled_machine", "ship_or_boat", "raft", "airplane", "tyre", "traffic_light", "lamp",
    "person", "cat", "dog", "horse", "cattle", "other_animal", "tree", "flower", "other_plant",
    "toy", "ball_net", "backboard", "skateboard", "bat", "ball",
    "cupboard_or_showcase_or_storage_rack", "box", "traveling_case_or_trolley_case", "basket",
    "bag_or_package", "trash_can", "cage", "plate", "tub_or_bowl_or_pot", "bottle_or_cup",
    "barrel", "fishbowl", "bed", "pillow", "table_or_desk", "chair_or_seat", "bench", "sofa",
    "shelf", "bathtub", "gun", "commode", "roaster", "other_machine", "refrigerator",
    "washing_machine", "microwave_oven", "fan", "curtain", "textiles", "clothes",
    "painting_or_poster", "mirror", "flower_pot_or_vase", "clock", "book", "tool", "blackboard",
    "tissue", "screen_or_television", "computer", "printer", "mobile_phone", "keyboard",
    "other_electronic_product", "fruit", "food", "instrument", "train",
]
NUM_CLASSES = 124
IGNORE_INDEX = 255
assert len(CLASS_NAMES) == NUM_CLASSES


# PASCAL-style bit-spread colours; index 0 (black) is left to the ignored 'others'.
PALETTE = default_palette(NUM_CLASSES + 1)[1:]

_LUT = np.full(256, IGNORE_INDEX, np.uint8)
_LUT[1:NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)


def remap_vspw_mask(mask: np.ndarray) -> np.ndarray:
    """Stored VSPW mask uint8 (H, W) -> training labels int64 (H, W): 0, 255 and values > 124
    -> 255; v in 1..124 -> v - 1."""
    return _LUT[np.asarray(mask, np.uint8)].astype(np.int64)


def _load_mask(path: Path) -> np.ndarray:
    stored = check_label_values(load_index_png(path), NUM_CLASSES + 1, path, "VSPW")  # 0: others
    return remap_vspw_mask(stored)


class VSPW(Dataset):
    """VSPW clips: item -> `{"clip": float32 (3, T, H, W), "labels": int64 (T, H, W)}`.

    Every frame of a split's videos is an anchor; the clip holds T frames of the same video
    (`frame_stride` apart, padded by repetition at the ends). All frames carry labels unless
    `label_all_frames=False` (then only the anchor). Frames without a mask file are ignore.
    Items may be `(index, seed)` pairs (see `vidccnet.data.loader`).
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(
        self, root: str | os.PathLike, split: str = "train", clip_len: int = 4,
        frame_stride: int = 1, anchor: str = "causal", augment: bool = False,
        crop_size: tuple[int, int] | int | None = (480, 480),
        scale_range: tuple[float, float] = (0.5, 2.0), label_all_frames: bool = True,
        max_videos: int | None = None,
    ) -> None:
        self.root = Path(root)
        lst = self.root / f"{split}.txt"
        if not lst.is_file():
            raise FileNotFoundError(
                f"VSPW split list '{lst}' not found: ROOT must hold data/ and "
                f"{{train,val,test}}.txt (the official VSPW_480p layout)")
        names = [ln.strip() for ln in lst.read_text(encoding="utf-8-sig").splitlines()
                 if ln.strip()]  # utf-8-sig: a list saved with a byte-order mark
        if not names:
            raise FileNotFoundError(f"VSPW split list '{lst}' is empty: it must name one video "
                                    "folder of ROOT/data per line")
        if max_videos is not None:
            names = names[:max_videos]
        self.split, self.clip_len = split, clip_len
        self.frame_stride, self.anchor = frame_stride, anchor
        self.label_all_frames = label_all_frames
        self.videos: list[tuple[str, list[Path]]] = []
        for name in names:
            d = self.root / "data" / name / "origin"
            if not d.is_dir():
                raise FileNotFoundError(f"VSPW video folder '{d}' (listed in {lst}) not found")
            files = [f for f in d.iterdir()  # not macOS '._' metadata files
                     if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("._")]
            if not files:
                raise FileNotFoundError(f"VSPW video folder '{d}' has no frames")
            try:
                files = order_frames(files)
            except ValueError as e:
                raise ValueError(f"VSPW video '{name}' ({d}): {e}") from None
            if split != "test" and not any(self.mask_path(name, f).is_file() for f in files):
                raise FileNotFoundError(
                    f"VSPW video '{name}' has no mask for any of its {len(files)} frames (looked "
                    f"for e.g. '{self.mask_path(name, files[0])}'): every label would be ignored; "
                    "masks are ROOT/data/VIDEO/mask/<frame name>.png"
                )
            self.videos.append((name, files))
        self.items = [(v, i) for v, (_, files) in enumerate(self.videos) for i in range(len(files))]
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.augment = ClipAugment(crop_size=tuple(crop_size) if crop_size else None,
                                   scale_range=tuple(scale_range)) if augment else None
        clip_indices(0, 1, clip_len, frame_stride, anchor)  # validate arguments

    def mask_path(self, name: str, frame: Path) -> Path:
        return self.root / "data" / name / "mask" / (frame.stem + ".png")

    def _label(self, name: str, frame: Path, shape: tuple[int, int]) -> np.ndarray:
        p = self.mask_path(name, frame)
        if not p.is_file():
            return np.full(shape, IGNORE_INDEX, np.int64)
        lab = _load_mask(p)
        if lab.shape != shape:
            raise ValueError(f"VSPW mask '{p}' has size {lab.shape}, its frame {shape}")
        return lab

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        v, a = self.items[index]
        name, files = self.videos[v]
        idx = clip_indices(a, len(files), self.clip_len, self.frame_stride, self.anchor)
        frames = np.stack([load_rgb(files[i]) for i in idx])  # (T, H, W, 3)
        pos = anchor_position(self.clip_len, self.anchor)
        labels = np.stack([
            self._label(name, files[i], frames.shape[1:3]) if (self.label_all_frames or j == pos)
            else np.full(frames.shape[1:3], IGNORE_INDEX, np.int64)
            for j, i in enumerate(idx)
        ])  # (T, H, W)
        if self.augment is not None:
            g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            clip, lab = self.augment(frames, labels.astype(np.uint8), g)
        else:
            clip, lab = to_clip_tensor(frames), torch.from_numpy(labels)
        return {"clip": clip, "labels": lab}

    def eval_videos(self) -> list[EvalVideo]:
        """Each video as one consecutive `EvalVideo`; frames with a mask file are labelled."""
        out = []
        for name, files in self.videos:
            labelled = [i for i, f in enumerate(files) if self.mask_path(name, f).is_file()]

            def load_label(i: int, name=name, files=files) -> np.ndarray:
                return _load_mask(self.mask_path(name, files[i]))

            out.append(EvalVideo(name=name, num_frames=len(files),
                                 load_frame=lambda i, files=files: load_rgb(files[i]),
                                 load_label=load_label, labelled=labelled, consecutive=True))
        return out
