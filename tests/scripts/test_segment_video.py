"""End-to-end tests of scripts/segment_video.py on videos written here with PyAV.

A tiny randomly initialised ccnet3d_resnet18 checkpoint (head_channels=16) is built with the real
create_model and the checkpoint format of docs/design.md. Most runs call the script's ``main`` in
process (fast); one runs it as a subprocess to check the exit code and the absence of a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "segment_video.py"
NAMES = ["sky", "road", "car", "person"]
PALETTE = [(70, 130, 180), (128, 64, 128), (0, 0, 142), (220, 20, 60)]


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("segment_video")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, save_tiny_checkpoint):
    return save_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.pt", NAMES,
        model={"name": "ccnet3d_resnet18", "kwargs": {"head_channels": 16}},
        # trained (and evaluated) on 24x32 synthetic frames: the default inference scale
        data={"clip_len": 2, "palette": PALETTE, "kwargs": {"height": 24, "width": 32}},
    )


def write_video(path, n, height, width, codec="libx264", fps=12, pix="yuv420p", rotation=0):
    rng = np.random.default_rng(n)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, pix
        if rotation:
            s.set_display_rotation(rotation)  # a phone video's rotation tag
        for _ in range(n):
            rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def run(script, capsys, *argv):
    rc = script.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def check_pngs(out, indices, size):
    for i in indices:
        with Image.open(out / f"{i:06d}.png") as im:
            assert im.mode == "P" and im.size == (size[1], size[0])
            assert im.getpalette()[:12] == [v for c in PALETTE for v in c]
            assert np.asarray(im).max() < len(NAMES)


# ----------------------------------------------------------------------------- success paths
def test_h264_with_overlay(script, ckpt, tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 3, 46, 68, fps=12)
    out, ov = tmp_path / "masks", tmp_path / "overlay.mp4"
    rc, err = run(script, capsys, video, "--out", out, "--checkpoint", ckpt, "--overlay", ov)
    assert rc == 0, err
    assert listing(out) == [f"{i:06d}.png" for i in range(3)] + ["summary.json"]
    check_pngs(out, range(3), (46, 68))
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 3 and s["frames_lost"] == 0 and s["fps"] == 12.0
    assert s["size"] == [46, 68] and s["class_names"] == NAMES
    assert s["clip_len"] == 2 and s["stride"] == 1 and s["checkpoint"] == str(ckpt)
    assert s["frame_stride"] == 1
    assert abs(sum(s["class_pixel_share"].values()) - 1.0) < 1e-9
    masks = np.stack([np.asarray(Image.open(out / f"{i:06d}.png")) for i in range(3)])
    share = np.bincount(masks.ravel(), minlength=4) / masks.size
    assert np.allclose([s["class_pixel_share"][n] for n in NAMES], share)
    flicker = np.mean([(masks[i] != masks[i - 1]).mean() for i in range(1, 3)])
    assert abs(s["flicker_rate"] - flicker) < 1e-9
    assert s["seconds"] > 0 and s["model"] == "ccnet3d_resnet18"
    with av.open(str(ov)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name in ("h264", "mpeg4") and float(st.average_rate) == 12.0
        assert sum(1 for _ in c.decode(st)) == 3
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "masks", "overlay.mp4"]  # no temp left


def test_mjpeg_odd_size_npz_decord(script, ckpt, tmp_path, capsys):
    video = write_video(tmp_path / "in.avi", 3, 45, 67, codec="mjpeg", pix="yuvj444p")
    out = tmp_path / "masks"
    for backend in ("av", "decord"):
        rc, err = run(script, capsys, video, "--out", out, "--checkpoint", ckpt, "--format",
                      "npz", "--clip-len", "3", "--stride", "3", "--backend", backend,
                      "--overwrite", "--quiet", "--size", "source")
        assert rc == 0, err
        assert listing(out) == ["000000.npz", "000001.npz", "000002.npz", "summary.json"]
        for i in range(3):
            with np.load(out / f"{i:06d}.npz") as z:
                assert z["mask"].shape == (45, 67) and z["mask"].dtype == np.uint8
        assert json.loads((out / "summary.json").read_text())["inference_size"] == [48, 64]


def test_single_frame_mpeg4_rotated(script, ckpt, tmp_path, capsys):
    video = write_video(tmp_path / "one.mp4", 1, 24, 32, codec="mpeg4", fps=10, rotation=90)
    out = tmp_path / "masks"
    rc, err = run(script, capsys, video, "--out", out, "--checkpoint", ckpt, "--quiet")
    assert rc == 0, err
    check_pngs(out, [0], (32, 24))  # displayed (rotated) size
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 1 and s["flicker_rate"] == 0.0 and s["fps"] == 10.0
    assert s["size"] == [32, 24]


def test_frame_folder_range_env_checkpoint_overwrite(script, ckpt, tmp_path, capsys,
                                                     monkeypatch):
    frames = frame_folder(tmp_path / "frames", 5, (30, 40), "f_{}.png")
    out = tmp_path / "masks"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    monkeypatch.setenv("VIDCCNET_CHECKPOINT", str(ckpt))
    rc, err = run(script, capsys, frames, "--out", out, "--start", "1", "--end", "3")
    assert rc == 2 and "--overwrite" in err and listing(out) == ["stale.txt"]
    # --overwrite replaces an earlier output only: a file it did not write is kept and refused
    rc, err = run(script, capsys, frames, "--out", out, "--overwrite")
    assert rc == 2 and "stale.txt" in err and listing(out) == ["stale.txt"]
    (out / "stale.txt").unlink()
    (out / "000009.png").write_text("an earlier run's mask")
    (out / "summary.json").write_text('{"frames": 1}')  # every run writes one
    rc, err = run(script, capsys, frames, "--out", out, "--start", "1", "--end", "3",
                  "--overwrite")
    assert rc == 0, err
    assert listing(out) == ["000001.png", "000002.png", "summary.json"]
    check_pngs(out, [1, 2], (30, 40))
    s = json.loads((out / "summary.json").read_text())
    assert (s["start"], s["end"], s["frames"], s["fps"]) == (1, 3, 2, 30.0)
    assert s["checkpoint"] == str(ckpt)
    assert s["source_files"] == ["f_1.png", "f_2.png"]  # mask 000001.png is of f_1.png
    assert sorted(os.listdir(tmp_path)) == ["frames", "masks"]


def test_fps_sets_the_rate_of_a_frame_folder(script, ckpt, tmp_path, capsys):
    """A folder of frames has no frame rate: 30 unless --fps says otherwise; --fps sets what
    --start in seconds means, summary.json's fps and the overlay's rate. A video file keeps
    its own rate: --fps is refused there."""
    frames = frame_folder(tmp_path / "frames", 6, (16, 16), "f_{}.png")
    out = tmp_path / "masks"
    rc, err = run(script, capsys, frames, "--out", out, "--fps", "4", "--start", "0.5s",
                  "--overlay", tmp_path / "ov.mp4", "--checkpoint", ckpt)
    assert rc == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert (s["fps"], s["start"], s["frames"]) == (4.0, 2, 4)
    rc, err = run(script, capsys, frames, "--out", tmp_path / "m4", "--fps", "4", "--start",
                  "0.5s", "--end", "2", "--checkpoint", ckpt)  # seconds shown as frames
    assert rc == 2 and "--end 2 (frame 2) must come after --start 0.5s (frame 2)" in err, err
    with av.open(str(tmp_path / "ov.mp4")) as c:
        assert c.streams.video[0].average_rate == 4
    video = write_video(tmp_path / "in.mp4", 2, 16, 16)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m2", "--fps", "4",
                  "--checkpoint", ckpt)
    assert rc == 2 and "--fps" in err and not (tmp_path / "m2").exists()
    for bad in ("0", "-1", "nan"):
        rc, err = run(script, capsys, frames, "--out", tmp_path / "m3", "--fps", bad,
                      "--checkpoint", ckpt)
        assert rc == 2 and "--fps" in err and len(err.strip().splitlines()) == 1


def test_truncated_video_keeps_decoded_frames_or_fails_strict(script, ckpt, tmp_path, capsys):
    full = write_video(tmp_path / "full.mkv", 10, 32, 32)
    data = full.read_bytes()
    video = tmp_path / "cut.mkv"
    video.write_bytes(data[: int(len(data) * 0.6)])
    full.unlink()
    out = tmp_path / "masks"
    rc, strict_err = run(script, capsys, video, "--out", out, "--checkpoint", ckpt, "--strict")
    assert rc == 2 and "truncated" in strict_err and "Traceback" not in strict_err
    assert sorted(os.listdir(tmp_path)) == ["cut.mkv"]
    rc, err = run(script, capsys, video, "--out", out, "--checkpoint", ckpt, "--clip-len", "4",
                  "--stride", "4", "--quiet")
    assert rc == 0, err
    s = json.loads((out / "summary.json").read_text())
    n, lost = s["frames"], s["frames_lost"]
    assert 0 < n < 10 and lost == 10 - n
    assert len(listing(out)) == n + 1
    # both modes give the same account: 10 announced, n in the file, n written, 10 - n lost
    assert f"announces 10 frames but the file holds only {n}" in strict_err
    assert f"{lost} of the 10 frames could not be decoded" in err
    assert f"the header announces 10 frames, the file holds {n}" in err
    assert f"wrote {n} of the 10 masks" in err


def test_keyboard_interrupt_leaves_nothing(script, ckpt, tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "in.mp4", 4, 32, 32)
    calls = []

    def interrupting_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    import vidccnet.writer

    original = vidccnet.writer.save_mask
    monkeypatch.setattr(vidccnet.writer, "save_mask", interrupting_save)
    rc, err = run(script, capsys, video, "--out", tmp_path / "new" / "masks", "--checkpoint",
                  ckpt, "--overlay", tmp_path / "ov.mp4", "--clip-len", "1", "--quiet")
    assert rc == 130 and "interrupted" in err and len(calls) == 2
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]  # no masks, no new/, no overlay, no temp



def test_keyboard_interrupt_is_one_line_and_puts_the_logging_back(script, ckpt, tmp_path,
                                                                  capsys, monkeypatch):
    """The interrupt is reported by main's decorator, after main's cleanup: one 'interrupted'
    line, and the 'vidccnet' logger as it was before the call."""
    import logging

    import vidccnet.writer

    def interrupting_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vidccnet.writer, "save_mask", interrupting_save)
    package = logging.getLogger("vidccnet")
    before = (list(package.handlers), package.level, package.propagate,
              logging.getLogger("vidccnet.writer").level)
    video = write_video(tmp_path / "in.mp4", 2, 32, 32)
    rc, err = run(script, capsys, video, "--out", tmp_path / "masks", "--checkpoint", ckpt,
                  "--clip-len", "1", "--quiet")
    said = [line for line in err.splitlines() if "interrupted" in line or "error" in line]
    assert rc == 130 and said == ["segment_video.py: interrupted; no output was written"], err
    assert (list(package.handlers), package.level, package.propagate,
            logging.getLogger("vidccnet.writer").level) == before
    assert listing(tmp_path) == ["in.mp4"]

@pytest.mark.parametrize("problem", ["truncated", "other_size"])
@pytest.mark.parametrize("start", [None, "3"])
def test_frame_folder_with_a_bad_frame_fails_and_writes_nothing(script, ckpt, tmp_path, capsys,
                                                                 problem, start):
    """In a folder each frame is its own file: a bad one is an error (exit 2, one line naming
    the file), not a truncated video whose first frames are kept."""
    frames = frame_folder(tmp_path / "frames", 12, (24, 32), "img_{}.jpg")
    bad = frames / "img_5.jpg"
    if problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
        words = "cannot be decoded"
    else:
        Image.fromarray(np.zeros((32, 24, 3), dtype=np.uint8)).save(bad)
        words = "size 32x24 differs from the first frame's 24x32"
    extra = [] if start is None else ["--start", start]
    rc, err = run(script, capsys, frames, "--out", tmp_path / "masks", "--checkpoint", ckpt,
                  "--overlay", tmp_path / "ov.mp4", "--clip-len", "1", "--quiet", *extra)
    assert rc == 2, err
    errors = [line for line in err.splitlines() if "error" in line or "warning" in line]
    assert len(errors) == 1 and errors[0].startswith("segment_video.py: error:"), err
    assert "img_5.jpg" in errors[0] and words in errors[0], errors[0]
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["frames"]  # no masks, no overlay, no staged temp


SLOW_WRITER = r"""
import runpy, sys, time
import vidccnet.writer as writer
original = writer.save_mask
def slow_save(*args, **kwargs):
    original(*args, **kwargs)
    print("SAVED", flush=True)
    time.sleep(0.5)
