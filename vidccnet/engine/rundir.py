"""The run folder (``runtime.output_dir``): what a training run finds, writes and replaces there.

- :func:`prepare_output_dir`, before anything is built: a resume needs the folder's ``last.pt``;
  a fresh start refuses an earlier run's files unless ``runtime.overwrite=true`` (or they are
  those of a run that never trained a step, :func:`never_trained`);
- :func:`open_run_dir`, rank 0, once the set-up has passed its checks: creates the folder,
  removes what a killed save left, sets an earlier run's logs aside (``runtime.overwrite``),
  writes ``config.yaml``, drops the ``metrics.jsonl`` lines a resume trains again and opens
  TensorBoard;
- :func:`replace_earlier_run`: the run's first checkpoint takes the place of the earlier run;
  :func:`put_back_earlier_logs`: the earlier run's logs go back when the run replacing it
  failed before that;
- :func:`best_so_far`: the best validation mIoU a resumed run has to beat.

Logs on the trainer's logger, ``vidccnet.engine.train``: the lines are the trainer's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from vidccnet.cli import file_above, unwritable
from vidccnet.writer import write_text_atomically

from .checkpoint import CheckpointError, load_checkpoint, remove_killed_saves
from .config import Config
from .report import to_jsonable

__all__ = [
    "EARLIER_LOGS",
    "JsonlWriter",
    "best_so_far",
    "earlier_results",
    "never_trained",
    "open_run_dir",
    "open_tensorboard",
    "prepare_output_dir",
    "put_back_earlier_logs",
    "replace_earlier_run",
    "set_earlier_logs_aside",
    "truncate_jsonl",
]

logger = logging.getLogger("vidccnet.engine.train")

# where a fresh start with runtime.overwrite keeps the earlier run's logs (metrics.jsonl, tb/)
# until it saves its first checkpoint; a run that fails or is killed before that gets them back
EARLIER_LOGS = ".earlier_logs"
_LOGS = ("metrics.jsonl", "tb")


def prepare_output_dir(cfg: Config, resume: bool) -> Path:
    """``runtime.output_dir``, checked before the run builds anything (nothing is written).

    Raises:
        TrainingError: not a folder, not writable, or it holds an earlier run that this one
            would replace without ``runtime.overwrite`` (or a ``model.init_from`` that it
            replaces).
        CheckpointError: ``resume`` without a ``last.pt``.
    """
    from .train import TrainingError  # train.py imports this module

    out = Path(cfg.runtime.output_dir)
    last = out / "last.pt"
    if out.exists() and not out.is_dir():
        raise TrainingError(f"runtime.output_dir '{out}' is not a folder; choose another path")
    blocking = file_above(out)
    if blocking is not None:
        raise TrainingError(f"runtime.output_dir '{out}': '{blocking}' is a file, not a folder; "
                            "choose another path")
    if resume and not last.is_file():
        raise CheckpointError(
            f"--resume: no checkpoint '{last}' to resume from; start without --resume or set "
            "runtime.output_dir to the folder of the run to continue"
        )
    denied = unwritable(out, "runtime.output_dir", folder=True)
    if denied is not None:
        raise TrainingError(denied)
    if resume:
        return out
    if last.exists() and not cfg.runtime.overwrite:
        raise TrainingError(
            f"output folder '{out}' already holds last.pt from an earlier run; pass --resume to "
            "continue it, runtime.overwrite=true to start afresh there, or choose another "
            "runtime.output_dir"
        )
    elif cfg.runtime.overwrite and cfg.model.init_from and \
            Path(cfg.model.init_from).resolve() in {p.resolve() for p in earlier_results(out)}:
        raise TrainingError(
            f"model.init_from '{cfg.model.init_from}' is a checkpoint of the folder that "
            "runtime.overwrite=true replaces; copy it out of that folder first"
        )
    elif not cfg.runtime.overwrite:
        earlier = [n for n in ("best.pt", "metrics.jsonl", "config.yaml") if (out / n).exists()]
        if earlier and never_trained(out):
            logger.info("%s holds %s of a run that never trained a step: replaced", out,
                        ", ".join(earlier))
        elif earlier:
            raise TrainingError(
                f"output folder '{out}' already holds {', '.join(earlier)}, which a new run "
                "replaces (no last.pt to resume from); set runtime.overwrite=true to replace "
                "them, or choose another runtime.output_dir"
            )
    return out


def never_trained(out: Path) -> bool:
    """Whether ``out`` holds only what a run that stopped before its first step leaves: no
    checkpoint, no line in ``metrics.jsonl``, and a ``config.yaml`` (if any) that a run
    writing into ``out`` wrote (an empty ``tb/`` may be there too)."""
    if any((out / n).exists() for n in ("last.pt", "best.pt")):
        return False
    if (out / "config.yaml").exists():
        import yaml

        try:
            written = yaml.safe_load((out / "config.yaml").read_text())["runtime"]["output_dir"]
            if Path(written).resolve() != out.resolve():
                return False
        except Exception:  # noqa: BLE001 - not a run's config.yaml: the user's file
            return False
    log = out / "metrics.jsonl"
    try:
        lines = log.read_text().splitlines() if log.exists() else []
    except (OSError, UnicodeDecodeError):
        return False
    return not any(line.strip() for line in lines)


def earlier_results(out: Path) -> list[Path]:
    """An earlier run's checkpoints and evaluation folders (``eval_*/`` holding an eval.json)
    in ``out``, which a fresh start with ``runtime.overwrite`` replaces."""
    found = [out / n for n in ("last.pt", "best.pt") if (out / n).is_file()]
    if out.is_dir():
        found += sorted(p for p in out.glob("eval_*") if (p / "eval.json").is_file())
    return found


def set_earlier_logs_aside(out: Path) -> Path | None:
    """Move the earlier run's logs into ``out/EARLIER_LOGS``; that folder, or None if none."""
    earlier = [n for n in _LOGS if (out / n).exists()]
    if not earlier:
        return None
    (out / EARLIER_LOGS).mkdir()
    for n in earlier:
        (out / n).rename(out / EARLIER_LOGS / n)
    return out / EARLIER_LOGS


