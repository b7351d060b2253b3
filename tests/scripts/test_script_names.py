"""Every script names itself in its usage errors, however it is started (``python -m pytest``,
demo.py or another caller running its ``main(argv)`` in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest

SCRIPTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_usage_errors_name_the_script_not_sys_argv0(load_script, capsys, monkeypatch, name):
    """evaluate, train, bench_data, bench_model, bench_segment, probe_attention and
    prepare_camvid left argparse's prog to sys.argv[0]: 'usage: __main__.py ...' and
    '__main__.py: error: ...' under pytest."""
    script = load_script(name)
    monkeypatch.setattr("sys.argv", ["/somewhere/__main__.py"])
    with pytest.raises(SystemExit) as exc:
        script.main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.splitlines()[0].startswith(f"usage: {name}.py "), err
    assert err.splitlines()[-1].startswith(f"{name}.py: error: "), err
    assert "__main__" not in err, err
