"""Safe output of a segmentation run: checked paths, a staged folder, the overlay video.

:func:`write_segmentation` segments a video (or frame folder) with a
:class:`~vidccnet.predict.VideoSegmenter` into an output folder::

    DIR/000000.png, 000001.png, ...   one palette PNG per frame (mode "P", value = class index,
                                      named by the source frame index, at the source size),
                                      or 000000.npz (key "mask") with fmt="npz"
    DIR/summary.json                  frames, fps, sizes, class shares, flicker rate, timing, ...

and optionally an overlay video (the frames with the coloured masks blended in), whose container
follows its extension (:data:`OVERLAY_CONTAINERS`). The rules that make it safe:

- :func:`check_paths` runs before anything is read or written (standard library only, so a
  command can call it before importing torch): the input exists and is not empty, the output
  folder is new, empty or explicitly overwritten, and nothing the run would replace or write
  into is, contains or lies inside the input, the checkpoint or each other;
- everything is written into a temporary folder next to DIR (:class:`StagedDir`) and renamed
  into place at the end, the overlay likewise (:class:`OverlayWriter`), the folder first:
  if the overlay's rename then fails, the folder is put back. An error or Ctrl-C leaves the
  previous state untouched, never a half-written output or masks and overlay of two runs.

This module imports only the standard library and numpy at import time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from vidccnet.cli import interrupt_behind, nearest_existing
from vidccnet.frame_time import round_ties_down

if TYPE_CHECKING:
    from vidccnet.predict import VideoSegmenter

__all__ = [
    "OVERLAY_CONTAINERS",
    "OutputPathError",
    "OverlayWriter",
    "StagedDir",
    "apply_umask",
    "check_paths",
    "overlay_container",
    "parse_frame_bound",
    "save_figure",
    "save_mask",
    "write_atomically",
    "write_segmentation",
]

log = logging.getLogger(__name__)

# overlay file extension -> (FFmpeg muxer, encoders tried in order)
_H264 = (("libx264", {"crf": "20", "preset": "veryfast"}), ("h264", {}),
         ("mpeg4", {"qscale": "3"}))
OVERLAY_CONTAINERS: dict[str, tuple[str, tuple[tuple[str, dict[str, str]], ...]]] = {
    ".mp4": ("mp4", _H264),
    ".m4v": ("mp4", _H264),
    ".mkv": ("matroska", _H264),
    ".mov": ("mov", _H264),
    ".avi": ("avi", _H264),
    ".webm": ("webm", (("libvpx-vp9", {"crf": "32", "b": "0", "deadline": "realtime",
                                       "cpu-used": "8"}),
                       ("libvpx", {"crf": "10", "b": "1M", "deadline": "realtime"}))),
}


class OutputPathError(ValueError):
    """An input or output path that cannot, or must not, be used (found before any work)."""


def _arg(name: str, cli: bool) -> str:
    """How a message names the argument ``name``: itself (``out``, ``fmt``), or with ``cli`` the
    flag of scripts/segment_video.py (``--out``, ``--format``)."""
    return {"fmt": "--format"}.get(name, f"--{name}") if cli else name


def _set(name: str, cli: bool) -> str:
    """How a message says to turn the option ``name`` on: ``overwrite=True`` / ``--overwrite``."""
    return f"--{name}" if cli else f"{name}=True"


def _is_within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies inside it (both already resolved)."""
    return path == folder or folder in path.parents


