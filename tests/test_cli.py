"""vidccnet.cli: the scripts' shared one-line errors."""

from __future__ import annotations

from vidccnet.cli import missing_folder, one_line


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
