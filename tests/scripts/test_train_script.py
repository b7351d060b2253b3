"""scripts/train.py as a real process: a SIGTERM (a cluster's preemption, ``timeout``,
``kill``) ends it as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "model.kwargs.head_channels=16", "model.attention_backend=reference",
    "data.clip_len=2", "data.batch_size=2", "data.num_workers=1", "data.crop_size=[32, 32]",
    "data.kwargs={num_videos: 4, num_frames: 3, height: 32, width: 32, seed: 0}",
    "eval.kwargs={num_videos: 1}", "eval.vc_windows=[2]", "schedule.iterations=100000",
    "runtime.ckpt_interval=1", "runtime.log_interval=1", "runtime.tensorboard=false",
    "runtime.progress=false",
]


def test_sigterm_mid_training_says_what_was_saved_and_how_to_continue(tmp_path: Path) -> None:
    """SIGTERM killed train.py on the spot (no line, exit -15); Ctrl-C said 'continue with
    --resume'. Sent to the whole process group, as `timeout` and SLURM do (the data loader's
    worker gets it too): one line, exit 143, last.pt whole and no temporary file left."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", "--config", "configs/synthetic_tiny.yaml",
         f"runtime.output_dir={out}", *TINY],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.pt").is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "no last.pt within 300 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == (f"train.py: terminated (SIGTERM); continue with --resume "
                                    f"({out / 'last.pt'} is kept)"), err
    assert sorted(p.name for p in out.glob(".*.tmp")) == []
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] >= 1


def test_under_torchrun_rank_0_alone_says_what_to_resume(load_script, tmp_path, monkeypatch,
                                                         capsys, main_under_sigterm) -> None:
    """torchrun passes its SIGTERM to every rank (a terminal's Ctrl-C reaches them all too):
    each printed the same line. Rank 0 says it; the others end with the same code, silent."""
    import vidccnet.engine.train as engine

    def terminated(cfg, resume=False, name=None):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before it ends

    monkeypatch.setattr(engine, "train", terminated)
    args = ["--config", str(REPO / "configs/synthetic_tiny.yaml"),
            f"runtime.output_dir={tmp_path / 'run'}"]
    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        assert main_under_sigterm(load_script("train.py").main, args) == 143
        err = capsys.readouterr().err
        assert len(err.splitlines()) == lines and "Traceback" not in err, err
        assert lines == 0 or "train.py: terminated (SIGTERM); nothing to resume" in err, err


def test_a_misspelt_log_level_is_refused(load_script, capsys) -> None:
    """--log-level LOUD (or 'debg') was taken silently as INFO."""
    script = load_script("train.py")
    with pytest.raises(SystemExit) as exc:
        script.main(["--config", "missing.yaml", "--log-level", "debg"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--log-level" in err.splitlines()[-1], err
    # any case of a real level is fine: the missing config is the error then
    for level in ("debug", "CRITICAL"):  # every level of logging, as before the check
        assert script.main(["--config", "missing.yaml", "--log-level", level]) == 2
        assert "missing.yaml" in capsys.readouterr().err


def test_an_override_that_is_not_yaml_is_one_line(load_script, capsys) -> None:
    """An unclosed bracket printed PyYAML's excerpt and carets ('in "<unicode string>", line 1,
    column 1: [64,96 ^ ...') flattened into the line."""
    script = load_script("train.py")
    code = script.main(["--config", str(REPO / "configs/synthetic_tiny.yaml"),
                        "data.crop_size=[64,96"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("train.py: error: override 'data.crop_size': '[64,96' is not valid "
                          "YAML: column 7:"), err
    assert "<unicode string>" not in err and "e.g. data.crop_size=[64, 96]" in err, err


def test_permission_denied_is_one_line(load_script, tmp_path, monkeypatch, capsys) -> None:
    """A PermissionError the checks before training cannot foresee (a run folder below one the
    user may not search, a file system that refuses root) was a traceback."""
    import vidccnet.engine.train as train_mod

    out = tmp_path / "run"

    def denied(cfg, resume=False, name=None):
        raise PermissionError(13, "Permission denied", str(out / "last.pt"))

    monkeypatch.setattr(train_mod, "train", denied)
    script = load_script("train.py")
    assert script.main(["--config", str(REPO / "configs" / "synthetic_tiny.yaml"),
                        f"runtime.output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Permission denied" in err[0] and str(out) in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_only_what_train_py_takes(load_script, tmp_path, capsys) -> None:
    """The error advised '--device cpu', which train.py refuses ('unrecognized arguments')."""
    code = load_script("train.py").main([
        "--config", str(REPO / "configs/synthetic_tiny.yaml"), "runtime.device=cuda",
        f"runtime.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith("use the cpu: runtime.device=cpu (evaluate.py and demo.py also take "
                           "--device cpu)"), err
