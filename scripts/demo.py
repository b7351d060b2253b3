"""The first thing to run: train, evaluate and apply a small 3D CCNet on a synthetic video world.

    python scripts/demo.py                      # 5-9 min on 2 CPU cores, no GPU, no download
    python scripts/demo.py --iterations 1500    # longer training, better masks
    python scripts/demo.py --out runs/mydemo --device cuda

What it does, with the library's real code paths (the same ones CamVid / VSPW training uses):

1. builds the training config below (``ccnet3d_resnet18``: temporal shift + 3D criss-cross
   attention, R = 2, on clips of 4 frames of the synthetic video world, 48x64 px);
2. trains it with ``vidccnet.engine.train.train`` into ``OUT/`` (``config.yaml``,
   ``metrics.jsonl``, ``last.pt``, ``best.pt``);
3. evaluates ``best.pt`` on the validation videos with the ``Evaluator``
   (``vidccnet.engine.report.evaluate_and_report``: mIoU, per-class IoU, mVC_8, flicker) into
   ``OUT/eval/``;
4. renders a held-out synthetic video to ``OUT/input/demo_video.mp4`` (ground-truth masks next
   to it) and segments it with ``scripts/segment_video.py`` (``VideoSegmenter``) into
   ``OUT/masks/`` (palette PNGs + ``summary.json``) and ``OUT/overlay.mp4``;
5. writes ``OUT/overlay_frame.png`` (frame | prediction overlay | ground truth) and prints
   where everything is.

Re-running overwrites an earlier demo in ``OUT`` (it trains afresh; nothing else outside
``OUT`` is touched); a folder holding files the demo did not write (a training run) is refused.
Afterwards ``python scripts/segment_video.py any.mp4 --out masks/`` uses ``runs/demo/best.pt``
by default. Expected errors print one line on stderr and exit with code 2; Ctrl-C and SIGTERM
one line too, with exit code 130 / 143.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vidccnet.cli import fail, file_above, interruptible, setup_logging, sigterm_unwinds

REPO = Path(__file__).resolve().parent.parent
PROG = "demo.py"
log = logging.getLogger("demo")

# The embedded default: a complete training config (sections of vidccnet.engine.config).
DEMO_CONFIG: dict[str, Any] = {
    # The temporal shift in layers 3-4 only, the attention with the identity init, q / k of
    # 16 channels (head 128) at 5x the learning rate, 256 training videos and crate / beacon
    # at class weight 2: the recipe in which the trained attention carries the beacon cue
    # (docs/training.md, docs/results.md)
    "model": {"name": "ccnet3d_resnet18", "pretrained_backbone": None, "recurrence": 2,
              "attention_backend": "auto",
              "kwargs": {"head_channels": 128, "attention_init": "identity",
                         "shift_stages": [3, 4]}},
    "data": {"name": "synthetic", "clip_len": 4, "anchor": "causal", "crop_size": [48, 64],
             "scale_range": [0.8, 1.25], "augment": True, "batch_size": 4, "num_workers": 0,
             "kwargs": {"num_videos": 256, "num_frames": 16, "height": 48, "width": 64,
                        "seed": 0}},
    "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4,
              "attention_lr_mult": 5.0},
    "schedule": {"iterations": 600, "warmup_iters": 10, "poly_power": 0.9},
    # background down-weighted: from scratch the net otherwise predicts only background for
    # the first ~100 steps; crate and beacon (told apart only by the beacon's flash) at 2: the
    # cue's gradient is otherwise too weak for every run to learn it; no category-consistent
    # loss: in schedules this short it costs mIoU (docs/training.md, docs/results.md)
    "loss": {"aux_weight": 0.4, "cc_weight": 0.0,
             "class_weights": [0.3, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0]},
    "eval": {"split": "val", "interval": 0, "at_end": True, "anchor": "causal",
             "vc_windows": [8], "kwargs": {"num_videos": 6}},
    "runtime": {"seed": 0, "device": "auto", "log_interval": 10, "ckpt_interval": 100000,
                "tensorboard": False, "overwrite": True},
}

# --quick: a smoke test of every step (seconds, meaningless model)
QUICK_OVERRIDES = [
    "model.kwargs.head_channels=16",
    "data.crop_size=[32, 48]",
    "data.batch_size=2",
    "data.kwargs={num_videos: 2, num_frames: 8, height: 32, width: 48, seed: 0}",
    "eval.kwargs={num_videos: 1}",
    "eval.vc_windows=[2]",
    "schedule.warmup_iters=0",
]
HELD_OUT_INDEX = 5_000_000  # a video index no split uses (train 0.., val 1e6.., test 2e6..)
DEMO_MARK = ".vidccnet_demo"  # marks OUT as the demo's: only such a folder is ever replaced


class UserError(Exception):
    """An expected problem: reported as one line on stderr, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo; an "
                   "earlier demo there is replaced)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"training steps (default {DEMO_CONFIG['schedule']['iterations']})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--video-frames", type=int, default=48,
                   help="length of the held-out video that is segmented (default 48)")
    p.add_argument("--quick", action="store_true",
                   help="tiny frames and data: checks every step in seconds (for tests)")
    p.add_argument("--debug", action="store_true", help="tracebacks for expected errors")
    args = p.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        raise UserError(f"--iterations must be >= 1, got {args.iterations}")
    if args.video_frames < 1:
        raise UserError(f"--video-frames must be >= 1, got {args.video_frames}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    return args


def demo_config(args: argparse.Namespace) -> Any:
    """The demo's training Config (embedded default + --quick / --iterations / --device)."""
    from vidccnet.engine.config import apply_overrides, config_from_dict

    cfg = config_from_dict(DEMO_CONFIG)
    overrides = list(QUICK_OVERRIDES) if args.quick else []
    if args.quick and args.iterations is None:
        overrides.append("schedule.iterations=3")
    if args.iterations is not None:
        overrides.append(f"schedule.iterations={args.iterations}")
    overrides += [f"runtime.device={args.device}", f"runtime.output_dir={args.out}",
                  f"runtime.progress={'false' if args.quick else 'true'}"]
    if args.threads:
        overrides.append(f"runtime.num_threads={args.threads}")
    return apply_overrides(cfg, overrides)


def _load_segment_video() -> Any:
    """scripts/segment_video.py as a module (its main() is the command-line tool)."""
    import importlib.util

    path = REPO / "scripts" / "segment_video.py"
    spec = importlib.util.spec_from_file_location("vidccnet_segment_video_script", path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {path}; is the repository complete?")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_out(out: Path) -> None:
    """Remove the files an earlier demo wrote in ``out`` (the demo trains afresh), and mark
    ``out`` as the demo's. Its checkpoints, config and logs stay until the new training writes
    its first checkpoint (``runtime.overwrite``), so an interrupted rerun keeps the earlier run.
    A folder whose files the demo did not write is refused."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' exists and is not a folder; choose another path")
    if (blocking := file_above(out)) is not None:
        raise UserError(f"--out '{out}': '{blocking}' is a file, not a folder; choose another "
                        "path")
    ours = ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "tb", "eval", "input", "masks",
            "overlay.mp4", "overlay_frame.png", "demo_summary.json")
    found = [out / n for n in ours if (out / n).exists()]
    demo_folder = (out / DEMO_MARK).exists() or (out / "demo_summary.json").exists()
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not demo_folder:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise UserError(
            f"--out '{out}' holds files not written by the demo ({shown}); choose another "
            "--out (an empty or new folder) or remove them"
        )
    if found:
        log.info("replacing the earlier demo in %s (training starts afresh)", out)
    for p in found:
        if p.name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "tb"):
            continue  # the trainer replaces them with its first checkpoint, or puts them back
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("a folder written by scripts/demo.py\n")


def overlay_strip(frame: Any, mask: Any, gt: Any, palette: Any, scale: int = 4) -> Any:
    """(H, W*3, 3) uint8: frame | prediction overlay | ground truth, nearest-upscaled."""
    import numpy as np

    from vidccnet.visualize import colorize, overlay

    row = np.concatenate([frame, overlay(frame, mask, palette, 0.55), colorize(gt, palette)], 1)
    return row.repeat(scale, 0).repeat(scale, 1)


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from vidccnet.data.synthetic import SyntheticVideoWorld
    from vidccnet.engine.build import build_val_videos, evaluator_kwargs
    from vidccnet.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
    from vidccnet.engine.distributed import resolve_device
    from vidccnet.engine.report import evaluate_and_report, write_json
    from vidccnet.engine.train import train

    t_start = time.perf_counter()
    out = Path(args.out)
    cfg = demo_config(args)
    device = resolve_device(args.device)  # before anything in OUT is replaced
    prepare_out(out)
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1-2. train
    d = cfg.data
    log.info("step 1/4: training %s (R=%d, T=%d, %dx%d px, %d iterations, batch %d) into %s",
             cfg.model.name, cfg.model.recurrence, d.clip_len, d.kwargs["height"],
             d.kwargs["width"], cfg.schedule.iterations, d.batch_size, out)
    t0 = time.perf_counter()
    summary = train(cfg)
    train_s = time.perf_counter() - t0
    best = out / "best.pt"
    if not best.is_file():  # validation found no finite mIoU: keep the last weights as best
        shutil.copyfile(out / "last.pt", best)

    # 3. evaluate best.pt with the real evaluator
    log.info("step 2/4: evaluating %s on the validation videos", best)
    t0 = time.perf_counter()
    ckpt = load_checkpoint(best)
    model, cfg_best = build_model_from_checkpoint(ckpt, device)
    videos = build_val_videos(cfg)
    ev_kw = evaluator_kwargs(cfg_best, device)
    report = evaluate_and_report(
        model, videos, out / "eval", class_names=cfg_best.data.class_names,
        palette=cfg_best.data.palette, config={"checkpoint": str(best)},
        plots=not args.quick, **ev_kw)
    metrics = report["metrics"]
    # the attention's share: the same model with every gamma set to 0 (attention switched off)
    from vidccnet.engine.evaluate import Evaluator
    from vidccnet.nn import attention_off

    with attention_off(model) as n_blocks:
        off = Evaluator(num_classes=len(cfg_best.data.class_names), **ev_kw).run(model, videos)
    attention_off_miou = off["mIoU"] if n_blocks and cfg_best.model.recurrence > 0 else None
    eval_s = time.perf_counter() - t0

    # 4. a held-out video -> .mp4 -> scripts/segment_video.py
    log.info("step 3/4: rendering a held-out synthetic video and segmenting it")
    t0 = time.perf_counter()
    world = SyntheticVideoWorld(seed=d.kwargs.get("seed", 0), height=d.kwargs["height"],
                                width=d.kwargs["width"])
    frames_n = min(args.video_frames, 12) if args.quick else args.video_frames
    video = world.write_video(out / "input", HELD_OUT_INDEX, frames_n, fps=15.0,
                              name="demo_video")
    masks_dir, overlay_path = out / "masks", out / "overlay.mp4"
    seg = _load_segment_video()
    seg_argv = [str(video), "--out", str(masks_dir), "--checkpoint", str(best),
                "--overlay", str(overlay_path), "--device", args.device, "--overwrite",
                "--quiet"]
    rc = seg.main.__wrapped__(seg_argv)  # a Ctrl-C there is the demo's to report
    if rc != 0:
        raise UserError(f"scripts/segment_video.py failed (exit {rc}) on {video}")
    seg_summary = json.loads((masks_dir / "summary.json").read_text())
    seg_s = time.perf_counter() - t0

    # 5. one picture: frame | overlay | ground truth (a frame where a beacon may flash)
    _, labels = world.video(HELD_OUT_INDEX, frames_n)
    from vidccnet.data.video import open_video

    pick = min(frames_n - 1, 9)
    with open_video(video) as reader:
        frame = np.asarray(reader[pick])
    mask = np.asarray(Image.open(masks_dir / f"{pick:06d}.png"))
    gt_acc = float((mask == labels[pick]).mean())
    strip = overlay_strip(frame, mask, labels[pick], cfg_best.data.palette)
    Image.fromarray(strip).save(out / "overlay_frame.png")
    accs = [float((np.asarray(Image.open(masks_dir / f"{i:06d}.png")) == labels[i]).mean())
            for i in range(seg_summary["frames"])]

    result = {
        "checkpoint": str(best), "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1), "segment_seconds": round(seg_s, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "iterations": summary["iteration"], "final_train_loss": summary["loss"],
        "clip_len": ev_kw["clip_len"],
        "val": {k: metrics.get(k) for k in ("mIoU", "fwIoU", "pixel_acc", "mVC_8", "flicker")},
        "val_class_iou": report.get("class_iou"),
        "val_mIoU_attention_off": attention_off_miou,
        "held_out_video": str(video), "held_out_pixel_acc": float(np.mean(accs)),
        "masks": str(masks_dir), "overlay": str(overlay_path),
        "overlay_frame": str(out / "overlay_frame.png"), "overlay_frame_pixel_acc": gt_acc,
        "eval_dir": str(out / "eval"),
        "plots": not args.quick,
    }
    write_json(out / "demo_summary.json", result, indent=1)
    return result


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def print_summary(res: dict, stream: Any = sys.stdout) -> None:
    v = res["val"]
    lines = [
        "",
        "vidccnet demo finished in {:.0f} s (train {:.0f} s, evaluate {:.0f} s, segment {:.0f} s)"
        .format(res["total_seconds"], res["train_seconds"], res["eval_seconds"],
                res["segment_seconds"]),
        "",
        f"  validation (synthetic val videos, causal {res['clip_len']}-frame clips):",
        f"    mIoU {_pct(v['mIoU'])}   pixel acc {_pct(v['pixel_acc'])}   "
        f"mVC_8 {_pct(v['mVC_8'])}   flicker {_pct(v['flicker'])}",
        f"    per-class IoU{' and plots' if res['plots'] else ''}: {res['eval_dir']}/ "
        f"(eval.json{', class_iou.png' if res['plots'] else ''})",
        f"    with the attention switched off (every gamma = 0): mIoU "
        f"{_pct(res['val_mIoU_attention_off'])}",
        "",
        f"  checkpoint      {res['checkpoint']}",
        f"  held-out video  {res['held_out_video']}  (ground truth: *_masks/)",
        f"  masks           {res['masks']}/  (palette PNGs + summary.json; pixel acc "
        f"{_pct(res['held_out_pixel_acc'])})",
        f"  overlay video   {res['overlay']}",
        f"  overlay frame   {res['overlay_frame']}  (frame | prediction | ground truth)",
        "",
        "  next: python scripts/segment_video.py YOUR_VIDEO.mp4 --out masks/ "
        "--overlay overlay.mp4",
        ("        (uses runs/demo/best.pt by default when run from the repository root)"
         if Path(res["checkpoint"]) == Path("runs/demo/best.pt") else
         f"        add --checkpoint {res['checkpoint']} (the default is runs/demo/best.pt)"),
    ]
    stream.write("\n".join(lines) + "\n")


@interruptible(PROG, "the output folder is incomplete: run the demo again")
def main(argv: list[str] | None = None) -> int:
    setup_logging(logging.INFO, "%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        args = parse_args(argv)
        with sigterm_unwinds():
            res = run(args)
    except Exception as exc:  # noqa: BLE001 - expected errors become one line
        from vidccnet.engine.checkpoint import CheckpointError
        from vidccnet.engine.config import ConfigError
        from vidccnet.engine.train import TrainingError

        expected = (UserError, ConfigError, TrainingError, CheckpointError, ValueError, OSError)
        if debug or not isinstance(exc, expected):
            raise
        return fail(PROG, exc)
    print_summary(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
