#!/usr/bin/env python
"""Clip loading speed: clips/s for CamVid-like and VSPW-like clips from mp4 and frame folders.

Videos of the synthetic world are written to a temporary folder as H.264 mp4 (keyframe every
`--gop` frames) and as PNG / JPEG frame folders; then T-frame clips are read with PyAV, decord
or PIL and turned into normalised tensors (`to_clip_tensor`), in one process:

- random: clips at random anchors of random videos (the training access pattern);
- sequential: the clips of every anchor of a video in order (the evaluation pattern).

The "x PyAV" columns divide each reader's clips/s (wall clock) by those of PyAV on the same
configuration's mp4 files, measured in the same run.

    python scripts/bench_data.py                 # prints a markdown table
    python scripts/bench_data.py --quick         # smaller run
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidccnet.cli import fail, interruptible, missing_folder, sigterm_unwinds  # noqa: E402
from vidccnet.data.clips import clip_indices  # noqa: E402
from vidccnet.data.synthetic import SyntheticVideoWorld  # noqa: E402
from vidccnet.data.transforms import to_clip_tensor  # noqa: E402
from vidccnet.data.video import VideoReadError, open_video, write_video  # noqa: E402
from vidccnet.engine.report import write_json  # noqa: E402

PROG = "bench_data.py"
CONFIGS = {"camvid-like": (360, 480), "vspw-like": (480, 854)}


def make_sources(tmp: Path, name: str, size: tuple[int, int], videos: int, frames: int,
                 gop: int) -> dict[str, list[Path]]:
    from PIL import Image

    world = SyntheticVideoWorld(seed=0, height=size[0], width=size[1])
    out: dict[str, list[Path]] = {"mp4": [], "png": [], "jpg": []}
    for v in range(videos):
        f, _ = world.video(v, frames)
        p = tmp / f"{name}_{v}.mp4"
        write_video(p, f, fps=30, codec="libx264", options={"g": str(gop), "crf": "20"})
        out["mp4"].append(p)
        for ext in ("png", "jpg"):
            d = tmp / f"{name}_{v}_{ext}"
            d.mkdir()
            for t in range(frames):
                Image.fromarray(f[t]).save(d / f"{t:06d}.{ext}", **(
                    {"quality": 90} if ext == "jpg" else {"compress_level": 1}))
            out[ext].append(d)
    return out


def bench(paths: list[Path], backend: str, clip_len: int, n_random: int,
          seed: int = 0) -> dict[str, float]:
    """Random and sequential clips per wall-clock second and per CPU second (process time,
    all threads) reading with `backend`."""
    readers = [open_video(p, backend=backend) for p in paths]
    rng = np.random.default_rng(seed)
    out = {}
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n_random):
        r = readers[int(rng.integers(len(readers)))]
        idx = clip_indices(int(rng.integers(len(r))), len(r), clip_len)
        to_clip_tensor(r.get_batch(idx))
    out["random_wall"] = n_random / (time.perf_counter() - w)
    out["random_cpu"] = n_random / (time.process_time() - c)
    r = readers[1 % len(readers)]  # not warmed up by the random pass more than the others
    w, c = time.perf_counter(), time.process_time()
    for a in range(len(r)):
        to_clip_tensor(r.get_batch(clip_indices(a, len(r), clip_len)))
    out["seq_wall"] = len(r) / (time.perf_counter() - w)
    out["seq_cpu"] = len(r) / (time.process_time() - c)
    for r in readers:
        r.close()
    return {k: round(v, 1) for k, v in out.items()}


def add_ratios(rows: list[dict]) -> None:
    """`random_vs_av`, `seq_vs_av`: clips/s (wall) over PyAV's on the mp4 of the same config."""
    base = {r["config"]: r for r in rows if (r["source"], r["reader"]) == ("mp4", "av")}
    for r in rows:
        b = base.get(r["config"])
        for k in ("random", "seq"):
            r[f"{k}_vs_av"] = round(r[f"{k}_wall"] / b[f"{k}_wall"], 2) if b else None


def format_table(rows: list[dict], clip_len: int) -> str:
    def ratio(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}x"

    lines = ["| clips | source | reader | random clips/s | random clips/CPU-s | random x PyAV "
             "| sequential clips/s | sequential clips/CPU-s | sequential x PyAV |",
             "|---|---|---|" + "---:|" * 6]
    for r in rows:
        lines.append(f"| {r['config']} {r['size']} T={clip_len} | {r['source']} | {r['reader']} "
                     f"| {r['random_wall']} | {r['random_cpu']} | {ratio(r['random_vs_av'])} "
                     f"| {r['seq_wall']} | {r['seq_cpu']} | {ratio(r['seq_vs_av'])} |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, PyAV {__import__('av').__version__}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=None, help="videos per configuration [2]")
    ap.add_argument("--frames", type=int, default=None, help="frames per video [60]")
    ap.add_argument("--clip-len", type=int, default=4)
    ap.add_argument("--clips", type=int, default=None, help="random clips per measurement [40]")
    ap.add_argument("--gop", type=int, default=30, help="mp4 keyframe interval")
    ap.add_argument("--quick", action="store_true",
                    help="smaller defaults: 1 video, 24 frames, 16 clips (options given win)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    defaults = (1, 24, 16) if args.quick else (2, 60, 40)
    for name, value in zip(("videos", "frames", "clips"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("videos", "frames", "clip_len", "clips", "gop"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


@interruptible(PROG, "nothing written")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if msg := missing_folder(args.json, "--json"):
        return fail(PROG, ValueError(msg))
    try:
        import decord  # noqa: F401

        has_decord = True
    except ImportError:
        has_decord = False
    rows = []
    try:
        # SIGTERM unwinds like Ctrl-C: the temporary videos are removed
        with sigterm_unwinds(), tempfile.TemporaryDirectory() as tmp:
            for name, size in CONFIGS.items():
                src = make_sources(Path(tmp), name, size, args.videos, args.frames, args.gop)
                runs = [("mp4", "av"), ("mp4", "decord"), ("png", "PIL"), ("jpg", "PIL")]
                for kind, backend in runs:
                    if backend == "decord" and not has_decord:
                        continue
                    res = bench(src[kind], "decord" if backend == "decord" else "av",
                                args.clip_len, args.clips)
                    rows.append({"config": name, "size": f"{size[1]}x{size[0]}",
                                 "source": kind, "reader": backend, **res})
    except (VideoReadError, OSError, ValueError) as e:
        return fail(PROG, e)
    add_ratios(rows)
    print(f"machine: {machine()}")
    print(f"clip_len={args.clip_len}, {args.videos} videos x {args.frames} frames per config, "
          f"mp4 H.264 crf 20 keyframe every {args.gop} frames, {args.clips} random clips\n")
    print(format_table(rows, args.clip_len))
    if args.json:
        write_json(args.json, {"machine": machine(), "args": vars(args), "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
