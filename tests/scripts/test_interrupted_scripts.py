"""Ctrl-C in the secondary scripts (benchmarks, kernel reports, the attention probe): one line
and exit code 130, as the other scripts do, instead of a KeyboardInterrupt traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_MODEL = ["--depths", "18", "--frames", "1", "--size", "16", "16", "--configs", "noatt",
              "--device", "cpu"]


@pytest.mark.parametrize("name, work, argv", [
    ("kernel_resources", "StandInDriver", ["--shape", "16", "16", "2", "3", "5", "--dtype",
                                           "float16"]),
    ("kernel_traffic", "measure", ["--case", "camvid"]),
    ("bench_attention", "bench_case", ["--case", "quick", "--device", "cpu"]),
    ("bench_data", "make_sources", ["--quick"]),
    ("bench_model", "bench_depth", TINY_MODEL),
    ("bench_segment", "write_video", []),
    ("probe_attention", "run", ["--steps", "1", "--threads", "1"]),
])
def test_ctrl_c_is_one_line_and_exit_130(load_script, monkeypatch, capsys, name, work, argv):
    script = load_script(name)
    if name == "kernel_resources":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if name == "kernel_traffic":  # usable or not here (triton may be imported already)
        from vidccnet.ops import triton_cca

        monkeypatch.setattr(triton_cca, "triton_available", lambda device: (True, ""))
    if name == "probe_attention":  # it sets the thread count: put it back
        import torch

        monkeypatch.setattr(torch, "set_num_threads", lambda n: None)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(script, work, ctrl_c)
    try:
        rc = script.main(argv)
    except KeyboardInterrupt:
        pytest.fail(f"{name}: Ctrl-C ended in a KeyboardInterrupt traceback")
    err = capsys.readouterr().err
    assert rc == 130 and err.count("\n") == 1 and ": interrupted;" in err, err


@pytest.mark.parametrize("name, work", [("bench_data", "make_sources"),
                                        ("bench_segment", "write_video")])
def test_sigterm_removes_the_temporary_videos(load_script, monkeypatch, capsys, tmp_path,
                                              main_under_sigterm, name, work):
    """SIGTERM killed the benchmark with its temporary folder of videos (and checkpoints) left
    in /tmp; it now unwinds as Ctrl-C does: the folder goes, one line, exit 143."""
    import os
    import signal
    import tempfile

    script = load_script(name)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def terminated(path, *args, **kwargs):
        (Path(path) / "video.mp4" if Path(path).is_dir() else Path(path)).write_bytes(b"x")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(script, work, terminated)
    rc = main_under_sigterm(script.main, ["--quick"] if name == "bench_data" else [])
    err = capsys.readouterr().err
    assert rc == 143 and err.count("\n") == 1 and "terminated (SIGTERM)" in err, err
    assert list(tmp_path.iterdir()) == []
