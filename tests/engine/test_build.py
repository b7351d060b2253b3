"""Checks of the dataset settings made before anything is built (vidccnet.engine.build)."""

from __future__ import annotations

import pytest

from vidccnet.engine.build import check_root
from vidccnet.engine.config import ConfigError, load_config


@pytest.mark.parametrize("name", ["folders", "camvid", "vspw"])
def test_a_data_root_that_does_not_exist_is_named(tmp_path, name: str) -> None:
    """A mistyped data.root said "'ROOT/classes.txt' not found" (folders), as if the folder
    were there without its class list."""
    cfg = load_config(None, [f"data.name={name}", f"data.root={tmp_path / 'mine'}"])
    with pytest.raises(ConfigError, match=r"data\.root '.*mine' does not exist"):
        check_root(cfg)
    (tmp_path / "file").write_text("x")
    cfg = load_config(None, [f"data.name={name}", f"data.root={tmp_path / 'file'}"])
    with pytest.raises(ConfigError, match=r"data\.root '.*file' is not a folder"):
        check_root(cfg)
    (tmp_path / "mine").mkdir()
    check_root(load_config(None, [f"data.name={name}", f"data.root={tmp_path / 'mine'}"]))
