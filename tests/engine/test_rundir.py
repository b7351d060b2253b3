"""The run folder (vidccnet.engine.rundir) on its own: no training, only files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from vidccnet.engine import rundir
from vidccnet.engine.checkpoint import CHECKPOINT_VERSION, CheckpointError, save_checkpoint
from vidccnet.engine.config import config_to_yaml, load_config
from vidccnet.engine.rundir import (
    EARLIER_LOGS,
    best_so_far,
    never_trained,
    open_run_dir,
    prepare_output_dir,
    put_back_earlier_logs,
    replace_earlier_run,
    set_earlier_logs_aside,
    truncate_jsonl,
)
from vidccnet.engine.train import TrainingError


def _cfg(out: Path, *extra: str):
    return load_config(None, [f"runtime.output_dir={out}", "runtime.device=cpu", *extra])


def _lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _iterations(path: Path) -> list[tuple[str, int]]:
    return [(r["type"], r["iteration"]) for r in map(json.loads, path.read_text().splitlines())]


LOG = [{"type": "train", "iteration": 1}, {"type": "train", "iteration": 2},
       {"type": "val", "iteration": 2}, {"type": "train", "iteration": 3},
       {"type": "val", "iteration": 3}, {"type": "train", "iteration": 4}]


def test_truncate_jsonl_keeps_the_lines_up_to_the_checkpoints_iteration(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text(_lines(*LOG) + "not json\n[1, 2]\n")
    truncate_jsonl(log, 3)
    assert _iterations(log) == [("train", 1), ("train", 2), ("val", 2), ("train", 3),
                                ("val", 3)]
    truncate_jsonl(log, 3, rerun_val=True)  # the validation of 3 runs again: its line goes
    assert _iterations(log) == [("train", 1), ("train", 2), ("val", 2), ("train", 3)]
    truncate_jsonl(log, 0)
    assert log.read_text() == ""
    truncate_jsonl(tmp_path / "none.jsonl", 2)  # no log (a run without a log line): none made
    assert not (tmp_path / "none.jsonl").exists()


def test_truncate_jsonl_cut_short_keeps_the_log(tmp_path: Path, monkeypatch) -> None:
    """The log was rewritten in place: a crash (disk full, a kill) mid-write lost its lines."""
    log = tmp_path / "metrics.jsonl"
    text = _lines(*LOG)
    log.write_text(text)
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the new log written, not yet on disk
    with pytest.raises(OSError, match="No space"):
        truncate_jsonl(log, 3)
    monkeypatch.undo()
    assert log.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_earlier_logs_set_aside_go_back_in_place_of_the_failed_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    (out / "tb").mkdir(parents=True)
    (out / "tb" / "events.old").write_text("old events")
    (out / "metrics.jsonl").write_text(_lines(*LOG))
    aside = set_earlier_logs_aside(out)
    assert aside == out / EARLIER_LOGS
    assert sorted(p.name for p in out.iterdir()) == [EARLIER_LOGS]
    (out / "tb").mkdir()  # the replacing run's own logs, then it fails before a checkpoint
    (out / "tb" / "events.new").write_text("new events")
    (out / "metrics.jsonl").write_text(_lines({"type": "train", "iteration": 1}))
    with caplog.at_level(logging.INFO, logger="vidccnet.engine.train"):
        put_back_earlier_logs(out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "tb"]
    assert (out / "metrics.jsonl").read_text() == _lines(*LOG)
    assert [p.name for p in (out / "tb").iterdir()] == ["events.old"]
    assert [r.name for r in caplog.records] == ["vidccnet.engine.train"]
    assert "put back the earlier run's logs" in caplog.records[0].getMessage()


def test_only_the_logs_there_are_set_aside_and_put_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    assert set_earlier_logs_aside(out) is None and not (out / EARLIER_LOGS).exists()
    (out / "metrics.jsonl").write_text(_lines(*LOG[:1]))
    set_earlier_logs_aside(out)
    (out / "tb").mkdir()  # the failed run made tb/, the earlier one had none: it goes
    put_back_earlier_logs(out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]
    put_back_earlier_logs(out)  # nothing aside: the logs stay as they are
    assert (out / "metrics.jsonl").read_text() == _lines(*LOG[:1])


def test_the_first_checkpoint_replaces_the_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "eval_val").mkdir(parents=True)
    (out / "eval_val" / "eval.json").write_text("{}")
    (out / "eval_notes").mkdir()  # no eval.json: not a run's evaluation, kept
    for name in ("last.pt", "best.pt", "config.yaml"):
        (out / name).write_text(f"earlier {name}")
    (out / "metrics.jsonl").write_text(_lines(*LOG))
    replaced = rundir.earlier_results(out)
    assert replaced == [out / "last.pt", out / "best.pt", out / "eval_val"]
    replaced.append(set_earlier_logs_aside(out))
    staged = out / ".last.pt.staged.tmp"
    staged.write_text("new checkpoint")
    replace_earlier_run(out, staged, "last.pt", replaced, "new config")
    assert replaced == []
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "eval_notes", "last.pt"]
    assert (out / "last.pt").read_text() == "new checkpoint"
    assert (out / "config.yaml").read_text() == "new config"


def test_open_run_dir_fresh_start_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    jsonl, writer, replaced = open_run_dir(out, "config A", resume=False,
                                           iteration=0, rerun_val=False, tensorboard=False)
    assert writer is None and replaced == []
    assert (out / "config.yaml").read_text() == "config A"
    for record in LOG:
        jsonl.write(record)
    (out / "last.pt").write_text("checkpoint")
    (out / ".last.pt.k1ll3d.tmp").write_text("half a checkpoint")
    _, _, replaced = open_run_dir(out, "config B", resume=True, iteration=2,
                                  rerun_val=True, tensorboard=False)
    assert replaced == [] and not (out / ".last.pt.k1ll3d.tmp").exists()
    assert _iterations(out / "metrics.jsonl") == [("train", 1), ("train", 2)]
    assert (out / "config.yaml").read_text() == "config A"  # a resume's: with its first save
    # a fresh start over it (runtime.overwrite): the earlier config stays until the first save
    _, _, replaced = open_run_dir(out, "config C", resume=False, iteration=0,
                                  rerun_val=False, tensorboard=False)
    assert replaced == [out / "last.pt", out / EARLIER_LOGS]
    assert (out / "config.yaml").read_text() == "config A"
    assert not (out / "metrics.jsonl").exists()


def test_a_resume_cut_short_while_writing_its_config_keeps_the_runs_config(
        tmp_path: Path, monkeypatch) -> None:
    """config.yaml was rewritten in place on resume: a crash (disk full, a kill) mid-write left
    half a config, the file `--config RUN/config.yaml --resume` reads."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("config A")
    (out / "last.pt").write_text("checkpoint")
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    open_run_dir(out, "config B", resume=True, iteration=2, rerun_val=False,
                 tensorboard=False)  # a resume writes its config with its first checkpoint
    (out / ".last.pt.staged.tmp").write_text("new checkpoint")
    monkeypatch.setattr(os, "fsync", disk_full)  # the new config written, not yet on disk
    with pytest.raises(OSError, match="No space"):
        replace_earlier_run(out, out / ".last.pt.staged.tmp", "last.pt", [], "config B")
    monkeypatch.undo()
    assert (out / "config.yaml").read_text() == "config A"
    assert (out / "last.pt").read_text() == "checkpoint"


