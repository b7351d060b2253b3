"""Your own videos as frame folders with index masks (``data.name: folders``).

VSPW's layout, with masks that hold the class index itself and a class list::

    ROOT/classes.txt                      one class per line: "name" or "name R G B"
    ROOT/{train,val,test}.txt             one video folder name per line ('#' comments): its
                                          path under data/, nested names (cam1/day2) allowed
    ROOT/data/<video>/origin/<frame>.jpg  frames (.png .jpg .jpeg .bmp .webp .tif .tiff; ordered
                                          as frame folders are)
    ROOT/data/<video>/mask/<frame>.png    index PNG, same stem: value k = class k, 255 = ignore

A frame without a mask file is unlabelled (all ignore); a mask value that is neither a class
nor 255 is refused with the file's name. Frames are used at their stored size; the frames of a
video share one size. Sparse labels (a mask every 10th frame) train on the clips that hold a
labelled frame only; mVC / flicker need a mask on every frame of a video.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..cli import plural
from ..visualize import default_palette
from .base import EvalVideo
from .clips import anchor_position, clip_indices, first_copies
from .images import check_label_values, image_size, load_index_png, load_rgb, png_palette
from .transforms import ClipAugment, make_sample
from .video import IMAGE_EXTENSIONS, order_frames

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")

_warned_overlaps: set[frozenset[Path]] = set()  # pairs of split lists already warned about


def _strip_comment(line: str) -> str:
    """A line without its ``# comment`` (a whole line, or after a space), stripped."""
    return re.sub(r"(^|\s)#.*$", "", line).strip()


def read_split(path: Path) -> list[tuple[int, str]]:
    """``(line number, video name)`` of each video of a split list (UTF-8, a byte-order mark
    allowed); blank lines and ``#`` comments are skipped as in ``classes.txt``.

    Raises:
        ValueError: a file that is not UTF-8.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"'{path}' is not UTF-8 text: save it as UTF-8") from None
    lines = [(n, _strip_comment(ln)) for n, ln in enumerate(text.splitlines(), start=1)]
    return [(n, name) for n, name in lines if name]


def _class_line(line: str) -> tuple[str, tuple[int, int, int] | None]:
    """``"name"`` or ``"name R G B"`` (the last three tokens integers) -> (name, colour)."""
    parts = line.split()
    if len(parts) >= 4 and all(p.isdecimal() for p in parts[-3:]):
        return " ".join(parts[:-3]), (int(parts[-3]), int(parts[-2]), int(parts[-1]))
    return " ".join(parts), None


def read_classes(root: str | os.PathLike) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette of ``ROOT/classes.txt`` (UTF-8).

    One class per line, in label order: ``name`` or ``name R G B`` (its colour in pictures;
    classes without one get a default colour not used by another class). A name may contain
    spaces and digits; the last three tokens are read as the colour when all three are
    integers. Blank lines are skipped, and ``#`` starts a comment (at the start of a line or
    after a space).

    Raises:
        FileNotFoundError: no ``classes.txt``.
        ValueError: no class, a name given twice, a colour value above 255, more than 255
            classes (255 is the ignore label), a file that is not UTF-8, or the lines of another
            format (comma-separated, or every line starting with its index).
    """
    names, colours = read_class_list(Path(root) / "classes.txt")
    return names, fill_palette(colours)


def fill_palette(colours: list[tuple[int, int, int] | None]) -> list[tuple[int, int, int]]:
    """The palette of a class list's colours as listed: each colour given, and for a class
    given without one (None) a default colour that no other class uses."""
    taken = {c for c in colours if c is not None}
    spare = iter(c for c in default_palette(len(colours) + len(taken) + 1)[1:] if c not in taken)
    return [c if c is not None else next(spare) for c in colours]


