"""Segment a video file or a folder of frames with a trained vidccnet checkpoint.

    python scripts/segment_video.py input.mp4 --out masks/
    python scripts/segment_video.py input.mp4 --out masks/ --overlay overlay.mkv --size 360
    python scripts/segment_video.py frames_dir/ --out masks/ --checkpoint runs/camvid/best.pt

DIR receives one palette PNG per frame (``000000.png``, ... named by the source frame index; mode
"P", pixel value = class index, the dataset's palette attached) at the source frame size, or
``000000.npz`` files (key ``mask``) with ``--format npz``, and ``summary.json``. The checkpoint
comes from ``--checkpoint``, else ``$VIDCCNET_CHECKPOINT``, else ``runs/demo/best.pt``.

Inference streams: frames are decoded, resized to the checkpoint's training scale (``--size``),
grouped into overlapping causal clips of ``--clip-len`` frames of which the last ``--stride`` are
written per forward pass (a checkpoint trained on every ``d``-th frame gets clips of every
``d``-th frame, one pass per frame; see ``vidccnet.predict``), so memory does not depend on the
video's length. The writing (staged folder, overlay video, summary) is ``vidccnet.writer``.

Paths are checked before torch and the model load: an input that is missing or empty, an output
that exists, cannot be written, or would replace or write into the input or the checkpoint (even
with ``--overwrite``) is refused at once. Everything is written to a temporary folder next to DIR
and moved into place at the end: a failure, Ctrl-C or SIGTERM (``timeout``, SLURM, ``docker
stop``) leaves no partial output. Expected errors print one line on stderr and exit with code 2
(130 after Ctrl-C, 143 after SIGTERM). ``--start`` / ``--end`` take frame indices (``120``) or
seconds (``4.5s``); ``--end`` is exclusive, and one past the last frame stops there (a warning).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Standard library and numpy only until the paths are checked (fail fast, before torch loads).
from vidccnet.cli import (
    checkpoint_in_folder,
    interruptible,
    one_line,
    plural,
    sigterm_unwinds,
)
from vidccnet.writer import OutputPathError, check_paths, parse_frame_bound

EXIT_ERROR = 2
DEFAULT_CHECKPOINT = Path("runs") / "demo" / "best.pt"
REPO_ROOT = Path(__file__).resolve().parent.parent
PROG = "segment_video.py"
SIZE_MULTIPLE = 8  # vidccnet.predict.SIZE_MULTIPLE, without importing torch


class UserError(Exception):
    """An expected problem with the inputs: reported as one line, exit code 2."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Segment a video file or a folder of frames into per-frame class masks.",
    )
    p.add_argument("input", help="video file (anything FFmpeg decodes), a folder of frames or "
                   "one image")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist "
                   "or be empty, unless --overwrite replaces an earlier output there; never the "
                   "input folder or around it)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="trained checkpoint (default: $VIDCCNET_CHECKPOINT, runs/demo/best.pt)")
    p.add_argument("--overlay", default=None, metavar="OUT.mp4",
                   help="also write the video with the coloured masks blended in (same fps); "
                   "the container follows the extension: .mp4 .m4v .mkv .mov .avi .webm")
    p.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay")
    p.add_argument("--format", choices=("png", "npz"), default="png",
                   help="palette PNGs (default) or compressed .npz files (key 'mask')")
    p.add_argument("--clip-len", type=int, default=None, metavar="T",
                   help="frames per forward pass (default: from the checkpoint's config)")
    p.add_argument("--stride", type=int, default=None, metavar="S",
                   help="frames written per forward pass, 1..T (default: ceil(T/2); 1 = strictly "
                   "causal, slowest)")
    p.add_argument("--frame-stride", type=int, default=None, metavar="D",
                   help="spacing of a clip's frames (default: the checkpoint's data.frame_stride, "
                   "the spacing it was trained on); D > 1 runs one forward pass per frame")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--amp", action="store_true",
                   help="float16 autocast on CUDA (faster); ignored with a warning on CPU, where "
                   "autocast (bfloat16) is slower than float32")
    p.add_argument("--size", default="model", metavar="model|source|PX",
                   help="inference scale: 'model' (default) resizes frames to the short side "
                   "the checkpoint was trained and evaluated at, 'source' keeps the source "
                   "size, PX sets the short side; masks are always written at the source size")
    p.add_argument("--max-size", type=int, default=None, metavar="PX",
                   help="cap on the short side for inference (shrinks only)")
    p.add_argument("--backend", choices=("av", "decord"), default="av", help="video decoder")
    p.add_argument("--start", default=None, help="first frame: index (120) or seconds (4.5s)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of a folder of frames or an image (default 30): the seconds "
                   "of --start / --end and the overlay's rate; a video file has its own")
    p.add_argument("--end", default=None, help="stop before this frame: index or seconds")
    p.add_argument("--strict", action="store_true",
                   help="fail on a truncated / corrupt video instead of keeping decoded frames")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier output in DIR (masks, summary.json, an overlay; a "
                   "folder holding other files is refused) and an existing --overlay")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar / progress lines (frames/s, ETA) and no inference "
                   "size line: warnings, errors and the closing 'wrote ...' line only")
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ inputs
def find_checkpoint(arg: str | None) -> Path:
    """--checkpoint, else $VIDCCNET_CHECKPOINT, else runs/demo/best.pt (cwd, then repo root)."""
    if arg == "":
        raise UserError("--checkpoint is empty (an unset variable?); pass a .pt file, or leave "
                        "the option out for the default model")
    for source, value in (("--checkpoint", arg),
                          ("$VIDCCNET_CHECKPOINT", os.environ.get("VIDCCNET_CHECKPOINT"))):
        if value:
            path = Path(value).expanduser()
            if not path.exists():
                raise UserError(
                    f"checkpoint '{path}' (from {source}) not found; pass an existing .pt file "
                    "written by scripts/train.py or scripts/demo.py"
                )
            _check_checkpoint_file(path, source)
            return path
    for path in (DEFAULT_CHECKPOINT, REPO_ROOT / DEFAULT_CHECKPOINT):
        if path.is_file():
            _check_checkpoint_file(path, "the default")
            return path
    raise UserError(
        "no checkpoint: pass --checkpoint PATH or set VIDCCNET_CHECKPOINT; to get one, run "
        "`python scripts/demo.py` (trains a small model into runs/demo/best.pt in minutes) or "
        "train with scripts/train.py"
    )