writer.save_mask = slow_save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigterm_is_handled_like_ctrl_c(ckpt, tmp_path):
    """SIGTERM (timeout, SLURM, docker stop) while writing: message, exit 143, nothing left."""
    import signal

    video = write_video(tmp_path / "in.mp4", 30, 32, 32)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(SCRIPT), str(video), "--out",
         str(tmp_path / "masks"), "--overlay", str(tmp_path / "ov.mp4"), "--checkpoint",
         str(ckpt), "--clip-len", "1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == "SAVED"  # a mask is written: mid-run
        staged = sorted(os.listdir(tmp_path))
        assert any(n.startswith(".masks.tmp-") for n in staged), staged
        assert any(n.startswith(".ov.tmp-") for n in staged), staged
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err, err
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]  # no masks, no overlay, no staged temp


def test_frame_stride_option(script, ckpt, tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 5, 24, 32, fps=12)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt,
                  "--frame-stride", "3")
    assert rc == 0, err
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["frames"] == 5 and s["frame_stride"] == 3 and s["stride"] == 1
    rc, err = run(script, capsys, video, "--out", tmp_path / "m2", "--checkpoint", ckpt,
                  "--frame-stride", "3", "--stride", "2")
    assert rc == 2 and "stride must be 1" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m2").exists()


