"""scripts/prepare_camvid.py: an interrupted run (Ctrl-C, SIGTERM) leaves no temporary frame."""

from __future__ import annotations

import os
import signal

import pytest
from PIL import Image

from vidccnet.data.synthetic import SyntheticVideoWorld


@pytest.fixture(scope="module")
def segnet_and_frames(tmp_path_factory):
    """A SegNet-like root with one labelled 0006R0 frame and the sequence as a frame folder."""
    tmp = tmp_path_factory.mktemp("camvid")
    root, video = tmp / "CamVid", tmp / "0006R0"
    frames = SyntheticVideoWorld(seed=7, height=32, width=48).render(0, 12).frames
    for sub in ("train", "trainannot", "val", "valannot", "test", "testannot"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(frames[6]).save(root / "train" / "0006R0_f00006.png")
    Image.fromarray(frames[6][..., 0] % 11).save(root / "trainannot" / "0006R0_f00006.png")
    video.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(video / f"{i:06d}.png")
    return root, video


@pytest.mark.parametrize("how, code, said", [("ctrl-c", 130, "interrupted"),
                                             ("sigterm", 143, "terminated (SIGTERM)")])
def test_an_interrupted_run_leaves_no_temporary_frame(load_script, segnet_and_frames, tmp_path,
                                                      monkeypatch, capsys, main_under_sigterm,
                                                      how, code, said):
    """Ctrl-C while a frame was written left its `.NNNNNN.png.tmp` (with a traceback); SIGTERM
    killed the process with the file half written."""
    root, video = segnet_and_frames
    script = load_script("prepare_camvid")
    real_save = Image.Image.save
    calls = []

    def stopped(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        calls.append(fp)
        if len(calls) == 3:  # the third frame is on disk under its temporary name
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", stopped)
    out = tmp_path / "out"
    rc = main_under_sigterm(script.main, ["--segnet", str(root), "--out", str(out),
                                          "--videos", f"0006R0={video}", "--window", "1"])
    err = capsys.readouterr().err
    assert rc == code and err.count("\n") == 1 and said in err and "Traceback" not in err, err
    assert len(calls) == 3
    left = sorted(p.name for p in out.rglob("*"))
    assert not [n for n in left if n.endswith(".tmp")], left
    assert {"000002.png", "000003.png"} <= set(left)  # the frames written whole stay


@pytest.mark.parametrize("option", ["--out", "--report"])
def test_an_output_below_a_file_is_refused_before_any_frame(load_script, segnet_and_frames,
                                                            tmp_path, capsys, option):
    """--out or --report below a file failed with '[Errno 20] Not a directory' / '[Errno 17]
    File exists' once the sequence was matched (--report: after every frame of it was
    written)."""
    root, video = segnet_and_frames
    (tmp_path / "notes").write_text("mine")
    target = tmp_path / "notes" / ("r.json" if option == "--report" else "camvid")
    argv = ["--segnet", str(root), "--videos", str(video), "--out", str(tmp_path / "o")]
    rc = load_script("prepare_camvid").main(argv + [option, str(target)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"{option} {target}: '{tmp_path / 'notes'}' is a file, not a folder" in err[0], err
    assert not (tmp_path / "o").exists()


def test_the_decord_backend_is_refused(load_script, segnet_and_frames, tmp_path, capsys):
    """decord returns other frames than the ones asked for after a seek in many formats (MPEG-2
    in MXF: context frames 5 before, or 2 after, the right one), and prepare_camvid wrote them
    as context frames without a word: `--backend decord` is refused in one line, before any
    frame is written."""
    root, video = segnet_and_frames
    argv = ["--segnet", str(root), "--videos", str(video), "--out", str(tmp_path / "o"),
            "--backend", "decord"]
    rc = load_script("prepare_camvid").main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "--backend decord" in err[0] and "--backend av" in err[0], err
    assert not (tmp_path / "o").exists()
