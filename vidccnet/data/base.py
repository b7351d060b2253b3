"""What the evaluator and the video segmenter consume: a named sequence of frames, some labelled."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvalVideo:
    """One video (or one labelled frame with its context) for evaluation.

    Attributes:
        name: unique name (used in reports and plots).
        num_frames: L, the number of frames in the sequence.
        load_frame: i -> np.uint8 (H, W, 3) RGB frame i, 0 <= i < L.
        load_label: i -> np.int64 (H, W) label of frame i (ignore = 255), for i in `labelled`.
        labelled: sorted indices of the frames that carry labels.
        consecutive: True when the labelled frames form one annotated sequence on which temporal
            consistency (mVC) against the ground truth is meaningful (VSPW videos, the CamVid
            15 Hz validation stretch); False for isolated labelled frames with context.
    """

    name: str
    num_frames: int
    load_frame: Callable[[int], np.ndarray]
    load_label: Callable[[int], np.ndarray]
    labelled: Sequence[int] = field(default_factory=list)
    consecutive: bool = False

    def __len__(self) -> int:
        return self.num_frames
