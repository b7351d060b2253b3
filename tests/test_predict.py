"""Tests of vidccnet.predict (streaming VideoSegmenter) and vidccnet.visualize.

Numerics are checked against independent implementations written here: a float64 numpy bilinear
upsampler, an explicit clip schedule, and a fake model whose logits encode which frames were in
its clip, so that every mask tells which forward pass (and clip position) produced it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidccnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_clip_tensor
from vidccnet.data.video import VideoReadError
from vidccnet.predict import (
    SegmentationStream,
    TruncatedVideoError,
    VideoSegmenter,
    clip_schedule,
    default_stride,
    inference_size,
    resolve_device,
    training_short_side,
    upsample_argmax,
)
from vidccnet.visualize import colorize, default_palette, mask_to_image, overlay, palette_array

K_FAKE = 251  # classes of the fake model (a prime, < 256)


# ----------------------------------------------------------------------------- helpers
class ListReader:
    """A stand-in video reader over generated frames; counts reads and live frames."""

    def __init__(self, n, height=12, width=20, fps=25.0, fail_at=None, frames_lost=0):
        self.n, self.size, self.fps = n, (height, width), fps
        self.fail_at = fail_at
        self.frames_lost = frames_lost
        self.read = 0
        self.alive = 0
        self.max_alive = 0

    def __len__(self):
        return self.n

    def _release(self):
        self.alive -= 1

    def __iter__(self):
        for i in range(self.n):
            if self.fail_at is not None and i == self.fail_at:
                raise VideoReadError("fake.mp4", f"corrupt data near frame {i}")
            frame = np.full((*self.size, 3), i % 256, dtype=np.uint8)  # frame id in the pixels
            self.read += 1
            self.alive += 1
            self.max_alive = max(self.max_alive, self.alive)
            weakref.finalize(frame, self._release)
            yield frame
            del frame


class IdModel(torch.nn.Module):
    """Fake model: reads the frame ids of its clip back from the pixels and emits, at clip
    position p, a one-hot logit of class code(ids, p); records every clip it saw."""

    def __init__(self):
        super().__init__()
        self.clips = []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):  # (B, 3, T, H, W)
        assert x.dim() == 5 and x.shape[0] == 1
        v = x[0, 0, :, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        ids = [int(round(float(u) * 255)) for u in v]
        self.clips.append(ids)
        b, _, t, h, w = x.shape
        out = torch.zeros(b, K_FAKE, t, h, w)
        for p in range(t):
            out[0, code(ids, p), p] = 1.0
        return out


def code(ids, p):
    return (sum((q + 1) * i for q, i in enumerate(ids)) + 31 * p) % K_FAKE


def expected_passes(start, end, t, s):
    """Independent schedule: clips end at start+s-1, start+2s-1, ... and at end-1; positions
    before frame 0 repeat frame 0."""
    passes, done = [], start
    while done < end:
        last = min(done + s, end) - 1
        clip = [max(0, i) for i in range(last - t + 1, last + 1)]
        passes.append((clip, list(range(done, last + 1))))
        done = last + 1
    return passes


def expected_masks(start, end, t, s):
    masks = {}
    for clip, emitted in expected_passes(start, end, t, s):
        for j, f in enumerate(emitted):
            masks[f] = code(clip, t - len(emitted) + j)
    return masks


def np_bilinear(x, out_h, out_w):
    """float64 numpy bilinear resize (align_corners=False, PyTorch's convention): (K, h, w)."""
    k, h, w = x.shape

    def coords(n_out, n_in):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, wy = coords(out_h, h)
    x0, x1, wx = coords(out_w, w)
    rows = x[:, y0] * (1 - wy)[None, :, None] + x[:, y1] * wy[None, :, None]  # (K, H, w)
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx  # (K, H, W)


# ----------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("n,t,s", [(1, 5, 3), (7, 5, 3), (10, 4, 2), (9, 3, 1), (6, 4, 4)])
def test_clip_schedule(n, t, s):
    passes = clip_schedule(n, t, s)
    assert passes == expected_passes(0, n, t, s)
    emitted = [f for _, e in passes for f in e]
    assert emitted == list(range(n))
    for clip, e in passes:
        assert len(clip) == t and 1 <= len(e) <= s
        assert clip[-1] == e[-1]
        for j, f in enumerate(e):  # frame f sits at position t - len(e) + j of its clip
            pos = t - len(e) + j
            assert clip[pos] == f
            assert all(clip[q] <= f for q in range(pos))  # only predecessors before it


def test_default_stride_and_validation():
    assert [default_stride(t) for t in (1, 2, 3, 4, 5, 8)] == [1, 1, 2, 2, 3, 4]
    assert default_stride(4, per_frame_model=True) == 4
    with pytest.raises(ValueError):
        clip_schedule(5, 3, 4)


def test_inference_size():
    assert inference_size(45, 67) == (48, 64)
    assert inference_size(360, 480) == (360, 480)
    assert inference_size(720, 1280, max_size=360) == (360, 640)
    assert inference_size(1080, 1920, max_size=360) == (360, 640)
    assert inference_size(360, 480, max_size=1000) == (360, 480)  # never enlarged
    assert inference_size(1, 3) == (8, 8)
    # max_size is a cap: rounding to a multiple of 8 goes down where it binds (304 before)
    assert inference_size(1080, 1920, max_size=300) == (296, 528)
    assert inference_size(48, 64, max_size=60, short_side=100) == (56, 80)
    assert inference_size(1920, 1080, max_size=300) == (528, 296)
    with pytest.raises(ValueError):
        inference_size(10, 10, max_size=4)
    # short_side: resized up or down to it, aspect kept; max_size still caps
    assert inference_size(720, 1280, short_side=48) == (48, 88)  # 85.3 -> 88
    assert inference_size(24, 32, short_side=48) == (48, 64)
    assert inference_size(720, 1280, max_size=40, short_side=48) == (40, 72)
    with pytest.raises(ValueError):
        inference_size(10, 10, short_side=4)


def test_training_short_side_follows_the_evaluation_frames():
    from vidccnet.engine.config import Config, DataConfig, EvalConfig, config_to_dict

    assert training_short_side(Config()) == 64  # synthetic defaults: 64x96 frames
    syn = Config(data=DataConfig(kwargs={"height": 48, "width": 64}))
    assert training_short_side(syn) == 48
    assert training_short_side(config_to_dict(syn)) == 48  # as stored in a checkpoint
    assert training_short_side(Config(data=DataConfig(kwargs={"height": 48, "width": 64}),
                                      eval=EvalConfig(kwargs={"height": 32}))) == 32
    assert training_short_side(Config(data=DataConfig(name="camvid"))) == 360
    assert training_short_side(Config(data=DataConfig(name="vspw"))) == 480
    assert training_short_side(Config(data=DataConfig(name="camvid"),
                                      eval=EvalConfig(scales=(0.5,)))) == 180
    assert training_short_side(Config(data=DataConfig(name="camvid"),
                                      eval=EvalConfig(scales=(0.75, 1.0, 1.25)))) == 360
    assert training_short_side({"data": {"clip_len": 4}}) is None
    assert training_short_side(Config(data=DataConfig(name="folders"))) is None  # unknown
    mine = Config(data=DataConfig(name="folders", frame_short_side=270))
    assert training_short_side(mine) == 270  # recorded by the trainer
    assert training_short_side(config_to_dict(mine)) == 270
    assert training_short_side(None) is None


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu9")
    for meta in ("meta", torch.device("meta")):  # a device without data: no masks to compute
        with pytest.raises(ValueError, match="holds no data"):
            resolve_device(meta)
    if not torch.cuda.is_available():
        # a library caller reads the argument, a script's user the flag
        with pytest.raises(ValueError, match=r"device='cpu', or --device cpu in the scripts"):
            resolve_device("cuda")


# ----------------------------------------------------------------------------- upsampling
@pytest.mark.parametrize("shape,size", [((5, 6, 8), (45, 67)), ((3, 7, 5), (7, 5)),
                                        ((4, 9, 13), (20, 11))])
def test_upsample_argmax_matches_numpy(shape, size):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64)
    ref = np_bilinear(logits.numpy(), *size).argmax(0)
    full = upsample_argmax(logits, size)
    banded = upsample_argmax(logits, size, max_elements=shape[0] * size[1] * 2)  # 1-row bands
    assert full.shape == size and banded.shape == size
    # float32 inside: allow a handful of near-ties, none in practice
    assert (full.numpy() != ref).mean() < 1e-3
    assert (banded.numpy() != ref).mean() < 1e-3


