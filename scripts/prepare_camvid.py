#!/usr/bin/env python
"""Extract CamVid context frames from the original 30 fps sequences.

For every labelled SegNet frame `<seq>_<index>` the script searches the frames `index - W ...
index + W` of the sequence video for the one that matches the labelled image best (mean absolute
difference at 1/4 resolution, after resizing the video frame to the labelled size; the names are
off by about one frame for some sequences), then writes the frames a clip needs around the match
to `OUT/frames/<seq>/<index:06d>.png` at the labelled frame's size, and a JSON report of the
matches to `OUT/frames/matches.json` (read by `vidccnet.data.camvid.CamVid`).

    python scripts/prepare_camvid.py --segnet data/CamVid \
        --videos raw/01TP_extract.avi raw/0005VD.MXF raw/0006R0.MXF raw/0016E5.MXF

A video's sequence is recognised from its file name (01TP / 0001TP, 0005VD / Seq05VD, 0006R0,
0016E5) or given explicitly as SEQ=PATH. Videos may also be folders of frames. When a video does
not start at frame 0 of the sequence numbering (an extract), pass `--index-offset SEQ=N`: video
frame = name index + N (the written files and the report stay in the names' numbering).
Matches whose difference exceeds `--max-mad` are flagged `"poor": true` in the report.
A rerun keeps the frames already written (`--overwrite` rewrites them), except for a sequence
whose `--index-offset` changed since the report: its frames are rewritten. The report keeps the
sequences of earlier runs (videos can be prepared one run at a time) and is written after each
sequence; `--report PATH` writes a copy there too. Frames are written whole (a temporary file
renamed), so an interrupted run leaves no truncated or temporary frame; Ctrl-C and SIGTERM
print one line and exit with 130 and 143.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidccnet.cli import fail, file_above, interruptible, sigterm_unwinds  # noqa: E402
from vidccnet.data.camvid import (  # noqa: E402
    SPLITS,
    context_frame_path,
    labelled_images,
    parse_camvid_name,
)
from vidccnet.data.images import load_rgb  # noqa: E402
from vidccnet.data.video import VideoReadError, open_video  # noqa: E402
from vidccnet.engine.report import write_json  # noqa: E402

logger = logging.getLogger("prepare_camvid")
PROG = "prepare_camvid.py"
KEPT = "the frames written so far are kept; run it again to continue"

SEQUENCE_ALIASES = {"01TP": "0001TP", "0001TP": "0001TP", "0005VD": "Seq05VD",
                    "SEQ05VD": "Seq05VD", "05VD": "Seq05VD", "0006R0": "0006R0",
                    "0016E5": "0016E5"}


class PrepareError(Exception):
    """An expected failure reported as one line on stderr."""


def canonical_sequence(name: str) -> str:
    """'01tp' / '0001TP' -> '0001TP', 'Seq05VD' -> 'Seq05VD'; an unknown name is an error."""
    seq = SEQUENCE_ALIASES.get(name.strip().upper())
    if seq is None:
        raise PrepareError(f"unknown CamVid sequence '{name}' (known: "
                           f"{', '.join(sorted(set(SEQUENCE_ALIASES.values())))})")
    return seq


def check_videos(videos: dict[str, Path], labelled: set[str], backend: str) -> None:
    """Open every video once before the long work: a broken one fails at once, an unused one
    is reported."""
    for seq, path in sorted(videos.items()):
        if seq not in labelled:
            logger.warning("video '%s' (sequence %s) is not used: no labelled frame of %s under "
                           "--segnet", path, seq, seq)
            continue
        with open_video(path, backend=backend) as reader:
            if len(reader) == 0:
                raise PrepareError(f"video '{path}' ({seq}) has no frames")


def sequence_of_video(path: str) -> tuple[str, Path]:
    """'SEQ=PATH' -> (SEQ, PATH); 'raw/01TP_extract.avi' -> ('0001TP', path)."""
    if "=" in path:
        seq, p = path.split("=", 1)
        return canonical_sequence(seq), Path(p)
    p = Path(path)
    stem = p.stem.upper()
    for key in sorted(SEQUENCE_ALIASES, key=len, reverse=True):
        if stem.startswith(key) or stem.split("_")[0] == key:
            return SEQUENCE_ALIASES[key], p
    raise PrepareError(f"cannot tell the CamVid sequence of video '{path}': name it "
                       f"SEQ=PATH (known sequences: {sorted(set(SEQUENCE_ALIASES.values()))})")


def _small(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (H/4, W/4, 3) by 4x4 block means."""
    h, w = img.shape[0] // 4 * 4, img.shape[1] // 4 * 4
    x = img[:h, :w].astype(np.float32)
    return x.reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 (H, W, 3) to (h, w) with an area filter (no-op when equal)."""
    if img.shape[:2] == tuple(size):
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BOX))


class FrameSource:
    """Frames of one sequence video resized to the labelled size, with a small LRU cache."""

    def __init__(self, path: Path, size: tuple[int, int], backend: str, cache: int = 96) -> None:
        self.reader = open_video(path, backend=backend)
        self.size = size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cap = cache

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = _resize(self.reader[i], self.size)
        self._cache[i] = img
        if len(self._cache) > self._cap:
            self._cache.popitem(last=False)
        return img

    def close(self) -> None:
        self.reader.close()


def _outside(index: int, length: int) -> str:
    return f"frame index {index} is beyond the video's {length} frames"


def _extract_hint(video: Path, seq: str) -> str:
    return (f"is {video} the whole {seq} sequence? A video that starts later needs "
            f"--index-offset {seq}=-N (N: the name's index of its first frame)")


def match_frame(image: np.ndarray, source: FrameSource, guess: int, window: int) -> dict:
    """Best matching frame index of `image` among guess-window .. guess+window."""
    target = _small(image)
    lo, hi = max(guess - window, 0), min(guess + window, len(source) - 1)
    if lo > hi:
        raise PrepareError(_outside(guess, len(source)))
    scores = {j: float(np.abs(_small(source[j]) - target).mean()) for j in range(lo, hi + 1)}
    ranked = sorted(scores, key=scores.get)
    best = ranked[0]
    runner = scores[ranked[1]] if len(ranked) > 1 else float("nan")
    return {"index": best, "mad": round(scores[best], 3), "runner_up_mad": round(runner, 3)}


def prepare(args: argparse.Namespace) -> dict:
    from PIL import Image

    segnet = Path(args.segnet)
    out = Path(args.out) if args.out else segnet
    images: dict[str, list[Path]] = defaultdict(list)
    for split in SPLITS["trainval"] + ("test",):
        d = segnet / split
        if not d.is_dir():
            raise PrepareError(f"'{d}' not found: --segnet must be the SegNet CamVid folder")
        for f in labelled_images(d):
            seq, _ = parse_camvid_name(f.stem)
            images[seq].append(f)
    if not images:
        raise PrepareError(f"no labelled frames (*.png) under '{segnet}'/{{train,val,test}}")
    videos: dict[str, Path] = {}
    for v in args.videos:
        seq, path = sequence_of_video(v)
        if seq in videos:
            raise PrepareError(f"two videos for sequence {seq}: '{videos[seq]}' and '{path}'")
        videos[seq] = path
    shifts: dict[str, int] = {}
    for item in args.index_offset:
        seq, _, n = item.partition("=")
        try:
            shifts[canonical_sequence(seq)] = int(n)
        except ValueError:
            raise PrepareError(f"--index-offset expects SEQ=N, got {item!r}") from None
    check_videos(videos, set(images), args.backend)
    offsets = [o * args.frame_stride for o in range(-args.context_before, args.context_after + 1)]
    report = _earlier_report(out)  # the sequences of earlier runs stay; theirs are replaced
    report["params"] = {"window": args.window, "offsets": offsets, "segnet": str(segnet)}
    report["matches"] = {k: m for k, m in report["matches"].items() if m.get("seq") not in videos}
    report["missing_videos"] = {seq: len(files) for seq, files in sorted(images.items())
                                if seq not in videos and seq not in report["sequences"]}
    earlier = {seq: int(info.get("index_offset", 0))
               for seq, info in report["sequences"].items()}
    paths = [out / "frames" / "matches.json"] + ([Path(args.report)] if args.report else [])
    for seq, files in sorted(images.items()):
        if seq not in videos:
            if seq in report["missing_videos"]:
                logger.warning("no video for sequence %s (%d labelled frames): skipped", seq,
                               len(files))
            continue
        files = sorted(files, key=lambda f: parse_camvid_name(f.stem)[1])
        src = None
        hist: dict[int, int] = defaultdict(int)
        written = poor = 0
        shift = shifts.get(seq, 0)
        with open_video(videos[seq], backend=args.backend) as reader:
            length = len(reader)
        for f in files:  # before anything of the sequence changes: a wrong offset keeps it
            _, guess = parse_camvid_name(f.stem)
            if guess + shift - args.window > length - 1 or guess + shift + args.window < 0:
                raise PrepareError(f"{f.name}: {_outside(guess + shift, length)}; "
                                   f"{_extract_hint(videos[seq], seq)}")
        if earlier.get(seq, shift) != shift:  # its frames on disk are of other indices
            logger.info("%s: the index offset changed from %d to %d: its frames are rewritten",
                        seq, earlier[seq], shift)
            for old in context_frame_path(out, seq, 0).parent.glob("*.png"):
                old.unlink()
        for f in files:
            _, guess = parse_camvid_name(f.stem)
            image = load_rgb(f)
            if src is None or image.shape[:2] != src.size:
                if src is not None:
                    src.close()
                src = FrameSource(videos[seq], image.shape[:2], args.backend)
            try:
                m = match_frame(image, src, guess + shift, args.window)
            except PrepareError as exc:
                raise PrepareError(
                    f"{f.name}: {exc}; {_extract_hint(videos[seq], seq)}") from None
            m["video_index"] = m["index"]
            m["index"] -= shift  # in the names' numbering
            m.update(seq=seq, name_index=guess, offset=m["index"] - guess,
                     poor=bool(m["mad"] > args.max_mad))
            poor += m["poor"]
            report["matches"][f.stem] = m
            hist[m["offset"]] += 1
            for o in offsets:
                j = m["index"] + o
                p = context_frame_path(out, seq, j)
                if 0 <= j + shift < len(src) and (args.overwrite or not p.is_file()):
                    p.parent.mkdir(parents=True, exist_ok=True)
                    tmp = p.with_name(f".{p.name}.tmp")  # whole files only: a rerun keeps them
                    try:
                        Image.fromarray(src[j + shift]).save(tmp, format="PNG")
                        os.replace(tmp, p)
                    finally:  # Ctrl-C, SIGTERM or a full disk: no temporary file stays
                        tmp.unlink(missing_ok=True)
                    written += 1
        if poor:
            logger.warning("%s: %d labelled frames match poorly (mean abs diff > %g): check "
                           "the video and --index-offset", seq, poor, args.max_mad)
        report["sequences"][seq] = {
            "video": str(videos[seq]), "frames": len(src), "labelled": len(files),
            "frames_written": written, "poor_matches": poor, "index_offset": shift,
            "offsets": {str(k): v for k, v in sorted(hist.items())}}
        src.close()
        logger.info("%s: %d labelled frames matched, offsets %s, %d frames written", seq,
                    len(files), dict(sorted(hist.items())), written)
        for path in paths:  # after each sequence: a run stopped later keeps it
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, report, indent=1)
    return report


def _earlier_report(out: Path) -> dict:
    """The report of earlier runs in the dataset's place (matches and sequences), empty when
    there is none or it cannot be read."""
    path = out / "frames" / "matches.json"
    try:
        report = json.loads(path.read_text())
        if isinstance(report.get("matches"), dict) and isinstance(report.get("sequences"), dict):
            return report
    except (OSError, ValueError, AttributeError):
        pass
    return {"matches": {}, "sequences": {}}


@interruptible(PROG, KEPT)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--segnet", required=True,
                    help="SegNet CamVid folder (train/, trainannot/, ...)")
    ap.add_argument("--videos", nargs="+", required=True,
                    help="original sequence videos (or frame folders), optionally SEQ=PATH")
    ap.add_argument("--out", default=None, help="dataset root receiving frames/ (default --segnet)")
    ap.add_argument("--window", type=int, default=5, help="search +-W frames around the name")
    ap.add_argument("--context-before", type=int, default=4, help="frames before the match")
    ap.add_argument("--context-after", type=int, default=2, help="frames after the match")
    ap.add_argument("--frame-stride", type=int, default=1, help="stride between context frames")
    ap.add_argument("--index-offset", action="append", default=[], metavar="SEQ=N",
                    help="video frame = name index + N for sequence SEQ (repeatable)")
    ap.add_argument("--max-mad", type=float, default=20.0,
                    help="flag matches whose mean abs difference exceeds this")
    ap.add_argument("--backend", default="av", choices=["av", "decord"],
                    help="video reader: av (PyAV); decord is refused (wrong frames after seeks)")
    ap.add_argument("--report", default=None,
                    help="also write the report here (the dataset reads OUT/frames/matches.json)")
    ap.add_argument("--overwrite", action="store_true", help="rewrite existing frames")
    args = ap.parse_args(argv)
    for name in ("window", "context_before", "context_after"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.frame_stride < 1:
        ap.error(f"--frame-stride must be >= 1, got {args.frame_stride}")
    if args.backend == "decord":  # decord issues #54, #195, #365
        return fail(PROG, ValueError(
            "--backend decord is refused: after a seek decord returns other frames than those "
            "asked for in many formats (MPEG-2, MPEG-4 with B-frames, HEVC, H.264 in AVI, "
            "open-GOP H.264), which would be written as context frames; use --backend av"))
    # before any frame is matched: the folders are created, a file in the way fails late
    for option, path, inside in (("--out", args.out, "frames"), ("--report", args.report, "")):
        if path is not None and (blocking := file_above(Path(path) / inside)) is not None:
            return fail(PROG, ValueError(f"{option} {path}: '{blocking}' is a file, not a "
                                         "folder; choose another path"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with sigterm_unwinds():  # SIGTERM unwinds like Ctrl-C: the temporary frame is removed
            prepare(args)
    except (PrepareError, VideoReadError, ValueError, OSError) as e:
        return fail(PROG, e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
