"""Benchmark scripts/segment_video.py: frames/s and peak memory (max RSS) per model, and the
peak memory for a short vs a long video (streaming: it should not grow with the length).

    python scripts/bench_segment.py                       # the tables in docs/benchmarks.md
    python scripts/bench_segment.py --models ccnet3d_resnet18 --speed-frames 8 --device cuda

Checkpoints are randomly initialised (11 classes, CamVid-sized); weights do not change the cost.
Videos are synthetic (moving shapes over a gradient, H.264). Every measurement runs the whole
command (decode, resize, forward, upsample, argmax, PNG writing) in a fresh subprocess; max RSS
is that process's ``ru_maxrss``. frames/s is the script's own figure (frames written / seconds
of the segmentation loop, model loading excluded); the speed table divides it by that of the
first of ``--models`` (default: the per-frame model ccnet2d_resnet18), measured in the same
run. On CUDA the child first segments the same
video once untimed (kernel compilation, cuDNN's algorithm search), and the tables add the peak
GPU memory of the timed loop (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidccnet.cli import interruptible, missing_folder, sigterm_unwinds
from vidccnet.engine.report import write_json

PROG = "bench_segment.py"
SCRIPT_DIR = Path(__file__).resolve().parent


def write_video(path: Path, frames: int, height: int, width: int, fps: int = 30) -> None:
    """A synthetic H.264 video, encoded frame by frame (never all frames in memory)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps), options={"crf": "23", "preset": "fast"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy) / 4 % 256], -1)
            cx, cy = (40 + 5 * i) % width, (60 + 3 * i) % height
            img[max(0, cy - 30) : cy + 30, max(0, cx - 40) : cx + 40] = (200, 40, 40)
            img += rng.normal(0, 4, img.shape).astype(np.float32)
            rgb = np.clip(img, 0, 255).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def write_checkpoint(path: Path, model_name: str, clip_len: int) -> None:
    import torch

    from vidccnet.engine.config import Config, DataConfig, ModelConfig, config_to_dict
    from vidccnet.models import create_model

    torch.manual_seed(0)
    names = [f"class_{i}" for i in range(11)]
    cfg = Config(model=ModelConfig(name=model_name),
                 data=DataConfig(clip_len=clip_len, class_names=names))
    model = create_model(model_name, len(names))
    torch.save({"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}, "scaler": None,
                "iteration": 0, "config": config_to_dict(cfg), "metrics": {}, "version": 1}, path)


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def child(argv: list[str]) -> None:
    """Run segment_video.main(argv) here; print its summary, this process's max RSS and the peak
    RSS of the segmentation loop alone (Linux: the high-water mark is reset via
    /proc/self/clear_refs when the stream opens, i.e. after the model is loaded)."""
    sys.path.insert(0, str(SCRIPT_DIR))
    import segment_video

    from vidccnet.predict import VideoSegmenter

    open_stream = VideoSegmenter.stream
    state: dict[str, float | None] = {"rss_at_start_mb": None, "max_rss_before_loop_mb": None}
    out = Path(argv[argv.index("--out") + 1])
    cuda = "--device" in argv and argv[argv.index("--device") + 1].startswith("cuda")
    if cuda:  # an untimed pass first: Triton / cuDNN set-up is not the loop's speed
        warm = list(argv)
        warm[argv.index("--out") + 1] = str(out.with_name(out.name + "_warmup"))
        if segment_video.main(warm) != 0:
            print(json.dumps({"rc": 1}))
            return

    def stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        # the reset below also resets ru_maxrss: remember the peak so far (model loading)
        state["max_rss_before_loop_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            state["rss_at_start_mb"] = _proc_status_mb("VmRSS")
        except OSError:
            pass
        return open_stream(self, *args, **kwargs)

    VideoSegmenter.stream = stream  # type: ignore[method-assign]
    t0 = time.perf_counter()
    rc = segment_video.main(argv)
    wall = time.perf_counter() - t0
    loop_peak = _proc_status_mb("VmHWM") if state["rss_at_start_mb"] is not None else None
    if cuda:
        import torch

        state["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    summary = json.loads((out / "summary.json").read_text()) if rc == 0 else {}
    rss_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
                 state.get("max_rss_before_loop_mb") or 0.0)
    print(json.dumps({"rc": rc, "wall_s": wall, "max_rss_mb": rss_mb,
                      "loop_peak_rss_mb": loop_peak, **state, **summary}))


def measure(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(argv)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{PROG}: run failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{PROG}: segment_video.py exited {result['rc']}: "
                         f"{proc.stderr.strip()[-500:]}")
    return result


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _video_size(text: str) -> tuple[int, int]:
    """'480x360' -> (480, 360), for argparse: a malformed size is a usage error."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not WxH, e.g. 480x360") from None
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(
            f"'{text}': width and height must be even (H.264, yuv420p) and >= 16")
    return width, height


def _mistake(args: argparse.Namespace) -> str | None:
    """The first unknown model name or count below 1 in ``args``, as a usage error."""
    from vidccnet.models import list_models

    known = list_models()
    for name in [*args.models, args.memory_model]:
        if name not in known:
            return f"unknown model {name!r}; choose from {', '.join(known)}"
    counts = {"--speed-frames": [args.speed_frames], "--clip-len": [args.clip_len],
              "--stride": [] if args.stride is None else [args.stride],
              "--memory-frames": args.memory_frames, "--memory-stride": [args.memory_stride],
              "--memory-max-size": [args.memory_max_size]}
    for option, values in counts.items():
        if any(v < 1 for v in values):
            return f"{option} must be >= 1, got {' '.join(map(str, values))}"
    return None


@interruptible(PROG, "nothing written")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+",
                   default=["ccnet2d_resnet18", "ccnet3d_resnet18", "ccnet3d_resnet50"],
                   help="the speed table's ratios are to the first (default: the per-frame "
                   "model ccnet2d_resnet18)")
    p.add_argument("--size", type=_video_size, default="480x360",
                   help="WxH of the benchmark video")
    p.add_argument("--speed-frames", type=int, default=8, help="frames of the speed video")
    p.add_argument("--clip-len", type=int, default=4)
    p.add_argument("--stride", type=int, default=None, help="default: the script's ceil(T/2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--only", choices=("speed", "memory"), default=None,
                   help="run one of the two tables")
    p.add_argument("--memory-frames", type=int, nargs=2, default=[25, 250])
    p.add_argument("--memory-model", default="ccnet3d_resnet18")
    p.add_argument("--memory-stride", type=int, default=4)
    p.add_argument("--memory-max-size", type=int, default=32,
                   help="inference short side for the memory runs (keeps 250 frames quick on CPU;"
                   " decoding, upsampling and PNGs stay at the source size)")
    p.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = p.parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child))
        return 0
    if msg := _mistake(args):
        p.error(msg)
    if msg := missing_folder(args.json, "--json"):
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    import torch

    width, height = args.size
    common = ["--clip-len", str(args.clip_len), "--device", args.device, "--quiet",
              "--size", "source"]  # benchmark at the video's size, not the model's scale
    if args.stride:
        common += ["--stride", str(args.stride)]
    if args.amp:
        common.append("--amp")
    rows = []
    # SIGTERM unwinds like Ctrl-C: the temporary videos and checkpoints are removed
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="bench_segment_") as tmp_name:
        tmp = Path(tmp_name)
        speed_video = tmp / "speed.mp4"
        write_video(speed_video, args.speed_frames, height, width)
        for name in args.models if args.only != "memory" else []:
            ckpt = tmp / f"{name}.pt"
            write_checkpoint(ckpt, name, args.clip_len)
            r = measure([str(speed_video), "--out", str(tmp / f"out_{name}"), "--checkpoint",
                         str(ckpt), *common])
            rows.append(("speed", name, r))
            print(f"{name}: {r['frames_per_second']:.3f} frames/s, max RSS {r['max_rss_mb']:.0f} "
                  f"MB, loop peak {fmt_mb(r['loop_peak_rss_mb'])} MB ({r['frames']} frames "
                  f"{width}x{height})", file=sys.stderr)
        ckpt = tmp / f"{args.memory_model}.pt"
        if not ckpt.exists() and args.only != "speed":
            write_checkpoint(ckpt, args.memory_model, args.clip_len)
        mem = []
        for n in args.memory_frames if args.only != "speed" else []:
            video = tmp / f"mem_{n}.mp4"
            write_video(video, n, height, width)
            r = measure([str(video), "--out", str(tmp / f"out_mem_{n}"), "--checkpoint",
                         str(ckpt), "--max-size", str(args.memory_max_size), *common,
                         "--stride", str(args.memory_stride)])
            mem.append((n, r))
            print(f"{n} frames: max RSS {r['max_rss_mb']:.0f} MB, loop peak "
                  f"{fmt_mb(r['loop_peak_rss_mb'])} MB, {r['frames_per_second']:.2f} frames/s",
                  file=sys.stderr)
            video.unlink()

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
               f"{args.device}, load average {os.getloadavg()[0]:.1f}")
    print(f"Machine: {machine}\n")
    gpu = args.device.startswith("cuda")
    if gpu:
        print(f"GPU: {torch.cuda.get_device_name(args.device)}\n")
        machine += f", GPU {torch.cuda.get_device_name(args.device)}"
    if rows:
        base_name, base = rows[0][1], rows[0][2]["frames_per_second"]
        print("| model | video | clip_len / stride | inference size | frames/s "
              f"| frames/s vs {base_name} | max RSS (MB) | loop peak RSS (MB) |"
              + (" GPU peak (MB) |" if gpu else ""))
        print("|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for _, name, r in rows:
        print(f"| {name} (random weights) | {r['frames']} frames {width}x{height} | "
              f"{r['clip_len']} / {r['stride']} | {r['inference_size'][1]}x"
              f"{r['inference_size'][0]} | {r['frames_per_second']:.3f} | "
              f"{r['frames_per_second'] / base:.2f}x | "
              f"{r['max_rss_mb']:.0f} | {fmt_mb(r['loop_peak_rss_mb'])} |"
              + (f" {fmt_mb(r.get('gpu_peak_mb'))} |" if gpu else ""))
    if len(mem) == 2:
        print("\n| video length | model | clip_len / stride | inference size | max RSS (MB) "
              "| loop peak RSS (MB) | RSS when the loop starts (MB) | frames/s |"
              + (" GPU peak (MB) |" if gpu else ""))
        print("|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
        for n, r in mem:
            print(f"| {n} frames {width}x{height} | {args.memory_model} | {r['clip_len']} / "
                  f"{r['stride']} | {r['inference_size'][1]}x{r['inference_size'][0]} | "
                  f"{r['max_rss_mb']:.0f} | {fmt_mb(r['loop_peak_rss_mb'])} | "
                  f"{fmt_mb(r['rss_at_start_mb'])} | {r['frames_per_second']:.2f} |"
                  + (f" {fmt_mb(r.get('gpu_peak_mb'))} |" if gpu else ""))
        (n0, r0), (n1, r1) = mem
        growth = 100 * (r1["max_rss_mb"] / r0["max_rss_mb"] - 1)
        print(f"\nmax RSS {n1} vs {n0} frames: {growth:+.1f} %")
        if r0["loop_peak_rss_mb"] and r1["loop_peak_rss_mb"]:
            growth = 100 * (r1["loop_peak_rss_mb"] / r0["loop_peak_rss_mb"] - 1)
            print(f"loop peak RSS {n1} vs {n0} frames: {growth:+.1f} %")
    if args.json:
        speed = [{"model": name, **r, "vs_first": r["frames_per_second"] / base}
                 for _, name, r in rows]
        memory = [{"video_frames": n, "model": args.memory_model, **r} for n, r in mem]
        write_json(args.json, {"machine": machine, "args": vars(args), "speed": speed,
                               "memory": memory}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
