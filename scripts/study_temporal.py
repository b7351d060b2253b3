"""Does attending across time help on the synthetic video world, and what does it cost?

    python scripts/study_temporal.py                        # CPU budget: 7 variants x 2 seeds
    python scripts/study_temporal.py --jobs 2               # two runs at a time
    python scripts/study_temporal.py --budget large         # GPU: bigger frames, longer schedule
    python scripts/study_temporal.py --variants ccnet2d_r2 ccnet3d_r2 --seeds 0 1 2
    python scripts/study_temporal.py --report-only          # tables / plots from finished runs

Every variant trains with the same data, schedule and optimiser (``configs/synthetic_study.yaml``
plus the budget's overrides) through the real trainer (``vidccnet.engine.train.train``); only
the model / loss switches of the variant differ. Each trained model is evaluated on the whole
validation videos with the real evaluator's sliding-clip inference (``Evaluator.predict_video``,
causal clips, one frame predicted per clip): mIoU, mIoU on the corrupted frames (the synthetic
world's dropout frames: one object hidden or covered by noise), pixel accuracy on the dropout
pixels and on the crate/beacon pixels that a single frame cannot tell apart, mVC_8 and flicker.
The inference cost is the forward time of one clip divided by its frames (batch 1, eval mode).

Each finished run writes ``<runs>/<variant>_s<seed>/study_result.json``; an interrupted study
picks up where it stopped (``--force`` retrains). At the end the script writes
``results/synthetic_study.json`` (every run + the per-variant summary), ``results/*.png`` and
prints a Markdown table. Expected errors print one line on stderr and exit with code 2.
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

from vidccnet.cli import fail

REPO = Path(__file__).resolve().parent.parent
PROG = "study_temporal.py"
log = logging.getLogger("study_temporal")

# name -> (label, overrides on top of the study config and the budget)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "per_frame_r0": ("per-frame, no attention (2D, R=0)",
                     ["model.name=ccnet2d_resnet18", "model.recurrence=0"]),
    "ccnet2d_r2": ("ccnet2d R=2", ["model.name=ccnet2d_resnet18", "model.recurrence=2"]),
    "ccnet3d_r1": ("ccnet3d R=1", ["model.recurrence=1"]),
    "ccnet3d_r2": ("ccnet3d R=2", []),
    "ccnet3d_r3": ("ccnet3d R=3", ["model.recurrence=3"]),
    "ccnet3d_r2_no_cc": ("ccnet3d R=2, no category-consistent loss", ["loss.cc_weight=0.0"]),
    "ccnet3d_r2_no_shift": ("ccnet3d R=2, no temporal shift", ["model.temporal_shift=false"]),
    # investigation: the attention's residual weight gamma starts at 0 (CCNet); in a short
    # schedule it barely moves, so these runs start it at 1 (set by this script, see run_one)
    "ccnet2d_r2_gamma1": ("ccnet2d R=2, gamma initialised to 1",
                          ["model.name=ccnet2d_resnet18", "model.recurrence=2"]),
    "ccnet3d_r2_gamma1": ("ccnet3d R=2, gamma initialised to 1", []),
}
GAMMA_INIT = {"ccnet2d_r2_gamma1": 1.0, "ccnet3d_r2_gamma1": 1.0}
DEFAULT_VARIANTS = [v for v in VARIANTS if v not in GAMMA_INIT]

# budget -> (overrides on top of the study config, default seeds, cost-measurement sizes,
#            iterations of the shared backbone pre-training (0: every run from scratch))
BUDGETS: dict[str, tuple[list[str], list[int], list[tuple[int, int]], int]] = {
    "small": ([], [0, 1], [(48, 64), (96, 128)], 250),
    "large": ([
        "data.kwargs={num_videos: 96, num_frames: 16, height: 64, width: 96, seed: 0}",
        "data.crop_size=[64, 96]",
        "data.batch_size=8",
        "model.kwargs.head_channels=64",
        "schedule.iterations=1500",
        "eval.kwargs={num_videos: 32}",
    ], [0, 1, 2], [(64, 96), (256, 384)], 3000),
}
PRETRAIN = "pretrain_per_frame"  # the shared backbone pre-training run (variant-like name)
PRETRAIN_OVERRIDES = ["model.name=ccnet2d_resnet18", "model.recurrence=0"]


class UserError(Exception):
    """An expected problem (bad arguments, missing files): one line on stderr, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "synthetic_study.yaml"),
                   help="base training config of every run")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small",
                   help="small: CPU minutes per run; large: a GPU, 10x the steps")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, metavar="NAME",
                   help=f"subset of {', '.join(VARIANTS)} (default: all but *_gamma1)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="training seeds (default: 0 1 for small, 0 1 2 for large)")
    p.add_argument("--iterations", type=int, default=None, help="override schedule.iterations")
    p.add_argument("--pretrain-iterations", type=int, default=None,
                   help="steps of the shared per-frame backbone pre-training that every variant "
                   "starts from (default: the budget's; 0: every run from scratch)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: the config's)")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (processes)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: cores / jobs)")
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "study"),
                   help="where the runs' checkpoints and results go")
    p.add_argument("--results", default=str(REPO / "results"),
                   help="folder for synthetic_study.json and the plots")
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
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.seeds is None:
        args.seeds = BUDGETS[args.budget][1]
    return args


