"""scripts/convert_checkpoint.py end to end, and training that starts from its output.

The mmseg source file is built with the test_convert helpers (mmseg naming and shapes, ResNet-50,
narrow heads), saved the way mmseg saves (``meta``, ``state_dict``, ``optimizer``), converted by
the script, loaded with ``weights_only=True``, used by scripts/segment_video.py and by
scripts/train.py through ``model.init_from``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
NAMES = ["sky", "road", "car"]
PALETTE = [[70, 130, 180], [128, 64, 128], [0, 0, 142]]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def helpers():
    return _load("convert_helpers", REPO / "tests" / "models" / "test_convert.py")


@pytest.fixture(scope="module")
def mmseg_file(tmp_path_factory, helpers):
    path = tmp_path_factory.mktemp("src") / "ccnet_r50-d8_tiny.pth"
    torch.save({"meta": {"CLASSES": tuple(NAMES), "PALETTE": PALETTE,
                         "config": "model = dict(decode_head=dict(type='CCHead', recurrence=1))"},
                "state_dict": helpers.mmseg_r50(), "optimizer": {"state": {}}}, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, mmseg_file):
    script = _load("convert_checkpoint_script", REPO / "scripts" / "convert_checkpoint.py")
    out = tmp_path_factory.mktemp("out") / "model.pt"
    code = script.main([str(mmseg_file), "--format", "mmseg", "--out", str(out)])
    assert code == 0
    return out


def test_script_writes_a_safe_vidccnet_checkpoint(converted, mmseg_file):
    ckpt = torch.load(converted, map_location="cpu", weights_only=True)
    cfg = ckpt["config"]
    assert cfg["model"]["name"] == "ccnet2d_resnet50"
    assert cfg["model"]["recurrence"] == 1  # read from the mmseg config text in meta
    assert cfg["model"]["kwargs"]["stem"] == "deep"
    assert cfg["data"]["class_names"] == NAMES and cfg["data"]["palette"] == PALETTE
    assert ckpt["converted_from"]["ignored_entries"] == ["meta", "optimizer"]
    src = torch.load(mmseg_file, weights_only=True)["state_dict"]
    assert ckpt["converted_from"]["tensors_used"] == len(src)
    assert not list(converted.parent.glob(".*.tmp"))  # atomic write leaves no temporary


def test_segment_video_runs_with_the_converted_model(converted, tmp_path):
    video = tmp_path / "drive.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(3):
            img = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    seg = _load("segment_video_script", REPO / "scripts" / "segment_video.py")
    out = tmp_path / "masks"
    assert seg.main([str(video), "--checkpoint", str(converted), "--out", str(out),
                     "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["class_names"] == NAMES
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]


def test_recurrence_zero_in_the_mmseg_config_is_kept(helpers, tmp_path):
    """A CCHead trained with recurrence=0 (the attention-free ablation) converts with R = 0;
    the 0 read from the config used to be replaced by the default 2 (`0 or 2`)."""
    src = tmp_path / "ccnet_r0.pth"
    torch.save({"meta": {"config": "model = dict(decode_head=dict(type='CCHead', "
                         "recurrence=0))"}, "state_dict": helpers.mmseg_r50()}, src)
    script = _load("convert_checkpoint_script_r0", REPO / "scripts" / "convert_checkpoint.py")
    out = tmp_path / "r0.pt"
    assert script.main([str(src), "--format", "mmseg", "--out", str(out)]) == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["config"]["model"]["recurrence"] == 0


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "convert_checkpoint.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, converted, mmseg_file):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00 not a torch file")
    out = tmp_path / "x.pt"
    r = _run(str(junk), "--format", "mmseg", "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("convert_checkpoint.py: error:") and "cannot be read" in lines[0]
    assert not out.exists()
    # a vidccnet checkpoint needs no conversion
    r = _run(str(converted), "--format", "mmseg", "--out", str(out))
    assert r.returncode == 2 and "already a vidccnet checkpoint" in r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists()
    # the wrong label set for the class count, an existing output
    script = _load("convert_checkpoint_script2", REPO / "scripts" / "convert_checkpoint.py")
    assert script.main([str(mmseg_file), "--format", "mmseg", "--out", str(out),
                        "--classes", "cityscapes"]) == 2
    assert script.main([str(mmseg_file), "--format", "mmseg", "--out", str(converted)]) == 2
    assert not out.exists()
    # --out naming the source is refused even with --overwrite: the source is kept
    src = tmp_path / "mm.pth"
    src.write_bytes(mmseg_file.read_bytes())
    assert script.main([str(src), "--format", "mmseg", "--out", str(src), "--overwrite"]) == 2
    assert src.read_bytes() == mmseg_file.read_bytes()


@pytest.mark.parametrize("fmt", ["mmseg", "ccnet"])
def test_a_vidccnet_checkpoint_needs_no_conversion(converted, tmp_path, capsys, fmt):
    """A vidccnet checkpoint given as the source (this script's output, a best.pt) failed as a
    broken mmseg / official checkpoint ('no decode_head.cca ...'): it needs no conversion."""
    script = _load(f"convert_checkpoint_script_{fmt}", REPO / "scripts" / "convert_checkpoint.py")
    out = tmp_path / "again.pt"
    assert script.main([str(converted), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"'{converted}' is already a vidccnet checkpoint: no conversion is needed" in err, err
    assert not out.exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_out_that_is_a_folder_is_refused(mmseg_file, tmp_path, capsys, overwrite):
    """--out naming a folder was told to pass --overwrite, which then converted the whole file
    and failed on the rename ('[Errno 21] Is a directory')."""
    script = _load("convert_checkpoint_script_dir", REPO / "scripts" / "convert_checkpoint.py")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "mine.pt").write_bytes(b"mine")
    assert script.main([str(mmseg_file), "--format", "mmseg", "--out", str(folder),
                        *overwrite]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"--out {folder} is a folder; name the checkpoint file to write, e.g. " \
        f"{folder / 'model.pt'}" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["mine.pt"]


TINY = [
    "model.name=ccnet3d_resnet50", "model.kwargs={stem: deep, head_channels: 64, "
    "aux_channels: 32}", "model.recurrence=1", "data.clip_len=2", "data.batch_size=2",
    "data.crop_size=[32, 32]", "data.kwargs={num_videos: 2, num_frames: 3, height: 32, "
    "width: 32, seed: 0}", "eval.at_end=false", "eval.interval=0", "schedule.iterations=1",
    "runtime.device=cpu", "runtime.tensorboard=false", "runtime.progress=false",
]


def test_train_starts_from_the_converted_checkpoint(converted, tmp_path, caplog):
    from vidccnet.engine.config import load_config
    from vidccnet.engine.train import train

    cfg = load_config(None, [*TINY, f"model.init_from={converted}",
                             f"runtime.output_dir={tmp_path / 'run'}"])
    with caplog.at_level(logging.INFO, logger="vidccnet.engine.checkpoint"):
        result = train(cfg)
    assert result["iteration"] == 1
    msg = "\n".join(r.getMessage() for r in caplog.records)
    # the synthetic world has 7 classes, the converted model 3: both classifiers start fresh
    assert "4 re-initialised (other shape: head.classifier.weight, head.classifier.bias, " \
        "aux_head.classifier.weight, aux_head.classifier.bias)" in msg
    assert "0 not in the file" in msg


def test_init_from_checks_the_backbone(converted, tmp_path):
    from vidccnet.engine.checkpoint import CheckpointError, init_model_from_checkpoint
    from vidccnet.models import create_model

    with torch.device("meta"):
        wrong = create_model("ccnet3d_resnet50", 3)  # torchvision stem
    with pytest.raises(CheckpointError, match=r"set model.kwargs.stem=deep to match"):
        init_model_from_checkpoint(wrong, converted)
    model = create_model("ccnet3d_resnet50", 3, stem="deep", head_channels=64, aux_channels=32)
    report = init_model_from_checkpoint(model, converted, {"head_activation": "relu"})
    assert not report["reinitialised"] and not report["missing"] and not report["unused"]
    ckpt = torch.load(converted, weights_only=True)
    assert set(model.state_dict()) - set(ckpt["model"]) == {"head.embed.weight",
                                                            "head.embed.bias"}  # training-only
    for k, v in ckpt["model"].items():
        assert torch.equal(model.state_dict()[k], v), k


def test_init_from_warns_only_when_the_options_differ(converted, caplog):
    """The checkpoint's head_activation / contract_dilation are compared with the values the
    model really uses: left at their defaults (relu, True, as the mmseg conversion's), no
    warning; set to something else, one warning naming the option."""
    from vidccnet.engine.checkpoint import init_model_from_checkpoint
    from vidccnet.models import create_model

    def warnings(kwargs: dict) -> list[str]:
        caplog.clear()
        model = create_model("ccnet3d_resnet50", 3, stem="deep", head_channels=64,
                             aux_channels=32, **kwargs)
        with caplog.at_level(logging.WARNING, logger="vidccnet.engine.checkpoint"):
            init_model_from_checkpoint(model, converted, {"stem": "deep", **kwargs})
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    assert warnings({}) == []
    (msg,) = warnings({"head_activation": "leaky_relu"})
    assert "head_activation='relu', this model uses 'leaky_relu'" in msg


def test_sigterm_while_saving_leaves_no_temporary_file(mmseg_file, tmp_path, capsys,
                                                       monkeypatch, main_under_sigterm):
    """SIGTERM while the output is written: exit 143 and one line, nothing left in the folder
    (the process died with its half-written `.model.pt.XXXX.tmp` next to --out)."""
    import os
    import signal

    script = _load("convert_checkpoint_script3", REPO / "scripts" / "convert_checkpoint.py")
    real_save = torch.save

    def killed(obj, f, *args, **kwargs):
        if hasattr(f, "write"):  # save_checkpoint's temporary file: half of it, then SIGTERM
            f.write(b"PK\x03\x04 half a checkpoint")
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", killed)
    rc = main_under_sigterm(script.main, [str(mmseg_file), "--format", "mmseg", "--out",
                                          str(tmp_path / "model.pt")])
    err = capsys.readouterr().err
    assert rc == 143 and err.count("\n") == 1 and "terminated (SIGTERM)" in err, err
    assert list(tmp_path.iterdir()) == []


def test_class_names_of_mmseg_1x_meta_are_read():
    """mmseg 1.x saves the class names and palette under meta['dataset_meta'] (0.x: CLASSES /
    PALETTE); they were ignored, and a 3-class model got generic names."""
    import argparse
    import types

    script = _load("convert_checkpoint_names", REPO / "scripts" / "convert_checkpoint.py")
    meta = {"dataset_meta": {"classes": tuple(NAMES), "palette": PALETTE}}
    conv = types.SimpleNamespace(num_classes=3, meta=meta)
    names, palette, _, origin = script._class_names(argparse.Namespace(classes=None), conv)
    assert names == NAMES and palette == [tuple(c) for c in PALETTE]
    assert origin == "the file's meta"