def test_single_jpeg_image_is_one_frame(script, ckpt, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(photo, quality=95)
    rc, err = run(script, capsys, photo, "--out", tmp_path / "m", "--checkpoint", ckpt, "--quiet")
    assert rc == 0, err
    assert listing(tmp_path / "m") == ["000000.png", "summary.json"]
    check_pngs(tmp_path / "m", [0], (120, 160))


def test_end_past_the_last_frame_warns_and_stops_at_the_end(script, ckpt, tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 3, 24, 32)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt,
                  "--quiet", "--end", "10")
    assert rc == 0, err
    assert "warning: --end 10 is past the video's 3 frames" in err, err
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert (s["start"], s["end"], s["frames"]) == (0, 3, 3)


# ----------------------------------------------------------------------------- bad inputs
def audio_only(path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for _ in range(3):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                            layout="mono")
            fr.sample_rate = 16000
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def make_bad(kind, tmp_path, ckpt):
    """-> (input, extra args, words expected in the message)."""
    video = tmp_path / "in.mp4"
    if kind == "missing":
        return tmp_path / "nope.mp4", [], "not found"
    if kind == "not_a_video":
        video.write_text("hello, I am text\n" * 50)
        return video, [], "not a video"
    if kind == "empty":
        video.write_bytes(b"")
        return video, [], "empty"
    if kind == "cut_mp4":  # moov atom lost: nothing decodable
        write_video(tmp_path / "full.mp4", 3, 32, 32)
        data = (tmp_path / "full.mp4").read_bytes()
        (tmp_path / "full.mp4").unlink()
        video.write_bytes(data[: len(data) // 2])
        return video, [], "cannot read video"
    if kind == "audio_only":
        audio_only(tmp_path / "in.m4a")
        return tmp_path / "in.m4a", [], "no video stream"
    if kind == "empty_folder":
        (tmp_path / "frames").mkdir()
        return tmp_path / "frames", [], "no image files"
    write_video(video, 2, 32, 32)
    if kind == "unwritable_out":
        (tmp_path / "afile").write_text("x")
        return video, ["--out", tmp_path / "afile" / "masks"], "cannot write"
    if kind == "missing_checkpoint":
        return video, ["--checkpoint", tmp_path / "nope.pt"], "not found"
    if kind == "corrupt_checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        return video, ["--checkpoint", tmp_path / "bad.pt"], "cannot be read"
    if kind == "incompatible_checkpoint":
        ck = torch.load(ckpt, weights_only=True)
        ck["model"] = {k: v for k, v in list(ck["model"].items())[:-3]}
        torch.save(ck, tmp_path / "other.pt")
        return video, ["--checkpoint", tmp_path / "other.pt"], "do not fit"
    if kind == "bad_start":
        return video, ["--start", "ten"], "--start"
    if kind == "empty_range":
        return video, ["--end", "0s"], "must come after"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "missing", "not_a_video", "empty", "cut_mp4", "audio_only", "empty_folder", "unwritable_out",
    "missing_checkpoint", "corrupt_checkpoint", "incompatible_checkpoint", "bad_start",
    "empty_range",
])
def test_bad_input_exit_2_and_nothing_left(script, ckpt, tmp_path, capsys, kind):
    inp, extra, words = make_bad(kind, tmp_path, ckpt)
    before = sorted(os.listdir(tmp_path))
    argv = [inp, "--checkpoint", ckpt, "--overlay", tmp_path / "ov.mp4"]
    if "--out" not in extra:
        argv += ["--out", tmp_path / "deep" / "masks"]
    rc, err = run(script, capsys, *argv, *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segment_video.py: error:"), err
    assert words in lines[0], lines[0]
    assert sorted(os.listdir(tmp_path)) == before  # no DIR, no parents, no temp, no overlay


def test_no_checkpoint_says_how_to_get_one(script, tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "in.mp4", 1, 16, 16)
    monkeypatch.delenv("VIDCCNET_CHECKPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(script, "REPO_ROOT", tmp_path)
    rc, err = run(script, capsys, video, "--out", tmp_path / "masks")
    assert rc == 2 and "scripts/demo.py" in err and "--checkpoint" in err
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


@pytest.mark.parametrize("flag", ["--clip-len", "--stride", "--frame-stride"])
def test_counts_below_one_name_the_flag(script, ckpt, tmp_path, capsys, flag):
    """The error names the option the user typed (it said clip_len / frame_stride)."""
    video = write_video(tmp_path / "in.mp4", 1, 16, 16)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt, flag, "0")
    assert rc == 2 and f"{flag} must be >= 1, got 0" in err, err


def test_an_empty_checkpoint_argument_is_not_the_default(script, ckpt, tmp_path, capsys,
                                                          monkeypatch):
    """`--checkpoint "$CKPT"` with CKPT unset is a mistake, not a request for the default
    model (it silently used runs/demo/best.pt)."""
    video = write_video(tmp_path / "in.mp4", 1, 16, 16)
    monkeypatch.delenv("VIDCCNET_CHECKPOINT", raising=False)
    monkeypatch.setattr(script, "DEFAULT_CHECKPOINT", ckpt)
    rc, err = run(script, capsys, video, "--out", tmp_path / "masks", "--checkpoint", "")
    assert rc == 2 and "--checkpoint is empty" in err
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    """As a real process: one line on stderr, exit 2, nothing written (fails before torch loads)."""
    video = write_video(tmp_path / "clip.mp4", 1, 16, 16)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(video), "--out", str(tmp_path / "masks"),
         "--checkpoint", str(tmp_path / "missing.pt")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "missing.pt" in proc.stderr and "not found" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


# ----------------------------------------------------------------------------- input safety
def frame_folder(path, n=3, size=(24, 32), name="{:06d}.png"):
    """A folder of ``n`` random frames of ``size`` (H, W) named ``name.format(i)``."""
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            path / name.format(i))
    return path