def pretrain_iterations(args: argparse.Namespace) -> int:
    if args.pretrain_iterations is not None:
        return args.pretrain_iterations
    return BUDGETS[args.budget][3]


def backbone_file(args: argparse.Namespace) -> Path:
    return Path(args.runs_dir) / args.budget / PRETRAIN / "backbone.pt"


def run_overrides(args: argparse.Namespace, variant: str, seed: int) -> list[str]:
    """All overrides of one run, in the order they apply."""
    out = list(BUDGETS[args.budget][0])
    if variant == PRETRAIN:
        out += PRETRAIN_OVERRIDES + [f"schedule.iterations={pretrain_iterations(args)}"]
    else:
        out += list(VARIANTS[variant][1])
        if args.iterations is not None:
            out.append(f"schedule.iterations={args.iterations}")
        if pretrain_iterations(args) > 0:
            out.append(f"model.pretrained_backbone={backbone_file(args)}")
    out += [f"runtime.seed={seed}", f"runtime.output_dir={run_dir(args, variant, seed)}",
            "runtime.overwrite=true", "runtime.tensorboard=false", "runtime.progress=false",
            "eval.at_end=false"]
    if args.device is not None:
        out.append(f"runtime.device={args.device}")
    return out + list(args.override)


def run_dir(args: argparse.Namespace, variant: str, seed: int) -> Path:
    if variant == PRETRAIN:
        return Path(args.runs_dir) / args.budget / PRETRAIN
    return Path(args.runs_dir) / args.budget / f"{variant}_s{seed}"


# ------------------------------------------------------------------------- one run