def test_upsample_banded_equals_interpolate_values():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 10, 12, generator=g)
    size = (37, 29)
    ref = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    got = upsample_argmax(logits, size, max_elements=6 * 29 * 6)
    assert torch.equal(got, ref.argmax(0))


# ----------------------------------------------------------------------------- streaming
def fake_segmenter(t, s, **kw):
    return VideoSegmenter.from_model(
        IdModel(), class_names=[f"c{i}" for i in range(K_FAKE)], device="cpu",
        clip_len=t, stride=s, **kw,
    )


@pytest.mark.parametrize("n,t,s", [(1, 4, 2), (11, 4, 2), (10, 5, 3), (6, 3, 1), (8, 4, 4)])
def test_stream_matches_schedule(n, t, s):
    seg = fake_segmenter(t, s)
    reader = ListReader(n, 12, 20)
    out = list(seg.segment(reader))
    assert [i for i, _ in out] == list(range(n))
    want = expected_masks(0, n, t, s)
    for i, mask in out:
        assert mask.dtype == np.uint8 and mask.shape == (12, 20)
        assert np.all(mask == want[i]), f"frame {i}"
    assert seg.model.clips == [c for c, _ in expected_passes(0, n, t, s)]


def test_stream_start_end_uses_context_before_start():
    seg = fake_segmenter(5, 2)
    reader = ListReader(20)
    with seg.stream(reader, start=7, end=12) as stream:
        out = list(stream)
    assert [i for i, _ in out] == list(range(7, 12))
    want = expected_masks(7, 12, 5, 2)
    assert all(np.all(m == want[i]) for i, m in out)
    assert seg.model.clips[0] == [4, 5, 6, 7, 8]  # real predecessors of frame 7 as context
    assert stream.expected_frames == 5 and stream.frames_lost == 0
    assert reader.read == 12  # stopped decoding at `end`


