"""Clip sampling: which frames make the clip of a labelled (anchor) frame."""

from __future__ import annotations

ANCHORS = ("causal", "centre")


def anchor_position(clip_len: int, anchor: str = "causal") -> int:
    """Position of the anchor (labelled) frame inside a clip of `clip_len` frames.

    "causal": the last frame (T - 1). "centre": T // 2 (for even T one more past frame than
    future frames).
    """
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if anchor == "causal":
        return clip_len - 1
    if anchor in ("centre", "center"):
        return clip_len // 2
    raise ValueError(f"unknown clip anchor {anchor!r}; choose one of {ANCHORS}")


def clip_offsets(clip_len: int, frame_stride: int = 1, anchor: str = "causal") -> list[int]:
    """Frame offsets of a clip relative to its anchor frame, e.g. T=4, stride 2, causal:
    [-6, -4, -2, 0]."""
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    pos = anchor_position(clip_len, anchor)
    return [(j - pos) * frame_stride for j in range(clip_len)]


def clip_indices(
    anchor_index: int, num_frames: int, clip_len: int, frame_stride: int = 1,
    anchor: str = "causal",
) -> list[int]:
    """Indices of the T frames of the clip around `anchor_index` in a sequence of `num_frames`.

    Indices before the start or past the end are clamped, i.e. the sequence's first / last frame
    is repeated (padding by repetition).
    """
    if not 0 <= anchor_index < num_frames:
        raise IndexError(f"anchor frame {anchor_index} out of range (sequence of {num_frames})")
    offsets = clip_offsets(clip_len, frame_stride, anchor)
    return [min(max(anchor_index + o, 0), num_frames - 1) for o in offsets]


def first_copies(indices: list[int], anchor_pos: int) -> list[bool]:
    """Whether each position of a clip holds the first copy of its frame, counting outwards from
    the anchor at `anchor_pos`: in a clip padded by repetition (`clip_indices`) the copy of the
    edge frame nearest the anchor. Labels of the other copies would count that frame again."""
    keep, seen = [False] * len(indices), set()
    for j in sorted(range(len(indices)), key=lambda j: abs(j - anchor_pos)):
        keep[j] = indices[j] not in seen
        seen.add(indices[j])
    return keep