def evaluate_study(model: Any, cfg: Any, device: Any) -> dict:
    """The study's figures of a trained model on the validation videos (see module docstring)."""
    import numpy as np
    import torch

    from vidccnet.data.synthetic import SyntheticVideoDataset
    from vidccnet.engine.evaluate import Evaluator
    from vidccnet.engine.train import evaluator_kwargs
    from vidccnet.metrics import ConfusionMatrix, FlickerMeter, VideoConsistency

    kw = {**cfg.data.kwargs, **cfg.eval.kwargs}
    keep = {"num_videos", "num_frames", "height", "width", "seed"}
    world_kw = {k: v for k, v in kw.items() if k not in keep and k not in
                ("augment", "crop_size", "scale_range", "frame_stride", "anchor",
                 "label_all_frames", "cache_videos")}
    ds = SyntheticVideoDataset(split=cfg.eval.split, clip_len=cfg.data.clip_len,
                               **{k: v for k, v in kw.items() if k in keep}, **world_kw)
    videos = ds.eval_videos()
    k = len(cfg.data.class_names)
    ev = Evaluator(num_classes=k, **{**evaluator_kwargs(cfg, device), "vc_windows": (8,)})
    cm_all, cm_cor = ConfusionMatrix(k), ConfusionMatrix(k)
    vc, flicker = VideoConsistency(8, count_ignored=False), FlickerMeter()  # mmseg convention
    drop_hit = drop_n = amb_hit = amb_n = 0
    t0 = time.perf_counter()
    for v, video in enumerate(videos):
        rendered = ds.get_video(v)  # labels, corruption and ambiguity masks of this video
        corrupted = set(video.corrupted)
        vc.start_video()
        flicker.start_video()
        for index, pred in ev.predict_video(model, video):
            pred = pred.cpu()
            gt = torch.from_numpy(rendered.labels[index].astype(np.int64))  # (H, W)
            cm_all.update(pred, gt)
            vc.push(pred, gt)
            flicker.update(pred)
            hit = (pred == gt).numpy()
            if index in corrupted:
                cm_cor.update(pred, gt)
                m = rendered.corruption_mask[index]
                drop_hit += int(hit[m].sum())
                drop_n += int(m.sum())
            a = rendered.ambiguous[index]
            amb_hit += int(hit[a].sum())
            amb_n += int(a.sum())
        vc.end_video()
    res_all, res_cor = cm_all.compute(), cm_cor.compute()
    return {
        "mIoU": res_all["mIoU"], "IoU": res_all["IoU"], "pixel_acc": res_all["pixel_acc"],
        "mIoU_corrupted": res_cor["mIoU"], "pixel_acc_corrupted": res_cor["pixel_acc"],
        "acc_dropout_pixels": drop_hit / drop_n if drop_n else None,
        "acc_ambiguous_pixels": amb_hit / amb_n if amb_n else None,
        "mVC_8": vc.compute(), "flicker": flicker.compute(),
        "val_videos": len(videos), "corrupted_frames": sum(len(v.corrupted) for v in videos),
        "eval_seconds": time.perf_counter() - t0,
    }


def _patch_gamma_init(value: float) -> None:
    """Make every CrissCrossAttention3d built in this process start with gamma = value."""
    import torch

    from vidccnet.nn import cca

    original = cca.CrissCrossAttention3d.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        original(self, *a, **kw)
        with torch.no_grad():
            self.gamma.fill_(value)

    cca.CrissCrossAttention3d.__init__ = init
    log.info("gamma of every criss-cross attention module starts at %g", value)


def attention_gamma(model: Any) -> float | None:
    """The attention's learned residual weight gamma (None without attention)."""
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            return float(p.detach().reshape(-1)[0])
    return None


def run_one(args: argparse.Namespace, variant: str, seed: int) -> dict:
    """Train and evaluate one (variant, seed); writes and returns its study_result.json."""
    import torch

    from vidccnet.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
    from vidccnet.engine.config import load_config
    from vidccnet.engine.report import to_jsonable
    from vidccnet.engine.train import train

    overrides = run_overrides(args, variant, seed)
    cfg = load_config(args.config, overrides)
    if variant in GAMMA_INIT:
        _patch_gamma_init(GAMMA_INIT[variant])
    t0 = time.perf_counter()
    summary = train(cfg)
    train_s = time.perf_counter() - t0
    out = Path(cfg.runtime.output_dir)
    ckpt = load_checkpoint(out / "last.pt")
    device = torch.device("cuda" if cfg.runtime.device in ("auto", "cuda")
                          and torch.cuda.is_available() else "cpu")
    model, cfg = build_model_from_checkpoint(ckpt, device)
    if variant == PRETRAIN:  # export the backbone in torchvision ResNet key format
        torch.save(model.backbone.state_dict(), out / "backbone.tmp")
        os.replace(out / "backbone.tmp", out / "backbone.pt")
        result = {"variant": PRETRAIN, "overrides": overrides, "train_seconds": train_s,
                  "iterations": summary["iteration"], "final_train_loss": summary["loss"]}
        (out / "study_result.json").write_text(json.dumps(to_jsonable(result), indent=1) + "\n")
        return result
    figures = evaluate_study(model, cfg, device)
    result = {
        "variant": variant, "label": VARIANTS[variant][0], "seed": seed, "budget": args.budget,
        "overrides": overrides, "iterations": summary["iteration"],
        "final_train_loss": summary["loss"], "train_seconds": train_s,
        "threads": torch.get_num_threads(), "device": str(device),
        "gamma": attention_gamma(model),
        "params": sum(p.numel() for p in model.parameters()),
        "trainer_val": {k: (summary["val"] or {}).get(k) for k in ("mIoU", "mVC_8", "flicker")},
        **figures,
    }
    (out / "study_result.json").write_text(json.dumps(to_jsonable(result), indent=1) + "\n")
    return result