def test_stream_keeps_a_bounded_number_of_frames():
    """Streaming: frames are read lazily and only O(stride) source frames are alive."""
    t, s = 4, 2
    seg = fake_segmenter(t, s)
    reader = ListReader(50, 16, 24)
    lags = []
    with seg.stream(reader, with_frames=True) as stream:
        for i, frame, _mask in stream:
            assert frame.shape == (16, 24, 3) and int(frame[0, 0, 0]) == i % 256
            lags.append(reader.read - (i + 1))
            del frame  # CPython frees it now (no cycles): the finalizer counts it
    assert len(lags) == 50
    assert max(lags) <= s  # never reads more than one stride ahead of the output
    assert reader.max_alive <= s + 2, reader.max_alive  # pending frames + the one in flight
    reader2 = ListReader(50, 16, 24)
    for _ in seg.segment(reader2):
        pass
    assert reader2.max_alive <= 2  # without with_frames no source frame is kept


def test_stream_truncated_video():
    seg = fake_segmenter(3, 2)
    reader = ListReader(10, fail_at=7)
    with seg.stream(reader) as stream:
        out = list(stream)
    assert [i for i, _ in out] == list(range(7))
    assert stream.frames_lost == 3 and "frame 7" in stream.decode_error
    want = expected_masks(0, 7, 3, 2)
    assert all(np.all(m == want[i]) for i, m in out)
    with pytest.raises(TruncatedVideoError, match="without strict mode"):
        list(seg.stream(ListReader(10, fail_at=7), strict=True))


def test_stream_header_announces_missing_frames():
    seg = fake_segmenter(3, 2)
    with seg.stream(ListReader(6, frames_lost=4)) as stream:
        assert stream.expected_frames == 10
        assert len(list(stream)) == 6
    assert stream.frames_lost == 4 and "announces 10" in stream.decode_error
    with pytest.raises(TruncatedVideoError, match="announces 10 frames but the file holds only 6"):
        seg.stream(ListReader(6, frames_lost=4), strict=True)
    with seg.stream(ListReader(6, frames_lost=4), end=5, strict=True) as stream:
        assert len(list(stream)) == 5 and stream.frames_lost == 0


def test_truncation_messages_agree_between_strict_and_lenient():
    """The header announces 10 frames, the file holds 6, frame 4 fails: 4 written, 6 lost. The
    strict error must not promise the 6 frames the file holds as 'frames that decode'."""
    seg = fake_segmenter(3, 2)
    with seg.stream(ListReader(6, frames_lost=4, fail_at=4)) as stream:
        assert len(list(stream)) == 4
    assert (stream.frames_done, stream.frames_lost) == (4, 6)
    assert "the header announces 10 frames, the file holds 6" in stream.decode_error
    assert "decoding failed at frame 4" in stream.decode_error
    with pytest.raises(TruncatedVideoError) as info:
        seg.stream(ListReader(6, frames_lost=4, fail_at=4), strict=True)
    msg = str(info.value)
    assert "announces 10 frames but the file holds only 6" in msg
    assert "6 frames that decode" not in msg
    # a file whose header is right but whose frame 4 is corrupt: strict says 4 of 6 decode
    with pytest.raises(TruncatedVideoError, match="frame 4 failed to decode"):
        list(seg.stream(ListReader(6, fail_at=4), strict=True))
    with seg.stream(ListReader(6, fail_at=4)) as stream:
        list(stream)
    assert stream.frames_lost == 2 and "decoding failed at frame 4" in stream.decode_error


class SeekReader(ListReader):
    """A ListReader with random access; records the frame indices it was asked for."""

    def __init__(self, n, **kw):
        super().__init__(n, **kw)
        self.asked = []

    def __getitem__(self, i):
        self.asked.append(i)
        return np.full((*self.size, 3), i % 256, dtype=np.uint8)


def test_stream_start_seeks_instead_of_decoding_the_frames_before():
    seg = fake_segmenter(4, 2)
    reader = SeekReader(100)
    with seg.stream(reader, start=90, end=95) as stream:
        out = list(stream)
    assert [i for i, _ in out] == list(range(90, 95))
    assert reader.asked == list(range(87, 95))  # T - 1 = 3 context frames, nothing before
    want = expected_masks(90, 95, 4, 2)
    assert all(np.all(m == want[i]) for i, m in out)
    assert reader.read == 0  # never iterated from frame 0


def write_gop_video(path, n, gop=5):
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=Fraction(10), options={"g": str(gop), "bf": "0"})
        st.width, st.height, st.pix_fmt = 32, 24, "yuv420p"
        for i in range(n):
            rgb = np.full((24, 32, 3), (i * 7) % 256, dtype=np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return path


def test_stream_start_on_a_real_video_decodes_from_the_keyframe(tmp_path, monkeypatch):
    from vidccnet.data.video import PyAVReader

    video = write_gop_video(tmp_path / "gop.mp4", 40, gop=5)
    decoded = []

    def counting(original):  # the reader decodes after a seek or from the start of the file
        def wrapper(self, *args):
            original(self, *args)
            frames = self._frames

            def counted():
                for frame in frames:
                    decoded.append(1)
                    yield frame

            self._frames = counted()

        return wrapper

    monkeypatch.setattr(PyAVReader, "_seek", counting(PyAVReader._seek))
    monkeypatch.setattr(PyAVReader, "_restart", counting(PyAVReader._restart))
    seg = fake_segmenter(2, 1)
    with seg.stream(str(video), start=33, end=36) as stream:
        seeked = list(stream)
    n_seek = len(decoded)

    class Sequential:  # the same reader without random access: decodes from frame 0
        def __init__(self, r):
            self.r, self.fps, self.size = r, r.fps, r.size

        def __len__(self):
            return len(self.r)

        def __iter__(self):
            return iter(self.r)

    decoded.clear()
    with PyAVReader(video) as r, seg.stream(Sequential(r), start=33, end=36) as stream:
        sequential = list(stream)
    assert [i for i, _ in seeked] == [33, 34, 35]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(seeked, sequential))
    assert n_seek <= 36 - 30 + 1, n_seek  # from the keyframe at 30 (plus the header's frame 0)
    assert len(decoded) >= 35