def _foreign_files(folder: Path) -> list[str]:
    """Names in ``folder`` that are not an earlier output of this module, as its summary.json
    (written last by every run) says: the masks of its frame range in its format
    (``000042.png`` / ``.npz``), the overlay video where it was written into the folder, and
    that summary.json. Without a readable summary.json every name is foreign: frames named
    ``000000.png`` or videos of the user's are not masks or an overlay."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, dict) or "frames" not in summary:
        return sorted(p.name for p in folder.iterdir())
    ours = {"summary.json"}
    overlay = summary.get("overlay")
    if overlay and summary.get("overlay_in_output", True):  # (absent before it was recorded)
        ours.add(Path(str(overlay)).name)
    try:
        start, end, fmt = int(summary["start"]), int(summary["end"]), str(summary["format"])
        ours |= {f"{i:06d}.{fmt}" for i in range(start, end)}
        numbered = False
    except (KeyError, TypeError, ValueError):  # a summary from before these were recorded
        numbered = True  # every numbered mask name counts as one

    def is_ours(p: Path) -> bool:
        return p.name in ours or (numbered and p.suffix in (".png", ".npz")
                                  and p.stem.isdigit())

    return sorted(p.name for p in folder.iterdir() if not p.is_file() or not is_ours(p))


def _resolve(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def overlay_container(path: str | os.PathLike[str], *, cli: bool = False) -> str:
    """The FFmpeg container (muxer) for an overlay file name, from its extension.

    Raises:
        OutputPathError: an extension not in :data:`OVERLAY_CONTAINERS`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in OVERLAY_CONTAINERS:
        known = ", ".join(OVERLAY_CONTAINERS)
        what = f"extension '{suffix}'" if suffix else "no extension"
        raise OutputPathError(
            f"{_arg('overlay', cli)} '{path}' has {what}; name the overlay video with one of "
            f"{known}"
        )
    return OVERLAY_CONTAINERS[suffix][0]


def _check_writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = nearest_existing(path.absolute().parent)
    if not parent.is_dir():
        raise OutputPathError(
            f"cannot write {what} '{path}' ('{parent}' is not a folder); choose a writable location"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"cannot write {what} '{path}' (no write permission in '{parent}'); choose a "
            "writable location"
        )


