"""Smoke test of scripts/demo.py with its tiny budget (``--quick``): every step runs through the
real trainer, evaluator and segment_video code; a second run replaces the first; afterwards
``segment_video.py`` finds ``runs/demo/best.pt`` by default; bad options give one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(load_script, tmp_path_factory):
    demo = load_script("demo")
    root = tmp_path_factory.mktemp("demo")
    out = root / "runs" / "demo"
    rc = demo.main(["--out", str(out), "--quick", "--iterations", "3", "--device", "cpu"])
    assert rc == 0
    return demo, root, out


def test_demo_writes_everything(demo_run, capsys):
    _, _, out = demo_run
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "overlay.mp4",
                 "overlay_frame.png", "eval/eval.json", "masks/summary.json",
                 "input/demo_video.mp4", "demo_summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["iterations"] == 3
    for key in ("mIoU", "mVC_8", "flicker"):
        v = summary["val"][key]
        assert v is None or 0.0 <= v <= 1.0
    assert 0.0 <= summary["val_mIoU_attention_off"] <= 1.0  # the ablation ran
    seg = json.loads((out / "masks" / "summary.json").read_text())
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == seg["frames"] == 12
    gt = sorted((out / "input" / "demo_video_masks").glob("*.png"))
    assert len(gt) == 12
    m = np.asarray(Image.open(masks[0]))
    assert m.shape == np.asarray(Image.open(gt[0])).shape == (32, 48)
    assert m.max() < 7
    strip = np.asarray(Image.open(out / "overlay_frame.png"))
    assert strip.shape == (32 * 4, 48 * 3 * 4, 3)
    ev = json.loads((out / "eval" / "eval.json").read_text())
    assert abs(ev["metrics"]["mIoU"] - summary["val"]["mIoU"]) < 1e-9
    # --quick writes no plots, and the summary does not announce any
    demo = demo_run[0]
    text = io.StringIO()
    demo.print_summary(summary, text)
    assert not (out / "eval" / "class_iou.png").exists()
    assert "class_iou.png" not in text.getvalue() and "eval.json" in text.getvalue()
    # a figure the run could not measure is "n/a", not "n/a %"
    text = io.StringIO()
    demo.print_summary({**summary, "val": {**summary["val"], "mVC_8": None}}, text)
    assert "mVC_8 n/a " in text.getvalue() and "n/a %" not in text.getvalue()


def test_demo_rerun_replaces_the_earlier_demo(demo_run):
    demo, _, out = demo_run
    before = (out / "best.pt").stat().st_mtime_ns
    rc = demo.main(["--out", str(out), "--quick", "--iterations", "1", "--device", "cpu",
                    "--video-frames", "4"])
    assert rc == 0
    assert (out / "best.pt").stat().st_mtime_ns != before
    assert json.loads((out / "demo_summary.json").read_text())["iterations"] == 1
    assert len(list((out / "masks").glob("*.png"))) == 4


def test_segment_video_uses_demo_checkpoint_by_default(load_script, demo_run, monkeypatch,
                                                       tmp_path):
    _, root, out = demo_run
    seg = load_script("segment_video")
    monkeypatch.chdir(root)
    monkeypatch.delenv("VIDCCNET_CHECKPOINT", raising=False)
    rc = seg.main([str(out / "input" / "demo_video.mp4"), "--out", str(tmp_path / "m"),
                   "--quiet", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert Path(summary["checkpoint"]) == Path("runs") / "demo" / "best.pt"


@pytest.mark.parametrize("argv, words", [
    (["--iterations", "0"], "--iterations must be >= 1"),
    (["--video-frames", "0"], "--video-frames must be >= 1"),
])
def test_demo_bad_options_one_line(argv, words, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out",
                           str(tmp_path / "d"), *argv], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1



def test_demo_out_below_a_file_is_one_plain_line(load_script, tmp_path, capsys):
    """--out below a file said '[Errno 20] Not a directory: ...' where train.py and the
    others name the file in the way."""
    (tmp_path / "notes").write_text("mine")
    rc = load_script("demo").main(["--out", str(tmp_path / "notes" / "demo"), "--quick"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"'{tmp_path / 'notes'}' is a file, not a folder" in err[0], err
    assert (tmp_path / "notes").read_text() == "mine"

def test_demo_never_deletes_what_it_did_not_write(load_script, demo_run, tmp_path, capsys):
    """The demo replaces only an earlier demo, and only once its options are known to work: a
    folder holding a training run, or a bad --device / --threads, gets one line and exit 2 with
    every file left as it was."""
    import torch

    demo, _, demo_out = demo_run
    run = tmp_path / "my_run"
    run.mkdir()
    for name in ("best.pt", "last.pt", "metrics.jsonl", "config.yaml"):
        (run / name).write_text(name)
    notes = tmp_path / "notes"  # any other folder with files: not the demo's either
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    cases = [(run, [], "not written by the demo"),
             (notes, [], "not written by the demo"),
             (demo_out, ["--threads", "-1"], "--threads must be >= 1")]
    if not torch.cuda.is_available():
        cases.append((demo_out, ["--device", "cuda"], "no CUDA device"))
    for out, extra, needle in cases:
        before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        assert demo.main(["--out", str(out), "--quick", "--device", "cpu", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_synthetic_tiny_config_is_the_demo_recipe(load_script):
    """configs/synthetic_tiny.yaml trains what the demo trains (they differ only in where and
    how often they write, and in the device)."""
    import dataclasses

    from vidccnet.engine.config import config_from_dict, load_config

    demo_cfg = config_from_dict(load_script("demo").DEMO_CONFIG)
    tiny_cfg = load_config(REPO / "configs/synthetic_tiny.yaml")
    demo, tiny = dataclasses.asdict(demo_cfg), dataclasses.asdict(tiny_cfg)
    for section in ("model", "data", "optim", "schedule", "loss"):
        assert tiny[section] == demo[section], section
    # eval.anchor: the config leaves it to follow data.anchor, the demo names it
    assert {k for k in tiny["eval"] if tiny["eval"][k] != demo["eval"][k]} <= {"clip_len",
                                                                              "anchor"}
    assert tiny_cfg.eval_anchor == demo_cfg.eval_anchor
    assert tiny["runtime"]["seed"] == demo["runtime"]["seed"]


def test_a_rerun_keeps_the_earlier_model_until_it_has_a_new_one(load_script, tmp_path):
    """Preparing a rerun removes the earlier demo's derived outputs but not its checkpoints:
    the trainer (runtime.overwrite) replaces them when the new run writes its first one, so a
    rerun interrupted early still leaves the best.pt segment_video.py uses by default."""
    demo = load_script("demo.py")
    out = tmp_path / "demo"
    out.mkdir()
    (out / demo.DEMO_MARK).write_text("mark\n")
    for name in ("best.pt", "last.pt", "demo_summary.json", "overlay.mp4", "config.yaml",
                 "metrics.jsonl"):
        (out / name).write_bytes(b"earlier")
    (out / "tb").mkdir()
    demo.prepare_out(out)
    # the run's config and logs too: the trainer sets them aside and puts them back if the
    # rerun stops before its first checkpoint (they were deleted here, and an interrupted rerun
    # left the earlier best.pt next to the new run's metrics.jsonl and no config.yaml)
    assert sorted(p.name for p in out.iterdir()) == sorted([
        demo.DEMO_MARK, "best.pt", "last.pt", "config.yaml", "metrics.jsonl", "tb"])


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopped_while_segmenting_is_the_demos_one_line(load_script, tmp_path, monkeypatch,
                                                        capsys, main_under_sigterm, how):
    """Ctrl-C or SIGTERM in step 3 reached segment_video.py's main, which reported it and
    returned 130 / 143; the demo then took that for a failure: a second line, 'error:
    scripts/segment_video.py failed (exit 130)', and exit 2. Now the demo reports it: one
    line, 130 / 143."""
    import os
    import signal

    import vidccnet.writer

    def stop(*args, **kwargs):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(vidccnet.writer, "save_mask", stop)
    demo = load_script("demo")
    argv = ["--out", str(tmp_path / "demo"), "--quick", "--iterations", "1", "--device", "cpu"]
    rc = main_under_sigterm(demo.main, argv)
    err = [line for line in capsys.readouterr().err.splitlines()
           if any(word in line for word in ("interrupted", "terminated", "error"))]
    how_said = {"ctrl-c": "interrupted", "sigterm": "terminated (SIGTERM)"}[how]
    assert err == [f"demo.py: {how_said}; the output folder is incomplete: run the demo again"]
    assert rc == {"ctrl-c": 130, "sigterm": 143}[how]
    assert not (tmp_path / "demo" / "masks").exists()