def test_stream_rejects_bad_range_and_iterates_once():
    seg = fake_segmenter(3, 2)
    with pytest.raises(ValueError):
        seg.stream(ListReader(5), start=4, end=2)
    stream = seg.stream(ListReader(5))
    assert isinstance(stream, SegmentationStream)
    list(stream)
    with pytest.raises(RuntimeError):
        iter(stream)


def test_from_model_validates_options():
    with pytest.raises(ValueError, match="stride"):
        fake_segmenter(3, 4)
    with pytest.raises(ValueError):
        fake_segmenter(0, 1)
    seg = VideoSegmenter.from_model(IdModel(), class_names=["a", "b"], device="cpu", clip_len=5)
    assert seg.stride == 3 and seg.palette[:2] == default_palette(2)
    for model, extra, stride in (("ccnet2d_resnet18", {}, 4), ("ccnet3d_resnet18", {}, 2),
                                 ("ccnet3d_resnet18", {"temporal_shift": False,
                                                       "temporal_attention": False}, 4),
                                 ("ccnet2d_resnet18", {"temporal_attention": True}, 2)):
        cfg = {"model": {"name": model, **extra}, "data": {"clip_len": 4}}
        seg = VideoSegmenter.from_model(IdModel(), class_names=["a"], config=cfg, device="cpu")
        assert (seg.clip_len, seg.stride) == (4, stride), (model, extra)


def test_from_model_refuses_class_names_that_do_not_fit_the_model():
    """Fewer names than the model's classes gave masks with values past the names and a
    summary whose class shares summed to 1 over the wrong classes: refused, at construction
    when the model says its classes, else at the first clip."""
    from vidccnet.models import create_model

    model = create_model("ccnet3d_resnet18", 5, backbone_width=8, head_channels=16)
    with pytest.raises(ValueError, match="5 classes.*2 class names"):
        VideoSegmenter.from_model(model, class_names=["a", "b"], device="cpu")
    seg = VideoSegmenter.from_model(IdModel(), class_names=["a", "b"], device="cpu", clip_len=2)
    with pytest.raises(ValueError, match=f"{K_FAKE} classes.*2 class names"):
        list(seg.segment(ListReader(3)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_from_model_runs_a_model_of_another_dtype(dtype):
    """The clip is given in the model's dtype (float32 always was: a conv of a float64 or
    bfloat16 model refused it); the masks agree with the float32 model's."""
    from vidccnet.models import create_model

    torch.manual_seed(0)
    model = create_model("ccnet3d_resnet18", 3, backbone_width=8, head_channels=16).eval()
    names = ["a", "b", "c"]
    want = [m for _, m in VideoSegmenter.from_model(model, class_names=names, device="cpu",
                                                    clip_len=2).segment(ListReader(3, 16, 24))]
    seg = VideoSegmenter.from_model(copy.deepcopy(model).to(dtype), class_names=names,
                                    device="cpu", clip_len=2)
    got = [m for _, m in seg.segment(ListReader(3, 16, 24))]
    agree = np.mean([(g == w).mean() for g, w in zip(got, want)])
    assert agree > (0.999 if dtype == torch.float64 else 0.9), agree


def test_from_model_of_a_per_frame_network_emits_whole_clips():
    """A per-frame CCNet given without a config runs clips without overlap (stride T), as one
    built from its checkpoint does."""
    from vidccnet.models import create_model

    for name, stride in (("ccnet2d_resnet18", 4), ("ccnet3d_resnet18", 2)):
        model = create_model(name, 2, backbone_width=8, head_channels=16)
        seg = VideoSegmenter.from_model(model, class_names=["a", "b"], device="cpu", clip_len=4)
        assert seg.stride == stride, name


def expected_strided_masks(start, end, t, d):
    """Frame stride d > 1: every frame f is predicted at the last position of its own clip
    [f - (T-1) d, ..., f - d, f] (positions before frame 0 repeat frame 0)."""
    clips = {f: [max(0, f - (t - 1 - p) * d) for p in range(t)] for f in range(start, end)}
    return clips, {f: code(c, t - 1) for f, c in clips.items()}


@pytest.mark.parametrize("n,t,d", [(9, 3, 2), (7, 4, 3), (1, 2, 5)])
def test_stream_with_a_frame_stride_gives_each_frame_its_training_clip(n, t, d):
    seg = fake_segmenter(t, None, frame_stride=d)
    assert seg.frame_stride == d and seg.stride == 1
    out = list(seg.segment(ListReader(n)))
    clips, want = expected_strided_masks(0, n, t, d)
    assert [i for i, _ in out] == list(range(n))
    assert all(np.all(m == want[i]) for i, m in out)
    assert seg.model.clips == [clips[f] for f in range(n)]


def test_stream_with_a_frame_stride_uses_context_before_start():
    seg = fake_segmenter(3, None, frame_stride=2)
    reader = ListReader(20)
    with seg.stream(reader, start=5, end=8) as stream:
        out = list(stream)
    clips, want = expected_strided_masks(5, 8, 3, 2)
    assert [i for i, _ in out] == [5, 6, 7]
    assert all(np.all(m == want[i]) for i, m in out)
    assert seg.model.clips[0] == [1, 3, 5]  # real predecessors, 2 frames apart
    assert reader.read == 8


def test_frame_stride_options_are_checked():
    with pytest.raises(ValueError, match="frame_stride must be >= 1"):
        fake_segmenter(3, None, frame_stride=0)
    with pytest.raises(ValueError, match="stride must be 1"):
        fake_segmenter(3, 2, frame_stride=2)
    seg = fake_segmenter(3, 1, frame_stride=2)
    assert seg.stride == 1


def test_a_per_frame_network_ignores_the_frame_stride():
    from vidccnet.models import create_model

    model = create_model("ccnet2d_resnet18", 2, backbone_width=8, head_channels=16)
    seg = VideoSegmenter.from_model(model, class_names=["a", "b"], device="cpu", clip_len=4,
                                    frame_stride=3)
    assert seg.frame_stride == 1 and seg.stride == 4


# ----------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def tiny_checkpoint():
    from vidccnet.engine.config import Config, DataConfig, ModelConfig, config_to_dict
    from vidccnet.models import create_model

    torch.manual_seed(0)
    names = ["sky", "road", "car", "person"]
    palette = [(70, 130, 180), (128, 64, 128), (0, 0, 142), (220, 20, 60)]
    cfg = Config(
        model=ModelConfig(name="ccnet3d_resnet18", kwargs={"head_channels": 16}),
        data=DataConfig(clip_len=3, class_names=names, palette=palette),
    )
    model = create_model("ccnet3d_resnet18", len(names), head_channels=16)
    with torch.no_grad():  # make the random classifier less degenerate
        for p in model.parameters():
            if p.dim() == 1 and p.numel() == len(names):
                p.copy_(torch.randn(len(names)))
    return {
        "model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}, "scaler": None,
        "iteration": 0, "config": config_to_dict(cfg), "metrics": {}, "version": 1,
    }


def test_real_model_stream_equals_clipwise_prediction(tiny_checkpoint):
    seg = VideoSegmenter(tiny_checkpoint, device="cpu", size="source")
    assert seg.clip_len == 3 and seg.stride == 2
    assert seg.class_names == ["sky", "road", "car", "person"]
    assert seg.palette[1] == (128, 64, 128)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 45, 67, 3), dtype=np.uint8)

    class ArrayReader:
        fps, size = 10.0, (45, 67)

        def __len__(self):
            return len(frames)

        def __iter__(self):
            return iter(frames)

    out = list(seg.segment(ArrayReader()))
    assert [i for i, _ in out] == list(range(4))
    # independent: whole-video tensor, explicit clips, upsample, argmax
    video = to_clip_tensor(frames).permute(1, 0, 2, 3)  # (L, 3, H, W)
    video = F.interpolate(video, size=(48, 64), mode="bilinear", align_corners=False,
                          antialias=True)
    with torch.no_grad():
        for clip, emitted in expected_passes(0, 4, 3, 2):
            logits = seg.model(video[clip].permute(1, 0, 2, 3)[None])  # (1, K, T, h, w)
            for j, f in enumerate(emitted):
                lg = logits[0, :, 3 - len(emitted) + j]
                want = F.interpolate(lg[None], size=(45, 67), mode="bilinear")[0].argmax(0)
                assert np.array_equal(out[f][1], want.numpy().astype(np.uint8)), f"frame {f}"


