"""vidccnet.cli: the scripts' shared one-line errors."""

from __future__ import annotations

from vidccnet.cli import missing_folder, one_line


def test_missing_folder_names_the_option_and_the_path(tmp_path):
    bad = tmp_path / "no" / "out.json"
    assert missing_folder(bad, "--json") == (
        f"--json {bad}: its folder does not exist; create it first")
    assert missing_folder(tmp_path / "out.json", "--json") is None
    assert missing_folder(None, "--json") is None


def test_one_line_joins_a_multi_line_message():
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line(KeyError()) == "KeyError"