def test_the_runs_config_and_log_reach_the_disk_before_their_rename(
        tmp_path: Path, monkeypatch) -> None:
    """config.yaml and the truncated metrics.jsonl were renamed into place unsynced: after a
    power cut the name could hold an empty file (checkpoints, written the same way, sync)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(_lines(*LOG))
    done = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (done.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (done.append(Path(b).name), real_replace(a, b)))
    open_run_dir(out, "config", resume=True, iteration=2, rerun_val=False,
                 tensorboard=False)
    (out / ".last.pt.staged.tmp").write_text("new checkpoint")
    replace_earlier_run(out, out / ".last.pt.staged.tmp", "last.pt", [], "config")
    assert done == ["fsync", "metrics.jsonl", "fsync", "config.yaml", "last.pt"]


def test_a_killed_config_or_log_rewrite_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    """A SIGKILL between writing and renaming config.yaml / metrics.jsonl left its temporary
    file for good: only killed checkpoint saves were cleaned up."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_text("checkpoint")
    for name in (".config.yaml.x1.tmp", ".metrics.jsonl.x2.tmp", ".last.pt.x3.tmp"):
        (out / name).write_text("half")
    open_run_dir(out, "config", resume=True, iteration=2, rerun_val=False,
                 tensorboard=False)
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]