# ------------------------------------------------------------------------- cost


def measure_cost(variants: list[str], sizes: list[tuple[int, int]], clip_len: int,
                 head_channels: int, threads: int, repeats: int = 5) -> list[dict]:
    """Median eval-mode forward time of one clip (batch 1) per frame, untrained weights."""
    import torch

    from vidccnet.models import create_model

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for variant in variants:
            kw: dict[str, Any] = {"head_channels": head_channels, "recurrence": 2}
            name = "ccnet3d_resnet18"
            for o in VARIANTS[variant][1]:
                key, val = o.split("=", 1)
                if key == "model.name":
                    name = val
                elif key == "model.recurrence":
                    kw["recurrence"] = int(val)
                elif key == "model.temporal_shift":
                    kw["temporal_shift"] = val == "true"
            model = create_model(name, 7, **kw).eval()
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


def _mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    spread = (max(vals) - min(vals)) / 2 if len(vals) > 1 else 0.0
    return statistics.fmean(vals), spread


METRICS = ("mIoU", "mIoU_corrupted", "acc_dropout_pixels", "acc_ambiguous_pixels", "mVC_8",
           "flicker")


def summarise(runs: list[dict]) -> dict:
    """Per-variant mean and half-range (max - min) / 2 of every figure over seeds."""
    out: dict[str, dict] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        row: dict[str, Any] = {"label": VARIANTS[variant][0],
                               "seeds": sorted(r["seed"] for r in mine)}
        for m in METRICS + ("gamma", "train_seconds"):
            mean, spread = _mean_spread([r.get(m) for r in mine])
            row[m] = {"mean": mean, "spread": spread}
        out[variant] = row
    return out


def _fmt(cell: dict, pct: bool = True) -> str:
    if cell["mean"] is None:
        return "n/a"
    s = 100.0 if pct else 1.0
    return f"{s * cell['mean']:.1f} ± {s * cell['spread']:.1f}"