def snapshot(root):
    """Every file under root with its bytes: proves nothing was touched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", ["out_is_input", "out_inside_input", "out_contains_input",
                                  "out_contains_video", "overlay_is_video",
                                  "overlay_in_input_folder", "overlay_is_out",
                                  "out_contains_checkpoint"])
def test_overwrite_never_destroys_the_input(script, ckpt, tmp_path, capsys, case):
    frames = frame_folder(tmp_path / "frames")
    (tmp_path / "clip").mkdir()
    video = write_video(tmp_path / "clip" / "in.mp4", 2, 24, 32)
    (frames / "masks").mkdir()  # an existing sub-folder of the input (--overwrite may replace)
    (frames / "masks" / "keep.txt").write_text("mine")
    (tmp_path / "ck").mkdir()
    ck = tmp_path / "ck" / "model.pt"
    ck.write_bytes(Path(ckpt).read_bytes())
    argv = {
        "out_is_input": [frames, "--out", frames],
        "out_inside_input": [frames, "--out", frames / "masks"],
        "out_contains_input": [frames / "masks" / "..", "--out", tmp_path],
        "out_contains_video": [video, "--out", tmp_path / "clip"],
        "overlay_is_video": [video, "--out", tmp_path / "m", "--overlay", video],
        "overlay_in_input_folder": [frames, "--out", tmp_path / "m", "--overlay",
                                    frames / "ov.mp4"],
        "overlay_is_out": [video, "--out", tmp_path / "m", "--overlay", tmp_path / "m"],
        "out_contains_checkpoint": [video, "--out", tmp_path / "ck"],
    }[case]
    before = snapshot(tmp_path)
    rc, err = run(script, capsys, *argv, "--checkpoint", ck, "--overwrite", "--quiet")
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["ck", "clip", "frames"]


@pytest.mark.parametrize("ext,container,codecs", [
    (".mkv", "matroska", ("h264", "mpeg4")), (".avi", "avi", ("h264", "mpeg4")),
    (".mov", "mov", ("h264", "mpeg4")), (".webm", "webm", ("vp9", "vp8")),
])
def test_overlay_container_follows_the_extension(script, ckpt, tmp_path, capsys, ext,
                                                 container, codecs):
    video = write_video(tmp_path / "in.mp4", 2, 24, 32)
    ov = tmp_path / f"overlay{ext}"
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt,
                  "--overlay", ov, "--quiet")
    assert rc == 0, err
    with av.open(str(ov)) as c:
        assert container in c.format.name.split(",")
        st = c.streams.video[0]
        assert st.codec_context.name in codecs
        assert sum(1 for _ in c.decode(st)) == 2


@pytest.mark.parametrize("name", ["overlay.png", "overlay", "overlay.gif.txt"])
def test_overlay_unknown_extension_is_refused(script, ckpt, tmp_path, capsys, name):
    video = write_video(tmp_path / "in.mp4", 2, 24, 32)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt,
                  "--overlay", tmp_path / name)
    assert rc == 2 and "--overlay" in err and ".mp4" in err and ".webm" in err, err
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


# ----------------------------------------------------------------------------- size, progress
def test_default_size_is_the_checkpoints_scale(script, ckpt, tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 2, 48, 64)
    sizes = {}
    for extra in ([], ["--size", "source"], ["--size", "16"]):  # more cases: test_predict.py
        out = tmp_path / ("m" + "_".join(extra))
        rc, err = run(script, capsys, video, "--out", out, "--checkpoint", ckpt, *extra)
        assert rc == 0, err
        s = json.loads((out / "summary.json").read_text())
        assert s["size"] == [48, 64]
        sizes[" ".join(extra)] = tuple(s["inference_size"])
        h, w = s["inference_size"]
        assert f"{h}x{w}" in err  # the size used is printed
        check_pngs(out, [0, 1], (48, 64))  # masks always at the source size
    assert sizes == {"": (24, 32), "--size source": (48, 64), "--size 16": (16, 24)}


@pytest.mark.parametrize("bad", ["big", "0", "4", "-8"])
def test_bad_size_is_refused(script, ckpt, tmp_path, capsys, bad):
    video = write_video(tmp_path / "in.mp4", 1, 24, 32)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt,
                  "--size", bad)
    assert rc == 2 and "--size" in err, err


def test_one_frame_says_one_mask(script, ckpt, tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 1, 24, 32)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt, "--quiet")
    assert rc == 0 and "wrote 1 mask to" in err and "1 masks" not in err, err



def test_quiet_leaves_out_the_inference_size_line(script, ckpt, tmp_path, capsys):
    """--quiet (the demo passes it) still printed 'inference size HxW (...)': it says the
    warnings, errors and the closing line only; summary.json keeps the size."""
    video = write_video(tmp_path / "in.mp4", 1, 24, 32)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt, "--quiet")
    assert rc == 0 and len(err.splitlines()) == 1 and "wrote 1 mask to" in err, err
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt,
                  "--overwrite")
    assert rc == 0 and "inference size" in err, err


def test_amp_on_cpu_warns_and_runs_float32(script, ckpt, tmp_path, capsys, monkeypatch):
    from vidccnet.engine import amp

    monkeypatch.setattr(amp, "_warned", set())  # the warning is once per process
    video = write_video(tmp_path / "in.mp4", 1, 24, 32)
    rc, err = run(script, capsys, video, "--out", tmp_path / "m", "--checkpoint", ckpt, "--quiet",
                  "--amp", "--device", "cpu")
    assert rc == 0 and "amp" in err and "cuda only" in err.lower() and "cpu" in err.lower(), err
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["amp"] is False


def test_help_says_amp_is_for_cuda(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "CUDA" in out and "--size" in out


# ----------------------------------------------------------------------------- fail fast
FAIL_FAST = r"""
import runpy, sys, time
script, cases = sys.argv[1], sys.argv[2:]
mod = runpy.run_path(script, run_name="segment_video_fail_fast")
for case in cases:
    rc = mod["main"](case.split("|"))
    print("RC", rc, flush=True)