def test_frame_stride_defaults_to_the_checkpoints(tiny_checkpoint):
    """A model trained on clips of every 2nd frame sees such clips here too (it saw
    consecutive frames before, a spacing it was never trained on)."""
    ckpt = dict(tiny_checkpoint, config=copy.deepcopy(tiny_checkpoint["config"]))
    ckpt["config"]["data"]["frame_stride"] = 2
    seg = VideoSegmenter(ckpt, device="cpu", size="source")
    assert seg.frame_stride == 2 and seg.stride == 1
    seg = VideoSegmenter(ckpt, device="cpu", size="source", frame_stride=1)
    assert seg.frame_stride == 1 and seg.stride == 2


def test_checkpoint_dict_without_config_is_rejected(tiny_checkpoint):
    from vidccnet.engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="'config'"):
        VideoSegmenter({"model": tiny_checkpoint["model"]}, device="cpu")


def test_checkpoint_dict_of_a_newer_format_is_rejected(tiny_checkpoint):
    """A loaded dict gets the version check a file gets (a dict without a version, made by
    hand, is taken as the current format)."""
    from vidccnet.engine.checkpoint import CHECKPOINT_VERSION, CheckpointError

    newer = {**tiny_checkpoint, "version": CHECKPOINT_VERSION + 1}
    with pytest.raises(CheckpointError, match="newer than this code"):
        VideoSegmenter(newer, device="cpu")
    VideoSegmenter({k: v for k, v in tiny_checkpoint.items() if k != "version"}, device="cpu")


def test_checkpoint_from_path_and_amp(tiny_checkpoint, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_checkpoint, path)
    seg = VideoSegmenter(path, device="cpu", clip_len=2, stride=1, amp=True, max_size=16)
    assert seg.checkpoint_path == str(path) and (seg.clip_len, seg.stride) == (2, 1)
    assert seg.amp is False  # autocast on CUDA only
    out = list(seg.segment(ListReader(3, 30, 40)))
    assert len(out) == 3 and all(m.shape == (30, 40) and m.max() < 4 for _, m in out)