def markdown_table(summary: dict, cost: list[dict]) -> str:
    sizes = sorted({(c["height"], c["width"]) for c in cost})
    head = ("| variant | seeds | mIoU | mIoU corrupted frames | acc. dropout pixels "
            "| acc. crate/beacon pixels | mVC_8 | flicker | gamma |")
    head += "".join(f" ms/frame {h}x{w} |" for h, w in sizes)
    lines = [head, "|" + "---|" * (9 + len(sizes))]
    for variant, row in summary.items():
        cells = [row["label"], str(len(row["seeds"]))]
        cells += [_fmt(row[m]) for m in METRICS]
        g = row["gamma"]
        cells.append("—" if g["mean"] is None else f"{g['mean']:.2f}")
        for h, w in sizes:
            ms = [c["ms_per_frame"] for c in cost if c["variant"] == variant
                  and (c["height"], c["width"]) == (h, w)]
            cells.append(f"{ms[0]:.1f}" if ms else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict, runs: list[dict], path: Path) -> None:
    """mIoU (all / corrupted frames) and mVC_8 per variant: bars = mean, dots = seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    variants = list(summary)
    fig = Figure(figsize=(12, 4.2))
    FigureCanvasAgg(fig)
    panels = (("mIoU", "mIoU, all frames (%)"), ("mIoU_corrupted", "mIoU, corrupted frames (%)"),
              ("mVC_8", "mVC_8 (%)"))
    for i, (m, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        means = [100 * (summary[v][m]["mean"] or 0.0) for v in variants]
        colours = ["#999999" if v.startswith(("per_frame", "ccnet2d")) else "#3070b0"
                   for v in variants]
        ax.bar(range(len(variants)), means, color=colours)
        for j, v in enumerate(variants):
            ys = [100 * r[m] for r in runs if r["variant"] == v and r.get(m) is not None]
            ax.plot([j] * len(ys), ys, "k.", ms=5)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        lo = min([100 * r[m] for r in runs if r.get(m) is not None] or [0])
        ax.set_ylim(max(0.0, lo - 10), None)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def collect(args: argparse.Namespace) -> list[dict]:
    runs = []
    for variant in args.variants:
        for seed in args.seeds:
            f = run_dir(args, variant, seed) / "study_result.json"
            if f.is_file():
                runs.append(json.loads(f.read_text()))
    return runs


def report(args: argparse.Namespace, runs: list[dict], cost: list[dict]) -> dict:
    from vidccnet.engine.report import to_jsonable

    if not runs:
        raise UserError(f"no finished runs under {Path(args.runs_dir) / args.budget}; "
                        "run the study first (without --report-only)")
    summary = summarise(runs)
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
        "summary": summary, "cost": cost, "runs": runs,
        "notes": "fractions in [0, 1]; spread = (max - min) / 2 over seeds; ms_per_frame = "
                 "forward time of one clip (batch 1) / clip_len, median of repeats",
    }
    (results / f"synthetic_study{suffix}.json").write_text(
        json.dumps(to_jsonable(doc), indent=1) + "\n")
    plot(summary, runs, results / f"synthetic_study{suffix}.png")
    table = markdown_table(summary, cost)
    (results / f"synthetic_study{suffix}.md").write_text(table + "\n")
    print(table)
    return doc


# ------------------------------------------------------------------------- main


def _launch(args: argparse.Namespace, variant: str, seed: int, threads: int
            ) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--config", args.config,
           "--budget", args.budget, "--runs-dir", args.runs_dir]
    if args.iterations is not None:
        cmd += ["--iterations", str(args.iterations)]
    if args.pretrain_iterations is not None:
        cmd += ["--pretrain-iterations", str(args.pretrain_iterations)]
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


def run_all(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.jobs)
    if pretrain_iterations(args) > 0 and (args.force or not backbone_file(args).is_file()):
        log.info("pre-training the shared per-frame backbone (%d iterations)",
                 pretrain_iterations(args))
        proc = _launch(args, PRETRAIN, 1000, args.threads or cores)
        if proc.wait() != 0:
            raise UserError(f"the backbone pre-training failed; see "
                            f"{run_dir(args, PRETRAIN, 0) / 'study.log'}")
    todo = [(v, s) for s in args.seeds for v in args.variants
            if args.force or not (run_dir(args, v, s) / "study_result.json").is_file()]
    log.info("%d runs to do (%d already finished), %d at a time, %d threads each",
             len(todo), len(args.variants) * len(args.seeds) - len(todo), args.jobs, threads)
    running: list[tuple[subprocess.Popen, str, int, float]] = []
    failed = []
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
    if failed:
        log.error("%d run(s) failed: %s", len(failed), failed)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        args = parse_args(argv)
        if not Path(args.config).is_file():
            raise UserError(f"config '{args.config}' not found; pass --config PATH")
        if args.run_one:
            variant, seed = args.run_one[0], int(args.run_one[1])
            if variant not in VARIANTS and variant != PRETRAIN:
                raise UserError(f"unknown variant {variant!r}")
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or
                                  torch.get_num_threads())
            res = run_one(args, variant, seed)
            if variant != PRETRAIN:
                log.info("%s seed %d: mIoU %.4f, corrupted %.4f, mVC_8 %.4f", variant, seed,
                         res["mIoU"], res["mIoU_corrupted"] or math.nan,
                         res["mVC_8"] or math.nan)
            return 0
        if not args.report_only:
            run_all(args)
        cost: list[dict] = []
        if not args.no_cost:
            from vidccnet.engine.config import load_config

            cfg = load_config(args.config, BUDGETS[args.budget][0])
            cost = measure_cost(args.variants, BUDGETS[args.budget][2], cfg.data.clip_len,
                                int(cfg.model.kwargs.get("head_channels", 512)), threads=1)
        report(args, collect(args), cost)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - expected errors become one line
        from vidccnet.engine.config import ConfigError
        from vidccnet.engine.train import TrainingError

        if debug or not isinstance(exc, (UserError, ConfigError, TrainingError, ValueError,
                                         FileNotFoundError)):
            raise
        return fail(PROG, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
