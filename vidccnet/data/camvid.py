"""CamVid (SegNet split) with context frames from the original 30 fps sequences.

Layout: `ROOT/{train,val,test}/<name>.png`, `ROOT/{train,val,test}annot/<name>.png` (labels
0..10, 11 = void -> 255) and context frames `ROOT/frames/<seq>/<index:06d>.png` written by
`scripts/prepare_camvid.py`, which also writes `ROOT/frames/matches.json` (the sequence index of
each labelled frame found by pixel matching). `<name>` encodes `<seq>_<index>`.

A clip holds T context frames `frame_stride` apart ending at (causal) or centred on the labelled
frame; only the labelled frame carries labels. Missing context frames are replaced by the
nearest available frame towards the labelled one (so with no context frames at all the labelled
frame is repeated), with one warning when the dataset is built; frames before the sequence's
start or past its video's end are padding by design, not missing.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import EvalVideo
from .clips import anchor_position, clip_offsets
from .images import check_label_values, image_size, load_index_png, load_rgb
from .transforms import ClipAugment, make_sample

logger = logging.getLogger(__name__)

CLASS_NAMES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
               "car", "pedestrian", "bicyclist"]
PALETTE = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
           (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
           (0, 128, 192)]
NUM_CLASSES = 11
IGNORE_INDEX = 255
SPLITS = {"train": ("train",), "val": ("val",), "test": ("test",), "trainval": ("train", "val")}
# the validation stretch labelled every other frame (15 Hz)
STRETCH_SEQ, STRETCH_FIRST, STRETCH_LAST = "0016E5", 7959, 8159

_NAME_RE = re.compile(r"^(?P<seq>[A-Za-z0-9]+?)_f?(?P<idx>\d+)$")

_LUT = np.full(256, IGNORE_INDEX, np.uint8)
_LUT[:NUM_CLASSES] = np.arange(NUM_CLASSES, dtype=np.uint8)


def parse_camvid_name(name: str) -> tuple[str, int]:
    """'0001TP_006690' -> ('0001TP', 6690); '0006R0_f00930' -> ('0006R0', 930);
    'Seq05VD_f00000' -> ('Seq05VD', 0); '0016E5_00390' -> ('0016E5', 390)."""
    m = _NAME_RE.match(Path(name).stem)
    if m is None:
        raise ValueError(f"CamVid frame name {name!r} is not '<sequence>_<frame index>' "
                         "(e.g. 0001TP_006690, 0006R0_f00930, Seq05VD_f00000)")
    return m.group("seq"), int(m.group("idx"))


def remap_camvid_label(label: np.ndarray) -> np.ndarray:
    """Stored label uint8 (H, W): 0..10 stay, 11 (void) and anything else -> 255; int64."""
    return _LUT[np.asarray(label, np.uint8)].astype(np.int64)


def context_frame_path(root: str | os.PathLike, seq: str, index: int) -> Path:
    """Path of context frame `index` of sequence `seq`: ROOT/frames/<seq>/<index:06d>.png."""
    return Path(root) / "frames" / seq / f"{index:06d}.png"


def _context_hint(folder: Path) -> str:
    """What to do about a missing context frame of ``folder`` (ROOT/frames/<seq>)."""
    others = sorted(f.name for f in folder.iterdir()
                    if not re.fullmatch(r"\d{6}\.png", f.name)) if folder.is_dir() else []
    if not others:
        return ("Run scripts/prepare_camvid.py to extract them (its --context-before, "
                "--context-after and --frame-stride choose which frames are extracted; match "
                "them to the clip length, anchor and data.frame_stride).")
    return (f"'{folder}' holds {len(others)} files named otherwise (e.g. '{others[0]}'): "
            "context frames are <30 fps index, 6 digits>.png, as scripts/prepare_camvid.py "
            "writes them.")


def labelled_images(folder: Path) -> list[Path]:
    """The frames of a SegNet split folder: .png or .PNG, not macOS '._' files; sorted."""
    return sorted(f for f in folder.iterdir()
                  if f.suffix.lower() == ".png" and not f.name.startswith("."))


def _load_label(path: Path) -> np.ndarray:
    stored = check_label_values(load_index_png(path), NUM_CLASSES + 1, path, "CamVid")  # 11: void
    return remap_camvid_label(stored)


class CamVid(Dataset):
    """CamVid clips: item -> `{"clip": float32 (3, T, H, W), "labels": int64 (T, H, W)}` with
    labels only on the labelled (anchor) frame. Items may be `(index, seed)` pairs."""

    class_names = CLASS_NAMES
    palette = PALETTE
    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(
        self, root: str | os.PathLike, split: str = "train", clip_len: int = 4,
        frame_stride: int = 1, anchor: str = "causal", augment: bool = False,
        crop_size: tuple[int, int] | int | None = (360, 480),
        scale_range: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown CamVid split {split!r}; choose one of {list(SPLITS)}")
        self.root = Path(root)
        self.split, self.clip_len = split, clip_len
        self.frame_stride, self.anchor = frame_stride, anchor
        self.offsets = clip_offsets(clip_len, frame_stride, anchor)
        self.pos = anchor_position(clip_len, anchor)
        self.items: list[tuple[str, Path, Path]] = []
        for sub in SPLITS[split]:
            img_dir, ann_dir = self.root / sub, self.root / f"{sub}annot"
            if not img_dir.is_dir() or not ann_dir.is_dir():
                raise FileNotFoundError(
                    f"CamVid folders '{img_dir}' and '{ann_dir}' not found: ROOT must be the "
                    "SegNet CamVid folder (train/, trainannot/, val/, ... )")
            for f in labelled_images(img_dir):
                parse_camvid_name(f.stem)
                annot = ann_dir / f.name
                if not annot.is_file():
                    raise FileNotFoundError(f"CamVid label '{annot}' of frame '{f}' not found")
                self.items.append((f.stem, f, annot))
        if not self.items:
            raise FileNotFoundError(
                f"no CamVid images (*.png) in split {split!r} under '{self.root}'")
        self.matches, self.sequence_ends = self._load_matches()
        self._warn_unmatched_frames()
        self._warn_missing_context()
        self._eval_warned = False  # _warn_missing_eval_frame: once
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.augment = ClipAugment(crop_size=tuple(crop_size) if crop_size else None,
                                   scale_range=tuple(scale_range)) if augment else None

    def _load_matches(self) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
        """The matched index of each labelled frame, and the first and last frame index of each
        sequence whose video the report describes (in the names' numbering)."""
        p = self.root / "frames" / "matches.json"
        if not p.is_file():
            return {}, {}
        try:
            data = json.loads(p.read_text())
            matches = {k: int(v["index"]) for k, v in data.get("matches", {}).items()}
            ends = {}
            for seq, info in data.get("sequences", {}).items():
                if "frames" in info:  # video frame = name index + index_offset
                    first = -int(info.get("index_offset", 0))
                    ends[seq] = (first, first + int(info["frames"]) - 1)
            return matches, ends
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"'{p}' is not a matches report of scripts/prepare_camvid.py "
                             f"({exc}); run the script again or remove the file") from None

    def _warn_unmatched_frames(self) -> None:
        """Frames of a sequence on disk without its matches: read by the names' index."""
        matched = {parse_camvid_name(k)[0] for k in self.matches}
        seqs = sorted({parse_camvid_name(n)[0] for n, _, _ in self.items} - matched)
        unmatched = [s for s in seqs if (self.root / "frames" / s).is_dir()]
        if unmatched:
            logger.warning("CamVid: frames/%s on disk but frames/matches.json has no matches "
                           "for %s: its frames are taken at the index in the names, one frame "
                           "off for some sequences; rerun scripts/prepare_camvid.py with %s",
                           ", frames/".join(unmatched), "them" if len(unmatched) > 1 else "it",
                           "their videos" if len(unmatched) > 1 else "its video")

    def _warn_missing_context(self) -> None:
        """One warning, here in the main process, for the context frames the clips would read
        that are not on disk (DataLoader workers each hold a copy of the dataset)."""
        wanted = [context_frame_path(self.root, seq, m + o)
                  for seq, m in map(self.sequence_index, (n for n, _, _ in self.items))
                  for o in self.offsets if o != 0 and self._in_sequence(seq, m + o)]
        missing = [p for p in wanted if not p.is_file()]
        if missing:
            count = f"all {len(wanted)}" if len(missing) == len(wanted) else \
                f"{len(missing)} of the {len(wanted)}"
            # a folder that exists but names its frames otherwise is the likelier mistake
            shown = next((p for p in missing if p.parent.is_dir()), missing[0])
            logger.warning("CamVid %s: %s context frames of the clips not found (e.g. '%s'); "
                           "each is replaced by the nearest frame towards the labelled one. %s",
                           self.split, count, shown, _context_hint(shown.parent))

    def _warn_missing_eval_frame(self, seq: str, index: int, offset: int) -> None:
        """One warning, at the first frame an evaluation reads that is missing and lies beyond
        the clips checked when the dataset was built (`offset` from its labelled frame not in
        the clip's): eval.clip_stride > 1 or an evaluator's longer clip reads such frames."""
        if self._eval_warned or offset in self.offsets or not self._in_sequence(seq, index):
            return
        p = context_frame_path(self.root, seq, index)
        if p.is_file():
            return
        self._eval_warned = True
        before, after = self.eval_context()
        stride = f" --frame-stride {self.frame_stride}" if self.frame_stride > 1 else ""
        logger.warning("CamVid %s: the evaluation reads context frame '%s' (%+d frames from its "
                       "labelled frame, outside the %d-frame clip checked when the dataset was "
                       "built), which is not on disk; it and any others are replaced by the "
                       "nearest frame towards the labelled one. Run scripts/prepare_camvid.py "
                       "with --context-before %d --context-after %d%s to extract the whole "
                       "evaluation context.", self.split, p, offset, self.clip_len, before,
                       after, stride)

    def _in_sequence(self, seq: str, index: int) -> bool:
        """Whether frame `index` can exist: not before frame 0 (or the first frame of the
        sequence's video) nor past its video's last frame, where matches.json records them.
        Clips reaching beyond these ends are padded by design, not missing frames."""
        first, last = self.sequence_ends.get(seq, (0, None))
        return first <= index and (last is None or index <= last)

    def sequence_index(self, name: str) -> tuple[str, int]:
        """(sequence, 30 fps frame index) of a labelled frame: the pixel-matched index when
        `frames/matches.json` has it, else the index in the name."""
        seq, idx = parse_camvid_name(name)
        return seq, self.matches.get(name, idx)

    def _context_frames(self, name: str, image: Path, offsets: list[int]) -> np.ndarray:
        """Frames at `offsets` (sequence frames) from the labelled frame, uint8 (T, H, W, 3).

        A missing frame is replaced by the nearest available one towards the labelled frame
        (in steps of `frame_stride`), finally by the labelled frame itself (the dataset warned
        about them when it was built)."""
        seq, m = self.sequence_index(name)
        size = image_size(image)  # (H, W); the labelled image is decoded only when used
        labelled = None
        out = []
        step = self.frame_stride
        for o in offsets:
            k, frame = o, None
            while k != 0:
                p = context_frame_path(self.root, seq, m + k)
                if p.is_file():
                    frame = load_rgb(p)
                    if frame.shape[:2] != size:
                        raise ValueError(f"context frame '{p}' has size {frame.shape[:2]}, the "
                                         f"labelled frame {size}: rerun "
                                         "scripts/prepare_camvid.py")
                    break
                k = k + step if k < 0 else k - step
                if abs(k) < step:
                    k = 0
            if frame is None:
                labelled = load_rgb(image) if labelled is None else labelled
                frame = labelled
            out.append(frame)
        return np.stack(out)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        name, image, annot = self.items[index]
        frames = self._context_frames(name, image, self.offsets)  # (T, H, W, 3)
        label = _load_label(annot)
        if label.shape != frames.shape[1:3]:  # the augmentation would stretch it to fit
            raise ValueError(f"CamVid label '{annot}' has size {label.shape}, its frame "
                             f"'{image}' {frames.shape[1:3]}; labels must match their frames")
        labels = np.full((self.clip_len, *label.shape), IGNORE_INDEX, np.int64)  # (T, H, W)
        labels[self.pos] = label
        return make_sample(frames, labels, self.augment, seed)

    def _in_stretch(self, name: str) -> bool:
        seq, idx = parse_camvid_name(name)
        return seq == STRETCH_SEQ and STRETCH_FIRST <= idx <= STRETCH_LAST

    def eval_context(self) -> tuple[int, int]:
        """(frames before, frames after) the labelled frame that eval videos carry, in units of
        `frame_stride`: what the clip needs, and at least 8 before / 4 after so an evaluator
        with a longer clip or the other anchor still gets real context. That is more than
        scripts/prepare_camvid.py extracts by default (4 / 2): reading a missing frame outside
        the dataset's clip warns once (`_warn_missing_eval_frame`)."""
        return max(self.pos, 8), max(self.clip_len - 1 - self.pos, 4)

    def eval_videos(self, stretch: bool = True) -> list[EvalVideo]:
        """Evaluation sources of the split.

        Each labelled frame becomes an `EvalVideo` of its context frames (`frame_stride` apart,
        consecutive in the EvalVideo; `eval_context()` frames before and after), labelled at
        the labelled frame (consecutive=False). With `stretch=True` the labelled frames of the
        15 Hz stretch 0016E5_07959..08159 (the whole SegNet val split) form instead one
        consecutive EvalVideo (frames `frame_stride` apart, context before and after; with
        stride 1 every other frame is labelled), so each labelled frame is evaluated once.
        Without context frames on disk the stretch holds only its labelled frames (15 Hz).
        """
        before, after = self.eval_context()
        offsets = [o * self.frame_stride for o in range(-before, after + 1)]

        def single(name: str, image: Path, annot: Path) -> EvalVideo:
            seq, m = self.sequence_index(name)

            def load_frame(i: int) -> np.ndarray:
                self._warn_missing_eval_frame(seq, m + offsets[i], offsets[i])
                return self._context_frames(name, image, [offsets[i]])[0]

            return EvalVideo(
                name=name, num_frames=len(offsets), load_frame=load_frame,
                load_label=lambda i: _load_label(annot),
                labelled=[before], consecutive=False)

        stretch_items = [it for it in self.items if stretch and self._in_stretch(it[0])]
        videos = [single(*it) for it in self.items if it not in stretch_items]
        if stretch_items:
            video = self._stretch_video(stretch_items, before, after)
            videos += [video] if video is not None else [single(*it) for it in stretch_items]
        return videos

    def _stretch_video(
        self, items: list[tuple[str, Path, Path]], before: int, after: int
    ) -> EvalVideo | None:
        """The stretch as one consecutive EvalVideo; None when frame_stride does not divide
        the spacing of its labelled frames (no clip of training's spacing would fit)."""
        idx = {name: self.sequence_index(name)[1] for name, _, _ in items}
        first, last = min(idx.values()), max(idx.values())
        by_index = {idx[name]: (image, annot) for name, image, annot in items}
        name = f"{STRETCH_SEQ}_{STRETCH_FIRST:05d}-{STRETCH_LAST:05d}"
        s = self.frame_stride
        have_frames = all(context_frame_path(self.root, STRETCH_SEQ, i).is_file()
                          for i in range(first, last + 1, s))  # those the clips read
        if have_frames and any((i - first) % s for i in by_index):
            logger.warning("CamVid: frame_stride %d does not divide the spacing of the %s "
                           "stretch's labelled frames: each is evaluated in its own clip (no "
                           "mVC over the stretch)", s, STRETCH_SEQ)
            return None
        if not have_frames:
            logger.warning("CamVid: context frames of the %s stretch are missing; the stretch "
                           "holds its labelled frames only (15 Hz)", STRETCH_SEQ)
            order = sorted(by_index)
            return EvalVideo(
                name=name, num_frames=len(order),
                load_frame=lambda i: load_rgb(by_index[order[i]][0]),
                load_label=lambda i: _load_label(by_index[order[i]][1]),
                labelled=list(range(len(order))), consecutive=True)
        lo = first - before * s
        n = (last - first) // s + before + after + 1  # frame j <-> sequence index lo + j * s

        def load_frame(j: int) -> np.ndarray:
            i = lo + j * s
            if i in by_index:  # the image its label was drawn on, as in training clips
                return load_rgb(by_index[i][0])
            offset = i - first if i < first else i - last if i > last else 0
            self._warn_missing_eval_frame(STRETCH_SEQ, i, offset)
            p = context_frame_path(self.root, STRETCH_SEQ, i)
            while not p.is_file() and i != first:  # padding at the ends: nearest inwards
                i += 1 if i < first else -1
                p = context_frame_path(self.root, STRETCH_SEQ, i)
            return load_rgb(p)

        return EvalVideo(
            name=name, num_frames=n, load_frame=load_frame,
            load_label=lambda j: _load_label(by_index[lo + j * s][1]),
            labelled=sorted((i - lo) // s for i in by_index), consecutive=True)