class AutocastProbe(IdModel):
    def forward(self, x):
        self.autocast = [torch.is_autocast_enabled(d) for d in ("cpu", "cuda")]
        return super().forward(x)


def test_amp_on_cpu_warns_and_runs_float32(caplog):
    from vidccnet.engine import amp as amp_module

    amp_module._warned.clear()  # the shared decision warns once per process
    with caplog.at_level(logging.WARNING, logger="vidccnet.engine.amp"):
        seg = VideoSegmenter.from_model(AutocastProbe(), device="cpu", clip_len=2, amp=True,
                                        class_names=[f"c{i}" for i in range(K_FAKE)])
    assert seg.amp is False
    assert any("cuda only" in r.getMessage().lower() and "cpu" in r.getMessage().lower()
               for r in caplog.records)
    list(seg.segment(ListReader(2)))
    assert seg.model.autocast == [False, False]


def test_size_modes():
    cfg = {"data": {"name": "synthetic", "kwargs": {"height": 24, "width": 32}}}
    seg = VideoSegmenter.from_model(IdModel(), class_names=["a"], config=cfg, device="cpu")
    assert seg.size_mode == "model" and seg.model_short_side == 24
    assert seg.inference_size_for(480, 640) == (24, 32)
    assert seg.stream(ListReader(2, 96, 128)).inference_size == (24, 32)
    assert "24x32" in seg.describe_size(480, 640) and "480x640" in seg.describe_size(480, 640)
    for size, want in (("source", (480, 640)), (120, (120, 160)), ("64", (64, 88))):
        seg = VideoSegmenter.from_model(IdModel(), class_names=["a"], config=cfg, device="cpu",
                                        size=size)
        assert seg.inference_size_for(480, 640) == want, size
    seg = VideoSegmenter.from_model(IdModel(), class_names=["a"], config=cfg, device="cpu",
                                    max_size=16)
    assert seg.inference_size_for(480, 640) == (16, 24)
    seg = VideoSegmenter.from_model(IdModel(), class_names=["a"], device="cpu")  # no config
    assert seg.size_mode == "source" and seg.inference_size_for(45, 67) == (48, 64)
    for bad in ("big", 4, "0"):
        with pytest.raises(ValueError, match="size"):
            VideoSegmenter.from_model(IdModel(), class_names=["a"], device="cpu", size=bad)


# ----------------------------------------------------------------------------- writing
def test_write_through_symlinks_keeps_them(tmp_path):
    """--out (and --overlay) given as a symlink to a folder on a scratch disk: the masks go to
    the link's target and the link stays (the link used to be replaced by a real folder,
    with the target left empty); with overwrite the target's earlier output is replaced."""
    seg = fake_segmenter(3, 2)
    (tmp_path / "scratch" / "masks").mkdir(parents=True)
    (tmp_path / "masks").symlink_to(tmp_path / "scratch" / "masks")
    (tmp_path / "scratch" / "ov.mkv").write_bytes(b"old")
    (tmp_path / "ov.mkv").symlink_to(tmp_path / "scratch" / "ov.mkv")
    for _ in range(2):  # the second time over the first one's output
        seg.write(ListReader(4, 12, 20), tmp_path / "masks", overlay=tmp_path / "ov.mkv",
                  overwrite=True, progress=False)
        assert (tmp_path / "masks").is_symlink() and (tmp_path / "ov.mkv").is_symlink()
        assert len(list((tmp_path / "scratch" / "masks").glob("*.png"))) == 4
        with av.open(str(tmp_path / "scratch" / "ov.mkv")) as c:
            assert sum(1 for _ in c.decode(video=0)) == 4
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == ["masks", "ov.mkv"]
    seg.write(ListReader(4, 12, 20), tmp_path / "masks", overlay=tmp_path / "masks" / "o.mkv",
              overwrite=True, progress=False)  # an overlay inside the linked folder
    assert (tmp_path / "masks").is_symlink()
    assert (tmp_path / "scratch" / "masks" / "o.mkv").is_file()