def put_back_earlier_logs(out: Path) -> None:
    """The logs an overwrite run set aside go back in place of its own (it saved nothing)."""
    aside = out / EARLIER_LOGS
    if not aside.is_dir():
        return
    for n in _LOGS:
        if (out / n).is_dir():
            shutil.rmtree(out / n)
        else:
            (out / n).unlink(missing_ok=True)
        if (aside / n).exists():
            (aside / n).rename(out / n)
    shutil.rmtree(aside)
    logger.info("put back the earlier run's logs in %s (the run that replaced them saved "
                "no checkpoint)", out)


def replace_earlier_run(out: Path, staged: Path, name: str, replaced: list[Path],
                        config_text: str) -> None:
    """Put the run's first checkpoint, written to ``staged``, in place as ``out/name``: the
    earlier run goes (its config first: ``replaced``, emptied here), then this run's
    ``config_text`` is written and the checkpoint moved in. Wherever this is cut, the folder
    holds one run's files. With nothing to replace (a resume's first checkpoint) the config is
    replaced atomically, so a failed write keeps the run's own."""
    if replaced:
        (out / "config.yaml").unlink(missing_ok=True)
    for path in replaced:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    write_text_atomically(out / "config.yaml", config_text)
    replaced.clear()
    os.replace(staged, out / name)


def best_so_far(recorded: float | None, best_path: Path) -> float | None:
    """The best validation mIoU of a resumed run: the one ``last.pt`` recorded, or ``best.pt``'s
    when that is higher (it is newer when the run stopped between a validation and the next
    checkpoint), so that a later, worse validation does not replace it."""
    if not best_path.is_file():
        return recorded
    try:
        try:
            best = load_checkpoint(best_path, map_location="cpu", mmap=True)  # its metrics only
        except CheckpointError:  # a file of torch's legacy format cannot be mapped
            best = load_checkpoint(best_path, map_location="cpu")
        miou = best.get("metrics", {}).get("mIoU")
    except CheckpointError as exc:
        logger.warning("cannot read %s (%s); the next validation replaces it", best_path, exc)
        return recorded
    if miou is None or not math.isfinite(float(miou)):
        return recorded
    return float(miou) if recorded is None else max(float(recorded), float(miou))


