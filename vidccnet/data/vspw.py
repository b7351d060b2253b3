"""VSPW (Miao et al., CVPR 2021) in its official layout.

`ROOT/data/<video>/origin/<frame>.jpg`, `ROOT/data/<video>/mask/<frame>.png`, split lists
`ROOT/{train,val,test}.txt`. Mask value 0 ("others") and 255 -> ignore (255); v in 1..124 ->
class v - 1; anything else -> ignore. Images are used at their stored size (480p release).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..visualize import default_palette
from .folders import IGNORE_INDEX, VideoFolders
from .images import check_label_values

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
assert len(CLASS_NAMES) == NUM_CLASSES


# PASCAL-style bit-spread colours; index 0 (black) is left to the ignored 'others'.
PALETTE = default_palette(NUM_CLASSES + 1)[1:]

_LUT = np.full(256, IGNORE_INDEX, np.uint8)
_LUT[1:NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)


def remap_vspw_mask(mask: np.ndarray) -> np.ndarray:
    """Stored VSPW mask uint8 (H, W) -> training labels int64 (H, W): 0, 255 and values > 124
    -> 255; v in 1..124 -> v - 1."""
    return _LUT[np.asarray(mask, np.uint8)].astype(np.int64)


class VSPW(VideoFolders):
    """VSPW clips: item -> `{"clip": float32 (3, T, H, W), "labels": int64 (T, H, W)}`.

    Every frame of a split's videos whose clip carries a label is an anchor (every frame, as
    VSPW masks every frame); the clip holds T frames of the same video
    (`frame_stride` apart, padded by repetition at the ends). All frames carry labels unless
    `label_all_frames=False` (then only the anchor); a frame repeated as padding carries them
    once. Frames without a mask file are ignore.
    Items may be `(index, seed)` pairs (see `vidccnet.data.loader`). The folders dataset with
    VSPW's classes and mask values.
    """

    title = "VSPW"
    check_palette = False  # VSPW's classes are its own list, not a classes.txt
    layout_hint = " (the official VSPW_480p layout)"
    warn_binary_masks = False
    masks_every_frame = True  # the release has a mask for every image
    class_names = CLASS_NAMES
    palette = PALETTE
    num_classes = NUM_CLASSES

    @staticmethod
    def load_classes(root: Path) -> tuple[list[str], list[tuple[int, int, int] | None]]:
        return list(CLASS_NAMES), list(PALETTE)

    def decode_mask(self, stored: np.ndarray, path: Path) -> np.ndarray:
        """Stored VSPW mask -> labels (:func:`remap_vspw_mask`); values 125..254 are refused."""
        check_label_values(stored, NUM_CLASSES + 1, path, "VSPW")  # 0: others
        return remap_vspw_mask(stored)
