"""Video readers on generated files: codecs, odd sizes, one frame, rotation, bad files."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from vidccnet.data.video import (
    FrameFolderReader,
    PyAVReader,
    VideoReadError,
    frame_sort_key,
    open_video,
    write_video,
)


def make_frames(n: int, h: int, w: int) -> np.ndarray:
    """Frames that differ a lot from one another: a moving bar over a changing level."""
    rng = np.random.default_rng(n * 1000 + h)
    base = rng.integers(40, 200, (1, h // 8 + 1, w // 8 + 1, 3)).repeat(8, 1).repeat(8, 2)
    frames = np.repeat(base[:, :h, :w], n, axis=0).astype(np.int32)
    for i in range(n):
        frames[i] += (i * 37) % 60
        x = (i * 13) % max(w - 12, 1)
        frames[i, :, x:x + 12] = 255
    return frames.clip(0, 255).astype(np.uint8)


def nearest_source(frame: np.ndarray, src: np.ndarray) -> int:
    """Index of the source frame closest (mean abs diff, float64) to `frame`."""
    d = np.abs(src.astype(np.float64) - frame.astype(np.float64)[None]).mean(axis=(1, 2, 3))
    return int(np.argmin(d))


CODECS = [("libx264", "mp4"), ("mpeg4", "mp4"), ("mjpeg", "avi"), ("libvpx-vp9", "webm")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    src = make_frames(24, 198, 334)  # odd-looking size, not a multiple of 16
    out = {}
    for codec, ext in CODECS:
        if codec not in av.codecs_available:
            continue
        p = d / f"v_{codec}.{ext}"
        write_video(p, src, fps=12, codec=codec, options={"g": "6"} if codec != "mjpeg" else None)
        out[codec] = p
    return src, out


@pytest.mark.parametrize("codec", [c for c, _ in CODECS])
@pytest.mark.parametrize("backend", ["av", "decord"])
def test_codecs_sequential_and_random_access(videos, codec, backend):
    src, paths = videos
    if codec not in paths:
        pytest.skip(f"{codec} not available in this PyAV build")
    if backend == "decord":
        pytest.importorskip("decord")
    with open_video(paths[codec], backend=backend) as r:
        assert len(r) == len(src)
        assert r.size == (198, 334)
        assert r.fps == pytest.approx(12.0)
        seq = list(r)
        assert [nearest_source(f, src) for f in seq] == list(range(len(src)))
        assert seq[0].dtype == np.uint8 and seq[0].shape == (198, 334, 3)
        order = [17, 3, 3, 23, 0, 11, 12, 5, -1]
        for i in order:
            np.testing.assert_array_equal(r[i], seq[i])
        batch = r.get_batch([5, 2, 5])
        np.testing.assert_array_equal(batch[0], seq[5])
        np.testing.assert_array_equal(batch[1], seq[2])


def test_sequential_access_decodes_forward_without_seeking(videos, monkeypatch):
    src, paths = videos
    r = open_video(paths["libx264"])
    seeks = []
    orig = r._seek
    monkeypatch.setattr(r, "_seek", lambda i: (seeks.append(i), orig(i))[1])
    for i in range(1, len(r)):
        r[i]
    assert seeks == []  # frame 0 was decoded at open; the rest streams forward
    r[2]  # backwards: one seek to the keyframe at or before frame 2
    r[3]
    r[4]
    assert seeks == [2]
    r.close()


def test_out_of_range(videos):
    _, paths = videos
    with open_video(paths["libx264"]) as r, pytest.raises(IndexError):
        r[len(r)]


def test_single_frame_video(tmp_path):
    src = make_frames(1, 48, 64)
    p = tmp_path / "one.mp4"
    write_video(p, src, fps=25)
    for backend in ("av", "decord"):
        with open_video(p, backend=backend) as r:
            assert len(r) == 1
            assert np.abs(r[0].astype(int) - src[0]).mean() < 8
            assert r.read_all(strict=True).shape == (1, 48, 64, 3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_tag_is_applied(tmp_path, rotation):
    src = make_frames(3, 32, 64)
    p = tmp_path / f"rot{rotation}.mp4"
    write_video(p, src, fps=10, rotation=rotation)
    expected = np.rot90(src[1], k=rotation // 90)  # counter-clockwise display rotation
    for backend in ("av", "decord"):
        with open_video(p, backend=backend) as r:
            assert r.size == expected.shape[:2]
            err = np.abs(r[1].astype(int) - expected).mean()
            assert err < 8
            for k in range(4):  # every other orientation is much further away
                other = np.rot90(src[1], k=k)
                if k != rotation // 90 and other.shape == expected.shape:
                    assert np.abs(r[1].astype(int) - other).mean() > 3 * err


def test_frame_folder_sorted_by_number(tmp_path):
    src = make_frames(12, 40, 56)
    for i, f in enumerate(src):  # names whose lexical order differs from numeric order
        Image.fromarray(f).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    r = open_video(tmp_path, fps=15)
    assert isinstance(r, FrameFolderReader)
    assert len(r) == 12 and r.fps == 15 and r.size == (40, 56)
    np.testing.assert_array_equal(np.stack(list(r)), src)
    np.testing.assert_array_equal(r[10], src[10])
    assert sorted(["a10.png", "a9.png", "a100.png"], key=frame_sort_key) == [
        "a9.png", "a10.png", "a100.png"]


def test_frame_folder_of_several_sequences_refused(tmp_path):
    """Two cameras' frames in one folder would be interleaved by their numbers: refused."""
    frames = make_frames(2, 20, 20)
    for cam in ("camA", "camB"):
        for i, f in enumerate(frames):
            Image.fromarray(f).save(tmp_path / f"{cam}_{i:04d}.png")
    with pytest.raises(VideoReadError, match=r"2 naming patterns \('camA_#', 'camB_#'\)"):
        open_video(tmp_path)


@pytest.mark.parametrize("pattern", [
    "stuttgart_00_000000_{:06d}_leftImg8bit.png",  # Cityscapes demoVideo: a constant number last
    "frame_{:04d}_1920x1080.png",
    "shot_{:04d}_v2.png",
])
def test_frame_folder_with_constant_numbers_after_the_frame_number(tmp_path, pattern):
    """The frame number is the one that varies, not necessarily the last one in the name."""
    from vidccnet.data.video import order_frames

    paths = [tmp_path / pattern.format(i) for i in (10, 9, 100, 1)]
    assert [p.name for p in order_frames(paths)] == [pattern.format(i) for i in (1, 9, 10, 100)]