class JsonlWriter:
    """Appends one JSON object per line (rank 0 only; a no-op elsewhere)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        clean = to_jsonable(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


def truncate_jsonl(path: Path, iteration: int, rerun_val: bool = False) -> list[dict]:
    """Drop lines logged after ``iteration`` (written after the checkpoint a resume starts from),
    and with ``rerun_val`` the validation record of ``iteration``, which the resume runs again;
    returns the records kept."""
    if not path.exists():
        return []
    keep, records = [], []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            at = int(record.get("iteration", 0))
            rerun = rerun_val and record.get("type") == "val"
            if at < iteration or (at == iteration and not rerun):
                keep.append(line)
                records.append(record)
        except (ValueError, AttributeError, TypeError):
            continue
    write_text_atomically(path, "".join(f"{line}\n" for line in keep))
    return records


_NOT_LOSSES = ("type", "iteration", "epoch", "lr", "clips_per_s", "skipped", "gamma")


def log_train_scalars(writer: Any, record: dict) -> None:
    """A ``metrics.jsonl`` training record as TensorBoard scalars at its iteration."""
    step = record["iteration"]
    for k, v in record.items():
        if k not in _NOT_LOSSES:
            writer.add_scalar(f"train/{k}", v, step)
    for k, v in (record.get("gamma") or {}).items():
        writer.add_scalar(f"train/gamma/{k.removesuffix('.gamma')}", v, step)
    writer.add_scalar("train/lr", record["lr"], step)
    writer.add_scalar("train/clips_per_s", record["clips_per_s"], step)


def open_tensorboard(path: Path, purge_step: int | None = None) -> Any:
    """A SummaryWriter on ``path``; with ``purge_step``, readers drop the events logged at that
    step and after it by an earlier run (a resume from an earlier checkpoint)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard missing or broken: just skip it
        logger.info("tensorboard is not importable; scalars go to metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(path), purge_step=purge_step)


def open_run_dir(out: Path, config_text: str, *, resume: bool, iteration: int,
                 rerun_val: bool, tensorboard: bool) -> tuple[JsonlWriter, Any, list[Path]]:
    """Rank 0's set-up of the run folder ``out`` once the run has passed its checks; returns
    the ``metrics.jsonl`` writer, the SummaryWriter (None without ``tensorboard`` or when it is
    not importable) and the earlier run's files that this run's first checkpoint replaces
    (:func:`replace_earlier_run`).

    A fresh start (not ``resume``) sets an earlier run's logs aside; its checkpoints and
    evaluations (``runtime.overwrite``) stay, with its config.yaml, until this run comes to
    save its first checkpoint, so a run that fails before that leaves them as they were;
    ``config_text`` is written now by a fresh start with no earlier run to replace (a resume
    writes it with its first checkpoint, so that config.yaml always describes ``last.pt``:
    :func:`replace_earlier_run` with nothing to replace). A resume from ``iteration`` drops the
    ``metrics.jsonl`` lines logged after it (with ``rerun_val``, its validation too) and has
    TensorBoard purge the events from ``iteration + 1`` (with ``rerun_val``, from
    ``iteration``, and that iteration's kept training record is logged again)."""
    replaced = [] if resume else earlier_results(out)
    out.mkdir(parents=True, exist_ok=True)
    if stale := remove_killed_saves(out):
        logger.info("removed %s, left by a killed save", ", ".join(p.name for p in stale))
    # a fresh start replaces an earlier run there (runtime.overwrite)
    aside = None if resume else set_earlier_logs_aside(out)
    if not replaced and not resume:
        write_text_atomically(out / "config.yaml", config_text)
    if aside is not None:  # removed with the earlier checkpoints, at the first save
        replaced.append(aside)
    kept = truncate_jsonl(out / "metrics.jsonl", iteration, rerun_val=rerun_val) if resume else []
    writer = None
    if tensorboard:
        # a validation run again is purged too, and the training scalars logged with it put back
        purge = (iteration if rerun_val else iteration + 1) if resume else None
        writer = open_tensorboard(out / "tb", purge_step=purge)
        for record in kept if writer is not None and rerun_val else ():
            if record.get("type") == "train" and record.get("iteration") == iteration:
                log_train_scalars(writer, record)
    return JsonlWriter(out / "metrics.jsonl"), writer, replaced