print("TORCH", "torch" in sys.modules)
"""


def test_expected_errors_come_before_torch_is_imported(tmp_path):
    """Bad --out, unreadable / empty inputs and checkpoints are reported before torch loads."""
    video = write_video(tmp_path / "in.mp4", 1, 16, 16)
    ck = tmp_path / "model.pt"
    ck.write_bytes(b"x" * 10)  # contents are only read after torch loads
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "empty.pt").write_bytes(b"")
    frames = frame_folder(tmp_path / "frames", n=1)
    good = [str(video), "--checkpoint", str(ck)]
    cases = [
        ["empty.mp4", "--out", "m", "--checkpoint", str(ck)],
        ["nothing", "--out", "m", "--checkpoint", str(ck)],
        [*good, "--out", "afile/m"],
        [*good, "--out", "afile"],
        [*good, "--out", "full"],
        [str(video), "--out", "m", "--checkpoint", "missing.pt"],
        [str(video), "--out", "m", "--checkpoint", "empty.pt"],
        [str(video), "--out", "m", "--checkpoint", "nothing"],
        [*good, "--out", "m", "--overlay", "afile/ov.mp4"],
        [*good, "--out", "m", "--overlay", "ov.png"],
        [*good, "--out", "m", "--overlay", str(video), "--overwrite"],
        [str(frames), "--out", str(frames), "--checkpoint", str(ck), "--overwrite"],
        [*good, "--out", "m", "--size", "x"],
        [*good, "--out", "m", "--start", "x"],
        [*good, "--out", "m", "--alpha", "2"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", FAIL_FAST, str(SCRIPT), *("|".join(c) for c in cases)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = proc.stdout.split()
    assert lines.count("RC") == len(cases), proc.stdout + proc.stderr
    assert [lines[i + 1] for i, w in enumerate(lines) if w == "RC"] == ["2"] * len(cases), \
        proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == len(cases) and all(e.startswith("segment_video.py: error:")
                                             for e in errors), proc.stderr
    assert proc.stdout.split()[-1] == "False", "torch was imported before the error"
    assert "cannot write" in errors[2] and "not a folder" in errors[3]
    assert "--overwrite" in errors[4] and "empty" in errors[6]
    assert not (tmp_path / "m").exists()


def test_an_io_error_names_the_side_it_happened_on(script, ckpt, tmp_path, capsys, monkeypatch):
    """An OSError while reading the input was reported as 'cannot write the output ... check
    --out': the file it names says which side failed."""
    import errno

    video = write_video(tmp_path / "v.mkv", 4, 32, 32)
    out = tmp_path / "masks"
    for name, words in ((video, "cannot read the input"),
                        (tmp_path / ".masks.tmp-x" / "000001.png", "cannot write the output"),
                        (None, "input or output")):
        def fail(args, name=name):
            raise OSError(errno.EIO, "Input/output error", None if name is None else str(name))

        monkeypatch.setattr(script, "run", fail)
        rc, err = run(script, capsys, video, "--out", out, "--checkpoint", ckpt)
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_a_run_folder_as_checkpoint_names_its_best_pt(script, tmp_path, capsys):
    """--checkpoint RUNDIR said 'is not a file; pass a .pt file': it names the folder's
    best.pt, as evaluate.py does."""
    video = write_video(tmp_path / "in.mp4", 1, 16, 16)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"x")
    rc, err = run(script, capsys, video, "--out", tmp_path / "masks", "--checkpoint", run_dir)
    assert rc == 2 and f"'{run_dir}' (from --checkpoint) is a folder" in err, err
    assert f"pass '{run_dir / 'best.pt'}'" in err