def test_never_trained(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    assert never_trained(out)
    (out / "config.yaml").write_text(config_to_yaml(_cfg(out)))
    (out / "metrics.jsonl").write_text("\n")
    assert never_trained(out)
    (out / "config.yaml").write_text(config_to_yaml(_cfg(tmp_path / "elsewhere")))
    assert not never_trained(out)  # a copied run's config, or the user's own file
    (out / "config.yaml").write_text("model: {name: ccnet3d_resnet18}\n")
    assert not never_trained(out)
    (out / "config.yaml").unlink()
    (out / "metrics.jsonl").write_text(_lines(*LOG[:1]))
    assert not never_trained(out)
    (out / "metrics.jsonl").unlink()
    (out / "best.pt").write_text("")
    assert not never_trained(out)


def test_prepare_output_dir_refusals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    assert prepare_output_dir(_cfg(out), resume=False) == out and not out.exists()
    with pytest.raises(CheckpointError, match="no checkpoint .* to resume from"):
        prepare_output_dir(_cfg(out), resume=True)
    out.mkdir()
    (out / "config.yaml").write_text(config_to_yaml(_cfg(out)))
    with caplog.at_level(logging.INFO, logger="vidccnet.engine.train"):
        prepare_output_dir(_cfg(out), resume=False)
    assert "of a run that never trained a step: replaced" in caplog.text
    (out / "metrics.jsonl").write_text(_lines(*LOG[:1]))
    with pytest.raises(TrainingError, match="already holds metrics.jsonl, config.yaml"):
        prepare_output_dir(_cfg(out), resume=False)
    (out / "last.pt").write_text("")
    with pytest.raises(TrainingError, match="already holds last.pt"):
        prepare_output_dir(_cfg(out), resume=False)
    assert prepare_output_dir(_cfg(out, "runtime.overwrite=true"), resume=False) == out
    with pytest.raises(TrainingError, match="init_from.*copy it"):
        prepare_output_dir(_cfg(out, "runtime.overwrite=true",
                                f"model.init_from={out / 'last.pt'}"), resume=False)
    with pytest.raises(TrainingError, match="is a file, not a folder"):
        prepare_output_dir(_cfg(out / "last.pt" / "sub"), resume=False)


def test_best_so_far_is_the_higher_of_last_and_best(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    best = tmp_path / "best.pt"
    assert best_so_far(0.3, best) == 0.3 and best_so_far(None, best) is None
    save_checkpoint(best, {"model": {"w": torch.zeros(2)}, "config": {},
                           "version": CHECKPOINT_VERSION, "metrics": {"mIoU": 0.5}})
    assert best_so_far(0.3, best) == 0.5  # best.pt newer than last.pt
    assert best_so_far(0.7, best) == 0.7
    assert best_so_far(None, best) == 0.5
    best.write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING, logger="vidccnet.engine.train"):
        assert best_so_far(0.3, best) == 0.3
    assert "the next validation replaces it" in caplog.text


def test_the_moved_names_stay_importable_from_the_trainer() -> None:
    import vidccnet.engine.train as train_mod

    assert train_mod.never_trained is never_trained
    assert train_mod.EARLIER_LOGS == EARLIER_LOGS == ".earlier_logs"
    assert rundir.logger is logging.getLogger("vidccnet.engine.train")


def test_prepare_output_dir_refuses_a_folder_it_cannot_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before the run builds anything, in one line (not a PermissionError at the first
    checkpoint). The tests run as root, where permission bits do not bite: os.access is replaced."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    for out in (locked, locked / "new" / "run"):
        with pytest.raises(TrainingError, match=f"no permission to write in '{locked}'"):
            prepare_output_dir(_cfg(out), resume=False)
    with pytest.raises(CheckpointError, match="no checkpoint .* to resume from"):
        prepare_output_dir(_cfg(locked / "typo"), resume=True)  # what is wrong is the name
    assert prepare_output_dir(_cfg(tmp_path / "run"), resume=False) == tmp_path / "run"
