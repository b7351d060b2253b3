"""Evaluate a trained checkpoint: mIoU, fwIoU, per-class IoU, mVC_8/16, flicker; eval.json + plots.

    python scripts/evaluate.py --checkpoint runs/camvid_r50/best.pt --config \
        configs/camvid_ccnet3d_r50.yaml --split test data.root=/data/camvid
    python scripts/evaluate.py --checkpoint runs/tiny/best.pt      # data settings from the ckpt
    python scripts/evaluate.py --checkpoint runs/tiny/best.pt --attention-off   # ablation

The model is rebuilt from the checkpoint (its stored config); ``--config`` and the
``section.key=value`` overrides only set the data / evaluation settings (dataset root, split,
clip length, test-time scales, ...); ``model.*`` overrides are refused. ``--attention-off``
evaluates the test-time ablation of the attention: every criss-cross attention block's gamma
set to 0, so each block passes its input through (compare with a plain run to see how much the
trained model uses its attention).
Results go to ``--output`` (default: next to the checkpoint, ``eval_<split>/`` for a best.pt and
``eval_<stem>_<split>/`` for any other checkpoint, e.g. ``eval_last_val/`` for last.pt, with
``_attention_off`` appended for ``--attention-off``); plots an earlier evaluation left there are
replaced or removed, and a folder holding plots no evaluation wrote is refused (or
``--no-plots``). Expected errors print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from pathlib import Path

from vidccnet.cli import fail, interruptible, setup_logging, sigterm_unwinds, unwritable

PROG = "evaluate.py"
log = logging.getLogger("evaluate")

AMP_HELP = (
    "Mixed precision: runtime.amp=bf16|fp16 autocasts on CUDA only; on CPU it is ignored with a "
    "warning and evaluation runs in float32 (CPU autocast is much slower than float32)."
)


def _plots(out: Path) -> list[str]:
    """Names of the files in ``out`` an evaluation's plots could have."""
    return sorted(p.name for p in [out / "class_iou.png", *out.glob("strip_*.png")]
                  if p.is_file())


def _earlier_plots(out: Path) -> set[str]:
    """The plots in ``out`` that an earlier evaluation wrote: those its eval.json lists under
    ``files`` (every plot for an eval.json without that list; none without a readable one)."""
    try:
        files = json.loads((out / "eval.json").read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(files, dict):
        return set(_plots(out))
    return {Path(str(p)).name for p in files.values()}


def _remove_stale_plots(out: Path, earlier: set[str], written: dict) -> None:
    """Delete the ``earlier`` evaluation's plots in ``out`` that this one did not rewrite
    (other plot names, or every plot after ``--no-plots``); other files are the user's."""
    keep = {Path(p).name for p in written.values()}
    for name in _plots(out):
        if name in earlier and name not in keep:
            (out / name).unlink()


def default_output(checkpoint: Path, split: str, attention_off: bool = False) -> Path:
    """The report folder next to ``checkpoint``: ``eval_<split>`` for best.pt,
    ``eval_<stem>_<split>`` for any other checkpoint (last.pt, a copy: their reports must not
    replace best.pt's), ``_attention_off`` appended for the ablation."""
    stem = "" if checkpoint.name == "best.pt" else f"{checkpoint.stem}_"
    suffix = "_attention_off" if attention_off else ""
    return checkpoint.parent / f"eval_{stem}{split}{suffix}"


@contextlib.contextmanager
def _attention_off(model, recurrence: int):
    """``vidccnet.nn.attention_off``, refusing a model whose head applies no attention."""
    from vidccnet.nn import attention_off

    with attention_off(model) as n_blocks:
        if n_blocks == 0 or recurrence == 0:
            raise ValueError("--attention-off: this checkpoint's model has no criss-cross "
                             "attention block (recurrence 0 or no attention head)")
        yield n_blocks


@interruptible(PROG, "no report was written")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0], epilog=AMP_HELP)
    parser.add_argument("--checkpoint", required=True, help="a .pt written by scripts/train.py")
    parser.add_argument("--config", default=None,
                        help="YAML config for data / eval settings (default: the checkpoint's)")
    parser.add_argument("--split", default=None, help="split to evaluate (default: eval.split)")
    parser.add_argument("--output", default=None,
                        help="output folder (default: next to the checkpoint, eval_<split>/ for "
                        "best.pt, eval_<stem>_<split>/ for another checkpoint, e.g. "
                        "eval_last_val/)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default: config)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--attention-off", action="store_true",
                        help="test-time ablation: every attention gamma set to 0")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_intermixed_args(argv)  # overrides before or after the flags
    setup_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s")

    from vidccnet.engine.checkpoint import CheckpointError
    from vidccnet.engine.config import ConfigError
    from vidccnet.engine.train import TrainingError

    expected: tuple[type[BaseException], ...] = (
        ConfigError, CheckpointError, TrainingError, FileNotFoundError, NotADirectoryError,
        PermissionError, ValueError, KeyError, RuntimeError,
    )
    with sigterm_unwinds():
        return _evaluate(args, expected)