def test_write_is_staged_and_complete(tmp_path, caplog):
    seg = fake_segmenter(3, 2)
    out = tmp_path / "new" / "masks"
    with caplog.at_level(logging.INFO, logger="vidccnet.writer"):
        summary = seg.write(ListReader(5, 12, 20), out, overlay=out / "ov.mkv", progress="log",
                            progress_interval=0.0)
    assert sorted(os.listdir(out)) == [f"{i:06d}.png" for i in range(5)] + ["ov.mkv",
                                                                           "summary.json"]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["frames"] == 5 and summary["inference_size"] == [16, 16]
    want = expected_masks(0, 5, 3, 2)
    for i in range(5):
        with Image.open(out / f"{i:06d}.png") as im:
            assert np.all(np.asarray(im) == want[i])
    lines = [r.getMessage() for r in caplog.records]
    assert any("inference size 16x16" in m for m in lines)
    assert any("5/5 frames" in m and "frames/s" in m and "ETA" in m for m in lines), lines
    with av.open(str(out / "ov.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5
    # an existing folder is kept unless overwrite; a failure leaves everything as it was
    with pytest.raises(ValueError, match="overwrite=True"):
        seg.write(ListReader(5), out)
    with pytest.raises(TruncatedVideoError):
        seg.write(ListReader(5, fail_at=3), out, overwrite=True, strict=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["new"] and sorted(os.listdir(tmp_path / "new")) == [
        "masks"]
    assert len(os.listdir(out)) == 7
    summary = seg.write(ListReader(5), out, overwrite=True, start=1, end="0.12s",
                        progress=False, fmt="npz")  # 0.12 s at 25 fps = frame 3
    assert sorted(os.listdir(out)) == ["000001.npz", "000002.npz", "summary.json"]
    assert (summary["start"], summary["end"]) == (1, 3)


@pytest.mark.parametrize("failing", ["masks", "overlay"])
def test_write_commits_the_masks_and_an_overlay_outside_them_together(tmp_path, monkeypatch,
                                                                      failing):
    """The overlay (outside the mask folder) and the masks are renamed into place together: a
    failure of either rename leaves both as they were. The overlay was renamed first, so a
    failure of the masks' rename left a new overlay beside the previous masks."""
    import vidccnet.writer as writer

    seg = fake_segmenter(3, 2)
    out, ov = tmp_path / "masks", tmp_path / "ov.mkv"
    seg.write(ListReader(4, 12, 20), out, overlay=ov, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}, ov.read_bytes()
    replace = os.replace

    def failing_replace(src, dst):
        staged = Path(src).name.startswith(".")  # not the previous output put back
        if staged and Path(dst) == {"masks": out, "overlay": ov}[failing]:
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        seg.write(ListReader(6, 12, 20), out, overlay=ov, overwrite=True, progress=False)
    assert ({p.name: p.read_bytes() for p in out.iterdir()}, ov.read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["masks", "ov.mkv"]  # nothing staged is left


def test_write_errors_name_the_arguments_of_the_function_called(tmp_path):
    """A library caller reads about write()'s arguments (out, overwrite=True, fmt), not
    segment_video.py's flags (--out, --overwrite, --format), which cli=True keeps."""
    from vidccnet.writer import OutputPathError, check_paths

    seg = fake_segmenter(3, 2)
    out = tmp_path / "m"
    seg.write(ListReader(2), out, progress=False)
    for kwargs, words in (({}, "out '.*' exists and is not empty.*pass overwrite=True"),
                          ({"alpha": 2}, "alpha must be in"), ({"fmt": "jpg"}, "fmt must be"),
                          ({"start": "ten"}, "start 'ten' is not a frame index"),
                          ({"start": 9}, "start 9 is beyond"),
                          ({"end": "0s"}, "end 0s .* must come after start 0"),
                          ({"fps": 4}, "fps sets the rate of a folder"),
                          ({"overlay": tmp_path / "ov.png"}, "overlay '.*' has extension")):
        with pytest.raises(ValueError, match=words) as err:
            seg.write(ListReader(2), out, overwrite=bool(kwargs), progress=False, **kwargs)
        assert "--" not in str(err.value), str(err.value)
    with pytest.raises(OutputPathError, match="--out '.*' exists.*pass --overwrite"):
        seg.write(ListReader(2), out, progress=False, cli=True)
    with pytest.raises(ValueError, match="--format must be"):
        seg.write(ListReader(2), out, progress=False, fmt="jpg", cli=True)
    with pytest.raises(OutputPathError, match="--overlay '.*' is the --out folder"):
        check_paths(None, out, overlay=out, overwrite=True, cli=True)


def test_write_refuses_paths_that_would_destroy_the_input(tmp_path):
    from vidccnet.writer import OutputPathError, check_paths

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(frames / "0.png")
    video = tmp_path / "in.mp4"
    video.write_bytes(b"video")
    for src, out, ov, words in (
        (frames, frames, None, "is the input folder"),
        (frames, frames / "sub", None, "is inside the input folder"),
        (video, tmp_path, None, "contains the input"),
        (video, tmp_path / "m", video, "is the input"),
        (frames, tmp_path / "m", frames / "ov.mp4", "is inside the input"),
        (video, tmp_path / "m", tmp_path / "ov.png", "'.png'"),
        (video, tmp_path / "m", tmp_path / "m", "is the out folder"),
        (video, tmp_path / "m", tmp_path / "m" / "a" / "ov.mp4", "sub-folder of out"),
    ):
        with pytest.raises(OutputPathError, match=words):
            check_paths(src, out, overlay=ov, overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(frames)
    with pytest.raises(OutputPathError, match="is the input folder"):
        check_paths(frames, link, overwrite=True)  # the same folder through a symlink
    with pytest.raises(OutputPathError, match="contains"):
        check_paths(video, tmp_path / "ck", overwrite=True, protect=[tmp_path / "ck" / "m.pt"])
    check_paths(video, tmp_path / "m", overlay=tmp_path / "m" / "ov.webm")  # fine
    for out, protect in ((tmp_path, []), (tmp_path / "ck", [tmp_path / "ck" / "m.pt"])):
        with pytest.raises(OutputPathError) as err:
            check_paths(video, out, overwrite=True, protect=protect)
        assert "DIR" not in str(err.value)  # a placeholder was left in these messages
    for src, out, ov, words in (  # an unset shell variable ("$VIDEO") is not the current folder
        ("", tmp_path / "m", None, "input path is empty"),
        (video, "", None, "the out path is empty"),
        (video, tmp_path / "m", "", "the overlay path is empty"),
    ):
        with pytest.raises(OutputPathError, match=words):
            check_paths(src, out, overlay=ov)


def test_overwrite_replaces_only_an_earlier_output(tmp_path, monkeypatch):
    """--overwrite replaces a folder of masks, summary.json and an overlay; a folder holding
    anything else (a user's files, a sub-folder) is refused, and so is the current folder."""
    from vidccnet.writer import OutputPathError, check_paths

    video = tmp_path / "in.mp4"
    video.write_bytes(b"video")
    old = tmp_path / "masks"
    old.mkdir()
    for name in ("000000.png", "000001.npz", "overlay.mp4"):
        (old / name).write_bytes(b"x")
    (old / "summary.json").write_text('{"frames": 2, "overlay": "masks/overlay.mp4"}')
    check_paths(video, old, overwrite=True)  # an earlier output: may be replaced
    (old / "holiday.mkv").write_bytes(b"x")  # a video, but not the overlay the summary names
    with pytest.raises(OutputPathError, match="holiday.mkv.*only an earlier output"):
        check_paths(video, old, overwrite=True)
    (old / "holiday.mkv").unlink()
    (old / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="notes.txt.*only an earlier output"):
        check_paths(video, old, overwrite=True)
    (old / "notes.txt").unlink()
    (old / "sub").mkdir()
    with pytest.raises(OutputPathError, match="sub"):
        check_paths(video, old, overwrite=True)
    (old / "sub").rmdir()
    monkeypatch.chdir(old)
    with pytest.raises(OutputPathError, match="current folder"):
        check_paths(video, ".", overwrite=True)



@pytest.mark.parametrize("names", [("holiday.mp4", "birthday.mov"),
                                   ("000000.png", "000001.png"),
                                   ("000000.png", "summary.json")])
def test_overwrite_refuses_a_folder_without_our_summary(tmp_path, names):
    """Files named as masks or overlays are not an earlier output without the summary.json that
    every run writes: a folder of the user's videos, or of frames named 000000.png, was deleted
    by --overwrite."""
    from vidccnet.writer import OutputPathError, check_paths

    video = tmp_path / "in.mp4"
    video.write_bytes(b"video")
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in names:
        (folder / name).write_text("{}" if name == "summary.json" else "mine")
    with pytest.raises(OutputPathError, match="which this tool did not write"):
        check_paths(video, folder, overwrite=True)

def test_out_that_is_the_input_video_says_so(tmp_path):
    """--out naming the input video itself was refused as a folder 'containing' the input."""
    from vidccnet.writer import OutputPathError, check_paths

    video = tmp_path / "in.mp4"
    video.write_bytes(b"video")
    with pytest.raises(OutputPathError, match="is the input video; write the masks elsewhere"):
        check_paths(video, video, overwrite=True)
    assert video.read_bytes() == b"video"


@pytest.mark.parametrize("extra", ["99.png", "000999.png", "000001.npz", "ov.mp4"])
def test_overwrite_refuses_numbered_files_the_earlier_run_did_not_write(tmp_path, extra):
    """Every file with an all-digit stem counted as a mask of the earlier run, and the overlay's
    name as its overlay wherever that was written: --overwrite deleted a user's 99.png or
    000999.png next to masks 0-2, and replaced a 000007.png. The earlier summary.json's frame
    range, mask format and overlay place say which files are its own."""
    from vidccnet.writer import OutputPathError, check_paths

    video = tmp_path / "in.mp4"
    video.write_bytes(b"video")
    folder = tmp_path / "out"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:06d}.png").write_bytes(b"mask")
    summary = {"frames": 3, "start": 0, "end": 3, "format": "png",
               "overlay": str(tmp_path / "ov.mp4"), "overlay_in_output": False}
    (folder / "summary.json").write_text(json.dumps(summary))
    check_paths(video, folder, overwrite=True)  # its own output only: replaced
    (folder / extra).write_bytes(b"mine")
    with pytest.raises(OutputPathError, match=f"holds {extra}, which this tool did not write"):
        check_paths(video, folder, overwrite=True)


def test_writer_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, vidccnet.writer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "False", out.stderr


# ----------------------------------------------------------------------------- visualize
def test_palette_and_overlay():
    pal = default_palette(256)
    assert len(set(pal)) == 256 and pal[0] == (0, 0, 0)
    table = palette_array([(1, 2, 3)], 4)
    assert table.shape == (4, 3) and tuple(table[0]) == (1, 2, 3) and tuple(table[1]) == pal[1]
    with pytest.raises(ValueError):
        palette_array([(1, 2, 300)])
    mask = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    col = colorize(mask, palette)
    assert col[0, 1].tolist() == [0, 255, 0] and col[1, 0].tolist() == [0, 0, 255]
    frame = np.full((2, 2, 3), 100, dtype=np.uint8)
    blended = overlay(frame, mask, palette, alpha=0.25)
    ref = np.round(0.75 * 100.0 + 0.25 * np.asarray(col, dtype=np.float64)).astype(np.uint8)
    assert np.array_equal(blended, ref)
    image = mask_to_image(mask, palette)
    assert image.mode == "P" and np.array_equal(np.asarray(image), mask)
    assert image.getpalette()[:9] == [255, 0, 0, 0, 255, 0, 0, 0, 255]


def test_mask_png_roundtrip(tmp_path):
    mask = np.random.default_rng(0).integers(0, 5, size=(9, 7), dtype=np.uint8)
    mask_to_image(mask, None).save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P" and np.array_equal(np.asarray(im), mask)