def check_paths(
    source: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    overlay: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike[str] | None] = (),
    cli: bool = False,
) -> None:
    """Refuse inputs and outputs that cannot work or would destroy something, before any work.

    Checks (standard library only: nothing is decoded, created or imported):

    - ``source`` (None for an in-memory reader): exists; a file is readable and not empty; a
      folder is readable and holds at least one file;
    - ``out``: a folder path that does not exist, is empty, or may be replaced (``overwrite``);
      its nearest existing parent is a writable folder;
    - ``overlay``: a known video extension (:data:`OVERLAY_CONTAINERS`), not an existing folder,
      not an existing file unless ``overwrite``, its folder writable;
    - safety: ``out`` (which the run replaces as a whole) must not be, contain, or lie inside
      ``source``, and must not contain any path in ``protect`` (e.g. the checkpoint);
      ``overlay`` must not be ``source`` (or any file under a source folder), a protected path,
      ``out`` itself or inside a sub-folder of ``out``.

    Messages name the arguments (``out``, ``overwrite=True``); with ``cli`` the flags of
    scripts/segment_video.py (``--out``, ``--overwrite``).

    Raises:
        OutputPathError: with a one-line message naming the path and what to do.
    """
    o, ov, ow = _arg("out", cli), _arg("overlay", cli), _set("overwrite", cli)
    for name, path in (("input", source), (o, out), (ov, overlay)):
        if path is not None and os.fspath(path) == "":
            raise OutputPathError(f"the {name} path is empty (an unset variable?); pass a path")
    out_p = Path(os.path.expanduser(os.fspath(out)))
    out_r = _resolve(out_p)
    src_r = None
    if source is not None:
        src = Path(os.path.expanduser(os.fspath(source)))
        if not src.exists():
            raise OutputPathError(
                f"input '{source}' not found; pass a video file or a folder of frames"
            )
        src_r = _resolve(src)
        if src.is_dir():
            try:
                entries = list(src.iterdir())
                has_file = any(p.is_file() for p in entries)
                subdirs = [] if has_file else sorted(p for p in entries if p.is_dir())
                filled = [d for d in subdirs if any(p.is_file() for p in d.iterdir())]
            except OSError as exc:
                raise OutputPathError(
                    f"cannot read the input folder '{source}' ({exc.strerror or exc})"
                ) from None
            if not has_file and subdirs:  # e.g. a folders-dataset video: origin/ and mask/
                pick = next((d for d in filled if d.name == "origin"),
                            filled[0] if filled else subdirs[0])
                names = ", ".join(f"'{d.name}'" for d in subdirs[:5])
                raise OutputPathError(
                    f"cannot read video '{source}': the folder holds no files, only the folders "
                    f"{names}{' ...' if len(subdirs) > 5 else ''}; pass the folder of frames "
                    f"itself (e.g. '{Path(source) / pick.name}')")
            if not has_file:
                raise OutputPathError(
                    f"cannot read video '{source}': no image files in folder (it is empty)"
                )
        else:
            if not src.is_file():
                raise OutputPathError(f"input '{source}' is not a regular file or a folder")
            if src.stat().st_size == 0:
                raise OutputPathError(f"cannot read video '{source}': file is empty (0 bytes)")
            if not os.access(src, os.R_OK):
                raise OutputPathError(f"cannot read video '{source}': no read permission")
    protected = [_resolve(p) for p in protect if p is not None]

    # --out
    if src_r is not None:
        if _is_within(out_r, src_r) and src_r.is_dir():
            where = "is" if out_r == src_r else "is inside"
            raise OutputPathError(
                f"{o} '{out}' {where} the input folder '{source}'; write the masks elsewhere"
            )
        if out_r == src_r:
            raise OutputPathError(f"{o} '{out}' is the input video; write the masks elsewhere")
        if _is_within(src_r, out_r):
            raise OutputPathError(
                f"{o} '{out}' contains the input '{source}', and the output replaces that "
                "whole folder; choose another output folder"
            )
    for p in protected:
        if _is_within(p, out_r):
            raise OutputPathError(
                f"{o} '{out}' contains '{p}', which the run needs, and the output replaces "
                "that whole folder; choose another output folder"
            )
    if out_p.exists() and not out_p.is_dir():
        raise OutputPathError(f"{o} '{out}' exists and is not a folder; choose a folder path")
    if out_p.is_dir():
        try:
            non_empty = any(out_p.iterdir())
        except OSError as exc:
            raise OutputPathError(f"cannot read {o} '{out}' ({exc.strerror or exc})") from None
        if non_empty and not overwrite:
            raise OutputPathError(
                f"{o} '{out}' exists and is not empty; choose a new folder or pass {ow}"
            )
        if non_empty:
            foreign = _foreign_files(out_p)
            if foreign:
                listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise OutputPathError(
                    f"{o} '{out}' holds {listed}, which this tool did not write; {ow} "
                    "replaces only an earlier output (masks, the overlay its summary.json names, "
                    "that summary.json): choose another folder"
                )
    if out_p.exists() and out_r == _resolve(Path.cwd()):
        raise OutputPathError(
            f"{o} '{out}' is the current folder, which cannot be replaced; name a sub-folder"
        )
    _check_writable_parent(out_p, "the output folder")

    # --overlay
    if overlay is None:
        return
    ov_p = Path(os.path.expanduser(os.fspath(overlay)))
    ov_r = _resolve(ov_p)
    if ov_r == out_r:
        raise OutputPathError(f"{ov} '{overlay}' is the {o} folder; name a video file")
    if src_r is not None:
        same = ov_r == src_r or (ov_p.exists() and os.path.samefile(ov_p, src_r))
        if same or (src_r.is_dir() and _is_within(ov_r, src_r)):
            where = "is" if same else "is inside"
            raise OutputPathError(
                f"{ov} '{overlay}' {where} the input '{source}'; write the overlay elsewhere"
            )
    if ov_r.parent != out_r and _is_within(ov_r, out_r):
        raise OutputPathError(
            f"{ov} '{overlay}' is in a sub-folder of {o}; put it directly in {o} "
            "(it is then written with the masks) or outside it"
        )
    if any(ov_r == p for p in protected):
        raise OutputPathError(f"{ov} '{overlay}' is a file the run needs; choose another")
    overlay_container(ov_p, cli=cli)
    if ov_p.is_dir():
        raise OutputPathError(f"{ov} '{overlay}' is a folder; name a video file")
    if ov_p.exists() and not overwrite:
        raise OutputPathError(
            f"{ov} '{overlay}' already exists; choose another file or pass {ow}"
        )
    if not _is_within(ov_r.parent, out_r):  # inside DIR it is staged with the masks
        if not ov_p.absolute().parent.is_dir():
            raise OutputPathError(
                f"cannot write the overlay video '{overlay}' (its folder does not exist)"
            )
        _check_writable_parent(ov_p, "the overlay video")


