"""scripts/show_attention.py end to end on tiny checkpoints and videos written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "show_attention.py"
NAMES = ["sky", "road", "car"]
H, W, N = 20, 30, 6  # frame size and length of the test videos


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("show_attention")


@pytest.fixture(scope="module")
def data(tmp_path_factory, save_tiny_checkpoint):
    from vidccnet.data.video import write_video

    def make_checkpoint(path, name="ccnet3d_resnet18", recurrence=2, frame_stride=1):
        model = {"name": name, "recurrence": recurrence,
                 "kwargs": {"head_channels": 16, "backbone_width": 8}}
        return save_tiny_checkpoint(path, NAMES, model=model,
                                    data={"clip_len": 3, "frame_stride": frame_stride})

    root = tmp_path_factory.mktemp("show_attention")
    frames = np.random.default_rng(0).integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    write_video(root / "clip.mp4", frames, fps=10)
    (root / "frames").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(root / "frames" / f"{i:04d}.png")
    return {
        "root": root, "video": root / "clip.mp4", "folder": root / "frames",
        "ckpt3d": make_checkpoint(root / "c3d.pt"),
        "ckpt2d": make_checkpoint(root / "c2d.pt", name="ccnet2d_resnet18", recurrence=1),
        "ckpt_off": make_checkpoint(root / "off.pt", recurrence=0),
        "ckpt_stride2": make_checkpoint(root / "s2.pt", frame_stride=2),
        "ckpt40": save_tiny_checkpoint(  # trained on 40x60 frames: short side 40
            root / "c40.pt", NAMES, data={"clip_len": 3, "kwargs": {"height": 40, "width": 60}},
            model={"name": "ccnet3d_resnet18", "kwargs": {"head_channels": 16,
                                                          "backbone_width": 8}}),
    }


def run(script, capsys, *argv):
    rc = script.main([str(a) for a in argv] + ["--device", "cpu"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_3d_checkpoint_on_video(script, data, tmp_path, capsys):
    out = tmp_path / "attn.png"
    rc, stdout, err = run(script, capsys, data["video"], "--checkpoint", data["ckpt3d"],
                          "--frame", 1, "--pixel", 19, 29, "--out", out)
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["frames"] == [0, 0, 1]  # causal clip of 3 ending at frame 1, start repeated
    # 20x30 frames run at the checkpoint's scale (synthetic 64x96 frames: short side 64), as in
    # segment_video: 64x96, an 8x12 feature grid; pixel (19, 29) -> (62, 94) -> cell (7, 11)
    assert summary["inference_size"] == [64, 96]
    assert summary["cell"] == [2, 7, 11] and summary["grid"] == [3, 8, 12]
    assert summary["temporal"] is True and len(summary["time_weights"]) == 2
    for time, rest in zip(summary["time_weights"], summary["row_column_weight"]):
        assert time[2] == 0.0 and min(time[:2]) > 0.0  # the centre is counted in the row
        assert sum(time) + rest == pytest.approx(1.0, abs=1e-5)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attn.png"]  # no temporary file left


def test_the_clip_has_the_checkpoints_frame_spacing(script, data, tmp_path, capsys):
    rc, stdout, err = run(script, capsys, data["video"], "--checkpoint", data["ckpt_stride2"],
                          "--frame", 4, "--pixel", 0, 0, "--out", tmp_path / "attn.png")
    assert rc == 0, err
    assert json.loads(stdout)["frames"] == [0, 2, 4]  # trained on every 2nd frame


def test_2d_checkpoint_on_frame_folder_centre(script, data, tmp_path, capsys):
    out = tmp_path / "attn.png"
    rc, stdout, err = run(script, capsys, data["folder"], "--checkpoint", data["ckpt2d"],
                          "--frame", N - 1, "--pixel", 0, 0, "--out", out, "--anchor", "centre",
                          "--clip-len", 2)
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["frames"] == [N - 2, N - 1] and summary["cell"] == [1, 0, 0]
    assert summary["temporal"] is False and summary["time_weights"] == [[0.0, 0.0]]
    assert summary["row_column_weight"] == [pytest.approx(1.0, abs=1e-5)]
    assert out.is_file()


def test_frames_are_prepared_at_segment_videos_size(script, data, tmp_path, capsys):
    """The clip is resized as segment_video.py resizes it (the checkpoint's scale); --pixel stays
    in source coordinates: (19, 29) of the 20x30 frame is (39, 62) of the 40x64 one."""
    from vidccnet.predict import VideoSegmenter

    size = VideoSegmenter(data["ckpt40"], device="cpu").inference_size_for(H, W)
    assert size == (40, 64)
    rc, stdout, err = run(script, capsys, data["video"], "--checkpoint", data["ckpt40"],
                          "--frame", 2, "--pixel", 19, 29, "--out", tmp_path / "attn.png")
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["inference_size"] == [40, 64] and summary["pixel"] == [19, 29]
    assert summary["grid"] == [3, 5, 8] and summary["cell"] == [2, 4, 7]
    # a pixel inside the resized frame but outside the source one is refused, in source terms
    rc, stdout, err = run(script, capsys, data["video"], "--checkpoint", data["ckpt40"],
                          "--frame", 2, "--pixel", 20, 0, "--out", tmp_path / "bad.png")
    assert rc == 2 and "--pixel 20 0 is outside the 20x30 frame" in err, err
    assert not (tmp_path / "bad.png").exists()


BAD = {  # name: (arguments changed, words in the error line); file names live in data["root"]
    "pixel_outside": ({"pixel": (H, 0)}, "outside the 20x30 frame"),
    "pixel_negative": ({"pixel": (0, -1)}, "outside the 20x30 frame"),
    "frame_beyond": ({"frame": N}, "is outside the video (6 frames: 0..5)"),
    "frame_negative": ({"frame": -1}, "--frame -1 is outside the video (6 frames"),
    "missing_checkpoint": ({"checkpoint": "nope.pt"}, "not found"),
    "no_attention": ({"checkpoint": "off.pt"}, "recurrence 0"),
    "missing_video": ({"video": "missing.mp4"}, "cannot read video"),
    "out_folder_missing": ({"out": "no/such/dir/attn.png"}, "does not exist"),
}


def argv_for(data, tmp_path, video="clip.mp4", checkpoint="c3d.pt", frame=2, pixel=(3, 4),
             out="attn.png"):
    return [data["root"] / video, "--checkpoint", data["root"] / checkpoint, "--frame", frame,
            "--pixel", *pixel, "--out", tmp_path / out]


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_written(script, data, tmp_path, capsys, kind):
    changes, words = BAD[kind]
    rc, stdout, err = run(script, capsys, *argv_for(data, tmp_path, **changes))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("show_attention.py: error: "), err
    assert words in lines[0]
    assert stdout == "" and list(tmp_path.iterdir()) == []


def test_out_never_replaces_an_input_and_is_a_readable_png(script, data, tmp_path, capsys):
    """--out naming the video or the checkpoint is refused (both kept byte for byte), a suffix
    other than .png is refused, and the picture gets the mode a plain open() would give it."""
    import shutil

    video, ckpt = tmp_path / "v.mp4", tmp_path / "c.pt"
    shutil.copyfile(data["video"], video)
    shutil.copyfile(data["ckpt3d"], ckpt)
    before = {p: p.read_bytes() for p in (video, ckpt)}
    for out, words in ((video, "is the input video"), (ckpt, "is the checkpoint"),
                       (tmp_path / "attn.jpg", "must end in .png")):
        rc, _, err = run(script, capsys, video, "--checkpoint", ckpt, "--frame", 1,
                         "--pixel", 3, 4, "--out", out)
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "v.mp4"]
    umask = os.umask(0o022)
    os.umask(umask)
    rc, _, err = run(script, capsys, video, "--checkpoint", ckpt, "--frame", 1, "--pixel", 3, 4,
                     "--out", tmp_path / "attn.PNG")
    assert rc == 0, err
    assert (tmp_path / "attn.PNG").stat().st_mode & 0o777 == 0o666 & ~umask


def test_out_never_lands_in_the_input_folder_nor_replaces_a_file_unasked(
        script, data, tmp_path, capsys):
    """--out inside the input frame folder replaced a frame (000003.png, the whole video then
    refused for its size) or added a file that broke the folder; an existing picture was
    replaced without a word. Both are refused; --overwrite replaces an existing picture."""
    import shutil

    folder = tmp_path / "frames"
    shutil.copytree(data["folder"], folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["--checkpoint", data["ckpt3d"], "--frame", 1, "--pixel", 3, 4]
    for out in (folder / "0003.png", folder / "attn.png"):
        rc, _, err = run(script, capsys, folder, *args, "--out", out)
        assert rc == 2 and "inside the input folder" in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"mine")
    rc, _, err = run(script, capsys, folder, *args, "--out", mine)
    assert rc == 2 and "exists" in err and "--overwrite" in err, err
    assert mine.read_bytes() == b"mine"
    rc, _, err = run(script, capsys, folder, *args, "--out", mine, "--overwrite")
    assert rc == 0 and mine.read_bytes().startswith(b"\x89PNG"), err


def test_an_unwritable_out_is_refused_before_the_model_is_loaded(script, data, tmp_path,
                                                                  capsys, monkeypatch):
    """--out in a folder without write permission failed only when the picture was saved,
    after the model had run. Refused first, in one line. (The tests run as root, where
    permission bits do not bite: os.access is replaced.)"""
    import vidccnet.predict

    locked = tmp_path / "locked"
    locked.mkdir()

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded although --out cannot be written")

    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    monkeypatch.setattr(vidccnet.predict, "VideoSegmenter", loaded)
    rc, stdout, err = run(script, capsys, *argv_for(data, tmp_path, out="locked/attn.png"))
    assert rc == 2 and stdout == "", err
    assert err.splitlines() == [f"show_attention.py: error: --out {locked / 'attn.png'}: no "
                                f"permission to write in '{locked}'; choose a folder you can "
                                "write to"], err
    assert list(locked.iterdir()) == []


def test_subprocess_exit_code_and_no_traceback(data, tmp_path):
    argv = argv_for(data, tmp_path, frame=N + 5)
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, argv), "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "--frame 11 is outside the video" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_clip_too_long_to_draw_is_refused_and_sigterm_leaves_nothing(
        script, data, tmp_path, capsys, monkeypatch):
    """--clip-len 300 drew 300 columns for minutes (past matplotlib's size limit): refused up
    front. SIGTERM while the picture is written: exit 143 and no temporary file left (the
    process used to die with its .tmp file next to --out)."""
    import signal

    rc, stdout, err = run(script, capsys, *argv_for(data, tmp_path), "--clip-len", 300)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--clip-len 300" in err, err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "replace", lambda *a: os.kill(os.getpid(), signal.SIGTERM))
    rc, stdout, err = run(script, capsys, *argv_for(data, tmp_path))
    assert rc == 143 and "terminated (SIGTERM)" in err, err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_the_picture_is_written_is_one_line_and_leaves_nothing(
        script, data, tmp_path, capsys, monkeypatch):
    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", ctrl_c)
    rc, stdout, err = run(script, capsys, *argv_for(data, tmp_path))
    assert rc == 130 and stdout == "", stdout
    assert err.splitlines() == ["show_attention.py: interrupted; no picture was written"], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("clip_len", [1, 2])
def test_the_title_fits_in_a_narrow_picture(script, data, tmp_path, capsys, monkeypatch,
                                            clip_len):
    """The picture is as wide as its clip: with 1-2 frames the one-line title (checkpoint,
    kind, pixel, frame, cell) ran off both sides of the PNG."""
    import vidccnet.writer

    figures = []
    save = vidccnet.writer.save_figure
    monkeypatch.setattr(vidccnet.writer, "save_figure",
                        lambda fig, path, **kw: (figures.append(fig), save(fig, path, **kw)))
    rc, _, err = run(script, capsys, data["video"], "--checkpoint", data["ckpt3d"], "--frame", 1,
                     "--pixel", 19, 29, "--out", tmp_path / "attn.png", "--clip-len", clip_len)
    assert rc == 0, err
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    box = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