@pytest.mark.parametrize("pattern", ["{:.6f}.png", "{:.3f}.jpg", "frame_{:.2f}s.png"])
def test_frame_folder_named_by_timestamps(tmp_path, pattern):
    """Frames named by their time in seconds (ROS bag exports: '1539781823.503012.png') are
    ordered by that time; the fraction is not a second naming pattern."""
    from vidccnet.data.video import order_frames

    times = [1539781823 + 0.1 * i for i in range(25)]  # crosses whole seconds
    names = [pattern.format(t) for t in times]
    paths = [tmp_path / n for n in reversed(names)]
    assert [p.name for p in order_frames(paths)] == names
    assert [p.name for p in order_frames([tmp_path / n for n in ("9.5.png", "10.25.png")])] \
        == ["9.5.png", "10.25.png"]
    # a time of day ('..._12-00-59', '..._12-01-00'): two changing numbers, no frame number;
    # the message says so instead of only blaming several sequences
    names = [f"2020-06-30_12-{m:02d}-{s:02d}.jpg" for m, s in ((0, 58), (0, 59), (1, 0))]
    with pytest.raises(ValueError, match="date and time.*one frame number"):
        order_frames([tmp_path / n for n in names])


def test_frame_folder_of_numbered_cameras_refused(tmp_path):
    from vidccnet.data.video import order_frames

    paths = [tmp_path / f"cam{c}_{i:04d}.png" for c in (1, 2) for i in range(3)]
    with pytest.raises(ValueError, match=r"2 naming patterns \('cam1_#', 'cam2_#'\)"):
        order_frames(paths)


def test_frame_folder_repeated_number_and_stray_image_refused(tmp_path):
    frames = make_frames(3, 20, 20)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"frame_{i}.png")
    Image.fromarray(frames[0]).save(tmp_path / "frame_01.png")  # 1 and 01: which comes first?
    with pytest.raises(VideoReadError, match="'frame_01.png' and 'frame_1.png' both have number 1"):
        open_video(tmp_path)
    (tmp_path / "frame_01.png").unlink()
    Image.fromarray(frames[0]).save(tmp_path / "cover.png")  # a thumbnail among the frames
    with pytest.raises(VideoReadError, match="'cover.png' has no frame number"):
        open_video(tmp_path)
    (tmp_path / "cover.png").unlink()
    (tmp_path / "._frame_0.png").write_bytes(b"AppleDouble")  # macOS metadata, not a frame
    assert len(open_video(tmp_path)) == 3


def test_frame_folder_without_numbers_sorted_by_name(tmp_path):
    frames = make_frames(3, 20, 20)
    for name, f in zip(("b.png", "a.png", "c.png"), frames):
        Image.fromarray(f).save(tmp_path / name)
    r = open_video(tmp_path)
    assert [f.name for f in r.files] == ["a.png", "b.png", "c.png"]


def test_frame_folder_errors(tmp_path):
    with pytest.raises(VideoReadError, match="no image files"):
        open_video(tmp_path)
    Image.fromarray(make_frames(1, 20, 20)[0]).save(tmp_path / "0.png")
    Image.fromarray(make_frames(1, 24, 20)[0]).save(tmp_path / "1.png")
    (tmp_path / "2.png").write_bytes(b"garbage")
    r = open_video(tmp_path)
    with pytest.raises(VideoReadError, match="size"):
        r[1]
    with pytest.raises(VideoReadError, match=r"frame 2 \('2.png'\) is unreadable"):
        r[2]


# -- bad files -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["av", "decord"])
def test_missing_empty_and_not_a_video(tmp_path, backend):
    with pytest.raises(VideoReadError, match="not found") as e:
        open_video(tmp_path / "nope.mp4", backend=backend)
    assert "nope.mp4" in str(e.value)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        open_video(empty, backend=backend)
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoReadError, match="text.mp4"):
        open_video(text, backend=backend)


def test_audio_only(tmp_path):
    p = tmp_path / "audio.wav"
    with av.open(str(p), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(VideoReadError, match=r"no video stream \(only audio\)"):
        open_video(p)



def test_audio_with_cover_art_is_not_a_video(tmp_path):
    """A song with its album cover (an attached picture, as most MP3 / FLAC files hold) gave a
    one-frame video of the cover, and segment_video wrote its mask."""
    import io

    buf = io.BytesIO()
    Image.fromarray(make_frames(1, 32, 32)[0]).save(buf, "JPEG")
    p = tmp_path / "song.flac"
    with av.open(str(p), "w") as c:
        audio = c.add_stream("flac", rate=8000)
        audio.layout = "mono"
        cover = c.add_stream("mjpeg")
        cover.height, cover.width, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        pkt = av.Packet(buf.getvalue())
        pkt.stream, pkt.pts, pkt.dts = cover, 0, 0
        c.mux(pkt)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for pkt in [*audio.encode(frame), *audio.encode()]:
            c.mux(pkt)
    with av.open(str(p)) as c:  # the file is what this test needs
        assert [s.type for s in c.streams] == ["audio", "video"]
    with pytest.raises(VideoReadError, match=r"no video stream \(only audio and a cover picture"):
        open_video(p)

def _packets(path):
    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(video=0) if p.size]


def test_truncated_file_yields_decodable_frames(tmp_path):
    src = make_frames(12, 48, 64)
    p = tmp_path / "full.avi"
    write_video(p, src, fps=10, codec="mjpeg")
    pk = _packets(p)
    cut = pk[5][0] + pk[5][1] // 2  # in the middle of frame 5
    t = tmp_path / "trunc.avi"
    t.write_bytes(p.read_bytes()[:cut])
    r = open_video(t)
    assert len(r) == 5 and r.frames_lost == 7
    frames = r.read_all()
    assert [nearest_source(f, src) for f in frames] == [0, 1, 2, 3, 4]
    with pytest.raises(VideoReadError, match="7 of the 12 frames") as e:
        r.read_all(strict=True)
    assert "trunc.avi" in str(e.value) and "truncated" in str(e.value)
    # a file cut inside its first frame has nothing to decode
    (tmp_path / "stub.avi").write_bytes(p.read_bytes()[: pk[0][0] + 10])
    with pytest.raises(VideoReadError, match="stub.avi"):
        open_video(tmp_path / "stub.avi")


