"""scripts/kernel_resources.py and scripts/kernel_traffic.py: expected mistakes are one line and
exit code 2 before the long work (compiling for a GPU, interpreting the kernels)."""

from __future__ import annotations

import pytest


def _one_line(capsys, needle: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err
    assert needle in err, err


def test_kernel_resources_refuses_a_json_path_in_a_missing_folder_up_front(
        load_script, tmp_path, capsys, monkeypatch):
    """--json into a missing folder failed with a FileNotFoundError traceback after every
    launch had been compiled (tens of seconds each)."""
    script = load_script("kernel_resources")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    compiled = []
    monkeypatch.setattr(script, "StandInDriver", lambda *a: compiled.append(a))  # never reached
    rc = script.main(["--shape", "16", "16", "2", "3", "5", "--dtype", "float16",
                      "--json", str(tmp_path / "missing" / "r.json")])
    assert rc == 2 and not compiled
    _one_line(capsys, "its folder does not exist")


@pytest.mark.parametrize("argv, needle", [
    (["--shape", "16", "16", "0", "3", "5"], "--shape 16 16 0 3 5"),
    (["--shape", "-4", "16", "2", "3", "5"], "--shape -4 16 2 3 5"),
    (["--limit", "0"], "--limit"),
])
def test_kernel_resources_refuses_sizes_below_one(load_script, capsys, monkeypatch, argv,
                                                   needle):
    """T = 0 or a negative Cqk compiled and printed 'inference: fits / training: fits'."""
    script = load_script("kernel_resources")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    compiled = []
    monkeypatch.setattr(script, "StandInDriver", lambda *a: compiled.append(a))
    assert script.main(argv + ["--dtype", "float16"]) == 2 and not compiled
    _one_line(capsys, needle)


@pytest.mark.parametrize("block_v", ["100", "0", "-64"])
def test_kernel_traffic_refuses_a_block_v_that_is_not_a_power_of_two(
        load_script, capsys, monkeypatch, block_v):
    """--block-v 100 ended in an InterpreterError traceback ("arange's range must be a power of
    2"), 0 in "range() arg 3 must not be zero", after the inputs were built."""
    script = load_script("kernel_traffic")
    measured = []
    monkeypatch.setattr(script, "measure", lambda *a, **k: measured.append(a))
    assert script.main(["--case", "camvid", "--block-v", block_v]) == 2 and not measured
    _one_line(capsys, f"--block-v {block_v}")


@pytest.mark.parametrize("name, argv", [
    ("kernel_resources", ["--limit", "0"]),
    ("kernel_resources", ["--no-such-flag"]),
    ("kernel_traffic", ["--block-v", "100"]),
    ("kernel_traffic", ["--no-such-flag"]),
])
def test_errors_name_the_script_however_it_is_started(load_script, capsys, monkeypatch, name,
                                                      argv):
    """The name came from sys.argv[0]: '__main__.py: error: ...' under `python -m pytest` (or
    any caller of main), where the other scripts say their own name."""
    script = load_script(name)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr("sys.argv", ["/somewhere/__main__.py"])
    try:
        rc = script.main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and err.splitlines()[-1].startswith(f"{name}.py: error: "), err
    assert "__main__" not in err, err