def parse_frame_bound(text: str | int | None, fps: float, name: str = "start",
                      index_at: Callable[[float], int] | None = None, *,
                      cli: bool = False) -> int | None:
    """``120`` / ``"120"`` -> frame 120; ``"4.5s"`` -> ``index_at(4.5)`` (the reader's frame at
    that time, exact on variable-frame-rate video), else the frame nearest to ``4.5 * fps`` (a
    half goes to the earlier frame); None -> None. Messages call the value ``name``, or with
    ``cli`` the flag ``--name``.

    Raises:
        OutputPathError: text that is neither a frame index nor a time in seconds.
    """
    if text is None:
        return None
    if isinstance(text, int):
        value = str(text)
    else:
        value = str(text).strip().lower()
    try:
        if value.endswith("s"):
            seconds = float(value[:-1])
            if seconds < 0 or not math.isfinite(seconds):
                raise ValueError
            if index_at is not None:
                return index_at(seconds)
            return round_ties_down(seconds * fps)
        frame = int(value)
        if frame < 0:
            raise ValueError
        return frame
    except ValueError:
        raise OutputPathError(
            f"{_arg(name, cli)} {text!r} is not a frame index (e.g. 120) or a time in seconds "
            "(e.g. 4.5s)"
        ) from None


def apply_umask(path: str | Path, mode: int) -> None:
    """Give a file made by mkstemp / mkdtemp (0600 / 0700) the usual permissions."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary file in ``path``'s
    folder (``.NAME.*.tmp``), which is flushed to disk and then renamed over ``path`` (a failed
    or interrupted write, or a crash, leaves an earlier file and no temporary behind)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # else a power cut can leave an empty file under the name
        apply_umask(tmp, 0o666)  # mkstemp makes it 0600; a plain open() would not
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cut = interrupt_behind(exc)
        if cut is not None and cut is not exc:  # the writer failed to close what Ctrl-C cut
            raise cut from None
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (:func:`write_atomically`)."""
    write_atomically(path, lambda f: f.write(text.encode()))


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> None:
    """``fig.savefig`` in the format of ``path``'s extension, whole or not at all
    (:func:`write_atomically`): an interrupted save leaves no half picture."""
    fmt = Path(path).suffix[1:].lower() or None
    write_atomically(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def _through_link(path: str | os.PathLike[str]) -> Path:
    """``path``, or the path a symlink at ``path`` points to (resolved), so that the rename into
    place replaces the target, not the link."""
    return Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)