def test_a_cut_mkv_counts_the_frames_lost_after_it_at_the_videos_rate(tmp_path):
    """An H.264 MKV (12 fps, 60 frames, B-frames) cut in the packet after frame 8's, before
    the B-frames 5-7: the frames that decode are 0-4 and 8, whose average rate is 7.5 fps.
    The reader estimated the frames lost after frame 8 at that rate: 31 of 37, where the
    stream's 5 s hold 51 more frames at its 12 fps (frames 5-7 are a gap, not counted)."""
    src = numbered_frames(60)
    p = tmp_path / "full.mkv"
    write_video(p, src, fps=12, codec="libx264")
    with av.open(str(p)) as c:
        packets = [(pkt.pts, pkt.pos, pkt.size) for pkt in c.demux(video=0) if pkt.size]
    at = next(i for i, (pts, _, _) in enumerate(packets) if pts == 667)  # 8 / 12 s in ms
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(p.read_bytes()[:packets[at + 1][1] + 2])  # into the next packet
    with open_video(cut) as r:
        assert [frame_number(f) for f in r.read_all()] == [0, 1, 2, 3, 4, 8]
        assert r.frames_lost == 51
        with pytest.raises(VideoReadError, match="51 of the 57 frames"):
            r.read_all(strict=True)


def test_truncated_mp4_without_index(tmp_path):
    p = tmp_path / "full.mp4"
    write_video(p, make_frames(10, 48, 64), fps=10)
    t = tmp_path / "cut.mp4"
    t.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # moov atom (at the end) is lost
    with pytest.raises(VideoReadError, match="cut.mp4.*(truncated|not a video)"):
        open_video(t)


@pytest.mark.parametrize("codec,ext", [("mjpeg", "avi"), ("libx264", "mp4")])
def test_corrupt_frame_in_the_middle(tmp_path, codec, ext):
    src = make_frames(12, 64, 96)
    p = tmp_path / f"bad.{ext}"
    write_video(p, src, fps=10, codec=codec, options={"g": "12"} if codec != "mjpeg" else None)
    pos, size = _packets(p)[6]
    data = bytearray(p.read_bytes())
    data[pos:pos + size] = np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes()
    p.write_bytes(bytes(data))
    r = PyAVReader(p)
    with pytest.raises(VideoReadError, match="bad." + ext + ".*(corrupt|could not be decoded)"):
        list(r)
    with pytest.raises(VideoReadError, match="corrupt"):
        r.read_all()


