"""Train a video segmentation model.

    python scripts/train.py --config configs/synthetic_tiny.yaml
    python scripts/train.py --config configs/camvid_ccnet3d_r50.yaml data.root=/data/camvid \
        runtime.output_dir=runs/camvid_r50 optim.lr=0.005
    python scripts/train.py --config configs/synthetic_tiny.yaml --resume   # continue last.pt
    torchrun --nproc_per_node 4 scripts/train.py --config configs/camvid_ccnet3d_r50.yaml

Overrides are ``section.key=value`` (YAML values). Expected errors (missing config, unknown key,
missing checkpoint or dataset, non-finite loss) print one line on stderr and exit with code 2.
Ctrl-C and SIGTERM (preemption, ``timeout``, ``kill``) stop it with one line saying whether
``--resume`` can continue the run, and exit codes 130 / 143.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from vidccnet.cli import (
    EXIT_USAGE,
    exit_code,
    fail,
    interrupted,
    interruptible,
    setup_logging,
    sigterm_unwinds,
)

PROG = "train.py"
AMP_HELP = (
    "Mixed precision: runtime.amp=bf16|fp16 autocasts on CUDA only; on CPU it is ignored with a "
    "warning and training runs in float32 (CPU autocast is much slower than float32)."
)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from vidccnet.engine.checkpoint import CheckpointError
    from vidccnet.engine.config import ConfigError
    from vidccnet.engine.train import TrainingError

    errors: list[type[BaseException]] = [
        ConfigError, CheckpointError, TrainingError, FileNotFoundError, NotADirectoryError,
        PermissionError, ValueError, KeyError,
    ]
    return tuple(errors)


def check_run_folder(config: str, output_dir: str, overrides: list[str], resume: bool,
                     overwrite: bool) -> None:
    """Refuse a run folder's own ``config.yaml`` used in a way that acts on another folder or
    rewrites the file being read.

    Raises:
        TrainingError: ``--resume`` with a copied folder's config.yaml (it names the original
            folder) and no ``runtime.output_dir`` override; or a fresh start whose output
            folder's config.yaml is the ``--config`` file.
    """
    from pathlib import Path

    from vidccnet.engine.train import TrainingError

    path = Path(config).resolve()
    if path.name != "config.yaml":
        return
    folder, out = path.parent, Path(output_dir).resolve()
    named = any(o.split("=", 1)[0].strip() == "runtime.output_dir" for o in overrides)
    if resume and folder != out and (folder / "last.pt").is_file() and not named:
        raise TrainingError(
            f"--resume: {path} names runtime.output_dir '{output_dir}', not its own folder (a "
            f"copied run?); add runtime.output_dir={folder} to resume this folder's run"
        )
    if not resume and not overwrite and folder == out:
        raise TrainingError(
            f"--config {path} is the output folder's config.yaml, which a new run rewrites; "
            "keep your config elsewhere, pass --resume to continue that run, or "
            "runtime.overwrite=true to replace it"
        )


def _what_to_resume(out: Path | None, started: float, resume: bool) -> str:
    """After Ctrl-C or SIGTERM: whether there is a last.pt to continue from (written since
    ``started``, or the one a ``--resume`` run continues), or what the output folder holds."""
    last = out / "last.pt" if out is not None else None
    if last is None or not last.is_file():
        from vidccnet.engine.train import never_trained

        logs = out is not None and out.is_dir() and not never_trained(out)
        again = ("runtime.overwrite=true (it replaces this run's logs)" if logs
                 else "the same command")
        return f"nothing to resume (no checkpoint was written yet); start again with {again}"
    if resume or last.stat().st_mtime >= started:
        return f"continue with --resume ({last} is kept)"
    return (f"{out} still holds the earlier run this one was to replace (--resume would "
            "continue that one); start again with runtime.overwrite=true")


@interruptible(PROG, "nothing was written")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0], epilog=AMP_HELP)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--resume", action="store_true",
                        help="continue from runtime.output_dir/last.pt")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                        help="logging level of rank 0 (default INFO)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_intermixed_args(argv)  # overrides before or after the flags

    # under torchrun every process reads the same config and data: rank 0 says the warnings
    # and the config's mistakes, the others only their own errors
    rank = int(os.environ.get("RANK", "0"))
    level = args.log_level if rank == 0 else logging.ERROR
    setup_logging(level, "%(asctime)s %(levelname)s %(name)s: %(message)s")

    from vidccnet.engine.config import load_config
    from vidccnet.engine.report import to_jsonable
    from vidccnet.engine.train import train

    started, out, checked = time.time(), None, False
    try:
        # SIGTERM (preemption, `timeout`, `kill`; torchrun passes it to every rank) unwinds
        # like Ctrl-C: the same line on what there is to resume
        with sigterm_unwinds():
            cfg = load_config(args.config, args.overrides)
            out = Path(cfg.runtime.output_dir)
            check_run_folder(args.config, cfg.runtime.output_dir, args.overrides, args.resume,
                             cfg.runtime.overwrite)
            checked = True
            result = train(cfg, resume=args.resume, name=args.config)
    except _expected_errors() as exc:
        if args.debug:
            raise
        if rank > 0 and not checked:  # the same on every rank: rank 0 says it
            return EXIT_USAGE
        return fail(PROG if rank == 0 else f"{PROG} (rank {rank})", exc)
    except KeyboardInterrupt as exc:
        if rank > 0:  # every rank got it (Ctrl-C, torchrun's SIGTERM): rank 0 says it
            return exit_code(exc)
        return interrupted(PROG, exc, _what_to_resume(out, started, args.resume))
    if rank == 0:
        print(json.dumps(to_jsonable(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