class StagedDir:
    """A temporary folder next to the output folder, renamed into place by :meth:`commit`.

    ``create()`` makes the missing parents of ``out`` (removed again by ``abort()``) and the
    temporary folder; ``commit()`` replaces ``out`` (empty, or any content when overwriting) in
    two renames; ``abort()`` removes what ``create()`` made. The paths are not re-validated
    here: call :func:`check_paths` first.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
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
            raise OutputPathError(
                f"cannot write the output folder '{self.out}' ({exc.strerror or exc}); choose a "
                "writable location"
            ) from None
        return self.tmp

    def commit(self) -> None:
        """Rename the staged folder to ``out``; the previous ``out`` is removed."""
        self._discard(self._swap())

    def _swap(self) -> Path | None:
        """Put the staged folder in place of ``out``, the previous ``out`` (if any) aside in
        the folder returned, for :meth:`_unswap` or :meth:`_discard`. A failure puts the
        previous ``out`` back."""
        if self.tmp is None:
            raise RuntimeError("StagedDir.commit() without create()")
        apply_umask(self.tmp, 0o777)
        old = None
        if self.out.exists():  # an empty folder, or overwrite
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.tmp.parent))
            os.replace(self.out, old / "previous")
        try:
            os.replace(self.tmp, self.out)
        except BaseException:
            self._restore(old)
            raise
        return old

    def _unswap(self, old: Path | None) -> None:
        """Undo :meth:`_swap`: the new folder is staged again, the previous ``out`` back."""
        os.replace(self.out, self.tmp)
        self._restore(old)

    def _restore(self, old: Path | None) -> None:
        if old is not None:
            os.replace(old / "previous", self.out)
            old.rmdir()

    def _discard(self, old: Path | None) -> None:
        """After :meth:`_swap`: the output stays; remove the previous one."""
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
    """Encodes the overlay video into a temporary file, renamed to its path by :meth:`commit`.

    Args:
        path: final file; its extension picks the container (:data:`OVERLAY_CONTAINERS`).
        fps: frame rate (30 when unknown).
        staged_dir: when the overlay goes inside the staged output folder, that folder (the
            file then moves with it); else the temporary file is made next to ``path``.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float,
                 staged_dir: Path | None = None) -> None:
        import av

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        container = overlay_container(self.path)
        directory = staged_dir if staged_dir is not None else self.path.absolute().parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.tmp-", suffix=suffix,
                                       dir=directory)
            os.close(fd)
        except OSError as exc:
            raise OutputPathError(
                f"cannot write the overlay video '{path}' ({exc.strerror or exc}); its folder "
                "must exist and be writable"
            ) from None
        self.tmp: Path | None = Path(tmp)
        self.final = (staged_dir / self.path.name) if staged_dir is not None else self.path
        rate = Fraction(fps if fps > 0 else 30.0).limit_denominator(1001)
        try:
            self.container = av.open(str(self.tmp), "w", format=container)
        except (av.FFmpegError, ValueError) as exc:
            self.abort()
            raise OutputPathError(f"cannot create the overlay video '{path}' ({exc})") from None
        self.stream = None
        encoders = OVERLAY_CONTAINERS[suffix][1]
        for codec, options in encoders:
            try:
                self.stream = self.container.add_stream(codec, rate=rate, options=options)
                break
            except (av.FFmpegError, ValueError, KeyError):
                continue
        if self.stream is None:
            self.abort()
            names = ", ".join(c for c, _ in encoders)
            raise OutputPathError(
                f"this FFmpeg build has none of the encoders {names} for '{suffix}' overlays; "
                "choose another extension for the overlay video"
            )
        self.codec = self.stream.codec_context.name
        self.stream.pix_fmt = "yuv420p"
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) RGB frame (odd sizes are padded by one row / column)."""
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
        """Flush the encoder and close the file (still under its temporary name)."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def commit(self) -> None:
        if self.tmp is None:
            raise RuntimeError("OverlayWriter.commit() twice or after abort()")
        apply_umask(self.tmp, 0o666)
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
    """One uint8 (H, W) mask as ``path_stem.png`` (palette PNG) or ``path_stem.npz``."""
    from vidccnet.visualize import mask_to_image

    if fmt == "png":
        mask_to_image(mask, palette).save(path_stem.with_suffix(".png"), optimize=False)
    else:
        np.savez_compressed(path_stem.with_suffix(".npz"), mask=mask)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _Progress:
    """A tqdm bar on a terminal; otherwise a log line (frames, frames/s, ETA) every interval."""

    def __init__(self, total: int | None, mode: bool | None, interval: float) -> None:
        self.total, self.interval = total, interval
        self.bar = None
        self.logging = False
        if mode is None:
            mode = "bar" if sys.stderr.isatty() else "log"
        if mode is True or mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", desc="segmenting", dynamic_ncols=True,
                            mininterval=0.5, file=sys.stderr)
        elif mode == "log":
            self.logging = True
        self.t0 = self.last = time.perf_counter()
        self.done = 0

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.perf_counter()
        if not self.logging or now - self.last < self.interval:
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        if self.total:
            eta = _duration(max(0, self.total - self.done) / rate)
            log.info("%d/%d frames, %.2f frames/s, ETA %s", self.done, self.total, rate, eta)
        else:
            log.info("%d frames, %.2f frames/s", self.done, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_frames(path: Path) -> bool:
    """Whether ``path`` is a folder of frames or an image file (no frame rate of its own)."""
    from vidccnet.data.video import IMAGE_EXTENSIONS

    return path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS


def _commit(staged: StagedDir, overlay: OverlayWriter | None) -> None:
    """Rename the staged folder and the overlay into place together: when either rename fails
    (or is interrupted), both are left as they were."""
    if overlay is not None and overlay.final.parent == staged.tmp:  # moves with the folder
        overlay.commit()
        overlay = None
    previous = staged._swap()
    try:
        if overlay is not None:
            overlay.commit()
    except BaseException:
        staged._unswap(previous)
        raise
    staged._discard(previous)


def write_segmentation(
    segmenter: VideoSegmenter,
    source: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    *,
    overlay: str | os.PathLike[str] | None = None,
    alpha: float = 0.5,
    fmt: str = "png",
    start: int | str | None = None,
    end: int | str | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool | str | None = None,
    progress_interval: float = 30.0,
    fps: float | None = None,
    cli: bool = False,
) -> dict[str, Any]:
    """Segment ``source`` into the folder ``out`` (and the ``overlay`` video), all or nothing.

    Args:
        segmenter: the model and its options (clip length, stride, inference size, device).
        source: video file or frame folder, or an opened reader (see ``VideoSegmenter.stream``).
        out: output folder (see the module docstring for its content).
        overlay: optional overlay video path; container from the extension.
        alpha: mask opacity in the overlay, in [0, 1].
        fmt: "png" (palette PNGs) or "npz".
        start, end: frame range ``[start, end)``: frame indices or times like ``"4.5s"``; an
            ``end`` past the last frame stops there, with a warning.
        strict: fail on a truncated or corrupt video instead of keeping the frames that decode.
        overwrite: replace a non-empty ``out`` and an existing ``overlay``.
        progress: None = a tqdm bar on a terminal, else a log line (INFO, logger
            ``vidccnet.writer``) with frames/s and the ETA every ``progress_interval`` seconds;
            True / "bar" = always the bar; "log" = always log lines; False = nothing.
        fps: frame rate of a frame folder or image source (default 30): the seconds of
            ``start`` / ``end``, ``summary.json``'s fps and the overlay's rate. A video file
            has its own rate (passing ``fps`` for one is an error).
        cli: word error messages with the flags of scripts/segment_video.py (``--out``,
            ``--overwrite``, ``--format``) instead of these arguments' names.

    Returns:
        The summary, also written to ``out/summary.json``.

    Raises:
        OutputPathError: an unusable or unsafe path (see :func:`check_paths`), nothing written.
        ValueError: bad options, an empty range, or no decodable frame.
        vidccnet.data.video.VideoReadError, vidccnet.predict.TruncatedVideoError: unreadable or
            (with ``strict``) truncated input. After any error nothing has been written.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{_arg('alpha', cli)} must be in [0, 1], got {alpha}")
    if fmt not in ("png", "npz"):
        raise ValueError(f"{_arg('fmt', cli)} must be 'png' or 'npz', got {fmt!r}")
    path_source = source if isinstance(source, (str, os.PathLike)) else None
    if fps is not None:
        if not 0.0 < fps < float("inf"):
            raise ValueError(f"{_arg('fps', cli)} must be a positive number of frames per "
                             f"second, got {fps}")
        if path_source is None or not _is_frames(Path(path_source)):
            raise ValueError(f"{_arg('fps', cli)} sets the rate of a folder of frames or an "
                             "image; a video file (or an opened reader) has its own: leave "
                             f"{_arg('fps', cli)} out")
    # a symlinked --out / --overlay (a scratch disk): write to its target, keep the link
    out = _through_link(out)
    overlay = _through_link(overlay) if overlay is not None else None
    check_paths(path_source, out, overlay=overlay, overwrite=overwrite,
                protect=[segmenter.checkpoint_path], cli=cli)
    import torch

    from vidccnet.data.video import open_video
    from vidccnet.metrics import FlickerMeter
    from vidccnet.visualize import overlay as blend

    out = Path(out)
    overlay_path = Path(overlay) if overlay is not None else None
    staged = StagedDir(out)
    writer: OverlayWriter | None = None
    stream = None
    reader = (open_video(source, backend=segmenter.backend, fps=fps) if path_source is not None
              else source)
    try:
        # the reader's rate: the video's own, or the ``fps`` argument for frames and images
        reader_fps = float(getattr(reader, "fps", 0.0) or 0.0)
        index_at = getattr(reader, "index_at", None)  # a video by its timestamps
        first = parse_frame_bound(start, reader_fps, "start", index_at, cli=cli)
        stop = parse_frame_bound(end, reader_fps, "end", index_at, cli=cli)
        start_arg, end_arg = _arg("start", cli), _arg("end", cli)
        if first is not None and first >= len(reader):
            raise ValueError(f"{start_arg} {start} is beyond the video's {len(reader)} frames")
        if stop is not None and stop <= (first or 0):
            raise ValueError(f"{end_arg} {end} (frame {stop}) must come after {start_arg} "
                             f"{start or 0} (frame {first or 0})")
        if stop is not None and stop > len(reader):
            log.warning("%s %s is past the video's %d frames: segmenting up to its last frame",
                        end_arg, end, len(reader))
        stream = segmenter.stream(reader, first, stop, with_frames=overlay_path is not None,
                                  strict=strict)
        log.info("%s", segmenter.describe_size(*stream.size))
        tmp = staged.create()
        if overlay_path is not None:
            inside = _resolve(overlay_path).parent == _resolve(out)
            writer = OverlayWriter(overlay_path, stream.fps, tmp if inside else None)
        k = segmenter.num_classes
        counts = np.zeros(k, dtype=np.int64)
        flicker = FlickerMeter()
        bar = _Progress(stream.expected_frames, progress, progress_interval)
        t0 = time.perf_counter()
        try:
            for item in stream:
                if writer is not None:
                    index, frame, mask = item
                    writer.write(blend(frame, mask, segmenter.palette, alpha))
                else:
                    index, mask = item
                save_mask(tmp / f"{index:06d}", mask, fmt, segmenter.palette)
                counts += np.bincount(mask.ravel(), minlength=k)[:k]
                flicker.update(torch.from_numpy(mask))
                bar.update()
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        if stream.frames_done == 0:
            raise ValueError(f"no frame of '{source}' could be decoded; is it a valid video?")
        if writer is not None:
            writer.finish()
        pixels = max(1, int(counts.sum()))
        files = getattr(reader, "files", None)  # a frame folder: which file each mask is of
        summary = {
            "input": str(source) if path_source is not None else type(source).__name__,
            "frames": stream.frames_done,
            "frames_lost": stream.frames_lost,
            "decode_error": stream.decode_error,
            "fps": stream.fps,
            "size": list(stream.size),
            "inference_size": list(stream.inference_size),
            "size_mode": segmenter.size_mode,
            "start": stream.start,
            "end": stream.start + stream.frames_done,
            "source_files": None if files is None else [
                Path(f).name for f in files[stream.start:stream.start + stream.frames_done]],
            "class_names": segmenter.class_names,
            "palette": [list(c) for c in segmenter.palette[:k]],
            "class_pixel_share": {
                name: float(c) / pixels for name, c in zip(segmenter.class_names, counts)
            },
            "flicker_rate": flicker.compute(),
            "seconds": round(seconds, 3),
            "frames_per_second": round(stream.frames_done / max(seconds, 1e-9), 3),
            "checkpoint": segmenter.checkpoint_path,
            "model": segmenter.model_name,
            "clip_len": segmenter.clip_len,
            "stride": segmenter.stride,
            "frame_stride": segmenter.frame_stride,
            "device": str(segmenter.device),
            "amp": segmenter.amp,
            "format": fmt,
            "overlay": str(overlay_path) if overlay_path is not None else None,
            "overlay_in_output": overlay_path is not None and inside,
        }
        with open(tmp / "summary.json", "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        _commit(staged, writer)
        writer = None
        return summary
    finally:
        if writer is not None:
            writer.abort()
        staged.abort()
        if stream is not None:
            stream.close()
        if path_source is not None:
            reader.close()

