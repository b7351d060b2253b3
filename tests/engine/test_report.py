"""vidccnet.engine.report.write_json: strict JSON, written whole or not at all."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from vidccnet import writer
from vidccnet.engine import report
from vidccnet.engine.report import write_json


def test_write_json_strict_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "r.json"
    write_json(out, {"a": math.nan, "b": np.float32(0.5), "c": torch.tensor([1, 2])}, indent=1)
    assert json.loads(out.read_text()) == {"a": None, "b": 0.5, "c": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    umask = os.umask(0o022)  # read it back
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes it, not 0600


def test_write_json_failure_keeps_the_earlier_file(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text('{"old": 1}')

    def disk_full(*_args):
        raise OSError("no space left on device")

    monkeypatch.setattr(writer.os, "replace", disk_full)
    with pytest.raises(OSError, match="no space"):
        write_json(out, {"new": 2})
    assert out.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_json_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    """write_atomically renamed an unsynced file over the earlier one: after a power cut the
    name could hold an empty file, neither the old nor the new. save_checkpoint synced its
    own copy of the code; both now share this one."""
    done = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(writer.os, "fsync", lambda fd: (done.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(writer.os, "replace",
                        lambda *a: (done.append("replace"), real_replace(*a)))
    write_json(tmp_path / "r.json", {"a": 1})
    assert done == ["fsync", "replace"]


def test_a_write_cut_by_an_interrupt_raises_the_interrupt(tmp_path):
    """A SIGTERM during save_checkpoint's torch.save: torch's zip writer then failed to close
    the cut file ('unexpected pos ...'), and that RuntimeError replaced the Terminated, so
    train.py ended in a traceback instead of 'terminated (SIGTERM); continue with --resume'."""
    from vidccnet.cli import Terminated

    class Closing:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")

    def cut(f):
        with Closing():
            f.write(b"part")
            raise Terminated

    out = tmp_path / "last.pt"
    out.write_bytes(b"earlier")
    with pytest.raises(Terminated):
        writer.write_atomically(out, cut)
    assert out.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_class_iou_plot_draws_the_reported_miou(tmp_path, monkeypatch):
    """The dashed mIoU line is the figure the report states (VSPW's rule averages the classes
    present in the ground truth only), not a mean of its own over every class with an IoU."""
    from matplotlib.figure import Figure

    labels = []
    real_savefig = Figure.savefig

    def keep_legend(fig, *args, **kwargs):
        labels.extend(t.get_text() for ax in fig.axes if ax.get_legend()
                      for t in ax.get_legend().get_texts())
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_legend)
    # class 1 predicted but absent from the ground truth: IoU 0, not in VSPW's mean
    report.plot_class_iou(tmp_path / "a.png", [0.8, 0.0, float("nan")], miou=0.8)
    report.plot_class_iou(tmp_path / "b.png", [0.8, 0.0, float("nan")])
    assert labels == ["mIoU 80.0", "mIoU 40.0"]


@pytest.mark.parametrize("plot", ["class_iou", "video_strip"])
def test_an_interrupted_plot_leaves_the_earlier_png_whole(tmp_path, monkeypatch, plot):
    """plot_class_iou and plot_video_strip called savefig(path): a Ctrl-C or SIGTERM while
    matplotlib wrote left evaluate's PNG truncated. Now written to a temporary file and
    renamed: the earlier picture stays, no temporary is left."""
    from matplotlib.figure import Figure

    out = tmp_path / "p.png"
    out.write_bytes(b"earlier picture")
    real_savefig = Figure.savefig

    def cut(fig, fname, *args, **kwargs):
        real_savefig(fig, fname, *args, **kwargs)
        if hasattr(fname, "truncate"):
            fname.truncate(10)
        else:
            os.truncate(fname, 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", cut)
    frame, mask = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int64)
    with pytest.raises(KeyboardInterrupt):
        if plot == "class_iou":
            report.plot_class_iou(out, [0.5, 0.25])
        else:
            report.plot_video_strip(out, [frame], [mask], [mask], palette=[(0, 0, 0), (9, 9, 9)])
    assert out.read_bytes() == b"earlier picture"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]
