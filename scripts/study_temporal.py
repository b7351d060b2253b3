"""What does 3D criss-cross attention buy over 2D on video? A study on the synthetic world.

    python scripts/study_temporal.py --jobs 2 --threads 1     # CPU: 7 variants x 3 seeds
    python scripts/study_temporal.py --budget large           # GPU: bigger frames and nets
    python scripts/study_temporal.py --variants cca2d cca3d --seeds 0 1 2
    python scripts/study_temporal.py --report-only            # tables / plots from finished runs

Seven variants with the same parameters (one network, switches only), data, schedule and
optimiser (``configs/synthetic_study.yaml`` plus the budget's overrides), each trained from
scratch through the real trainer (``vidccnet.engine.train.train``) with validation every
``eval.interval`` steps (the learning curve, to show the plateau):

    per_frame     no temporal shift, no attention (R = 0): each frame on its own
    cca2d         no temporal shift, 2D criss-cross attention per frame (ccnet2d)
    cca3d         no temporal shift, 3D criss-cross attention (time line, row, column)
    shift_cca2d   temporal shift in the backbone + 2D attention
    ccnet3d       temporal shift + 3D attention (the full ccnet3d)
    shift34_cca2d    the shift in layers 3-4 only + 2D attention
    shift34_ccnet3d  the shift in layers 3-4 only + 3D attention (the demo's ccnet3d)

The shift in every layer is TSM's and the paper recipes'; the demo ships the shift in layers
3-4 only because with it in every layer its attention went unused. The last two variants ask
the same of this study's 12-frame cue.

The world (``vidccnet.data.synthetic``) holds two temporal cues:

- crate vs beacon: identical except that a beacon flashes on one frame in every
  ``blink_period`` (12 here) frames, and the causal clip is 12 frames long, so every clip
  shows one flash of every beacon, anywhere from 0 to 11 frames back. No single frame tells a
  crate from a beacon between flashes (the "ambiguous" pixels); deciding needs the whole clip.
  The temporal shift moves 1/8 of the channels one frame per residual block: in ResNet-18
  (8 blocks) it reaches at most 8 frames back, so flashes 9-11 frames back (a quarter of
  the beacon frames) and the certainty that a crate never flashes in the last 12 frames are
  beyond its reach. The 3D attention's time line reaches every frame of the clip at once.
- dropouts: on some frames an object is hidden or covered by noise while its label stays; the
  neighbouring frames (1 step back) show it: a short-range cue that the shift can carry.

Each trained model is evaluated on whole validation videos with the real evaluator's
sliding causal clips: mIoU (all frames), mIoU over the ambiguous pixels (crates, and beacons
on non-flash frames; classes present in the ground truth), mIoU on the dropout frames, mVC_8,
flicker, the trained gamma, the same figures with every gamma set to 0 at test time (the
attention ablated), and the eval-mode forward cost per frame.

Each finished run writes ``<runs>/<variant>_s<seed>/study_result.json``; an interrupted study
picks up where it stopped (``--force`` retrains); Ctrl-C or SIGTERM stops the runs in progress
with it (exit 130 / 143). At the end the script writes
``results/synthetic_study.json`` (every run, per-variant mean, min and max, and each 3D
variant minus its 2D twin with Welch's 95 % interval), the plots
``results/synthetic_study.png`` and ``results/synthetic_study_curves.png``, and prints a
Markdown table. Expected errors print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vidccnet.cli import fail, file_above, interrupted, setup_logging, sigterm_unwinds

REPO = Path(__file__).resolve().parent.parent
PROG = "study_temporal.py"
log = logging.getLogger("study_temporal")

# name -> (label, overrides on top of the study config and the budget)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "per_frame": ("per-frame, no attention", ["model.name=ccnet2d_resnet18",
                                              "model.recurrence=0"]),
    "cca2d": ("2D CCA (no shift)", ["model.name=ccnet2d_resnet18"]),
    "cca3d": ("3D CCA (no shift)", ["model.temporal_shift=false"]),
    "shift_cca2d": ("shift + 2D CCA", ["model.temporal_attention=false"]),
    "ccnet3d": ("shift + 3D CCA (ccnet3d)", []),
    "shift34_cca2d": ("shift in layers 3-4 + 2D CCA", ["model.temporal_attention=false",
                                                        "model.kwargs.shift_stages=[3, 4]"]),
    "shift34_ccnet3d": ("shift in layers 3-4 + 3D CCA (the demo's)",
                        ["model.kwargs.shift_stages=[3, 4]"]),
}
DEFAULT_VARIANTS = list(VARIANTS)

# budget -> (overrides on top of the study config, default seeds, cost-measurement sizes)
BUDGETS: dict[str, tuple[list[str], list[int], list[tuple[int, int]]]] = {
    "small": ([], [0, 1, 2], [(48, 64), (96, 128)]),
    "large": ([
        "data.kwargs={num_videos: 256, num_frames: 24, height: 64, width: 96, seed: 0, "
        "blink_period: 12}",
        "data.crop_size=[64, 96]",
        "data.batch_size=8",
        "model.kwargs={head_channels: 64, backbone_width: 64}",
        "schedule.iterations=4000",
        "eval.interval=500",
        "eval.kwargs={num_videos: 32}",
    ], [0, 1, 2], [(64, 96), (256, 384)]),
}


class UserError(Exception):
    """An expected problem (bad arguments, missing files): one line on stderr, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "synthetic_study.yaml"),
                   help="base training config of every run")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small",
                   help="small: CPU minutes per run; large: a GPU, bigger frames and "
                        "nets, 4000 steps (small: 3200)")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, metavar="NAME",
                   help=f"subset of {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="training seeds (default: 0 1 2)")
    p.add_argument("--iterations", type=int, default=None, help="override schedule.iterations")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: the config's)")
    p.add_argument("--eval-videos", type=int, default=16, metavar="N",
                   help="validation videos of each run's final figures (the learning curve "
                        "uses the config's eval.kwargs); default 16")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (processes)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: cores / jobs)")
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "study"),
                   help="where the runs' checkpoints and results go")
    p.add_argument("--results", default=None,
                   help="folder for synthetic_study.json and the plots (default: the "
                        "repository's results/, not with --iterations, --override or "
                        "--eval-videos)")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--report-only", action="store_true",
                   help="only aggregate the finished runs (no training)")
    p.add_argument("--no-cost", action="store_true", help="skip the inference-cost timing")
    p.add_argument("--override", nargs="*", default=[], metavar="section.key=value",
                   help="extra config overrides for every run")
    p.add_argument("--run-one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", help="tracebacks for expected errors")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    for name, values in (("--variants", args.variants), ("--seeds", args.seeds or [])):
        if twice := sorted({v for v in values if values.count(v) > 1}):
            raise UserError(f"{name} names {', '.join(map(str, twice))} twice: each run would "
                            "count more than once in the figures; give each once")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.eval_videos < 1:
        raise UserError(f"--eval-videos must be >= 1, got {args.eval_videos}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.iterations is not None and args.iterations < 1:
        raise UserError(f"--iterations must be >= 1, got {args.iterations}")
    if args.seeds is None:
        args.seeds = BUDGETS[args.budget][1]
    if args.results is None:  # subsets of variants / seeds are how the study is built up
        changed = args.iterations is not None or args.override or args.eval_videos != 16
        if changed and not args.run_one:
            raise UserError(
                "--iterations, --override or --eval-videos change the study's runs: pass "
                "--results DIR, so that the repository's results/ keeps the study's figures"
            )
        args.results = str(REPO / "results")
    results = Path(args.results)
    if (blocking := results if results.is_file() else file_above(results)) is not None:
        raise UserError(f"--results {args.results}: '{blocking}' is a file, not a folder; "
                        "choose another path")
    return args


def run_overrides(args: argparse.Namespace, variant: str, seed: int) -> list[str]:
    """All overrides of one run, in the order they apply."""
    out = list(BUDGETS[args.budget][0]) + list(VARIANTS[variant][1])
    if args.iterations is not None:
        out.append(f"schedule.iterations={args.iterations}")
    out += [f"runtime.seed={seed}", f"runtime.output_dir={run_dir(args, variant, seed)}",
            "runtime.overwrite=true", "runtime.tensorboard=false", "runtime.progress=false",
            "eval.at_end=false"]
    if args.device is not None:
        out.append(f"runtime.device={args.device}")
    return out + list(args.override)


def run_dir(args: argparse.Namespace, variant: str, seed: int) -> Path:
    return Path(args.runs_dir) / args.budget / f"{variant}_s{seed}"


# ------------------------------------------------------------------------- one run


def study_videos(cfg: Any, num_videos: int) -> tuple[Any, list]:
    """The validation dataset (for its rendered masks) and its first `num_videos` videos."""
    from vidccnet.data.synthetic import SyntheticVideoDataset

    kw = {**cfg.data.kwargs, **cfg.eval.kwargs, "num_videos": num_videos}
    ds = SyntheticVideoDataset(split=cfg.eval.split, clip_len=cfg.data.clip_len, **kw)
    return ds, ds.eval_videos()


def evaluate_study(model: Any, cfg: Any, device: Any, num_videos: int) -> dict:
    """The study's figures of a trained model on the validation videos (see module docstring)."""
    import numpy as np
    import torch

    from vidccnet.engine.build import evaluator_kwargs
    from vidccnet.engine.evaluate import Evaluator
    from vidccnet.metrics import ConfusionMatrix, FlickerMeter, VideoConsistency

    ds, videos = study_videos(cfg, num_videos)
    k = len(cfg.data.class_names)
    ev = Evaluator(num_classes=k, **{**evaluator_kwargs(cfg, device), "vc_windows": (8,)})
    cm_all, cm_cor = ConfusionMatrix(k), ConfusionMatrix(k)
    cm_amb = ConfusionMatrix(k, miou_over="gt")  # crate / beacon pixels: classes in the gt
    vc, flicker = VideoConsistency(8, count_ignored=False), FlickerMeter()  # no void here
    t0 = time.perf_counter()
    for v, video in enumerate(videos):
        rendered = ds.get_video(v)  # labels and ambiguity masks of this video
        corrupted = set(video.corrupted)
        vc.start_video()
        flicker.start_video()
        for index, pred in ev.predict_video(model, video):
            pred = pred.cpu()
            gt = torch.from_numpy(rendered.labels[index].astype(np.int64))  # (H, W)
            cm_all.update(pred, gt)
            vc.push(pred, gt)
            flicker.update(pred)
            if index in corrupted:
                cm_cor.update(pred, gt)
            amb = torch.from_numpy(rendered.ambiguous[index])
            if amb.any():
                cm_amb.update(pred[amb], gt[amb])
        vc.end_video()
    res_all, res_cor = cm_all.compute(), cm_cor.compute()
    return {
        "mIoU": res_all["mIoU"], "IoU": res_all["IoU"], "pixel_acc": res_all["pixel_acc"],
        "mIoU_ambiguous": cm_amb.compute()["mIoU"],
        "mIoU_corrupted": res_cor["mIoU"],
        "mVC_8": vc.compute(), "flicker": flicker.compute(),
        "val_videos": len(videos), "corrupted_frames": sum(len(v.corrupted) for v in videos),
        "eval_seconds": time.perf_counter() - t0,
    }


def attention_gamma(model: Any) -> float | None:
    """The attention's learned residual weight gamma (None without attention)."""
    if model.head.cca.recurrence == 0:
        return None
    return float(model.head.cca.cca.gamma.detach().reshape(-1)[0])


def learning_curve(out: Path) -> list[dict]:
    """The periodic validation records of a run's metrics.jsonl: iteration, mIoU, mVC_8."""
    rows = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "val":
            rows.append({k: rec.get(k) for k in ("iteration", "mIoU", "mVC_8")})
    return rows


def run_one(args: argparse.Namespace, variant: str, seed: int) -> dict:
    """Train and evaluate one (variant, seed); writes and returns its study_result.json."""
    import torch

    from vidccnet.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
    from vidccnet.engine.config import load_config
    from vidccnet.engine.report import write_json
    from vidccnet.engine.train import train
    from vidccnet.nn import attention_off

    overrides = run_overrides(args, variant, seed)
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    summary = train(cfg)
    train_s = time.perf_counter() - t0
    out = Path(cfg.runtime.output_dir)
    ckpt = load_checkpoint(out / "last.pt")
    device = torch.device("cuda" if cfg.runtime.device in ("auto", "cuda")
                          and torch.cuda.is_available() else "cpu")
    model, cfg = build_model_from_checkpoint(ckpt, device)
    figures = evaluate_study(model, cfg, device, args.eval_videos)
    ablated = None
    if model.head.cca.recurrence > 0:
        with attention_off(model):
            ablated = evaluate_study(model, cfg, device, args.eval_videos)
    result = {
        "variant": variant, "label": VARIANTS[variant][0], "seed": seed, "budget": args.budget,
        "overrides": overrides, "iterations": summary["iteration"],
        "final_train_loss": summary["loss"], "train_seconds": train_s,
        "threads": torch.get_num_threads(), "device": str(device),
        "gamma": attention_gamma(model),
        "params": sum(p.numel() for p in model.parameters()),
        "curve": learning_curve(out),
        **figures,
        "ablated": None if ablated is None else {m: ablated[m] for m in METRICS},
    }
    write_json(out / "study_result.json", result, indent=1)
    return result


# ------------------------------------------------------------------------- cost


def measure_cost(args: argparse.Namespace, sizes: list[tuple[int, int]], threads: int,
                 repeats: int = 5) -> list[dict]:
    """Median eval-mode forward time of one clip (batch 1) per frame, untrained weights."""
    import torch

    from vidccnet.engine.config import load_config
    from vidccnet.engine.train import build_model

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for variant in args.variants:
            cfg = load_config(args.config, BUDGETS[args.budget][0] + VARIANTS[variant][1])
            clip_len = cfg.data.clip_len
            model = build_model(cfg, 7, pretrained=False).eval()
            for h, w in sizes:
                x = torch.randn(1, 3, clip_len, h, w)
                times = []
                with torch.inference_mode():
                    model(x)
                    for _ in range(repeats):
                        t = time.perf_counter()
                        model(x)
                        times.append(time.perf_counter() - t)
                rows.append({"variant": variant, "height": h, "width": w, "clip_len": clip_len,
                             "threads": threads,
                             "ms_per_frame": 1000 * statistics.median(times) / clip_len})
    finally:
        torch.set_num_threads(old)
    return rows


# ------------------------------------------------------------------------- report


METRICS = ("mIoU", "mIoU_ambiguous", "mIoU_corrupted", "mVC_8", "flicker")
LABELS = {"mIoU": "mIoU", "mIoU_ambiguous": "mIoU ambiguous pixels",
          "mIoU_corrupted": "mIoU dropout frames", "mVC_8": "mVC_8", "flicker": "flicker"}


def _stats(values: list[Any]) -> dict:
    """Mean, min and max over seeds (None where no finite value)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "min": None, "max": None}
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)}


def summarise(runs: list[dict]) -> dict:
    """Per variant: mean, min and max over seeds of every figure, of its test-time ablation
    (``ablated_<metric>``: gamma set to 0) and of the trained gamma."""
    out: dict[str, dict] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        row: dict[str, Any] = {"label": VARIANTS[variant][0],
                               "seeds": sorted(r["seed"] for r in mine)}
        for m in METRICS + ("gamma", "train_seconds"):
            row[m] = _stats([r.get(m) for r in mine])
        for m in METRICS:
            row[f"ablated_{m}"] = _stats([(r.get("ablated") or {}).get(m) for r in mine])
        out[variant] = row
    return out


def _fmt(cell: dict, scale: float = 100.0, digits: int = 1) -> str:
    if cell["mean"] is None:
        return "—"
    f = f"{{:.{digits}f}}"
    mean, lo, hi = (f.format(scale * cell[k]) for k in ("mean", "min", "max"))
    return f"{mean} [{lo}, {hi}]"


def markdown_table(summary: dict, cost: list[dict]) -> str:
    """Two tables: the figures (mean [min, max] over seeds, in %), and gamma, the test-time
    ablation and the cost."""
    sizes = sorted({(c["height"], c["width"]) for c in cost})
    lines = ["| variant | seeds | " + " | ".join(LABELS[m] for m in METRICS) + " |",
             "|" + "---|" * (2 + len(METRICS))]
    for row in summary.values():
        lines.append("| " + " | ".join([row["label"], str(len(row["seeds"]))]
                                       + [_fmt(row[m]) for m in METRICS]) + " |")
    lines += ["", "| variant | trained gamma | gamma = 0 at test: mIoU | ambiguous | dropout "
              "frames | mVC_8 | flicker |" + "".join(f" ms/frame {h}x{w} |" for h, w in sizes),
              "|" + "---|" * (7 + len(sizes))]
    for variant, row in summary.items():
        cells = [row["label"], _fmt(row["gamma"], 1.0, 2)]
        cells += [_fmt(row[f"ablated_{m}"]) for m in METRICS]
        for h, w in sizes:
            ms = [c["ms_per_frame"] for c in cost if c["variant"] == variant
                  and (c["height"], c["width"]) == (h, w)]
            cells.append(f"{ms[0]:.1f}" if ms else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# each 3D variant against the 2D variant it differs from by the time line only
PAIRS = (("cca3d", "cca2d"), ("ccnet3d", "shift_cca2d"), ("shift34_ccnet3d", "shift34_cca2d"))
# ambiguous-pixel mIoU above which a run learned the 12-frame cue: runs that did not stay at
# the per-frame level (17-37 % in the studies so far), those that did reach 57-73 %
LEARNED = 0.5


def compare(runs: list[dict]) -> list[dict]:
    """Each pair of ``PAIRS`` with at least 2 runs on each side: the difference of the means
    (3D minus 2D) of every figure with Welch's 95 % interval (None where it is undefined), the
    one-sided Mann-Whitney p of the ambiguous pixels (3D greater), the runs that learned the
    cue ([learned, runs]) and whether the ambiguous-pixel seed ranges overlap."""
    from scipy import stats

    rows = []
    for variant, baseline in PAIRS:
        a = [r for r in runs if r["variant"] == variant]
        b = [r for r in runs if r["variant"] == baseline]
        if len(a) < 2 or len(b) < 2:
            continue
        row: dict[str, Any] = {"variant": variant, "baseline": baseline}
        for m in METRICS:
            x = [r[m] for r in a if r.get(m) is not None]
            y = [r[m] for r in b if r.get(m) is not None]
            if len(x) < 2 or len(y) < 2:
                row[m] = {"diff": None, "low": None, "high": None}
                continue
            ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
            ok = math.isfinite(ci.low) and math.isfinite(ci.high)
            row[m] = {"diff": statistics.fmean(x) - statistics.fmean(y),
                      "low": float(ci.low) if ok else None, "high": float(ci.high) if ok else None}
        x, y = ([r["mIoU_ambiguous"] for r in rs] for rs in (a, b))
        row["mannwhitney_p"] = float(stats.mannwhitneyu(x, y, alternative="greater").pvalue)
        row["learned"] = [sum(v > LEARNED for v in x), len(x)]
        row["baseline_learned"] = [sum(v > LEARNED for v in y), len(y)]
        row["ranges_overlap"] = min(x) <= max(y) and min(y) <= max(x)
        rows.append(row)
    return rows


def markdown_comparison(rows: list[dict]) -> str:
    """The comparisons of ``compare`` as a Markdown table (points of %)."""
    def cell(c: dict) -> str:
        if c["diff"] is None:
            return "—"
        ci = "" if c["low"] is None else f" [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"
        return f"{100 * c['diff']:+.1f}{ci}"

    lines = ["| 3D minus 2D (Welch's 95 % interval) | " + " | ".join(LABELS[m] for m in METRICS)
             + f" | learned the cue (ambiguous > {100 * LEARNED:.0f} %) | seed ranges overlap "
             "| Mann-Whitney p (ambiguous) |", "|" + "---|" * (4 + len(METRICS))]
    for r in rows:
        name = f"{VARIANTS[r['variant']][0]} minus {VARIANTS[r['baseline']][0]}"
        learned = "{} of {} vs {} of {}".format(*r["learned"], *r["baseline_learned"])
        lines.append("| " + " | ".join([name] + [cell(r[m]) for m in METRICS] + [
            learned, "yes" if r["ranges_overlap"] else "no", f"{r['mannwhitney_p']:.2g}"])
                     + " |")
    return "\n".join(lines)


def plot(summary: dict, runs: list[dict], path: Path) -> None:
    """Bars (mean) and dots (seeds) of mIoU, ambiguous-pixel mIoU, dropout-frame mIoU and
    mVC_8 per variant; hollow dots: the same model with gamma = 0 at test time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vidccnet.writer import save_figure

    variants = list(summary)
    fig = Figure(figsize=(14, 4.2))
    FigureCanvasAgg(fig)
    for i, m in enumerate(METRICS[:4]):
        ax = fig.add_subplot(1, 4, i + 1)
        means = [100 * (summary[v][m]["mean"] or 0.0) for v in variants]
        colours = ["#3070b0" if v in ("cca3d", "ccnet3d", "shift34_ccnet3d") else "#999999"
                   for v in variants]
        ax.bar(range(len(variants)), means, color=colours)
        for j, v in enumerate(variants):
            mine = [r for r in runs if r["variant"] == v]
            ys = [100 * r[m] for r in mine if r.get(m) is not None]
            ax.plot([j] * len(ys), ys, "k.", ms=5)
            ab = [100 * r["ablated"][m] for r in mine if (r.get("ablated") or {}).get(m)
                  is not None]
            ax.plot([j + 0.25] * len(ab), ab, "o", mfc="none", mec="#c03030", ms=4)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels([summary[v]["label"] for v in variants], rotation=45, ha="right",
                           fontsize=7)
        ax.set_title(LABELS[m] + " (%)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def plot_curves(runs: list[dict], path: Path) -> None:
    """Validation mIoU against training steps, one line per run (the plateau check)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vidccnet.writer import save_figure

    fig = Figure(figsize=(6.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = dict(zip(VARIANTS, ("#999999", "#e08020", "#3070b0", "#50a050", "#a030a0",
                                  "#20a0a0", "#c03030"), strict=True))
    seen = set()
    for r in runs:
        pts = [(c["iteration"], 100 * c["mIoU"]) for c in r.get("curve", [])
               if c.get("mIoU") is not None]
        if not pts:
            continue
        label = None if r["variant"] in seen else VARIANTS[r["variant"]][0]
        seen.add(r["variant"])
        ax.plot(*zip(*pts), "-o", ms=3, color=colours[r["variant"]], label=label, alpha=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _settings(overrides: list[str]) -> list[str]:
    """The overrides that change a run's result (not where it is written or on which device)."""
    return [o for o in overrides
            if not o.startswith(("runtime.output_dir=", "runtime.device="))]


def finished_run(args: argparse.Namespace, variant: str, seed: int) -> dict | None:
    """The finished result of (variant, seed) under ``--runs-dir``, or None.

    Raises:
        UserError: the result is damaged, or was made with other settings (``--iterations``,
            ``--override``, ``--eval-videos``) than this invocation's.
    """
    f = run_dir(args, variant, seed) / "study_result.json"
    if not f.is_file():
        return None
    try:
        run = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{f} is not a finished run's result ({exc}); delete it "
                        "or retrain that run with --force") from None
    want = _settings(run_overrides(args, variant, seed))
    if _settings(run.get("overrides", [])) != want or \
            run.get("val_videos", args.eval_videos) != args.eval_videos:
        raise UserError(
            f"the finished run in {f.parent} was made with other settings (overrides or "
            "--eval-videos) than these; retrain it with --force, or pass another --runs-dir"
        )
    return run


def collect(args: argparse.Namespace) -> list[dict]:
    runs = [finished_run(args, v, s) for v in args.variants for s in args.seeds]
    return [r for r in runs if r is not None]


def report(args: argparse.Namespace, runs: list[dict], cost: list[dict]) -> dict:
    from vidccnet.engine.report import write_json
    from vidccnet.writer import write_text_atomically

    if not runs:
        raise UserError(f"no finished runs under {Path(args.runs_dir) / args.budget}; "
                        "run the study first (without --report-only)")
    summary, comparisons = summarise(runs), compare(runs)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.budget == "small" else f"_{args.budget}"
    doc = {
        "command": " ".join(["python", "scripts/study_temporal.py", *sys.argv[1:]]),
        "budget": args.budget, "config": os.path.relpath(args.config, REPO),
        "budget_overrides": BUDGETS[args.budget][0],
        "variants": {v: {"label": VARIANTS[v][0], "overrides": VARIANTS[v][1]}
                     for v in args.variants},
        "seeds": args.seeds, "cpu_count": os.cpu_count(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": summary, "comparisons": comparisons, "cost": cost, "runs": runs,
        "notes": "fractions in [0, 1]; mean / min / max over seeds; ablated_*: the same "
                 "model with every gamma set to 0 at test time; ms_per_frame = forward time "
                 "of one clip (batch 1) / clip_len, median of repeats; comparisons: 3D minus 2D "
                 "mean with Welch's 95 % interval, runs that learned the cue (ambiguous "
                 f"mIoU > {LEARNED})",
    }
    write_json(results / f"synthetic_study{suffix}.json", doc, indent=1)
    plot(summary, runs, results / f"synthetic_study{suffix}.png")
    plot_curves(runs, results / f"synthetic_study{suffix}_curves.png")
    table = markdown_table(summary, cost)
    if comparisons:
        table += "\n\n" + markdown_comparison(comparisons)
    write_text_atomically(results / f"synthetic_study{suffix}.md", f"{table}\n")
    print(table)
    return doc


# ------------------------------------------------------------------------- main


def _launch(args: argparse.Namespace, variant: str, seed: int, threads: int
            ) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--config", args.config,
           "--budget", args.budget, "--runs-dir", args.runs_dir,
           "--eval-videos", str(args.eval_videos)]
    if args.iterations is not None:
        cmd += ["--iterations", str(args.iterations)]
    if args.device is not None:
        cmd += ["--device", args.device]
    if args.override:
        cmd += ["--override", *args.override]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    d = run_dir(args, variant, seed)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "study.log", "w") as logf:
        proc = subprocess.Popen(cmd + ["--run-one", variant, str(seed)], stdout=logf,
                                stderr=subprocess.STDOUT, env=env)
    log.info("started %s seed %d (log: %s)", variant, seed, d / "study.log")
    return proc


