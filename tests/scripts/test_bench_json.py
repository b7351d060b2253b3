"""The benchmarks' --json output: strict JSON written whole, and a missing folder refused
before any measurement (not a traceback after it)."""

from __future__ import annotations

import json

import pytest

TINY_MODEL = ["--depths", "18", "--frames", "1", "--size", "16", "16", "--configs", "noatt",
              "--device", "cpu"]


def test_bench_model_writes_json(load_script, tmp_path):
    out = tmp_path / "rows.json"
    assert load_script("bench_model").main(TINY_MODEL + ["--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows and rows[0]["config"] == "noatt"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no temporary left


def test_bench_model_json_into_missing_folder_is_refused_up_front(load_script, tmp_path):
    bench = load_script("bench_model")
    with pytest.raises(bench.BenchError, match="folder does not exist"):
        bench.main(TINY_MODEL + ["--json", str(tmp_path / "no" / "rows.json")])


def test_bench_data_json_into_missing_folder_is_refused_up_front(load_script, tmp_path, capsys):
    rc = load_script("bench_data").main(["--quick", "--json", str(tmp_path / "no" / "d.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "folder does not exist" in err[0]
