"""One reader interface over video files (PyAV, decord) and folders of frames.

`open_video(path)` returns a `VideoReader`: `len(reader)`, `.fps`, `.size` (H, W) after the
rotation tag is applied, `reader[i] -> np.uint8 (H, W, 3)` RGB, streaming iteration, `.get_batch`,
`.read_all(strict=...)`, `.close()` and use as a context manager. Every failure to read raises
`VideoReadError`, whose message names the file and the cause.

Random access with PyAV seeks to the keyframe at or before the wanted frame and decodes forward;
the decoder position is kept, so sequential access (`reader[i]`, `reader[i + 1]`, ...) decodes
each frame once. Where a seek cannot be exact, a backward jump decodes from the file's start
instead: AVI with B-frames (frames are counted in output order: AVI has no presentation times),
MPEG program streams (.mpg, .vob: timestamps after a seek are a frame off) and streams whose
packets lack timestamps (raw .h264, H.264 in .mpg). A decoded frame whose timestamp the index
lacks is never matched to a nearby one.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from vidccnet.frame_time import nearest_frame, round_ties_down

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class VideoReadError(RuntimeError):
    """A video file or frame folder cannot be read. `.path` and `.cause` hold the details."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot read video '{self.path}': {cause}")


class FrameFileError(VideoReadError):
    """One file of a frame folder cannot be decoded or differs in size from the first frame.

    Each frame is its own file, so this is never a truncated video: readers of a whole sequence
    fail instead of keeping the frames before it.
    """


class VideoReader:
    """Base class: a sequence of RGB frames with random access and streaming iteration."""

    path: str
    fps: float
    size: tuple[int, int]
    frames_lost: int = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame `index` as np.uint8 (H, W, 3) RGB; negative indices count from the end."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"frame {index} out of range for '{self.path}' ({n} frames)")
        return self._read(int(index))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def index_at(self, seconds: float) -> int:
        """The frame shown ``seconds`` after the first one, at ``fps`` (a half goes to the
        earlier frame, as with the timestamps of a video file)."""
        return round_ties_down(seconds * self.fps)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as np.uint8 (n, H, W, 3)."""
        unique = sorted(set(int(i) for i in indices))
        cache = {i: self[i] for i in unique}
        return np.stack([cache[int(i)] for i in indices])

    def read_all(self, strict: bool = False) -> np.ndarray:
        """All decodable frames, np.uint8 (L, H, W, 3).

        A truncated file yields the frames that decode; with `strict=True` it raises
        `VideoReadError` saying how many frames were lost, otherwise it logs a warning
        (the count stays in `.frames_lost`).
        """
        if self.frames_lost:
            msg = (f"truncated: {self.frames_lost} of the {len(self) + self.frames_lost} frames "
                   f"the header announces are missing, the file holds {len(self)}")
            if strict:
                raise VideoReadError(self.path, msg)
            logger.warning("%s: %s", self.path, msg)
        if len(self) == 0:
            return np.zeros((0, *self.size, 3), np.uint8)
        return np.stack(list(self))

    def close(self) -> None:
        """Release the file handles."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}('{self.path}', frames={len(self)}, fps={self.fps:g}, "
                f"size={self.size})")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "file not found")
    if not path.is_file():
        raise VideoReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")