def run_all(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Train the runs not finished yet, ``--jobs`` at a time; returns the failed (variant,
    seed) pairs."""
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.jobs)
    todo = [(v, s) for s in args.seeds for v in args.variants
            if args.force or finished_run(args, v, s) is None]
    log.info("%d runs to do (%d already finished), %d at a time, %d threads each",
             len(todo), len(args.variants) * len(args.seeds) - len(todo), args.jobs, threads)
    running: list[tuple[subprocess.Popen, str, int, float]] = []
    failed = []
    try:
        while todo or running:
            while todo and len(running) < args.jobs:
                v, s = todo.pop(0)
                running.append((_launch(args, v, s, threads), v, s, time.time()))
            time.sleep(2)
            for item in list(running):
                proc, v, s, t = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                if proc.returncode == 0:
                    log.info("finished %s seed %d in %.0f s", v, s, time.time() - t)
                else:
                    log.error("%s seed %d failed (exit %d); see %s", v, s, proc.returncode,
                              run_dir(args, v, s) / "study.log")
                    failed.append((v, s))
    finally:  # Ctrl-C, SIGTERM, an error: the runs still going stop with the study
        for proc, *_ in running:
            proc.terminate()
        for proc, *_ in running:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if failed:
        log.error("%d run(s) failed: %s", len(failed), failed)
    return failed


def main(argv: list[str] | None = None) -> int:
    setup_logging(logging.INFO, "%(asctime)s %(name)s: %(message)s")
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        args = parse_args(argv)
        if not Path(args.config).is_file():
            raise UserError(f"config '{args.config}' not found; pass --config PATH")
        if args.run_one:
            variant, seed = args.run_one[0], int(args.run_one[1])
            if variant not in VARIANTS:
                raise UserError(f"unknown variant {variant!r}")
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or
                                  torch.get_num_threads())
            res = run_one(args, variant, seed)
            log.info("%s seed %d: mIoU %.4f, ambiguous %.4f, mVC_8 %.4f", variant, seed,
                     res["mIoU"], res["mIoU_ambiguous"] or math.nan, res["mVC_8"] or math.nan)
            return 0
        with sigterm_unwinds():  # SIGTERM stops the runs in progress as Ctrl-C does
            failed = [] if args.report_only else run_all(args)
            cost: list[dict] = []
            if not args.no_cost:
                cost = measure_cost(args, BUDGETS[args.budget][2], threads=1)
            report(args, collect(args), cost)
        if failed:
            print(f"{PROG}: error: {len(failed)} run(s) failed ({failed}); the report holds the "
                  "others; see each run's study.log and rerun to retry them", file=sys.stderr)
            return 1
    except KeyboardInterrupt as exc:
        return interrupted(PROG, exc, "finished runs are kept: run it again to go on")
    except Exception as exc:  # noqa: BLE001 - expected errors become one line
        from vidccnet.engine.config import ConfigError
        from vidccnet.engine.train import TrainingError

        if debug or not isinstance(exc, (UserError, ConfigError, TrainingError, ValueError,
                                         OSError)):
            raise
        return fail(PROG, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
