"""The frame shown at a time: the nearest one, a half going to the earlier frame, so that the
video readers (PyAV, decord, frame folders) and ``--start 4.5s`` agree at a tie.

Standard library only: :func:`vidccnet.writer.parse_frame_bound` uses it before torch loads
(importing ``vidccnet.data`` loads torch).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

# a time this close (relative, at least 1 us) to the midpoint of two frames is a tie: decord's
# float32 seconds are off by up to 6e-8 of the time, PyAV's exact ticks by nothing
TIE_TOLERANCE = 1e-6
# ... but never more than this fraction of a frame: relative to the time alone it was a tenth of
# a frame an hour into a 30 fps video, half a frame (a whole frame rounded down) at 4.6 hours
MAX_TIE = 0.01


def round_ties_down(frames: float) -> int:
    """``round(frames)``, a half (within :data:`TIE_TOLERANCE`) going to the earlier frame, as
    :func:`nearest_frame` does (Python's ``round`` takes the even one: 1.5 -> 2, 2.5 -> 2)."""
    return max(0, math.ceil(frames - 0.5 - min(TIE_TOLERANCE * max(1.0, frames), MAX_TIE)))


def nearest_frame(starts: Sequence[float], seconds: float, fps: float) -> int:
    """Index of the frame whose start (``starts``: sorted seconds from the first frame) is
    nearest to ``seconds``; of two equally near, the earlier one (the one shown at that time),
    so that every backend agrees at a tie; past the last one, counted on at ``fps``."""
    i = bisect.bisect_left(starts, seconds)
    if i >= len(starts):
        return len(starts) - 1 + round_ties_down((seconds - starts[-1]) * fps)
    tie = TIE_TOLERANCE * max(1.0, seconds)
    if fps > 0:  # the difference of two distances: twice the offset from the midpoint
        tie = min(tie, 2 * MAX_TIE / fps)
    if i > 0 and (seconds - starts[i - 1]) - (starts[i] - seconds) <= tie:
        return i - 1
    return i