def _check_checkpoint_file(path: Path, source: str) -> None:
    if path.is_dir():
        raise UserError(f"checkpoint '{path}' (from {source}) is a folder, not a checkpoint "
                        f"file; {checkpoint_in_folder(path)}")
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' (from {source}) is not a file; pass a .pt file")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint '{path}' (from {source}) is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise UserError(f"checkpoint '{path}' (from {source}) is not readable")


def parse_size(text: str) -> str | int:
    """--size: 'model', 'source' or a short side >= 8 pixels."""
    if text in ("model", "source"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < SIZE_MULTIPLE:
        raise UserError(
            f"--size {text!r} must be 'model', 'source' or a short side in pixels (at least "
            f"{SIZE_MULTIPLE})"
        )
    return value


def preflight(args: argparse.Namespace) -> Path:
    """Every check that needs no decoding and no torch; returns the checkpoint path."""
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    for flag, value in (("--clip-len", args.clip_len), ("--stride", args.stride),
                        ("--frame-stride", args.frame_stride)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.fps is not None and not (0.0 < args.fps < float("inf")):
        raise UserError(f"--fps must be a positive number of frames per second, got {args.fps}")
    args.size = parse_size(args.size)
    if args.max_size is not None and args.max_size < SIZE_MULTIPLE:
        raise UserError(f"--max-size must be at least {SIZE_MULTIPLE} pixels, got {args.max_size}")
    for name in ("start", "end"):
        parse_frame_bound(getattr(args, name), 1.0, name, cli=True)  # syntax only (no fps yet)
    ckpt = find_checkpoint(args.checkpoint)
    check_paths(args.input, args.out, overlay=args.overlay, overwrite=args.overwrite,
                protect=[ckpt], cli=True)
    return ckpt


# ------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Segment ``args.input`` into ``args.out``; returns the summary. Raises UserError & co."""
    ckpt_path = preflight(args)
    from vidccnet.predict import VideoSegmenter  # the slow imports (torch) come after the checks

    segmenter = VideoSegmenter(
        ckpt_path, device=args.device, clip_len=args.clip_len, stride=args.stride,
        frame_stride=args.frame_stride,
        amp=args.amp, max_size=args.max_size, backend=args.backend, size=args.size,
    )
    return segmenter.write(
        args.input, args.out, overlay=args.overlay, alpha=args.alpha, fmt=args.format,
        start=args.start, end=args.end, strict=args.strict, overwrite=args.overwrite,
        progress=False if args.quiet else None, fps=args.fps, cli=True,
    )


class _LineFormat(logging.Formatter):
    """'segment_video.py: message', with 'warning: ' / 'error: ' before problems."""

    def format(self, record: logging.LogRecord) -> str:
        msg = " ".join(record.getMessage().split())
        if record.levelno >= logging.WARNING:
            return f"{PROG}: {record.levelname.lower()}: {msg}"
        return f"{PROG}: {msg}"


def expected_errors() -> tuple[type[BaseException], ...]:
    """Error types reported as one line: ours plus those of the vidccnet modules imported so far
    (looked up lazily so that early failures do not pay for importing torch)."""
    types: list[type[BaseException]] = [UserError, OutputPathError, ValueError]
    for module, name in (("vidccnet.data.video", "VideoReadError"),
                         ("vidccnet.engine.checkpoint", "CheckpointError"),
                         ("vidccnet.predict", "TruncatedVideoError")):
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


@interruptible(PROG, "no output was written")
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this call (tests swap it)
    handler.setFormatter(_LineFormat())
    package, writer_log = logging.getLogger("vidccnet"), logging.getLogger("vidccnet.writer")
    saved = (package.level, package.propagate, writer_log.level)
    package.addHandler(handler)
    package.setLevel(logging.WARNING)
    package.propagate = False
    # the inference size; frames/s and ETA off a terminal
    writer_log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        with sigterm_unwinds():  # SIGTERM removes the staged output as Ctrl-C does
            return _main(args)
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        writer_log.setLevel(saved[2])


def _side_of(exc: OSError, args: argparse.Namespace) -> str | None:
    """"input" or "output" by the file the error names (the output is staged next to --out);
    None when it names none."""
    if not exc.filename:
        return None
    name = Path(os.fsdecode(exc.filename)).absolute()
    source = Path(args.input).absolute()
    if name == source or source in name.parents:
        return "input"
    for target in (args.out, getattr(args, "overlay", None)):
        if target is None:
            continue
        out = Path(target).absolute()
        staged = name.parent.name.startswith(f".{out.name}.") and name.parent.parent == out.parent
        if name == out or out in name.parents or staged or name.name.startswith(f".{out.name}."):
            return "output"
    return None


def _main(args: argparse.Namespace) -> int:
    try:
        summary = run(args)
    except expected_errors() as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(f"{PROG}: error: out of memory; pass a smaller --size or --clip-len",
              file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        side = _side_of(exc, args)
        if side == "input":
            why = f"cannot read the input ({one_line(exc)}); check that {args.input} is readable"
        elif side == "output":
            why = (f"cannot write the output ({one_line(exc)}); check the free space and "
                   "permissions of --out")
        else:
            why = (f"input or output failed ({one_line(exc)}); check that the input is readable "
                   "and --out has free space")
        print(f"{PROG}: error: {why}", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower() or args.debug:
            raise
        print(f"{PROG}: error: out of memory ({one_line(exc)[:120]}); pass a smaller "
              "--size or --clip-len, or --device cpu", file=sys.stderr)
        return EXIT_ERROR
    frames, lost = summary["frames"], summary["frames_lost"]
    rate = f"{summary['frames_per_second']:.2f} frames/s"
    if lost:
        print(f"{PROG}: wrote {frames} of the {frames + lost} masks to {args.out} ({rate}); "
              "the other frames could not be decoded (--strict fails instead)", file=sys.stderr)
    else:
        print(f"{PROG}: wrote {plural(frames, 'mask')} to {args.out} ({rate})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