def read_class_list(path: str | os.PathLike) -> tuple[list[str],
                                                     list[tuple[int, int, int] | None]]:
    """Class names and colours of a ``classes.txt`` file as listed: the colour is None for a
    class given without one (:func:`read_classes` fills those in). Raises FileNotFoundError
    and ValueError as :func:`read_classes` does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"'{path}' not found: a folders dataset lists its classes there, one per line "
            "('name' or 'name R G B'), in label order")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"'{path}' is not UTF-8 text: save it as UTF-8") from None
    lines = [(n, _strip_comment(ln)) for n, ln in enumerate(text.splitlines(), start=1)]
    lines = [(n, ln) for n, ln in lines if ln]
    for n, line in lines:
        if re.search(r",\s*\d+\s*,\s*\d+\s*,\s*\d+\s*$", line):
            raise ValueError(f"'{path}' line {n} ({line!r}) is comma-separated: write "
                             "'name R G B' with spaces, one class per line, without a header")
    if lines and [t.lower() for t in lines[0][1].split()[-3:]] in (["r", "g", "b"],
                                                                  ["red", "green", "blue"]):
        n, line = lines[0]  # else the header became class 0 and shifted every name by one
        raise ValueError(f"'{path}' line {n} ({line!r}) is a header: drop it, the first line "
                         "is class 0 ('name R G B' or 'name', one class per line)")
    parsed = [_class_line(line)[0].split() for _, line in lines]  # each name's words
    if len(lines) > 1 and all(len(w) > 1 and w[0].isdecimal() for w in parsed) and \
            [int(w[0]) for w in parsed] in (list(range(len(lines))),
                                            list(range(1, len(lines) + 1))):
        raise ValueError(f"'{path}' starts every line with an index: drop it, the line order "
                         "gives the label (the first class listed is label 0)")
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    first_line: dict[str, int] = {}
    for n, line in lines:
        name, rgb = _class_line(line)
        if rgb is not None and (not name or max(rgb) > 255):
            raise ValueError(f"'{path}' line {n} ({line!r}) is not 'name' or 'name R G B' "
                             "with R, G, B in 0-255")
        if name in first_line:
            raise ValueError(f"'{path}' names class {name!r} twice (lines {first_line[name]} "
                             f"and {n}); each line is one class: 0, 1, ...")
        first_line[name] = n
        names.append(name)
        colours.append(rgb)
    if not names:
        raise ValueError(f"'{path}' lists no class: write one class name per line")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"'{path}' lists {len(names)} classes; at most 255 fit in a uint8 mask "
                         "(value 255 is the ignore label)")
    return names, colours


class VideoFolders(Dataset):
    """Clips of the videos of a split: item -> ``{"clip": float32 (3, T, H, W), "labels": int64
    (T, H, W)}``.

    Every frame whose clip carries a label is an anchor (every frame when all are labelled; with
    ``label_all_frames=False`` the frames with a mask; on the test split every frame); the clip
    holds T frames of the same video (``frame_stride`` apart,
    padded by repetition at the ends). All frames carry labels unless ``label_all_frames=False``
    (then only the anchor); a frame repeated as padding carries them once (the copy nearest the
    anchor). Items may be ``(index, seed)`` pairs (see ``vidccnet.data.loader``).
    ``frame_short_side``: the frames' short side (pixels; median over up to 8 videos).
    Subclasses (VSPW) change the class list (:meth:`load_classes`) and the stored-mask decoding
    (:meth:`decode_mask`).
    """

    title = "folders dataset"  # in messages
    layout_hint = " (see docs/design.md, 'Your own data')"
    warn_binary_masks = True  # masks holding only 0 and 255 are probably 0 / 255 exports
    check_palette = True  # palette masks' colours are compared with classes.txt's
    masks_every_frame = False  # True: a frame without its mask is a defect worth a warning
    ignore_index = IGNORE_INDEX

    def __init__(
        self, root: str | os.PathLike, split: str = "train", clip_len: int = 4,
        frame_stride: int = 1, anchor: str = "causal", augment: bool = False,
        crop_size: tuple[int, int] | int | None = (480, 480),
        scale_range: tuple[float, float] = (0.5, 2.0), label_all_frames: bool = True,
        max_videos: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.class_names, self.listed_colours = self.load_classes(self.root)
        self.palette = fill_palette(self.listed_colours)
        self.num_classes = len(self.class_names)
        lst = self.root / f"{split}.txt"
        if not lst.is_file():
            raise FileNotFoundError(
                f"{self.title} split list '{lst}' not found: ROOT must hold data/ and "
                f"{{train,val,test}}.txt{self.layout_hint}")
        lines = read_split(lst)
        seen: set[str] = set()
        for n, name in lines:
            if name in seen:
                raise ValueError(f"{self.title} split list '{lst}' names video '{name}' twice "
                                 f"(again on line {n}): list each video once")
            seen.add(name)
        if not lines:
            raise FileNotFoundError(f"{self.title} split list '{lst}' is empty: it must name one "
                                    "video folder of ROOT/data per line")
        names = [name for _, name in lines]
        self._warn_overlap(lst, seen)
        if max_videos is not None:
            names = names[:max_videos]
        self.split, self.clip_len = split, clip_len
        self.frame_stride, self.anchor = frame_stride, anchor
        self.label_all_frames = label_all_frames
        clip_indices(0, 1, clip_len, frame_stride, anchor)  # validate arguments
        self._unused_masks: list[Path] = []
        self._masks: dict[str, dict[str, Path]] = {}  # video -> frame stem -> its mask file
        self._first_size: dict[str, tuple[int, int]] = {}  # video -> (H, W) of its first frame
        self.videos: list[tuple[str, list[Path]]] = [self._frames(n, lst) for n in names]
        if self._unused_masks:
            logger.warning(
                "%d mask files of the %s split match no frame and are not used (e.g. '%s'); a "
                "mask is named like its frame, with the extension .png",
                len(self._unused_masks), split, self._unused_masks[0])
        self._spot_check_masks()
        self._note_short_videos()
        self.items = self._anchors()
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.augment = ClipAugment(crop_size=tuple(crop_size) if crop_size else None,
                                   scale_range=tuple(scale_range)) if augment else None

    def _warn_overlap(self, lst: Path, names: set[str]) -> None:
        """Warn (once per pair of files) when a video of ``lst`` is also listed in another split
        list of ROOT: training on validation videos inflates the validation figures."""
        for other in (self.root / f"{s}.txt" for s in SPLITS):
            key = frozenset((lst.resolve(), other.resolve()))
            if other == lst or not other.is_file() or key in _warned_overlaps:
                continue
            both = sorted(names & {name for _, name in read_split(other)})
            if both:
                _warned_overlaps.add(key)
                logger.warning(
                    "%d videos of '%s' are also listed in '%s' (e.g. '%s'): a video in two "
                    "splits is not held out from one of them (trained on and evaluated, the "
                    "figures are inflated); list each video in one split", len(both), lst,
                    other, both[0])

    def _note_short_videos(self) -> None:
        """One info line counting the videos shorter than a clip's span: their clips repeat
        the end frames (valid, but a 3D model sees no motion there)."""
        span = (self.clip_len - 1) * self.frame_stride + 1
        short = [(name, len(files)) for name, files in self.videos if len(files) < span]
        if short:
            logger.info(
                "the %s split has %s shorter than a clip (%d frames: data.clip_len %d, "
                "data.frame_stride %d), e.g. '%s' (%d frames): the clips of such a video repeat "
                "its end frames", self.split, plural(len(short), "video"), span, self.clip_len,
                self.frame_stride, short[0][0], short[0][1])

    def _anchors(self) -> list[tuple[int, int]]:
        """``(video, anchor frame)`` of every clip that carries a label: some frame of the clip
        has a mask (with ``label_all_frames=False``: the anchor frame). Every frame when every
        frame has a mask, and on the test split; one info line counts them otherwise."""
        items, frames, labelled = [], 0, 0
        for v, (name, files) in enumerate(self.videos):
            has = [self.has_mask(name, f) for f in files]
            frames, labelled = frames + len(files), labelled + sum(has)
            for a in range(len(files)):
                if self.split == "test" or has[a] or (self.label_all_frames and any(
                        has[i] for i in clip_indices(a, len(files), self.clip_len,
                                                     self.frame_stride, self.anchor))):
                    items.append((v, a))
        if self.split != "test" and labelled < frames:
            logger.info("the %s split has masks on %d of its %d frames: %d clips of the %d frames "
                        "hold a labelled frame and are used", self.split, labelled, frames,
                        len(items), frames)
        return items

    @staticmethod
    def load_classes(root: Path) -> tuple[list[str], list[tuple[int, int, int] | None]]:
        """Class names and their colours as listed (None for a class given without one; the
        dataset's ``palette`` fills those in): ``ROOT/classes.txt``, read once per dataset."""
        return read_class_list(root / "classes.txt")

    def decode_mask(self, stored: np.ndarray, path: Path) -> np.ndarray:
        """Stored mask uint8 (H, W) -> labels int64 (H, W): value k is class k, 255 ignore."""
        n = self.num_classes
        hint = (f"'{self.root / 'classes.txt'}' lists {n} classes (0-{n - 1}) and a mask "
                "holds each pixel's class index (not a grey level scaled for viewing): fix the "
                "mask, or add the missing classes to classes.txt (one line each, in label order)")
        return check_label_values(stored, n, path, f"the {self.title}", hint).astype(np.int64)

    def _frames(self, name: str, lst: Path) -> tuple[str, list[Path]]:
        d = self.root / "data" / name / "origin"
        if not d.is_dir():
            video = d.parent
            if not video.is_dir():
                raise FileNotFoundError(self._missing_video(name, lst))
            held = sorted(p.name for p in video.iterdir() if not p.name.startswith("."))
            holds = (f"'{video}' holds {', '.join(repr(n) for n in held[:5])}"
                     f"{' ...' if len(held) > 5 else ''}" if held else f"'{video}' is empty")
            raise FileNotFoundError(
                f"{self.title} video folder '{d}' (listed in {lst}) not found; {holds}: the "
                f"frames go in ROOT/data/VIDEO/origin/, the masks in ROOT/data/VIDEO/mask/"
                f"{self.layout_hint}")
        files = [f for f in d.iterdir()  # not macOS '._' metadata files
                 if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("._")]
        if not files:
            raise FileNotFoundError(f"{self.title} video folder '{d}' has no frames")
        try:
            files = order_frames(files)
        except ValueError as e:
            raise ValueError(f"{self.title} video '{name}' ({d}): {e}") from None
        mask_dir = self.mask_path(name, files[0]).parent
        masks = sorted(m for m in mask_dir.iterdir() if not m.name.startswith("._")) \
            if mask_dir.is_dir() else []
        stems = {f.stem for f in files}
        used = {m for m in masks if m.suffix.lower() == ".png" and m.stem in stems}
        self._masks[name] = {m.stem: m for m in used}  # '.PNG' too, on any file system
        if self.split != "test" and not used:
            found = (f"; {mask_dir} holds {len(masks)} other files such as '{masks[0].name}'"
                     if masks else "")
            others = [] if mask_dir.is_dir() else sorted(
                p.name for p in mask_dir.parent.iterdir()
                if p.is_dir() and p.name != "origin" and not p.name.startswith("."))
            if others:  # masks/, labels/, ...: a folder under another name
                found = (f"; '{mask_dir.parent}' holds no {mask_dir.name} folder but "
                         f"{', '.join(repr(n) for n in others[:5])}")
            raise FileNotFoundError(
                f"{self.title} video '{name}' has no mask for any of its {len(files)} frames "
                f"(looked for e.g. '{self.mask_path(name, files[0])}'{found}): every label would "
                "be ignored; masks are lossless PNG files named like their frame, "
                "ROOT/data/VIDEO/mask/<frame name>.png"
            )
        self._unused_masks += sorted(m for m in masks if m not in used
                                     and m.suffix.lower() in IMAGE_EXTENSIONS)
        return name, files

    @staticmethod
    def _spot_check_indices(num_videos: int, max_videos: int) -> list[int]:
        return sorted({int(i) for i in np.linspace(0, num_videos - 1, min(num_videos, max_videos))
                       .round()})

    def _missing_video(self, name: str, lst: Path) -> str:
        """The message for a video ``name`` of split list ``lst`` (a path under ROOT/data,
        nested or not) that is not a folder: a video file listed instead of its frames, or a
        name data/ lacks (the deepest of its folders that exists is listed)."""
        data = self.root / "data"
        video = data / name
        stem = Path(name).with_suffix("").as_posix()  # the name of its frame folder
        extract = (f"training reads frame folders: extract its frames into "
                   f"ROOT/data/{stem}/origin/ (README, 'Your own data')")
        if video.exists():
            return (f"{self.title} video '{video}' (listed in {lst}) is a file, not a folder of "
                    f"frames: {extract} and list '{stem}'")
        missing = f"{self.title} video folder '{video}' (listed in {lst}) not found"
        if not data.is_dir():
            return f"{missing}; ROOT must hold data/ and {{train,val,test}}.txt{self.layout_hint}"
        folder = video.parent
        while folder != data and not folder.is_dir():  # a folder of a nested name is missing
            folder = folder.parent
        held = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        files = [n for n in held if folder == video.parent and n.startswith(video.name + ".")
                 and (folder / n).is_file()]
        if files:
            return f"{missing}; '{folder}' holds the file '{files[0]}': {extract}"
        folders = [n for n in held if (folder / n).is_dir()]
        if not folders:
            return f"{missing}; '{folder}' holds no video folder{self.layout_hint}"
        shown = ", ".join(repr(n) for n in folders[:5]) + (" ..." if len(folders) > 5 else "")
        return (f"{missing}; '{folder}' holds {shown}: correct the name in {lst} or add the "
                f"video's folder{self.layout_hint}")

    def _spot_check_masks(self, max_videos: int = 8) -> None:
        """Decode the first mask of up to ``max_videos`` videos spread over the split: a colour
        rendering, masks of another label set or of another size stop the build (every mask is
        still checked when its clip is drawn). Masks that all hold only 0 and 255 get a warning
        (a foreground exported as 255 would be ignored). Sets ``frame_short_side``: the median
        short side of those videos' first frames."""
        sides, values = [], []
        for v in self._spot_check_indices(len(self.videos), max_videos):
            name, files = self.videos[v]
            first_size = image_size(files[0])
            sides.append(min(first_size))
            frame = next((f for f in files if self.has_mask(name, f)), None)
            if frame is not None:
                size = first_size if frame == files[0] else image_size(frame)
                values.append(set(np.unique(self._label(name, frame, size)).tolist()))
                if self.check_palette:
                    self._check_palette_order(self.mask_path(name, frame), values[-1])
        self.frame_short_side = int(np.median(sides))
        if values and all(v == {IGNORE_INDEX} for v in values):
            logger.warning(
                "the %s masks checked (%d) hold only 255 ('ignore'): no pixel of them is "
                "trained on or evaluated; masks hold class indices (0 = %r)", self.split,
                len(values), self.class_names[0])
        elif self.warn_binary_masks and values and self.num_classes > 1 and \
                all(v <= {0, IGNORE_INDEX} and IGNORE_INDEX in v for v in values):
            logger.warning(
                "the %s masks checked (%d) hold only 0 and 255: 255 is 'ignore', so the pixels "
                "at 255 are not trained on; if they mark a class, save that class's index "
                "(1 for %r) instead", self.split, len(values), self.class_names[1])

    def _check_palette_order(self, path: Path, used: set[int]) -> None:
        """Refuse a palette PNG numbered in another order than classes.txt: its first colours
        are classes.txt's colours reordered, and a class index it holds (at least two) has
        another class's colour. Its tool numbered the classes in its own order, and the dataset
        reads indices, not colours (classes would be swapped without a word). Any other
        palette (a tool's own colours that share a few with classes.txt, PIL's stub palette)
        or a classes.txt without every colour says nothing."""
        palette = png_palette(path)
        listed = self.listed_colours
        held = sorted(v for v in used if v != IGNORE_INDEX)
        if palette is None or len(held) < 2 or None in listed or \
                sorted(palette[:len(listed)]) != sorted(listed):
            return
        k = next((k for k in held if palette[k] != listed[k]), None)
        if k is None:
            return
        colour, j = palette[k], listed.index(palette[k])
        raise ValueError(
            f"{self.title} mask '{path}' is a palette PNG numbered in another order than "
            f"classes.txt: its index {k} is drawn in {colour}, the colour of class {j} "
            f"'{self.class_names[j]}' there (class {k} '{self.class_names[k]}' is {listed[k]}), "
            "and the dataset reads a palette PNG's indices, not its colours; convert the masks "
            "by colour with scripts/colour_masks.py, or fix the colours in classes.txt if the "
            "indices are right")

    def has_mask(self, name: str, frame: Path) -> bool:
        """Whether ``frame`` of video ``name`` has a mask file (from the listing made when the
        dataset was built: no file-system call per frame)."""
        return frame.stem in self._masks.get(name, {})

    def mask_path(self, name: str, frame: Path) -> Path:
        """The mask file of ``frame`` (``<stem>.png`` or ``<stem>.PNG``; the ``.png`` path,
        which does not exist, when it has none)."""
        found = self._masks.get(name, {}).get(frame.stem)
        return found if found is not None else self.root / "data" / name / "mask" / (
            frame.stem + ".png")

    def _load_frame(self, name: str, files: list[Path], i: int) -> np.ndarray:
        """Frame ``i`` of video ``name``, uint8 (H, W, 3); refused, naming both files, when its
        size differs from the video's first frame (whose size is read once per video)."""
        frame = load_rgb(files[i])
        if name not in self._first_size:
            self._first_size[name] = frame.shape[:2] if i == 0 else image_size(files[0])
        if frame.shape[:2] != self._first_size[name]:
            (h, w), (h0, w0) = frame.shape[:2], self._first_size[name]
            raise ValueError(
                f"{self.title} video '{name}': frame '{files[i]}' is {w}x{h} pixels, the "
                f"video's first frame '{files[0].name}' {w0}x{h0}; the frames of a video must "
                "share one size: resize that frame or remove it")
        return frame

    def _load_mask(self, path: Path) -> np.ndarray:
        return self.decode_mask(load_index_png(path), path)

    def _label(self, name: str, frame: Path, shape: tuple[int, int]) -> np.ndarray:
        if not self.has_mask(name, frame):
            return np.full(shape, IGNORE_INDEX, np.int64)
        p = self.mask_path(name, frame)
        lab = self._load_mask(p)
        if lab.shape != shape:
            (h, w), (fh, fw) = lab.shape, shape
            raise ValueError(
                f"{self.title} mask '{p}' is {w}x{h} pixels, its frame '{frame.name}' {fw}x{fh}: "
                "a mask must have its frame's size (resize it with nearest-neighbour "
                "interpolation, which keeps class indices, or redraw it at that size)")
        return lab

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        v, a = self.items[index]
        name, files = self.videos[v]
        idx = clip_indices(a, len(files), self.clip_len, self.frame_stride, self.anchor)
        frames = np.stack([self._load_frame(name, files, i) for i in idx])  # (T, H, W, 3)
        pos = anchor_position(self.clip_len, self.anchor)
        # a frame repeated to pad the clip counts once (the anchor always counts)
        labelled = first_copies(idx, pos) if self.label_all_frames else [
            j == pos for j in range(len(idx))]
        labels = np.stack([
            self._label(name, files[i], frames.shape[1:3]) if labelled[j]
            else np.full(frames.shape[1:3], IGNORE_INDEX, np.int64)
            for j, i in enumerate(idx)
        ])  # (T, H, W)
        return make_sample(frames, labels, self.augment, seed)

    def eval_videos(self) -> list[EvalVideo]:
        """Each video as one `EvalVideo`; frames with a mask file are labelled. A video is
        ``consecutive`` (its mVC / flicker are computed) only when every frame has a mask: masks
        10 frames apart are no consecutive annotated frames. A frame of another size than the
        video's first frame is refused with its file's name."""
        out = []
        for name, files in self.videos:
            labelled = [i for i, f in enumerate(files) if self.has_mask(name, f)]

            def load_frame(i: int, name=name, files=files) -> np.ndarray:
                return self._load_frame(name, files, i)

            def load_label(i: int, name=name, files=files) -> np.ndarray:
                return self._label(name, files[i], image_size(files[i]))

            if self.masks_every_frame and 0 < len(labelled) < len(files):
                missing = next(f for f in files if not self.has_mask(name, f))
                logger.warning(
                    "%s video '%s' has no mask for %d of its %d frames (e.g. '%s'), but %s "
                    "masks every frame: an incomplete download? Its labelled frames count in "
                    "mIoU, but the video is left out of mVC and flicker", self.title, name,
                    len(files) - len(labelled), len(files), self.mask_path(name, missing),
                    self.title)
            out.append(EvalVideo(name=name, num_frames=len(files), load_frame=load_frame,
                                 load_label=load_label, labelled=labelled,
                                 consecutive=len(labelled) == len(files)))
        return out
