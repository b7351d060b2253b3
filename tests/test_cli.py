"""vidccnet.cli: the scripts' shared one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidccnet.cli import missing_folder, one_line, unwritable


def test_missing_folder_names_the_option_and_the_path(tmp_path):
    bad = tmp_path / "no" / "out.json"
    assert missing_folder(bad, "--json") == (
        f"--json {bad}: its folder does not exist; create it first")
    assert missing_folder(tmp_path / "out.json", "--json") is None
    assert missing_folder(None, "--json") is None
    (tmp_path / "afile").write_text("x")
    assert missing_folder(tmp_path / "afile" / "out.png", "--out") == (
        f"--out {tmp_path / 'afile' / 'out.png'}: '{tmp_path / 'afile'}' is a file, not a "
        "folder; choose another path")


def test_unwritable_names_the_nearest_folder_without_write_permission(tmp_path, monkeypatch):
    """The folder that would receive the file (or the folder itself, or the nearest existing
    folder above a new one) is asked with os.access; the tests run as root, where permission
    bits do not bite, so os.access is replaced."""
    import os

    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    asked = []

    def access(path, mode):
        asked.append((Path(path), mode))
        return Path(path) != locked

    monkeypatch.setattr(os, "access", access)
    denied = f"no permission to write in '{locked}'; choose a folder you can write to"
    assert unwritable(locked / "a.png", "--out") == f"--out {locked / 'a.png'}: {denied}"
    assert asked == [(locked, os.W_OK | os.X_OK)]
    assert unwritable(locked / "new" / "deeper" / "a.png", "--out") == (
        f"--out {locked / 'new' / 'deeper' / 'a.png'}: {denied}")  # made inside locked/
    assert unwritable(locked, "--output", folder=True) == f"--output {locked}: {denied}"
    assert unwritable(locked / "new", "--output", folder=True) == (
        f"--output {locked / 'new'}: {denied}")
    assert unwritable(locked / "sub", "--output", folder=True) is None  # only itself counts
    assert unwritable(locked / "sub" / "a.png", "--out") is None
    assert unwritable(tmp_path / "a.png", "--out") is None


def test_unwritable_names_a_file_where_a_folder_goes(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert unwritable(tmp_path / "afile" / "new" / "a.png", "--out") == (
        f"--out {tmp_path / 'afile' / 'new' / 'a.png'}: '{tmp_path / 'afile'}' is a file, not "
        "a folder; choose another path")
    assert unwritable(tmp_path / "afile", "--output", folder=True) == (
        f"--output {tmp_path / 'afile'}: '{tmp_path / 'afile'}' is a file, not a folder; "
        "choose another path")


def test_one_line_joins_a_multi_line_message():
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line(KeyError()) == "KeyError"


def test_one_line_unwraps_an_error_raised_in_a_data_loader_worker():
    """A DataLoader worker re-raises the dataset's error with the worker's traceback as its
    message; the line shows the dataset's own message."""
    from torch._utils import ExceptionWrapper  # what a DataLoader worker re-raises with

    from vidccnet.data.video import VideoReadError

    for error, text in ((FileNotFoundError("[Errno 2] No such file: 'a.png'"),
                         "[Errno 2] No such file: 'a.png'"),
                        (ValueError("mask 'm.png' has size (2, 3),\nits frame (4, 5)"),
                         "mask 'm.png' has size (2, 3), its frame (4, 5)"),
                        (VideoReadError("v.mp4", "frame 3 is unreadable"),
                         str(VideoReadError("v.mp4", "frame 3 is unreadable")))):
        try:
            raise error
        except Exception:
            wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
        try:
            wrapped.reraise()
        except Exception as exc:  # noqa: BLE001 - what the trainer's caller sees
            assert one_line(exc) == " ".join(text.split()) + " (in a data loader worker)"


@pytest.mark.parametrize("script", ["evaluate", "show_attention", "train", "export_onnx",
                                    "convert_checkpoint", "demo"])
