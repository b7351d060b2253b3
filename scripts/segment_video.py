"""Segment a video file or a folder of frames with a trained vidccnet checkpoint.

    python scripts/segment_video.py input.mp4 --out masks/
    python scripts/segment_video.py input.mp4 --out masks/ --overlay overlay.mp4 --max-size 360
    python scripts/segment_video.py frames_dir/ --out masks/ --checkpoint runs/camvid/best.pt

DIR receives one palette PNG per frame (``000000.png``, ... named by the source frame index; mode
"P", pixel value = class index, the dataset's palette attached) at the source frame size, or
``000000.npz`` files (key ``mask``) with ``--format npz``, and ``summary.json``. The checkpoint
comes from ``--checkpoint``, else ``$VIDCCNET_CHECKPOINT``, else ``runs/demo/best.pt``.

Inference streams: frames are decoded, resized (``--max-size`` caps the short side), grouped into
overlapping causal clips of ``--clip-len`` frames of which the last ``--stride`` are written per
forward pass (see ``vidccnet.predict``), so memory does not depend on the video's length.

Everything is written to a temporary folder next to DIR and moved into place at the end: a
failure or Ctrl-C leaves no partial output. Expected errors print one line on stderr and exit
with code 2 (130 after Ctrl-C). ``--start`` / ``--end`` take frame indices (``120``) or seconds
(``4.5s``); ``--end`` is exclusive.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vidccnet.cli import one_line

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEFAULT_CHECKPOINT = Path("runs") / "demo" / "best.pt"
REPO_ROOT = Path(__file__).resolve().parent.parent
PROG = "segment_video.py"

log = logging.getLogger("segment_video")


class UserError(Exception):
    """An expected problem with the inputs: reported as one line, exit code 2."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Segment a video file or a folder of frames into per-frame class masks.",
    )
    p.add_argument("input", help="video file (anything FFmpeg decodes) or a folder of frames")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist "
                   "or be empty, unless --overwrite)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="trained checkpoint (default: $VIDCCNET_CHECKPOINT, runs/demo/best.pt)")
    p.add_argument("--overlay", default=None, metavar="OUT.mp4",
                   help="also write the video with the coloured masks blended in (same fps)")
    p.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay")
    p.add_argument("--format", choices=("png", "npz"), default="png",
                   help="palette PNGs (default) or compressed .npz files (key 'mask')")
    p.add_argument("--clip-len", type=int, default=None, metavar="T",
                   help="frames per forward pass (default: from the checkpoint's config)")
    p.add_argument("--stride", type=int, default=None, metavar="S",
                   help="frames written per forward pass, 1..T (default: ceil(T/2); 1 = strictly "
                   "causal, slowest)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--max-size", type=int, default=None, metavar="PX",
                   help="shrink frames so the short side is at most PX for inference")
    p.add_argument("--backend", choices=("av", "decord"), default="av", help="video decoder")
    p.add_argument("--start", default=None, help="first frame: index (120) or seconds (4.5s)")
    p.add_argument("--end", default=None, help="stop before this frame: index or seconds")
    p.add_argument("--strict", action="store_true",
                   help="fail on a truncated / corrupt video instead of keeping decoded frames")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR / overlay")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ inputs
def find_checkpoint(arg: str | None) -> Path:
    """--checkpoint, else $VIDCCNET_CHECKPOINT, else runs/demo/best.pt (cwd, then repo root)."""
    for source, value in (("--checkpoint", arg),
                          ("$VIDCCNET_CHECKPOINT", os.environ.get("VIDCCNET_CHECKPOINT"))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise UserError(
                    f"checkpoint '{path}' (from {source}) not found; pass an existing .pt file "
                    "written by scripts/train.py or scripts/demo.py"
                )
            return path
    for path in (DEFAULT_CHECKPOINT, REPO_ROOT / DEFAULT_CHECKPOINT):
        if path.is_file():
            return path
    raise UserError(
        "no checkpoint: pass --checkpoint PATH or set VIDCCNET_CHECKPOINT; to get one, run "
        "`python scripts/demo.py` (trains a small model into runs/demo/best.pt in minutes) or "
        "train with scripts/train.py"
    )


def parse_bound(text: str | None, fps: float, name: str) -> int | None:
    """'120' -> frame 120; '4.5s' -> round(4.5 * fps); None -> None."""
    if text is None:
        return None
    value = text.strip().lower()
    try:
        if value.endswith("s"):
            seconds = float(value[:-1])
            if seconds < 0 or not math.isfinite(seconds):
                raise ValueError
            return int(round(seconds * fps))
        frame = int(value)
        if frame < 0:
            raise ValueError
        return frame
    except ValueError:
        raise UserError(
            f"--{name} {text!r} is not a frame index (e.g. 120) or a time in seconds (e.g. 4.5s)"
        ) from None


class StagedDir:
    """A temporary folder next to the final output folder, moved into place by :meth:`commit`."""

    def __init__(self, out: Path, overwrite: bool) -> None:
        self.out = out
        self.overwrite = overwrite
        if out.exists() and not out.is_dir():
            raise UserError(f"--out '{out}' exists and is not a folder; choose a folder path")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise UserError(
                f"--out '{out}' exists and is not empty; choose a new folder or pass --overwrite"
            )
        self.created: list[Path] = []  # parent folders made here (removed again on failure)
        self.tmp: Path | None = None

    def create(self) -> Path:
        parent = self.out.absolute().parent
        try:
            missing = []
            p = parent
            while not p.exists():
                missing.append(p)
                p = p.parent
            for d in reversed(missing):
                d.mkdir()
                self.created.append(d)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=parent))
        except OSError as exc:
            self.abort()
            raise UserError(
                f"cannot write the output folder '{self.out}' ({exc.strerror or exc}); choose a "
                "writable location for --out"
            ) from None
        return self.tmp

    def commit(self) -> None:
        assert self.tmp is not None
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual permissions
        old = None
        if self.out.exists():  # an empty folder, or --overwrite
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.tmp.parent))
            os.replace(self.out, old / "previous")
        os.replace(self.tmp, self.out)
        self.tmp = None
        self.created = []
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        for d in reversed(self.created):
            try:
                d.rmdir()
            except OSError:
                pass
        self.created = []