def _evaluate(args: argparse.Namespace, expected: tuple[type[BaseException], ...]) -> int:
    from vidccnet.engine.build import build_val_videos, check_root, evaluator_kwargs
    from vidccnet.engine.checkpoint import (
        CheckpointError,
        build_model_from_checkpoint,
        load_checkpoint,
    )
    from vidccnet.engine.config import apply_overrides, config_to_dict, load_config
    from vidccnet.engine.distributed import resolve_device
    from vidccnet.engine.report import evaluate_and_report
    from vidccnet.engine.train import check_labelled

    try:
        model_keys = [o.split("=", 1)[0] for o in args.overrides if o.startswith("model.")]
        if model_keys:
            raise ValueError(
                f"{', '.join(model_keys)}: the model is the checkpoint's; model.* overrides do "
                "not apply to evaluation (train a model with them instead)"
            )
        if args.device:  # a wrong name is refused before the checkpoint is read
            resolve_device(args.device)
        if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
            raise ValueError(f"--output '{args.output}' is not a folder; choose another path")
        if args.output and (msg := unwritable(args.output, "--output", folder=True)):
            raise ValueError(msg)
        ckpt_path = Path(args.checkpoint)
        ckpt = load_checkpoint(ckpt_path)
        if args.config is not None:
            cfg = load_config(args.config, args.overrides)
        else:
            from vidccnet.engine.config import config_from_dict

            cfg = apply_overrides(config_from_dict(ckpt["config"]), args.overrides)
        cap = cfg.eval.max_videos  # the config's, for periodic validation: not applied here
        if cap is not None and not any(o.split("=", 1)[0].strip() == "eval.max_videos"
                                       for o in args.overrides):
            cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_videos=None))
        else:
            cap = None
        device = resolve_device(args.device or cfg.runtime.device)
        if cfg.runtime.num_threads:  # as train.py does (a shared machine)
            import torch

            torch.set_num_threads(cfg.runtime.num_threads)
        model, train_cfg = build_model_from_checkpoint(ckpt, device)
        names = list(train_cfg.data.class_names or cfg.data.class_names or [])
        palette = train_cfg.data.palette or cfg.data.palette
        data_names = cfg.data.class_names
        if not names or cfg.data.name == "folders":
            from vidccnet.data import dataset_info

            check_root(cfg)  # a moved dataset: else "ROOT/classes.txt not found"
            info = dataset_info(cfg.data.name, cfg.data.root)
            if not names:
                names, palette = list(info["class_names"]), info["palette"]
            if cfg.data.name == "folders":  # the classes are the data's own: compare by name
                data_names = info["class_names"]
                if list(data_names) != names:
                    raise CheckpointError(
                        f"the checkpoint's classes {names} are not those of "
                        f"'{Path(cfg.data.root) / 'classes.txt'}' {list(data_names)} (names and "
                        "order must match); evaluate on data labelled with the checkpoint's "
                        "classes"
                    )
        if data_names and len(data_names) != len(names):
            raise CheckpointError(
                f"the checkpoint predicts {len(names)} classes but the config's dataset "
                f"'{cfg.data.name}' has {len(data_names)}; evaluate on the dataset it was "
                "trained for"
            )
        split = args.split or cfg.eval.split
        out = Path(args.output) if args.output else default_output(ckpt_path, split,
                                                                   args.attention_off)
        if not args.output and (msg := unwritable(out, "the default --output", folder=True)):
            raise ValueError(f"{msg} and pass it as --output DIR")
        ablation: contextlib.AbstractContextManager = contextlib.nullcontext()
        if args.attention_off:
            ablation = _attention_off(model, train_cfg.model.recurrence)
        earlier = _earlier_plots(out)
        theirs = [] if args.no_plots else [n for n in _plots(out) if n not in earlier]
        if theirs:
            raise ValueError(
                f"--output '{out}' holds plots no evaluation wrote there (its eval.json does "
                f"not list them): {', '.join(theirs)}; choose another folder, or pass --no-plots")
        videos = build_val_videos(dataclasses.replace(
            cfg, eval=dataclasses.replace(cfg.eval, max_videos=None)), split)
        if cfg.eval.max_videos is not None and len(videos) > cfg.eval.max_videos:
            log.warning("evaluating %d of the %d '%s' videos (eval.max_videos=%d): these are "
                        "not the split's figures", cfg.eval.max_videos, len(videos), split,
                        cfg.eval.max_videos)
            videos = videos[: cfg.eval.max_videos]
        if cap is not None and len(videos) > cap:  # said only where it changes the figures
            log.info("evaluating every video: the config's eval.max_videos=%d (periodic "
                     "validation during training) is not applied here; pass "
                     "eval.max_videos=%d to evaluate the first %d only", cap, cap, cap)
        check_labelled(videos, split, cfg.data.name)
        with ablation:
            report = evaluate_and_report(
                model, videos, out,
                num_classes=len(names), class_names=names, palette=palette,
                config={"eval_config": config_to_dict(dataclasses.replace(cfg)),
                        "checkpoint": str(ckpt_path),
                        "checkpoint_iteration": ckpt.get("iteration"),
                        "split": split, "attention_off": args.attention_off},
                plots=not args.no_plots, stream=sys.stdout,
                **evaluator_kwargs(cfg, device),
            )
    except expected as exc:
        if args.debug:
            raise
        return fail(PROG, exc)
    _remove_stale_plots(out, earlier, report.get("files") or {})
    print(json.dumps({"eval_json": str(out / "eval.json"),
                      "mIoU": report["metrics"].get("mIoU")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