def _rotate(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation (degrees, multiple of 90) to (H, W, 3)."""
    k = (int(round(rotation / 90.0))) % 4
    return np.ascontiguousarray(np.rot90(frame, k=k)) if k else frame


SEEK_BACK = (1, 3, 1 << 30)  # keyframes a retry steps back (the last: the file's start)


def _past_end(packet: Any, file_size: int) -> bool:
    """Whether a demuxed packet runs past ``file_size`` bytes (the partial packet at the end of
    a truncated file); False for a packet without a known position."""
    return packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > file_size


class PyAVReader(VideoReader):
    """Video file reader on PyAV (FFmpeg). See the module docstring.

    The last `cache_frames` decoded frames are kept, so overlapping clips (a sliding window
    over the video) decode every frame once.
    """

    def __init__(self, path: str | os.PathLike, cache_frames: int = 16) -> None:
        import av

        self.path = str(path)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, int(cache_frames))
        p = Path(path)
        _check_file(p)
        self._av = av
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoReadError(path, f"not a video or unreadable container ({e})") from e
        try:
            self._init_stream(p)
        except BaseException:
            self._container.close()
            raise

    def _init_stream(self, p: Path) -> None:
        c = self._container
        if not c.streams:
            raise VideoReadError(p, "no streams found (file truncated or not a video)")
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams})
            raise VideoReadError(p, f"no video stream (only {', '.join(kinds)})")
        from av.stream import Disposition

        if all(int(s.disposition or 0) & int(Disposition.attached_pic) for s in c.streams.video):
            others = ", ".join(sorted({s.type for s in c.streams if s.type != "video"}))
            raise VideoReadError(p, "no video stream (only "
                                 f"{others + ' and ' if others else ''}a cover picture)")
        self._index_packets(p)  # chooses self._stream, the main video
        vs = self._stream
        if not self._pts:
            raise VideoReadError(p, "no decodable video frames (file truncated or corrupt)")
        # the container's rate when the frames' own average (first to last timestamp) agrees
        # with it within 1 % (millisecond timestamps round it), else the frames' own: the
        # container may state the encoder's nominal rate (a variable-rate MKV says 30 for 9)
        stated = vs.average_rate or vs.guessed_rate or vs.base_rate
        own = self._indexed_rate()
        rate = stated if stated and (own is None or self._agrees(float(stated))) else own
        self.fps = float(rate) if rate else 30.0
        self._expected = self._expected_frames()
        self.frames_lost = max(0, self._expected - len(self._pts))
        self._frames: Iterator | None = None
        self._starts: list[float] | None = None  # frame start times (s), made by index_at
        self._next = 0  # index of the frame the decoder yields next
        self.rotation = 0
        first = self._first_frame()
        self.rotation = int(getattr(self._last_frame, "rotation", 0) or 0)
        first = _rotate(first, self.rotation)
        self._put(0, first)
        self.size = (int(first.shape[0]), int(first.shape[1]))

    def _index_packets(self, p: Path) -> None:
        """Demux (no decoding) to list frame timestamps and keyframes, in display order, of
        every video stream, and keep the main video's (``_main_video_rank``: a preview track,
        cover art or a still may come first)."""
        self._file_size = file_size = p.stat().st_size
        streams = list(self._container.streams.video)
        found: dict[int, tuple[list[tuple[int | None, bool]], list[bool]]] = {
            s.index: ([], []) for s in streams}
        discarded = dict.fromkeys(found, 0)  # cut off by an MP4 edit list: never shown
        count = 0
        try:
            for pkt in self._container.demux(*streams):
                if pkt.size == 0 or pkt.stream.index not in found:
                    continue
                if _past_end(pkt, file_size):
                    continue  # partial packet at the end of a truncated file
                if getattr(pkt, "is_discard", False):  # decoded as a reference, never output
                    discarded[pkt.stream.index] += 1
                    continue
                entries, corrupt = found[pkt.stream.index]
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                entries.append((None if ts is None else int(ts), bool(pkt.is_keyframe)))
                corrupt.append(bool(pkt.is_corrupt))
                count += 1
        except self._av.FFmpegError as e:
            logger.warning("%s: demuxing stopped after %d packets (%s)", self.path, count, e)
        for entries, corrupt in found.values():
            while corrupt and corrupt[-1]:  # short read at the end of a truncated file
                corrupt.pop()
                entries.pop()
        self._stream = max(streams, key=lambda v: self._main_video_rank(v, len(found[v.index][0])))
        entries = found[self._stream.index][0]
        # packets without a timestamp (raw .h264; H.264 in MPEG-PS, where 57 of 60 lack one):
        # the index counts every packet in decode order, timed or not
        self._timed = all(ts is not None for ts, _ in entries)
        formats = set(self._container.format.name.split(","))
        # AVI stores no presentation times: where no parser restores them (H.264; MPEG-4
        # Part 2's and MPEG-2's do) FFmpeg stamps packets in decode order, rising with the
        # packets, and with B-frames decoded frames carry shuffled timestamps; MPEG-1's parser
        # stamps display times one frame off: frames are counted instead of both
        rising = self._timed and all(a[0] <= b[0] for a, b in zip(entries, entries[1:]))
        reorders = bool(getattr(self._stream.codec_context, "has_b_frames", 1))
        displayed = self._stream.codec_context.name in ("mpeg4", "mpeg2video")  # parser-timed
        # MPEG-PS: after a seek the parser stamps the first packets a frame late or half a
        # frame off, and with B-frames it can give two packets one timestamp: decoding starts
        # at the file's start there, and frames are counted
        program_stream = bool(formats & {"mpeg", "mpegvideo"})
        self._by_count = not self._timed or program_stream or (
            "avi" in formats and reorders and (rising or not displayed))
        entries = sorted(entries) if self._timed else [
            (i, key) for i, (_, key) in enumerate(entries)]
        self._seekable = not self._by_count
        self._discarded = discarded[self._stream.index]
        self._pts = [e[0] for e in entries]
        self._pts_index = _first_indices(self._pts)
        self._keyframes = [i for i, e in enumerate(entries) if e[1]] or [0]
        if self._keyframes[0] != 0:
            self._keyframes.insert(0, 0)

    @staticmethod
    def _main_video_rank(stream: Any, packets: int) -> tuple:
        """Sort key of the main video among a file's video streams: not cover art or a still,
        more than one frame, the largest (as decord's choice), the default one, the most
        frames."""
        disposition = int(getattr(stream, "disposition", 0) or 0)
        from av.stream import Disposition

        still = disposition & int(Disposition.attached_pic | Disposition.still_image)
        return (not still, packets > 1, (stream.width or 0) * (stream.height or 0),
                bool(disposition & int(Disposition.default)), packets)

    def _agrees(self, rate: float) -> bool:
        """Whether the indexed timestamps span what ``rate`` says, within 1 % or two ticks of
        the time base (millisecond timestamps round a short clip's span)."""
        tb = float(self._stream.time_base)
        span = (self._pts[-1] - self._pts[0]) * tb
        return abs(span - (len(self._pts) - 1) / rate) <= max(0.01 * span, 2 * tb)

    def _indexed_rate(self) -> float | None:
        """Frames per second from the indexed timestamps (first to last), None for one frame."""
        tb = self._stream.time_base
        if not self._timed or len(self._pts) < 2 or tb is None or self._pts[-1] <= self._pts[0]:
            return None
        return (len(self._pts) - 1) / float((self._pts[-1] - self._pts[0]) * tb)

    def index_at(self, seconds: float) -> int:
        """The frame shown ``seconds`` after the first one: the nearest timestamp (exact on a
        variable-frame-rate video, where ``seconds * fps`` is not; see
        :func:`vidccnet.frame_time.nearest_frame`)."""
        tb = self._stream.time_base
        if not self._timed or tb is None or len(self._pts) < 2:
            return round_ties_down(seconds * self.fps)
        if self._starts is None:
            self._starts = [(ts - self._pts[0]) * float(tb) for ts in self._pts]
        return nearest_frame(self._starts, seconds, self.fps)

    def _expected_frames(self) -> int:
        vs, n = self._stream, len(self._pts)
        if vs.frames and vs.frames > 0:
            return int(vs.frames) - self._discarded
        if not self._timed:  # no timestamps to compare a duration with
            return n
        duration = None
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif (tagged := _duration_tag(vs.metadata)) is not None:  # MKV / WebM
            duration = tagged
        elif len(self._container.streams) == 1 and self._container.duration is not None:
            duration = self._container.duration / 1e6  # the longest stream's: the video's here
        if duration is None:
            return n
        # frames of the stated duration past the indexed ones (a truncated file), at the rate
        # of the frames' usual step, the mean of the steps up to 1.5x their median (a file cut
        # among B-frames leaves a gap before its last frame, which lowers their average rate;
        # millisecond stamps step 33 or 34 at 30 fps, whose median says 30.3): gaps between
        # indexed frames (a variable rate) are not counted as lost
        tb = vs.time_base
        rate = self.fps
        if n > 2 and tb is not None and (med := float(np.median(d := np.diff(self._pts)))) > 0:
            rate = 1 / (float(d[(d > 0) & (d <= 1.5 * med)].mean()) * float(tb))
        covered = n / rate if n < 2 or tb is None else max(  # the duration may count from
            float((self._pts[-1] - self._pts[0]) * tb), float(self._pts[-1] * tb)  # 0 or from
        ) + 1 / rate  # the first timestamp (MKV, MP4)
        missing = int(round((duration - covered) * rate))
        return n + missing if missing > 1 else n  # a duration-based estimate: 1 frame slack

    def __len__(self) -> int:
        return len(self._pts)

    def _frame_index(self, frame: Any) -> int | None:
        """Index of a decoded ``frame``: its place in output order since the file's start where
        timestamps do not tell it (``_by_count``: decoding always starts there), else that of
        its timestamp; None where the timestamp is none of the index's (never a guess)."""
        ts = frame.pts if frame.pts is not None else frame.dts
        if self._by_count or (ts is None and self._run_from_start):
            return self._next
        if ts is None:
            return None
        if self._next < len(self._pts) and self._pts[self._next] == int(ts):
            return self._next  # the frame expected next (several frames may share a timestamp)
        return self._pts_index.get(int(ts))

    def _decoded(self) -> Iterator:
        """Frames of the main video from the demuxer's position, without the partial packet
        at the end of a cut file (the index leaves it out; fed to the decoder, it raises before
        the frames the decoder still holds come out)."""
        size = self._file_size
        for pkt in self._container.demux(self._stream):
            # past the end, or flagged corrupt and ending at the end (reaching its last byte)
            if pkt.size and (_past_end(pkt, size) or pkt.is_corrupt and _past_end(pkt, size - 1)):
                continue
            yield from pkt.decode()

    def _restart(self) -> None:
        """Decode from the start of the file. A container-level seek to 0 is exact on every
        container; a stream seek to the first timestamp lands past it on MPEG-TS."""
        try:
            self._container.seek(0)
        except self._av.FFmpegError:  # a stream that cannot seek (raw .h264): open it again
            index = self._stream.index
            self._container.close()
            self._container = self._av.open(self.path)
            self._stream = self._container.streams[index]
        self._frames = self._decoded()
        self._next = 0
        self._from_start = True  # no earlier place to retry from
        self._run_from_start = True  # the frames decoded now are counted from the file's start

    def _first_frame(self) -> np.ndarray:
        """Frame 0 (H, W, 3). Packets before the first decodable frame (a recording that starts
        mid-stream, without a keyframe) are dropped from the index, with a warning."""
        self._restart()
        try:
            frame = next(self._frames)
        except (StopIteration, self._av.FFmpegError) as e:
            self._frames = None
            raise VideoReadError(self.path, f"no decodable video frame ({e or 'empty'})") from None
        skip = self._frame_index(frame)
        if skip is None:
            self._frames = None
            raise VideoReadError(self.path, f"its first frame's timestamp ({frame.pts}) is none of "
                                 "its packets': which frame it is is unknown")
        if skip > 0:
            logger.warning("%s: its first %d frames cannot be decoded (the recording starts "
                           "without a keyframe); the video starts at the next one", self.path,
                           skip)
            self._pts = self._pts[skip:]
            self._pts_index = _first_indices(self._pts)
            self._keyframes = [0] + [k - skip for k in self._keyframes if k > skip]
            self._expected = max(0, self._expected - skip)
            self.frames_lost = max(0, self._expected - len(self._pts))
        self._next = 1
        self._last_frame = frame
        return frame.to_ndarray(format="rgb24")

    def _seek(self, index: int, back: int = 0) -> None:
        """Decode from the keyframe at or before ``index``, or ``back`` keyframes earlier (a
        stream seek can land past its target: MPEG-TS); the first keyframe: the file's start,
        where decoding always starts on a stream that cannot seek exactly (``_seekable``)."""
        pos = bisect.bisect_right(self._keyframes, index) - 1 - back if self._seekable else 0
        if pos > 0:
            kf = self._keyframes[pos]
            try:
                self._container.seek(self._pts[kf], stream=self._stream, backward=True,
                                     any_frame=False)
            except self._av.FFmpegError:  # a stream that cannot seek (raw .h264)
                pos = 0
        if pos <= 0:
            self._restart()
            return
        self._frames = self._decoded()
        self._next = kf
        self._run_from_start = False

    def _step_back(self, index: int, retries: Iterator[int]) -> bool:
        """After a seek that overshot ``index`` (or ended the stream): decode again from the next
        earlier place of ``retries``; False when the file's start was tried already."""
        back = None if self._from_start else next(retries, None)
        if back is None:
            return False
        self._seek(index, back)
        return True

    def _decode_at(self, index: int) -> np.ndarray:
        self._from_start = False  # set when decoding restarts from the file's start
        if self._frames is None or index < self._next or (self._seekable and (
            self._keyframes[bisect.bisect_right(self._keyframes, index) - 1] > self._next
        )):
            self._seek(index)
        retries = iter(SEEK_BACK)  # keyframes to step back when a seek overshoots (MPEG-TS)
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                if self._step_back(index, retries):  # the seek landed at the end
                    continue
                self._frames = None
                raise VideoReadError(
                    self.path,
                    f"frame {index} of {len(self)} could not be decoded (the stream ended early: "
                    "corrupt or truncated data)",
                ) from None
            except self._av.FFmpegError as e:
                self._frames = None
                raise VideoReadError(
                    self.path, f"corrupt data near frame {index} of {len(self)} ({e})"
                ) from e
            i = self._frame_index(frame)
            if i is None:  # the seek's timestamps are off (a demuxer's guess): from the start
                if self._run_from_start:  # the frame of a packet the index left out (cut short)
                    continue
                self._restart()
                continue
            if i > index:
                if self._step_back(index, retries):  # the seek landed after the target
                    continue
                self._frames = None
                raise VideoReadError(
                    self.path, f"frame {index} of {len(self)} cannot be decoded (decoding "
                    f"resumes at frame {i}): corrupt data"
                )
            self._next = i + 1
            if i >= index:
                break
            if index - i <= self._cache_size:  # frames just before the target: keep them
                self._put(i, _rotate(frame.to_ndarray(format="rgb24"), self.rotation))
        self._last_frame = frame
        return _rotate(frame.to_ndarray(format="rgb24"), self.rotation)  # (H, W, 3)

    def _put(self, index: int, arr: np.ndarray) -> None:
        arr.flags.writeable = False  # served again from the cache: the caller must not edit it
        self._cache[index] = arr
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _read(self, index: int) -> np.ndarray:
        arr = self._cache.get(index)
        if arr is not None:
            self._cache.move_to_end(index)
            return arr
        arr = self._decode_at(index)
        self._put(index, arr)
        return arr

    def close(self) -> None:
        self._frames = None
        self._cache.clear()
        self._container.close()


def _duration_tag(metadata: dict[str, str]) -> float | None:
    """Seconds of a stream's DURATION tag (MKV / WebM write one per stream, '00:00:01.000000000');
    None without a readable one."""
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", str(metadata.get("DURATION", "")).strip())
    return None if m is None else int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def _first_indices(timestamps: Sequence[int]) -> dict[int, int]:
    """Timestamp -> index of the first frame with it (a broken muxer may repeat one)."""
    index: dict[int, int] = {}
    for i, ts in enumerate(timestamps):
        index.setdefault(ts, i)
    return index


def _probe(path: str) -> tuple[int, str, str]:
    """(display rotation in degrees, codec name, container format name) of the first video
    stream, read with PyAV; (0, '', '') if unknown."""
    try:
        import av

        with av.open(path) as c:
            names = (c.streams.video[0].codec_context.name, c.format.name)
            for frame in c.decode(video=0):
                return int(getattr(frame, "rotation", 0) or 0), *names
    except Exception:  # noqa: BLE001 - probing is best effort
        return 0, "", ""
    return 0, "", ""


# where decord's seeks returned the frames asked for (decord 0.6, measured with GOPs of 12 and
# B-frames); elsewhere (MPEG-2, MPEG-4, HEVC, H.264 in AVI) they returned others, as in
# decord issues #54, #195, #365. Open-GOP H.264 in MP4 / MKV is wrong too, not told apart here.
_DECORD_SEEN_EXACT = ({"h264", "vp9"}, {"mov", "mp4", "matroska", "webm"})


class DecordReader(VideoReader):
    """Video file reader on decord (batched reads). Its random access returns other frames than
    those asked for in many formats (see ``_DECORD_SEEN_EXACT``): opening one logs a warning."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 0) -> None:
        try:
            import decord
        except ImportError as e:
            raise VideoReadError(path, "backend 'decord' is not installed "
                                 "(pip install decord, or use backend='av')") from e
        self.path = str(path)
        _check_file(Path(path))
        try:
            self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as e:  # decord raises its own DECORDError / RuntimeError
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise VideoReadError(path, f"not a video or unreadable ({first_line})") from e
        if len(self._vr) == 0:
            raise VideoReadError(path, "no decodable video frames")
        self.fps = float(self._vr.get_avg_fps() or 30.0)
        self.rotation, codec, container = _probe(self.path)  # decord applies the rotation
        codecs, formats = _DECORD_SEEN_EXACT
        if codec and codec != "mjpeg" and not (  # mjpeg: every frame a keyframe
                codec in codecs and formats & set(container.split(","))):
            logger.warning("%s: decord may return other frames than those asked for after a "
                           "seek in %s video in %s (seen exact only for closed-GOP H.264 and VP9 "
                           "in MP4 / MKV); use backend='av' (exact)", self.path, codec, container)
        first = self._read(0)
        if first.ndim != 3 or first.shape[2] != 3:  # seen for some rotated videos
            raise VideoReadError(path, f"decord returns frames of shape {tuple(first.shape)}, "
                                 "not (H, W, 3) RGB; use backend='av' (--backend av)")
        self.size = (int(first.shape[0]), int(first.shape[1]))
        self._starts: list[float] | None = None  # frame start times (s), read when needed

    def __len__(self) -> int:
        return len(self._vr)

    def index_at(self, seconds: float) -> int:
        """The frame shown ``seconds`` after the first one: the nearest start time in decord's
        index (exact on a variable-frame-rate video, where ``seconds * fps`` is not)."""
        if self._starts is None:
            times = np.asarray(self._vr.get_frame_timestamp(list(range(len(self))))[:, 0],
                               dtype=np.float64)
            if np.isfinite(times).all() and times[0] >= 0 and (np.diff(times) >= 0).all():
                self._starts = [float(t - times[0]) for t in times]
            else:  # AVI with B-frames: none for the first frames, then decode order
                self._starts = [i / self.fps for i in range(len(self))]
        return nearest_frame(self._starts, seconds, self.fps)

    def _read(self, index: int) -> np.ndarray:
        try:
            arr = self._vr[index].asnumpy()
        except Exception as e:
            raise VideoReadError(self.path, f"frame {index} cannot be decoded ({e})") from e
        return arr

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        n = len(self)
        idx = [int(i) + n if int(i) < 0 else int(i) for i in indices]
        if any(not 0 <= i < n for i in idx):
            raise IndexError(f"frame index out of range for '{self.path}' ({n} frames)")
        try:
            arr = self._vr.get_batch(idx).asnumpy()  # (n, H, W, 3)
        except Exception as e:
            raise VideoReadError(self.path, f"frames {idx} cannot be decoded ({e})") from e
        return arr

    def close(self) -> None:
        self._vr = None  # decord closes on garbage collection


# a number in a frame's name: digits, or a time in seconds with its fraction ('1539781823.5')
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _numbers(stem: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(n) for n in _NUMBER.findall(stem))


def frame_sort_key(name: str) -> tuple:
    """Sort key for frame files: the last number in the file stem, then the name."""
    numbers = _numbers(Path(name).stem)
    return (0, numbers[-1], name) if numbers else (1, 0, name)


def _frame_numbers(files: Sequence[Path]) -> tuple[int | None, list[tuple[Decimal, ...]]]:
    """(position of the frame number among the names' numbers, each name's numbers).

    The frame number is the last number that differs between the names
    ('stuttgart_00_000000_000019_leftImg8bit': the fourth, not the 8 of '8bit'); the last
    number when all names hold the same numbers; None when the names hold no number.
    """
    numbers = [_numbers(f.stem) for f in files]
    width = len(numbers[0])
    if width == 0:
        return None, numbers
    varying = [j for j in range(width) if len({n[j] for n in numbers}) > 1]
    return (varying[-1] if varying else width - 1), numbers


def _pattern(stem: str, position: int | None) -> str:
    """The stem with its ``position``-th number replaced by '#' ('camA_0012' -> 'camA_#')."""
    if position is None:
        return stem
    m = list(_NUMBER.finditer(stem))[position]
    return stem[: m.start()] + "#" + stem[m.end():]


def order_frames(files: Sequence[Path]) -> list[Path]:
    """The frames of one sequence in playback order: by their frame number.

    The frame number is the last number in the name that differs between the files (so a
    constant number after it, as in 'frame_0001_1920x1080' or Cityscapes' '..._leftImg8bit',
    does not count); a number with a fraction ('1539781823.503012', a time in seconds) is one
    number. Files without any number are ordered by name. Raises ValueError, naming
    the files, where the order would be a guess: names of several patterns (two cameras'
    frames, 'camA_0001' and 'camB_0001' or 'cam1_0001' and 'cam2_0001', would interleave), a
    file without a number among numbered ones, two files with one number ('frame_1',
    'frame_01').
    """
    files = sorted(files, key=lambda f: f.name)
    counts = {len(_numbers(f.stem)) for f in files}
    if 0 in counts and len(counts) > 1:
        bare = next(f for f in files if not re.search(r"\d", f.stem))
        numbered = next(f for f in files if re.search(r"\d", f.stem))
        raise ValueError(f"'{bare.name}' has no frame number, unlike "
                         f"'{numbered.name}': move the files that are not frames elsewhere")
    if len(counts) > 1:  # names with different counts of numbers: several patterns
        patterns = sorted({_NUMBER.sub("#", f.stem) for f in files})
    else:
        position, numbers = _frame_numbers(files)
        if position is None:
            return files
        patterns = sorted({_pattern(f.stem, position) for f in files})
    if len(patterns) > 1:
        shown = ", ".join(repr(p) for p in patterns[:4])
        raise ValueError(
            f"the files follow {len(patterns)} naming patterns ({shown}), as the frames of several "
            "sequences would, or of one named by date and time: put each sequence's frames in "
            "a folder of its own, named with one frame number")
    order = sorted(range(len(files)), key=lambda i: (numbers[i][position], files[i].name))
    files = [files[i] for i in order]
    key = [numbers[i][position] for i in order]
    for i in range(len(files) - 1):
        if key[i] == key[i + 1]:
            raise ValueError(f"'{files[i].name}' and '{files[i + 1].name}' both have number "
                             f"{key[i]}: their order is unknown")
    return files


class FrameFolderReader(VideoReader):
    """A folder of image files (sorted by the number in the file name) read as a video."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0) -> None:
        self.path = str(path)
        p = Path(path)
        if not p.is_dir():
            raise VideoReadError(path, "frame folder not found")
        files = [f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
                 and not f.name.startswith("._") and not f.is_dir()]  # '._*': macOS metadata
        if not files:
            raise VideoReadError(path, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder")
        try:
            ordered = order_frames(files)
        except ValueError as e:
            raise VideoReadError(path, str(e)) from None
        self._start(ordered, fps)

    def _start(self, files: list[Path], fps: float) -> None:
        """Read the frames ``files``, in order, at ``fps``; the first one sets the size."""
        self.files = files
        self.fps = float(fps)
        first = self._load(0)
        self.size = (int(first.shape[0]), int(first.shape[1]))
        self._first: np.ndarray | None = first  # the first read of frame 0 returns it

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> np.ndarray:
        from PIL import UnidentifiedImageError

        from .images import load_rgb

        f = self.files[index]
        try:
            return load_rgb(f)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            cause = " ".join(str(e).split()).replace(f"cannot read image '{f}': ", "")
            raise FrameFileError(
                self.path, f"frame {index} ('{f.name}') is unreadable: it cannot be decoded "
                f"({cause}); replace or remove that file") from e

    def close(self) -> None:
        self._first = None

    def _read(self, index: int) -> np.ndarray:
        if index == 0 and self._first is not None:  # decoded at open: not decoded again
            arr, self._first = self._first, None
            return arr
        arr = self._load(index)
        if arr.shape[:2] != self.size:
            (h, w), (first_h, first_w) = arr.shape[:2], self.size
            raise FrameFileError(
                self.path, f"frame {index} ('{self.files[index].name}'): its size {h}x{w} "
                f"differs from the first frame's {first_h}x{first_w} (all frames must have one "
                "size); resize or remove that file"
            )
        return arr


class ImageFileReader(FrameFolderReader):
    """A single image file read as a one-frame video (decoded by PIL, as folder frames are).

    The image is decoded once, at open; counting an animation's frames opens it a second
    time, reading its header only (0.3 ms beside 800 ms of decoding for a 12-megapixel JPEG).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 30.0) -> None:
        self.path = str(path)
        _check_file(Path(path))
        self._start([Path(path)], fps)
        from PIL import Image

        with Image.open(path) as im:  # decoded (and checked) by _start; the header suffices
            frames = int(getattr(im, "n_frames", 1) or 1)
        if frames > 1:
            logger.warning("%s is an animation of %d frames: only its first is read; to read "
                           "them all, convert it to a video file or a folder of frames",
                           self.path, frames)


BACKENDS = ("av", "decord")


def open_video(
    path: str | os.PathLike, backend: str = "av", fps: float | None = None
) -> VideoReader:
    """Open a video file or a folder of frames.

    Args:
        path: a video file (any container/codec FFmpeg reads), a folder of image files or one
            image file (a one-frame video).
        backend: "av" (PyAV, default) or "decord" for video files; ignored for folders.
        fps: frame rate reported for frames and images (default 30); ignored for videos.

    Returns:
        a `VideoReader`; `reader[i]` is np.uint8 (H, W, 3) RGB.

    Raises:
        VideoReadError: missing, empty, not a video, audio only, truncated to nothing, corrupt.
        ValueError: unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    p = Path(path)
    if p.is_dir():
        return FrameFolderReader(p, fps=30.0 if fps is None else fps)
    if p.suffix.lower() in IMAGE_EXTENSIONS:  # FFmpeg's image2 demuxer fails on large JPEGs
        return ImageFileReader(p, fps=30.0 if fps is None else fps)
    if backend == "decord":
        return DecordReader(p)
    return PyAVReader(p)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float = 15.0,
    codec: str = "libx264",
    rotation: int = 0,
    options: dict[str, str] | None = None,
) -> None:
    """Encode RGB frames np.uint8 (L, H, W, 3) into a video file with PyAV.

    `rotation` (degrees counter-clockwise) is stored as the display-matrix tag, so readers show
    the frames rotated by it. libx264 uses crf 18 unless `options` says otherwise; odd sizes use
    yuv444p where 4:2:0 chroma needs even sizes.
    """
    from fractions import Fraction

    import av

    frames = list(frames)
    if not frames:
        raise ValueError(f"no frames to write to '{path}'")
    h, w = frames[0].shape[:2]
    pix = {"mjpeg": "yuvj420p"}.get(codec, "yuv420p")
    if (h % 2 or w % 2) and pix.endswith("420p"):
        if codec not in ("libx264", "mjpeg"):
            raise ValueError(f"codec {codec} needs even frame sizes, got {w}x{h}")
        pix = "yuvj444p" if codec == "mjpeg" else "yuv444p"
    opts = dict(options or {})
    if codec == "libx264":
        opts.setdefault("crf", "18")
        opts.setdefault("preset", "veryfast")
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=opts)
        s.width, s.height, s.pix_fmt = w, h, pix
        if rotation:
            s.set_display_rotation(rotation)
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f, dtype=np.uint8),
                                               format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
