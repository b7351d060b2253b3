"""vidccnet.writer.check_paths on inputs a user gets wrong."""

from __future__ import annotations

import pytest

from vidccnet.writer import OutputPathError, check_paths


def test_a_folder_of_folders_names_the_frame_folder_to_pass(tmp_path):
    """segment_video.py on a folders-dataset video (ROOT/data/VIDEO, holding origin/ and mask/)
    said 'no image files in folder (it is empty)': the folder is not empty."""
    video = tmp_path / "v3"
    (video / "mask").mkdir(parents=True)
    (video / "origin").mkdir()
    (video / "origin" / "00000.jpg").write_bytes(b"x")
    (video / "mask" / "00000.png").write_bytes(b"x")
    with pytest.raises(OutputPathError) as err:
        check_paths(video, tmp_path / "out", cli=True)
    msg = str(err.value)
    assert "it is empty" not in msg
    assert "holds no files, only the folders 'mask', 'origin'" in msg
    assert f"'{video / 'origin'}'" in msg  # the one holding frames, as the folders layout has
    (tmp_path / "empty").mkdir()
    with pytest.raises(OutputPathError, match=r"no image files in folder \(it is empty\)"):
        check_paths(tmp_path / "empty", tmp_path / "out", cli=True)