def test_ctrl_c_while_the_script_imports_torch_is_one_line(load_script, script, tmp_path,
                                                           monkeypatch, capsys):
    """Ctrl-C in the first seconds, while a script imports torch and the library, gives the
    same one line and exit 130 as later (it gave a 30-50 line traceback)."""
    import builtins

    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not a checkpoint")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    argv = {
        "evaluate": ["--checkpoint", str(ckpt)],
        "show_attention": ["--checkpoint", str(ckpt), str(video), "--frame", "0", "--pixel",
                           "0", "0", "--out", str(tmp_path / "a.png")],
        "train": ["--config", "configs/synthetic_tiny.yaml"],
        "export_onnx": [str(ckpt), "--out", str(tmp_path / "m.onnx")],
        "convert_checkpoint": [str(ckpt), "--format", "mmseg", "--out", str(tmp_path / "o.pt")],
        "demo": ["--out", str(tmp_path / "demo"), "--quick"],
    }[script]
    module = load_script(script)
    real_import = builtins.__import__

    def interrupting_import(name, *args, **kwargs):
        if name.startswith(("vidccnet.engine", "vidccnet.data", "vidccnet.predict", "torch")):
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupting_import)
    try:
        rc = module.main(argv)
    except KeyboardInterrupt:
        rc = "KeyboardInterrupt escaped main()"
    finally:
        monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and len(err) == 1 and "interrupted" in err[0], err


def test_after_sigterm_a_child_process_ending_does_not_replace_terminated():
    """`timeout`, SLURM and torchrun send SIGTERM to the whole process group: the DataLoader
    workers die of it too, and torch's SIGCHLD handler raised 'DataLoader worker ... is killed
    by signal: Terminated' in the middle of the cleanup (or in the loader's __del__ after it),
    so train.py ended in that traceback instead of its one line. Once Terminated is raised,
    SIGCHLD is ignored; the SIGTERM handler comes back after the block."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from vidccnet.cli import Terminated, sigterm_unwinds

    def worker_failed(signum, frame):
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    before, term = signal.signal(signal.SIGCHLD, worker_failed), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Terminated), sigterm_unwinds():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before it ends
            finally:  # a child ends during the cleanup
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                time.sleep(0.2)
        assert signal.getsignal(signal.SIGTERM) == term
        subprocess.run([sys.executable, "-c", "pass"], check=True)  # and after it
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGCHLD, before)


def test_unwritable_below_a_folder_without_search_permission_is_one_line(tmp_path):
    """With real permission bits (not os.access replaced): as an unprivileged user, a path to be
    made below a folder it cannot search raised PermissionError from Path.exists() instead of
    giving the one line. Runs only where the tests run as root (to drop to 'nobody')."""
    import os
    import shutil
    import subprocess
    import tempfile

    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to run a check as the unprivileged user 'nobody'")
    repo = Path(__file__).resolve().parents[1]

    def runs(python: str | None) -> bool:  # as 'nobody', with this repository importable
        try:
            return python is not None and subprocess.run(
                [python, "-c", "import vidccnet.cli"], user="nobody",
                env={"PYTHONPATH": str(repo)}, capture_output=True).returncode == 0
        except OSError:  # 'nobody' may not run it (a Python under /root)
            return False

    python = next((p for p in (shutil.which("python3"), "/usr/bin/python3") if runs(p)), None)
    if python is None:
        pytest.skip("no interpreter that 'nobody' may run with this repository readable")
    base = Path(tempfile.mkdtemp(prefix="vidccnet-nox-"))
    try:
        base.chmod(0o755)
        nox = base / "nox"
        nox.mkdir(mode=0o700)  # root's: 'nobody' may neither search nor write it
        code = ("import sys; from vidccnet.cli import unwritable; "
                "print(unwritable(sys.argv[1], '--out', folder=sys.argv[2] == 'folder'))")
        for path, kind in ((nox / "run", "folder"), (nox / "new" / "a.png", "file"),
                           (nox / "a.png", "file")):
            done = subprocess.run([python, "-c", code, str(path), kind], user="nobody",
                                  env={"PYTHONPATH": str(repo)}, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == (f"--out {path}: no permission to write in '{nox}'; "
                                           "choose a folder you can write to"), done.stdout
    finally:
        shutil.rmtree(base)


def test_missing_folder_refuses_an_output_file_path_that_is_a_folder(tmp_path):
    """--json DIR (an existing folder) passed the check; the benchmarks then failed with a
    traceback in os.replace, three of them after the whole measurement."""
    assert missing_folder(tmp_path, "--json") == (
        f"--json {tmp_path}: it is a folder; name a file (inside it or elsewhere)")
