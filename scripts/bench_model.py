#!/usr/bin/env python
"""Forward time and peak memory per frame: ccnet3d vs ccnet2d vs the network without attention.

Configurations (same depth, same weights layout):
  ccnet3d  temporal shift + 3D criss-cross attention (R=2)
  ccnet2d  per-frame network, per-frame attention (R=2)
  noatt    per-frame network without attention (ccnet2d, R=0)
  shift    temporal shift only (ccnet3d, R=0)

All configurations of a depth are built up front and their forwards interleaved (round-robin,
`--repeats` rounds, the minimum counts), so drifting load hits them alike. Time is wall clock
and process CPU time (the steadier figure on a shared machine; keep --threads 1 so that
spinning threads do not count). Peak memory is the peak of bytes allocated during the forward
above what was allocated before it: on CPU from the profiler's memory events (first round, run
under torch.profiler with profile_memory), on CUDA from torch.cuda.max_memory_allocated.
Ratios are against ccnet2d of the same depth and clip length in the same run.

Example:
  python scripts/bench_model.py --depths 50 18 --frames 4 8 --size 360 480 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidccnet.cli import fail, interruptible, missing_folder  # noqa: E402

PROG = "bench_model.py"
logger = logging.getLogger("bench_model")

CONFIGS = {
    "ccnet3d": ("ccnet3d", {}),
    "ccnet2d": ("ccnet2d", {}),
    "noatt": ("ccnet2d", {"recurrence": 0}),
    "shift": ("ccnet3d", {"recurrence": 0}),
}


class BenchError(Exception):
    """An expected failure: reported on one line, exit code 2."""


def _forward_cpu_profiled(model, x) -> tuple[int, float, float]:
    """Run model(x) under the profiler.

    Returns (peak bytes allocated above the state before the call, wall s, CPU s).
    """
    from vidccnet.profiling import cpu_peak_allocated

    times: dict[str, float] = {}

    def call() -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        model(x)
        times["wall"], times["cpu"] = time.perf_counter() - w0, time.process_time() - c0

    return cpu_peak_allocated(call), times["wall"], times["cpu"]


def bench_depth(depth: int, args: argparse.Namespace, device: str,
                progress: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    """All configurations of one depth, forwards interleaved (config order within a round);
    `progress(rows so far)` after each clip length."""
    import torch

    from vidccnet.models import create_model

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    models = {}
    for config in args.configs:
        base, kw = CONFIGS[config]
        torch.manual_seed(0)
        m = create_model(f"{base}_resnet{depth}", args.num_classes, **kw).eval().to(dev)
        with torch.no_grad():
            torch.nn.init.constant_(m.head.cca.cca.gamma, 0.5)  # attention really on
        models[config] = m
    rows = []
    H, W = args.size
    with torch.inference_mode():
        for m in models.values():
            m(torch.randn(1, 3, 2, 64, 64, device=dev))  # warm up code paths cheaply
        for T in args.frames:
            x = torch.randn(1, 3, T, H, W, device=dev)
            if args.warmup or dev.type == "cuda":  # CUDA: Triton autotunes per shape
                for m in models.values():
                    m(x)
                sync()
            res = {c: {"wall": [], "cpu": [], "peak": 0} for c in models}
            for rep in range(args.repeats):
                for config, m in models.items():
                    t0 = time.perf_counter()
                    sync()
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(dev)
                        mem0 = torch.cuda.memory_allocated(dev)
                    if dev.type == "cpu" and rep == 0:
                        peak, wall, cpu = _forward_cpu_profiled(m, x)
                    else:
                        c0, w0 = time.process_time(), time.perf_counter()
                        m(x)
                        sync()
                        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                        peak = torch.cuda.max_memory_allocated(dev) - mem0 if (
                            dev.type == "cuda"
                        ) else 0
                    r = res[config]
                    r["wall"].append(wall)
                    r["cpu"].append(cpu)
                    r["peak"] = max(r["peak"], peak)
                    logger.info("resnet%d T=%d %s: %.1f s", depth, T, config,
                                time.perf_counter() - t0)
            rows += [
                dict(depth=depth, frames=T, config=c, wall_s=min(r["wall"]),
                     cpu_s=min(r["cpu"]), peak_bytes=r["peak"])
                for c, r in res.items()
            ]
            progress(rows)
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table; ratios against ccnet2d of the same depth and T."""
    ref = {(r["depth"], r["frames"]): r for r in rows if r["config"] == "ccnet2d"}
    lines = [
        "| backbone | T | model | wall ms/frame | CPU ms/frame | CPU vs 2d | "
        "peak MiB/frame | mem vs 2d |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        T = r["frames"]
        base = ref.get((r["depth"], T))
        cpu_ratio = f"{r['cpu_s'] / base['cpu_s']:.3f}" if base else "-"
        mem_ratio = (
            f"{r['peak_bytes'] / base['peak_bytes']:.3f}" if base and base["peak_bytes"] else "-"
        )
        lines.append(
            f"| resnet{r['depth']} | {T} | {r['config']} | {1e3 * r['wall_s'] / T:.0f} | "
            f"{1e3 * r['cpu_s'] / T:.0f} | {cpu_ratio} | {r['peak_bytes'] / T / 2**20:.0f} | "
            f"{mem_ratio} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[50, 18])
    p.add_argument("--frames", type=int, nargs="+", default=[4, 8])
    p.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    p.add_argument("--configs", nargs="+", default=["ccnet2d", "ccnet3d", "noatt"])
    p.add_argument("--repeats", type=int, default=1, help="timed forwards (the minimum counts)")
    p.add_argument("--warmup", action="store_true",
                   help="one untimed full-size forward first (always on CUDA)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0: default)")
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return p.parse_args(argv)


def checked_device(args: argparse.Namespace) -> str:
    """The device to measure on, once the arguments are checked.

    Raises:
        BenchError: a value out of range, or a device that is not there.
    """
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError("--device cuda asked for but no CUDA device is available; use cpu")
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        raise BenchError(f"unknown config {bad[0]!r}; choose from {', '.join(CONFIGS)}")
    if any(d not in (18, 50, 101) for d in args.depths):
        raise BenchError(f"--depths must be among 18, 50, 101, got {args.depths}")
    if min(args.frames) < 1 or min(args.size) < 8 or args.repeats < 1:
        raise BenchError("--frames, --repeats must be >= 1 and --size >= 8")
    if args.threads < 0:
        raise BenchError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.num_classes < 1:
        raise BenchError(f"--num-classes must be >= 1, got {args.num_classes}")
    if msg := missing_folder(args.json, "--json"):
        raise BenchError(msg)
    return device


@interruptible(PROG, 'the --json file, if any, holds the rows measured so far ("complete": false)')
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="# %(message)s", stream=sys.stderr)
    import torch

    from vidccnet.engine.report import write_json

    try:
        device = checked_device(args)
    except BenchError as exc:
        return fail(PROG, exc)
    if device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else (
        f"CPU, {os.cpu_count()} cores, {args.threads or torch.get_num_threads()} thread(s)"
    )
    meta = {"device": where, "torch": torch.__version__, "size": args.size,
            "repeats": args.repeats, "threads": torch.get_num_threads(),  # CUDA: not --threads
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_average": os.getloadavg()}
    rows: list[dict] = []
    planned = len(args.depths) * len(args.frames) * len(set(args.configs))

    def save(more: Sequence[dict] = (), complete: bool = False) -> None:
        """--json as measured so far, whole (a run cut by a time limit or an error keeps its
        finished rows): "complete" is false until the end."""
        if args.json is not None:
            done = rows + list(more)
            write_json(args.json, {"meta": meta, "rows": done, "complete": complete,
                                   "rows_planned": planned, "rows_finished": len(done)}, indent=1)

    save()
    for depth in args.depths:
        rows += bench_depth(depth, args, device, save)
    print(f"input {args.size[0]}x{args.size[1]}, batch 1, eval forward, {where}, "
          f"torch {torch.__version__}, repeats {args.repeats}")
    print(format_table(rows))
    save(complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