class OverlayWriter:
    """Encodes the overlay video into a temporary file, renamed to its path by :meth:`commit`."""

    def __init__(self, path: Path, fps: float, overwrite: bool, staged_dir: Path | None) -> None:
        import av

        self.path = path
        if path.exists() and (path.is_dir() or not overwrite):
            raise UserError(
                f"--overlay '{path}' already exists; choose another file or pass --overwrite"
            )
        directory = staged_dir if staged_dir is not None else path.absolute().parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix or ".mp4",
                                       dir=directory)
            os.close(fd)
        except OSError as exc:
            raise UserError(
                f"cannot write the overlay video '{path}' ({exc.strerror or exc}); its folder "
                "must exist and be writable"
            ) from None
        self.tmp: Path | None = Path(tmp)
        self.final = (staged_dir / path.name) if staged_dir is not None else path
        rate = Fraction(fps if fps > 0 else 30.0).limit_denominator(1001)
        try:
            self.container = av.open(str(self.tmp), "w")
        except (av.FFmpegError, ValueError) as exc:
            self.abort()
            raise UserError(f"cannot create the overlay video '{path}' ({exc})") from None
        self.stream = None
        for codec, options in (("libx264", {"crf": "20", "preset": "veryfast"}),
                               ("h264", {}), ("mpeg4", {"qscale": "3"})):
            try:
                self.stream = self.container.add_stream(codec, rate=rate, options=options)
                break
            except (av.FFmpegError, ValueError, KeyError):
                continue
        if self.stream is None:
            self.abort()
            raise UserError("no h264 or mpeg4 encoder in this FFmpeg build; drop --overlay")
        self.codec = self.stream.codec_context.name
        self.stream.pix_fmt = "yuv420p"
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        ph, pw = h + h % 2, w + w % 2  # 4:2:0 chroma needs even sizes: repeat the last row/col
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        if self._size is None:
            self._size = (ph, pw)
            self.stream.height, self.stream.width = ph, pw
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def finish(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def commit(self) -> None:
        assert self.tmp is not None
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(self.tmp, self.final)
        self.tmp = None

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort while failing anyway
            pass
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def save_mask(path_stem: Path, mask: np.ndarray, fmt: str, palette: Any) -> None:
    from vidccnet.visualize import mask_to_image

    if fmt == "png":
        mask_to_image(mask, palette).save(path_stem.with_suffix(".png"), optimize=False)
    else:
        np.savez_compressed(path_stem.with_suffix(".npz"), mask=mask)


# ------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Segment ``args.input`` into ``args.out``; returns the summary. Raises UserError & co."""
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if not Path(args.input).exists():
        raise UserError(f"input '{args.input}' not found; pass a video file or a folder of frames")
    ckpt_path = find_checkpoint(args.checkpoint)
    out = Path(args.out)
    staged = StagedDir(out, args.overwrite)  # validates --out before the slow parts
    overlay_path = Path(args.overlay) if args.overlay else None
    if overlay_path is not None and overlay_path.exists() and not args.overwrite:
        raise UserError(
            f"--overlay '{overlay_path}' already exists; choose another file or pass --overwrite"
        )
    import torch  # the slow imports come after the cheap checks above
    from tqdm import tqdm

    from vidccnet.data.video import open_video
    from vidccnet.metrics import FlickerMeter
    from vidccnet.predict import VideoSegmenter
    from vidccnet.visualize import overlay as blend

    reader = open_video(args.input, backend=args.backend)
    writer: OverlayWriter | None = None
    try:
        start = parse_bound(args.start, reader.fps, "start")
        end = parse_bound(args.end, reader.fps, "end")
        if start is not None and start >= len(reader):
            raise UserError(f"--start {args.start} is beyond the video's {len(reader)} frames")
        if end is not None and end <= (start or 0):
            raise UserError(f"--end {args.end} must come after --start {args.start or 0}")
        segmenter = VideoSegmenter(
            ckpt_path, device=args.device, clip_len=args.clip_len, stride=args.stride,
            amp=args.amp, max_size=args.max_size, backend=args.backend,
        )
        stream = segmenter.stream(reader, start, end, with_frames=overlay_path is not None,
                                  strict=args.strict)
        tmp = staged.create()
        if overlay_path is not None:
            inside = overlay_path.absolute().parent == out.absolute()
            writer = OverlayWriter(overlay_path, stream.fps, args.overwrite,
                                   tmp if inside else None)
        k = segmenter.num_classes
        counts = np.zeros(k, dtype=np.int64)
        flicker = FlickerMeter()
        t0 = time.perf_counter()
        bar = tqdm(total=stream.expected_frames, unit="frame", desc="segmenting",
                   disable=args.quiet, dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
        try:
            for item in stream:
                if writer is not None:
                    index, frame, mask = item
                    writer.write(blend(frame, mask, segmenter.palette, args.alpha))
                else:
                    index, mask = item
                save_mask(tmp / f"{index:06d}", mask, args.format, segmenter.palette)
                counts += np.bincount(mask.ravel(), minlength=k)[:k]
                flicker.update(torch.from_numpy(mask))
                bar.update(1)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        if stream.frames_done == 0:
            raise UserError(f"no frame of '{args.input}' could be decoded; is it a valid video?")
        if writer is not None:
            writer.finish()
        total = max(1, int(counts.sum()))
        summary = {
            "input": str(args.input),
            "frames": stream.frames_done,
            "frames_lost": stream.frames_lost,
            "decode_error": stream.decode_error,
            "fps": stream.fps,
            "size": list(stream.size),
            "inference_size": list(stream.inference_size),
            "start": stream.start,
            "end": stream.start + stream.frames_done,
            "class_names": segmenter.class_names,
            "palette": [list(c) for c in segmenter.palette[:k]],
            "class_pixel_share": {
                name: float(c) / total for name, c in zip(segmenter.class_names, counts)
            },
            "flicker_rate": flicker.compute(),
            "seconds": round(seconds, 3),
            "frames_per_second": round(stream.frames_done / max(seconds, 1e-9), 3),
            "checkpoint": str(ckpt_path),
            "model": segmenter.model_name,
            "clip_len": segmenter.clip_len,
            "stride": segmenter.stride,
            "device": str(segmenter.device),
            "amp": segmenter.amp,
            "format": args.format,
            "overlay": str(overlay_path) if overlay_path is not None else None,
        }
        with open(tmp / "summary.json", "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        if writer is not None:
            writer.commit()
            writer = None
        staged.commit()
        return summary
    finally:
        if writer is not None:
            writer.abort()
        staged.abort()
        reader.close()


def expected_errors() -> tuple[type[BaseException], ...]:
    """Error types reported as one line: ours plus those of the vidccnet modules imported so far
    (looked up lazily so that early failures do not pay for importing torch)."""
    types: list[type[BaseException]] = [UserError, ValueError]
    for module, name in (("vidccnet.data.video", "VideoReadError"),
                         ("vidccnet.engine.checkpoint", "CheckpointError"),
                         ("vidccnet.predict", "TruncatedVideoError")):
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    logging.getLogger("vidccnet.predict").setLevel(logging.ERROR)  # lost frames: reported below

    try:
        summary = run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except expected_errors() as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(f"{PROG}: error: out of memory; pass a smaller --max-size or --clip-len",
              file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: cannot write the output ({one_line(exc)}); check the free space "
              "and permissions of --out", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower() or args.debug:
            raise
        print(f"{PROG}: error: out of memory ({one_line(exc)[:120]}); pass a smaller "
              "--max-size or --clip-len, or --device cpu", file=sys.stderr)
        return EXIT_ERROR
    lost = summary["frames_lost"]
    if lost:
        print(f"{PROG}: warning: {lost} frame(s) could not be decoded ({summary['decode_error']});"
              f" wrote the {summary['frames']} that did (use --strict to fail instead)",
              file=sys.stderr)
    print(f"{PROG}: wrote {summary['frames']} masks to {args.out} "
          f"({summary['frames_per_second']:.2f} frames/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