def test_unknown_backend(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        open_video(tmp_path / "x.mp4", backend="opencv")


@pytest.fixture(scope="module")
def ts_videos(tmp_path_factory):
    """MPEG-TS, the camcorder / dashcam container: a whole file, and a recording that starts
    mid-stream (the first 40 % cut at a 188-byte packet boundary, open GOPs: its first frames
    have no keyframe before them)."""
    d = tmp_path_factory.mktemp("ts")
    src = make_frames(60, 96, 128)
    whole = d / "whole.ts"
    write_video(whole, src, fps=15, options={
        "x264-params": "keyint=12:min-keyint=12:scenecut=0:bframes=3:open-gop=1:b-pyramid=none"})
    data = whole.read_bytes()
    cut = d / "cut.ts"
    cut.write_bytes(data[(len(data) * 2 // 5) // 188 * 188:])
    return src, whole, cut


def _plain_decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("which", ["whole", "cut"])
def test_mpeg_ts_reads_every_decodable_frame_in_order(ts_videos, which):
    """PyAV's stream seek lands past its target (or at the end) on MPEG-TS: the reader could not
    open such a file, failed on random access, and on a recording that starts mid-stream
    returned a later frame for each of the first ones. Every frame a plain decode gives, in
    order, by sequential and by random access."""
    src, whole, cut = ts_videos
    path = whole if which == "whole" else cut
    plain = _plain_decode(path)
    with open_video(path, backend="av") as r:
        assert len(r) == len(plain)
        seq = list(r)
        assert [nearest_source(f, src) for f in seq] == [nearest_source(f, src) for f in plain]
        if which == "whole":
            assert [nearest_source(f, src) for f in seq] == list(range(60))
    with open_video(path, backend="av") as r:
        order = list(range(len(seq)))
        np.random.default_rng(1).shuffle(order)
        for i in order:
            np.testing.assert_array_equal(r[i], seq[i])


def test_image_frames_as_a_viewer_shows_them(tmp_path):
    """A phone photo stores its rotation in EXIF (Orientation 6: 90 degrees clockwise) and a
    16-bit grey PNG holds 0..65535: frames are read upright (size from the header too) and
    scaled to 8 bits (they were read sideways, and clipped to white)."""
    from vidccnet.data.images import image_size, load_rgb

    stored = make_frames(1, 40, 60)[0]  # (H 40, W 60) as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = load_rgb(tmp_path / "phone.jpg")
    assert upright.shape == (60, 40, 3) and image_size(tmp_path / "phone.jpg") == (60, 40)
    assert nearest_source(upright, np.stack([np.rot90(stored, -1), np.rot90(stored, 1)])) == 0
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    assert load_rgb(tmp_path / "phone.png").shape[:2] == image_size(tmp_path / "phone.png")
    assert image_size(tmp_path / "phone.png") == (60, 40)
    ramp = (np.arange(64 * 16, dtype=np.uint16).reshape(16, 64) * 64)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    grey = load_rgb(tmp_path / "grey16.png")
    assert grey.shape == (16, 64, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 0], (ramp >> 8).astype(np.uint8))
    with open_video(tmp_path / "phone.jpg") as r:  # one image as a one-frame video
        assert r.size == (60, 40)


@pytest.mark.parametrize("backend", ["av", "decord"])
def test_the_main_video_stream_is_read_by_both_backends(tmp_path, backend):
    """A file with a small preview stream before the main one: both backends read the main
    (largest) video stream (PyAV took the first one, decord another: different videos)."""
    if backend == "decord":
        pytest.importorskip("decord")
    small, big = make_frames(8, 48, 64), make_frames(8, 96, 128)
    path = tmp_path / "two.mp4"
    with av.open(str(path), "w") as c:
        streams = []
        for frames in (small, big):
            s = c.add_stream("libx264", rate=12)
            s.height, s.width = frames.shape[1:3]
            s.pix_fmt = "yuv420p"
            streams.append(s)
        for i in range(8):
            for s, frames in zip(streams, (small, big)):
                for pkt in s.encode(av.VideoFrame.from_ndarray(frames[i], format="rgb24")):
                    c.mux(pkt)
        for s in streams:
            for pkt in s.encode():
                c.mux(pkt)
    with open_video(path, backend=backend) as r:
        assert r.size == (96, 128)
        assert nearest_source(r[3], big) == 3


def write_vfr_video(path, src, times):
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30, options={"bf": "0", "g": "20"})
        s.height, s.width, s.pix_fmt = 48, 64, "yuv420p"
        s.time_base = Fraction(1, 1000)
        for i, f in enumerate(src):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = int(times[i]), Fraction(1, 1000)
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_variable_frame_rate_video_is_whole_at_its_average_rate(tmp_path, ext):
    """A phone-style variable-frame-rate video (30 frames 33 ms apart, then 30 frames 200 ms
    apart): all 60 frames, none reported lost, the true average rate (the MKV was reported as
    205 frames of which 145 lost, at 30 fps)."""
    src = make_frames(60, 48, 64)
    times = np.cumsum([0] + [33 if i <= 30 else 200 for i in range(1, 60)])
    path = tmp_path / f"vfr.{ext}"
    write_vfr_video(path, src, times)
    from vidccnet.writer import parse_frame_bound

    with open_video(path) as r:
        assert len(r) == 60 and r.frames_lost == 0
        assert r.fps == pytest.approx(59 / (times[-1] / 1000), rel=0.05)
        assert [nearest_source(r[i], src) for i in (0, 30, 59)] == [0, 30, 59]
        # a time is the frame shown then (nearest timestamp), not seconds x the average rate
        assert parse_frame_bound("3s", r.fps, "start", r.index_at) == 40  # 2.99 s
        assert parse_frame_bound("0.5s", r.fps, "start", r.index_at) == 15  # 0.495 s
        assert parse_frame_bound("7", r.fps, "start", r.index_at) == 7


def test_decord_finds_a_time_by_the_frames_timestamps(tmp_path):
    """--start 3s with --backend decord: the frame shown at 3 s, as with PyAV (it was
    3 x decord's average rate, frame 26 of this variable-frame-rate video)."""
    pytest.importorskip("decord")
    from vidccnet.writer import parse_frame_bound

    times = np.cumsum([0] + [33 if i <= 30 else 200 for i in range(1, 60)])
    write_vfr_video(tmp_path / "vfr.mp4", make_frames(60, 48, 64), times)
    with open_video(tmp_path / "vfr.mp4", backend="decord") as r:
        at = r.index_at
        assert [parse_frame_bound(t, r.fps, "start", at) for t in ("3s", "0.5s", "0s")] == \
            [40, 15, 0]
        assert at(6.8) == 59 and at(7.0) == 59 + round(0.2 * r.fps)  # past the end: the rate


@pytest.mark.parametrize("codec,options", [("libx264", None), ("mpeg4", {"bf": "2", "g": "12"})])
def test_decord_times_an_avi_as_pyav(tmp_path, codec, options):
    """decord's frame timestamps in an AVI with B-frames are missing (about -3e17) for the
    first frames and in decode order after them: index_at gave frames 61, 74, 86 of 50 for
    0.5, 1 and 1.5 s (libx264), or 17 for all three (mpeg4); segment_video.py --start 0.5s
    --backend decord failed or started at the wrong frame. Such times give way to the rate."""
    pytest.importorskip("decord")
    path = tmp_path / "v.avi"
    write_video(path, make_frames(50, 32, 32), fps=25, codec=codec, options=options)
    for backend in ("av", "decord"):
        with open_video(path, backend=backend) as r:
            assert [r.index_at(t) for t in (0.0, 0.5, 1.0, 1.5)] == [0, 12, 25, 37], backend


@pytest.mark.parametrize("fps, name, codec", [(10, "v.mp4", "libx264"), (12, "v.mkv", "libx264"),
                                             (25, "v.avi", "mpeg4"), (30, "v.mp4", "libx264")])
def test_both_backends_give_one_frame_for_a_time_between_two_frames(tmp_path, fps, name, codec):
    """A time exactly between two frames' timestamps is the earlier frame with either backend
    (and with a frame folder at that rate); PyAV and decord disagreed at such ties (decord's
    float32 seconds tip them either way, and Python's round() takes the even frame)."""
    pytest.importorskip("decord")
    from fractions import Fraction

    from vidccnet.writer import parse_frame_bound

    path = tmp_path / name
    write_video(path, make_frames(12, 32, 32), fps=fps, codec=codec)
    with av.open(str(path)) as c:
        starts = [f.pts * c.streams.video[0].time_base for f in c.decode(video=0)]
    starts = [t - starts[0] for t in starts] + [starts[-1] - starts[0] + Fraction(1, fps)]
    times = [t for a, b in zip(starts, starts[1:]) for t in (a, (a + b) / 2)]  # exact
    expected = [k // 2 for k in range(len(times))]  # a midpoint: the earlier frame
    for backend in ("av", "decord"):
        with open_video(path, backend=backend) as r:
            found = [parse_frame_bound(f"{float(t)!r}s", r.fps, "start", r.index_at)
                     for t in times]
        assert found == expected, backend
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(make_frames(1, 8, 8)[0]).save(folder / f"{i:03d}.png")
    with open_video(folder, fps=fps) as r:
        found = [parse_frame_bound(f"{k / (2 * fps)!r}s", r.fps, "start", r.index_at)
                 for k in range(28)]
    assert found == [k // 2 for k in range(28)]


def test_a_still_stream_larger_than_the_video_is_not_read(tmp_path):
    """A one-frame stream (cover art, a still) larger than the video: the video is read, not the
    still (the largest-area rule gave a one-frame segmentation)."""
    video, still = make_frames(20, 48, 64), make_frames(1, 128, 128)
    path = tmp_path / "art.mkv"
    with av.open(str(path), "w") as c:
        sv = c.add_stream("libx264", rate=12)
        sv.height, sv.width, sv.pix_fmt = 48, 64, "yuv420p"
        ss = c.add_stream("mjpeg", rate=1)
        ss.height, ss.width, ss.pix_fmt = 128, 128, "yuvj420p"
        for pkt in ss.encode(av.VideoFrame.from_ndarray(still[0], format="rgb24")):
            c.mux(pkt)
        for f in video:
            for pkt in sv.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for s in (sv, ss):
            for pkt in s.encode():
                c.mux(pkt)
    with open_video(path) as r:
        assert (len(r), r.size) == (20, (48, 64))
        assert nearest_source(r[7], video) == 7


def test_image_size_reads_only_the_header(tmp_path, monkeypatch):
    """image_size is called per sample (CamVid labels, folder frames): it must not decode the
    file, also while looking for an EXIF orientation (Pillow's getexif decodes a whole PNG).
    Frames of a 16-bit grey sequence scale alike, whatever their values."""
    from vidccnet.data.images import image_size, load_rgb

    Image.fromarray(make_frames(1, 30, 40)[0]).save(tmp_path / "f.png")
    for name, value in (("dark.png", 255), ("brighter.png", 512)):
        Image.fromarray(np.full((4, 4), value, np.uint16)).save(tmp_path / name)
    assert (load_rgb(tmp_path / "dark.png") == 0).all()  # 255 >> 8
    assert (load_rgb(tmp_path / "brighter.png") == 2).all()  # 512 >> 8, not 256x the other

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the image was decoded")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # what PNG's getexif calls
    assert image_size(tmp_path / "f.png") == (30, 40)


def test_mpeg_ts_random_access_steps_back_instead_of_decoding_from_the_start(tmp_path,
                                                                            monkeypatch):
    """A stream seek that overshoots on MPEG-TS is retried from an earlier keyframe; decoding
    from the file's start (O(length) per access: 37 of 40 accesses on this file) is the last
    resort. The frames are those of a plain decode."""
    src = make_frames(300, 48, 64)
    path = tmp_path / "long.ts"
    write_video(path, src, fps=15, options={
        "x264-params": "keyint=12:min-keyint=12:scenecut=0:bframes=3:open-gop=1:b-pyramid=none"})
    plain = _plain_decode(path)
    with open_video(path) as r:
        restarts = []
        real = PyAVReader._restart
        monkeypatch.setattr(PyAVReader, "_restart", lambda self: (restarts.append(1), real(self)))
        order = [int(i) for i in np.random.default_rng(0).permutation(len(r))[:40]]
        for i in order:
            np.testing.assert_array_equal(r[i], plain[i])
    assert len(restarts) <= 5, len(restarts)


def _write_timed(path, frames, times_ms, rate=30, codec="libx264"):
    """Frames with explicit millisecond timestamps."""
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, options={"bf": "0"})
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.time_base = Fraction(1, 1000)
        for f, t in zip(frames, times_ms):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_timestamps_that_start_late_or_round_a_short_clip_are_read_right(tmp_path):
    """An MKV whose timestamps start at 1.5 s (its duration counts from 0) loses no frame (45 of
    60 were reported lost); a 3-frame 60 fps clip with millisecond timestamps stays at 60 fps
    (the rounding of its 33 ms span read as 60.6)."""
    late = tmp_path / "late.mkv"
    _write_timed(late, make_frames(60, 48, 64), [1500 + round(i * 1000 / 30) for i in range(60)])
    with open_video(late) as r:
        assert (len(r), r.frames_lost) == (60, 0) and r.fps == pytest.approx(30.0)
    short = tmp_path / "short.mkv"
    _write_timed(short, make_frames(3, 48, 64), [0, 17, 33], rate=60)
    with open_video(short) as r:
        assert len(r) == 3 and r.fps == pytest.approx(60.0)



def test_frames_that_share_a_timestamp_are_all_read(tmp_path):
    """Two frames with one timestamp (a broken muxer's, kept by MKV): the reader stopped at the
    first of them ('frame 14 cannot be decoded (decoding resumes at frame 15): corrupt data'),
    and segment_video kept 14 of 30 frames."""
    src = make_frames(30, 48, 64)
    good = tmp_path / "good.mkv"
    _write_timed(good, src, [i * 40 for i in range(30)], rate=25)
    dup = tmp_path / "dup.mkv"
    with av.open(str(good)) as inp, av.open(str(dup), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for i, pkt in enumerate(p for p in inp.demux(video=0) if p.dts is not None):
            if i == 15:
                pkt.pts = pkt.dts = 14 * 40  # frame 15 repeats frame 14's timestamp
            pkt.stream = stream
            out.mux(pkt)
    with open_video(dup) as r:
        assert (len(r), r.frames_lost) == (30, 0)
        frames = r.read_all(strict=True)
        assert [nearest_source(f, src) for f in frames] == list(range(30))
    with open_video(dup) as r:  # random access: a seek back to the keyframe before frame 15
        assert [nearest_source(r[i], src) for i in (29, 15, 14)] == [29, 15, 14]


def test_frames_an_edit_list_cuts_off_are_not_frames_of_the_video(tmp_path, caplog):
    """An MP4 whose edit list starts the video at its sixth frame (a cut made with
    `ffmpeg -ss ... -c copy`): players show 25 frames, and so does the reader, without the
    warning of a broken recording ('its first 5 frames cannot be decoded')."""
    src = make_frames(30, 48, 64)
    p = tmp_path / "cut.mp4"
    _write_timed(p, src, [(i - 5) * 40 for i in range(30)], rate=25)  # the muxer cuts pts < 0
    with av.open(str(p)) as c:
        shown = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(shown) == 25  # the file is what this test needs
    with caplog.at_level("WARNING", logger="vidccnet.data.video"), open_video(p) as r:
        assert (len(r), r.frames_lost) == (25, 0)
        assert [nearest_source(f, src) for f in r.read_all(strict=True)] == list(range(5, 30))
    assert caplog.records == []

def test_a_smaller_preview_track_at_a_higher_rate_is_not_the_main_video(tmp_path):
    """The main video is the largest stream, not the one with the most frames (a 64x48 preview
    at 60 fps beside a 128x96 video at 30 fps)."""
    big, small = make_frames(10, 96, 128), make_frames(20, 48, 64)
    path = tmp_path / "preview.mkv"
    with av.open(str(path), "w") as c:
        streams = []
        for frames, rate in ((small, 60), (big, 30)):
            s = c.add_stream("libx264", rate=rate)
            s.height, s.width = frames.shape[1:3]
            s.pix_fmt = "yuv420p"
            streams.append((s, frames))
        for i in range(20):
            for s, frames in streams:
                if i < len(frames):
                    for pkt in s.encode(av.VideoFrame.from_ndarray(frames[i], format="rgb24")):
                        c.mux(pkt)
        for s, _ in streams:
            for pkt in s.encode():
                c.mux(pkt)
    with open_video(path) as r:
        assert (len(r), r.size) == (10, (96, 128))


def test_a_raw_h264_stream_that_cannot_seek_is_read(tmp_path):
    """A raw H.264 elementary stream (a camera module's or an encoder's output) cannot seek:
    the reader opens it again to decode from the start ('Operation not permitted' before)."""
    src = make_frames(20, 48, 64)
    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as c:
        s = c.add_stream("libx264", rate=12)
        s.height, s.width, s.pix_fmt = 48, 64, "yuv420p"
        for f in src:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with open_video(path) as r:
        assert len(r) == 20 and r.frames_lost == 0
        assert 1 <= r.fps <= 120  # FFmpeg's guess (no timestamps), not 1.2 million
        assert [nearest_source(r[i], src) for i in (0, 13, 5, 19)] == [0, 13, 5, 19]
        assert [nearest_source(f, src) for f in r] == list(range(20))



@pytest.mark.parametrize("name", ["anim.png", "anim.webp", "pages.tif"])
def test_an_animated_image_says_that_only_its_first_frame_is_read(tmp_path, caplog, name):
    """An animated PNG / WebP or a multi-page TIFF given as one image was read as its first
    frame without a word (4 frames in, 1 mask out)."""
    frames = [Image.fromarray(f) for f in make_frames(4, 24, 32)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING", logger="vidccnet.data.video"), \
            open_video(tmp_path / name) as r:
        assert len(r) == 1
    assert "animation of 4 frames: only its first is read" in caplog.text
    caplog.clear()
    frames[0].save(tmp_path / "still.png")
    with caplog.at_level("WARNING", logger="vidccnet.data.video"), \
            open_video(tmp_path / "still.png") as r:
        assert len(r) == 1
    assert caplog.text == ""

def test_an_image_or_a_folder_decodes_each_frame_once(tmp_path, monkeypatch):
    """The first frame, decoded at open for the size, is the one the first read returns: a
    single image (a 12-megapixel photo takes 0.8 s) was decoded twice for one mask."""
    from vidccnet.data import images

    calls = []
    load = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path: calls.append(path) or load(path))
    frames = make_frames(3, 16, 24)
    (tmp_path / "f").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "f" / f"{i}.png")
    with open_video(tmp_path / "f" / "0.png") as r:
        assert np.array_equal(r.read_all(), frames[:1]) and len(calls) == 1
    calls.clear()
    with open_video(tmp_path / "f") as r:
        assert np.array_equal(r.read_all(), frames) and len(calls) == 3
        assert np.array_equal(r[0], frames[0]) and len(calls) == 4  # read again: decoded again


def test_loaded_images_are_writable_arrays(tmp_path):
    """load_rgb's arrays are the caller's own: writable, so in-place edits work and
    torch.from_numpy does not warn (Pillow's array interface gave read-only views)."""
    import warnings

    import torch

    from vidccnet.data.images import load_index_png, load_rgb

    rgb = make_frames(1, 6, 8)[0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    for name in ("rgb.png", "rgba.png", "grey.png", "p.png"):
        for array in (load_rgb(tmp_path / name), load_index_png(tmp_path / name)
                      if name in ("grey.png", "p.png") else load_rgb(tmp_path / name)):
            assert array.flags.writeable, name
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                torch.from_numpy(array)


def test_frame_folder_with_a_broken_link_names_it(tmp_path):
    """A frame that is a dangling symlink (a file on an unmounted share) is a frame that cannot
    be read, not a file to skip: skipping it shifted every later mask's number by one."""
    from vidccnet.data.video import FrameFileError

    for i, f in zip((0, 1, 3), make_frames(3, 16, 16)):
        Image.fromarray(f).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "002.png").symlink_to(tmp_path / "nowhere" / "002.png")
    r = open_video(tmp_path)
    assert len(r) == 4
    with pytest.raises(FrameFileError, match="002.png"):
        list(r)


def test_decord_frames_that_are_not_rgb_are_refused(tmp_path):
    """decord 0.6 returns 4-channel garbage for some rotated videos (48x64 turned by 90
    degrees): refused with the way out, instead of failing later on the frames' shape."""
    pytest.importorskip("decord")
    src = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3)).astype(np.uint8)
    write_video(tmp_path / "rot.mp4", src, fps=10, rotation=90)
    try:
        r = open_video(tmp_path / "rot.mp4", backend="decord")
    except VideoReadError as e:
        assert "backend='av'" in str(e) and "(64, 48, 4)" in str(e)
    else:  # a decord that reads it right
        with r:
            assert r[0].shape == (64, 48, 3)


@pytest.mark.parametrize("fps", [30.0, 60.0])
def test_a_time_on_a_long_video_is_its_nearest_frame(fps):
    """The tie tolerance absorbs float error, not whole frames: hours into a video a time on a
    frame, or 0.6 frame past one, is still that frame / the next (a tolerance relative to the
    time grew to half a frame and more, and the backends then disagreed)."""
    from vidccnet.frame_time import nearest_frame, round_ties_down
    from vidccnet.writer import parse_frame_bound

    n = int(5 * 3600 * fps)  # five hours
    starts = [i / fps for i in range(n)]
    for frame in (108_000, 540_000, n - 10):
        for offset, expected in ((0.0, frame), (0.4, frame), (0.5, frame), (0.6, frame + 1)):
            seconds = (frame + offset) / fps
            assert round_ties_down(seconds * fps) == expected, (frame, offset)
            assert nearest_frame(starts, seconds, fps) == expected, (frame, offset)
            assert parse_frame_bound(f"{seconds!r}s", fps) == expected, (frame, offset)


def numbered_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames np.uint8 (n, H, W, 3) that carry their index in binary, one 16x16 block a bit
    (white: 1, black: 0, on grey): read back by `frame_number` after any lossy codec."""
    blocks = (h // 16) * (w // 16)
    assert n <= 1 << blocks, f"{n} frames need more than {blocks} bits"
    frames = np.full((n, h, w, 3), 128, np.uint8)
    for i in range(n):
        for b in range(blocks):
            r, c = divmod(b, w // 16)
            frames[i, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = 255 if i >> b & 1 else 0
    return frames


def frame_number(frame: np.ndarray) -> int:
    """The index a `numbered_frames` frame (H, W, 3) carries."""
    h, w = frame.shape[:2]
    bits = [frame[r * 16 + 4:r * 16 + 12, c * 16 + 4:c * 16 + 12].mean() > 128
            for r in range(h // 16) for c in range(w // 16)]
    return sum(1 << b for b, bit in enumerate(bits) if bit)


def _shuffled(n: int, seed: int = 0) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


@pytest.mark.parametrize("codec,options", [
    ("libx264", None),  # write_video's defaults: B-frames
    ("mpeg4", {"bf": "2", "g": "12"}),
])
def test_avi_with_b_frames_reads_the_frames_in_display_order(tmp_path, codec, options):
    """AVI stores no presentation times: FFmpeg stamps each packet with its place in decode
    order, so with B-frames the decoded frames carry shuffled timestamps. The reader took those
    for display times (frames 0, error, error, 1, 3, ... for write_video's own H.264 .avi);
    it now counts frames in output order: every frame, sequentially and at random."""
    src = numbered_frames(30)
    path = tmp_path / f"bf_{codec}.avi"
    write_video(path, src, fps=25, codec=codec, options=options)
    with open_video(path) as r:
        assert (len(r), r.frames_lost) == (30, 0)
        assert [frame_number(f) for f in r] == list(range(30))
    with open_video(path) as r:
        order = _shuffled(30)
        assert [frame_number(r[i]) for i in order] == order


def test_a_cut_mpeg4_avi_with_b_frames_keeps_its_frames_display_times(tmp_path):
    """MPEG-4 Part 2 in AVI (Xvid / DivX) gets display times from FFmpeg's parser, unlike
    H.264 in AVI; the reader counted its frames in output order all the same. Cut inside
    packet 8, the decoder still outputs a concealed frame for it, which took the last index:
    the eighth frame read was a frame 0 where the file's eighth whole frame is frame 9."""
    full, cut = tmp_path / "full.avi", tmp_path / "cut.avi"
    write_video(full, numbered_frames(40), fps=12, codec="mpeg4", options={"g": "12", "bf": "2"})
    packets = _packets(full)
    cut.write_bytes(full.read_bytes()[:packets[8][0] + 7])
    with open_video(cut) as r:  # packets 0-7 hold display frames 0-6 and 9
        assert [frame_number(f) for f in r] == [0, 1, 2, 3, 4, 5, 6, 9]
        assert [frame_number(r[i]) for i in (7, 2, 6)] == [9, 2, 6]


def test_an_avi_without_b_frames_seeks_to_the_keyframe_before_a_frame(tmp_path, monkeypatch):
    """An AVI whose frames are decoded in display order (P-frames, no B-frames) has exact
    timestamps: a frame read before the last one was decoded from the file's start (10 reads
    of a 1500-frame 320x240 file: 0.55 s instead of 0.04 s)."""
    path = tmp_path / "p_only.avi"
    write_video(path, numbered_frames(300), fps=25, codec="mpeg4", options={"g": "12"})
    restarts = []
    real = PyAVReader._restart
    monkeypatch.setattr(PyAVReader, "_restart", lambda self: restarts.append(1) or real(self))
    with open_video(path) as r:
        restarts.clear()  # opening reads the first frame
        assert [frame_number(r[i]) for i in (290, 280, 270, 260)] == [290, 280, 270, 260]
    assert restarts == []


@pytest.mark.parametrize("codec", ["mpeg2video", "mpeg1video"])
def test_mpeg_program_stream_random_access_is_exact(tmp_path, codec):
    """After a seek in an MPEG program stream (.mpg, .vob) FFmpeg's parser stamps the first
    packets one frame late: random access returned frame 39 for 40 (mpeg2video, GOPs of 12,
    B-frames). Every frame is the right one, in any order."""
    src = numbered_frames(60)
    path = tmp_path / f"{codec}.mpg"
    write_video(path, src, fps=25, codec=codec, options={"bf": "2", "g": "12"})
    with open_video(path) as r:
        assert len(r) == 60
        order = [40, 50, 13, 59, 0, 25, *_shuffled(60)]
        assert [frame_number(r[i]) for i in order] == order


def test_mpeg_program_stream_with_repeated_timestamps_is_read_whole(tmp_path):
    """MPEG-2 in MPEG-PS with B-frames: the parser gives some pairs of packets one timestamp
    (6 of 18 files of a sweep): matched by timestamp, frame 36 of 120 read as frame 35, and
    reads of 35 and 37 (and a sequential read) failed as corrupt data. Frames are counted in
    output order, as FFmpeg decodes them from the start."""
    h, w = 64, 96
    src = np.empty((120, h, w, 3), np.uint8)  # a moving gradient, the index in the top row
    ramp = np.arange(w)[None, :] * 3 + np.arange(h)[:, None] * 2
    for i in range(120):
        src[i] = ((ramp + i * 7) % 200)[..., None]
        for b in range(8):
            src[i, :16, b * 12:(b + 1) * 12] = 255 if i >> b & 1 else 0

    def number(frame: np.ndarray) -> int:
        return sum(1 << b for b in range(8) if frame[2:14, b * 12 + 2:b * 12 + 10].mean() > 127)

    path = tmp_path / "bars.mpg"
    write_video(path, src, fps=25, codec="mpeg2video", options={"g": "12", "bf": "2"})
    with open_video(path) as r:
        assert (len(r), r.frames_lost) == (120, 0)
        assert [number(f) for f in r.read_all(strict=True)] == list(range(120))
    for i in (35, 36, 37, 80, 119):
        with open_video(path) as r:
            assert number(r[i]) == i


def test_h264_in_an_mpeg_program_stream_is_read_whole(tmp_path):
    """H.264 in MPEG-PS: only a few packets carry a timestamp. The index mixed the timed ones'
    timestamps with the untimed ones' places and reported a 2-frame video; every frame now,
    by sequential and by random access."""
    src = numbered_frames(60)
    path = tmp_path / "h264.mpg"
    write_video(path, src, fps=25)
    with open_video(path) as r:
        assert (len(r), r.frames_lost) == (60, 0)
        assert [frame_number(f) for f in r.read_all(strict=True)] == list(range(60))
        order = _shuffled(60, seed=1)[:20]
        assert [frame_number(r[i]) for i in order] == order


@pytest.mark.parametrize("ext", ["mkv", "webm"])
def test_audio_that_outlasts_the_video_is_not_lost_frames(tmp_path, ext):
    """An MKV / WebM whose audio (4 s) outlasts its video (1 s, 30 frames): the container's
    duration is the audio's, and the reader reported 90 of 120 frames lost (`strict` failed on
    an intact file). The video stream's own DURATION tag says 1 s: nothing is lost."""
    from fractions import Fraction

    src = make_frames(30, 48, 64)
    path = tmp_path / f"long_audio.{ext}"
    vcodec, acodec = ("libvpx-vp9", "libopus") if ext == "webm" else ("libx264", "pcm_s16le")
    if acodec not in av.codecs_available or vcodec not in av.codecs_available:
        pytest.skip(f"{vcodec} or {acodec} not in this PyAV build")
    with av.open(str(path), "w") as c:
        v = c.add_stream(vcodec, rate=30)
        v.height, v.width, v.pix_fmt = 48, 64, "yuv420p"
        a = c.add_stream(acodec, rate=48000)
        for f in src:
            for pkt in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in v.encode():
            c.mux(pkt)
        fmt, dtype = ("flt", np.float32) if acodec == "libopus" else ("s16", np.int16)
        for k in range(200):  # 200 x 960 samples at 48 kHz: 4 s
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), dtype), format=fmt,
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, k * 960, Fraction(1, 48000)
            for pkt in a.encode(frame):
                c.mux(pkt)
        for pkt in a.encode():
            c.mux(pkt)
    with av.open(str(path)) as c:  # the file is what this test needs
        assert c.duration / 1e6 > 3.5
    with open_video(path) as r:
        assert (len(r), r.frames_lost) == (30, 0)
        assert len(r.read_all(strict=True)) == 30


def test_decord_warns_where_its_seeks_were_seen_to_return_other_frames(tmp_path, caplog):
    """decord returns other frames than those asked for after a seek in MPEG-4 with B-frames
    (and MPEG-2, HEVC, H.264 in AVI): it said nothing. Opening such a file with it logs a
    warning that names the codec and points to PyAV; H.264 in MP4 gets none."""
    pytest.importorskip("decord")
    src = numbered_frames(24)
    bad, good = tmp_path / "bf.avi", tmp_path / "good.mp4"
    write_video(bad, src, fps=25, codec="mpeg4", options={"bf": "2", "g": "12"})
    write_video(good, src, fps=25)
    with caplog.at_level("WARNING", logger="vidccnet.data.video"):
        open_video(good, backend="decord").close()
        assert caplog.records == []
        open_video(bad, backend="decord").close()
    assert len(caplog.records) == 1
    assert "mpeg4" in caplog.text and "backend='av'" in caplog.text


def test_a_cut_30fps_mkv_counts_its_lost_frames_at_30fps(tmp_path):
    """MKV stamps in ms: a 30 fps frame step is 33 or 34 ms, whose median (33) says 30.3 fps."""
    p, cut = tmp_path / "full.mkv", tmp_path / "cut.mkv"
    write_video(p, make_frames(900, 32, 48), fps=30, codec="libx264",
                options={"bf": "0", "g": "30"})
    with av.open(str(p)) as c:
        pos, size = [(x.pos, x.size) for x in c.demux(video=0) if x.size][90]
    cut.write_bytes(p.read_bytes()[:pos + size])  # frames 0-89 read back
    with open_video(cut) as r:
        assert len(r) == 90
        assert r.frames_lost == 810  # the median step (33 ms) counted 818


def test_a_cut_avi_without_b_frames_reads_its_last_frames_at_random(tmp_path):
    """0bd216f made AVIs without B-frames seekable; a cut AVI has no index, its seek lands
    past the keyframe, and the partial packet at the end raises."""
    full, cut = tmp_path / "full.avi", tmp_path / "cut.avi"
    write_video(full, numbered_frames(40), fps=25, codec="libx264",
                options={"bf": "0", "g": "12"})
    cut.write_bytes(full.read_bytes()[:_packets(full)[20][0] + 3])  # inside packet 20
    with open_video(cut) as r:
        assert len(r) == 20
        assert [frame_number(r[i]) for i in (19, 0, 18)] == [19, 0, 18]


def test_an_mpeg1_avi_with_b_frames_opens(tmp_path):
    path = tmp_path / "m1.avi"
    write_video(path, numbered_frames(30), fps=25, codec="mpeg1video",
                options={"bf": "2", "g": "12"})
    with open_video(path) as r:
        assert [frame_number(f) for f in r] == list(range(30))


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_a_cut_avi_with_b_frames_reads_all_its_indexed_frames(tmp_path, codec):
    full, cut = tmp_path / "full.avi", tmp_path / "cut.avi"
    write_video(full, numbered_frames(40), fps=25, codec=codec, options={"bf": "2", "g": "12"})
    cut.write_bytes(full.read_bytes()[:_packets(full)[20][0] + 3])  # inside packet 20
    with open_video(cut) as r:
        assert len(r.read_all()) == len(r)


def test_frames_from_the_cache_cannot_be_changed_in_place(tmp_path):
    """The PyAV reader returns the frame it caches: a caller's in-place change (a[:] = 0)
    changed what later reads of that frame returned. Its frames are read-only now."""
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames(12), fps=12)
    with open_video(path) as r:
        a = r[5]
        with pytest.raises(ValueError, match="read-only"):
            a[:] = 0
        assert frame_number(r[5]) == 5
        batch = r.get_batch([4, 5])
        batch[:] = 0  # a batch is the caller's own array
        assert frame_number(r[5]) == 5
