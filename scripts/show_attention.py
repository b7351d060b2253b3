"""Draw where a trained model's criss-cross attention looks from one pixel of one frame.

    python scripts/show_attention.py --checkpoint runs/demo/best.pt \
        runs/demo/input/demo_video.mp4 --frame 9 --pixel 20 30 --out attn.png

The clip of ``--clip-len`` frames around frame F (``--anchor causal``: F is the clip's last frame;
``centre``: its middle one; frames before the start / past the end repeat the first / last frame)
is read, resized and normalised as ``scripts/segment_video.py`` does (``VideoSegmenter`` of
``vidccnet.predict``: the short side the checkpoint was trained at, sides multiples of 8), the
model runs once, and the exact attention weights of the feature cell under pixel (Y, X) are taken
for each recurrence (``vidccnet.nn.model_attention_weights``, float64). (Y, X) is in the source
frame; it is mapped to the pixel of the resized frame its centre falls in.

The picture has one column per clip frame and one row per recurrence. In the query frame (red
cross) the cells of the pixel's row and column are coloured by their weights (the centre cell
once); in every other frame the one cell of the pixel's time line is, and its weight is written
in the panel's title. Feature cells are 8x8 pixels of the resized frame (output stride 8).
A per-frame (2D) model has no time-line weights. The PNG is written atomically; a JSON summary
of the weights goes to stdout. Expected errors print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vidccnet.cli import fail, interruptible, missing_folder, sigterm_unwinds, unwritable

PROG = "show_attention.py"
MAX_CLIP_LEN = 32  # columns of the picture


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--checkpoint", required=True, help="a .pt written by scripts/train.py")
    p.add_argument("--frame", type=int, required=True, help="query frame index in the video")
    p.add_argument("--pixel", type=int, nargs=2, required=True, metavar=("Y", "X"),
                   help="query pixel (row, column) in the video's frames")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--clip-len", type=int, default=None, metavar="T",
                   help="frames per clip (default: from the checkpoint's config)")
    p.add_argument("--anchor", choices=("causal", "centre"), default="causal",
                   help="where frame F sits in its clip: last (causal) or middle (centre)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    return p.parse_args(argv)


def resized_pixel(pixel: tuple[int, int], source: tuple[int, int],
                  size: tuple[int, int]) -> tuple[int, int]:
    """The pixel of a ``source`` (H, W) frame resized to ``size`` (h, w) that the centre of
    source ``pixel`` (y, x) falls in."""
    y, x = ((p + 0.5) * new / old for p, new, old in zip(pixel, size, source))
    return min(size[0] - 1, int(y)), min(size[1] - 1, int(x))


def draw(frames: np.ndarray, indices: Sequence[int], pixel: tuple[int, int], result,
         title: str, path: Path) -> None:
    """One row per recurrence, one column per clip frame (uint8 (T, H, W, 3)); saves a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    from vidccnet.writer import save_figure

    T, H, W = frames.shape[:3]
    t, h, w = result.cell
    _, gh, gw = result.grid
    R = len(result.loops)
    fig = Figure(figsize=(2.4 * T + 1.2, 2.4 * R * H / W + 0.6 * R + 0.4), dpi=100,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(R, T, squeeze=False)
    for r, wt in enumerate(result.loops):
        time, row, column = (x.cpu().numpy() for x in wt)
        norm = PowerNorm(0.5, vmin=0.0, vmax=max(time.max(), row.max(), column.max()))
        for j in range(T):
            grid = np.full((gh, gw), np.nan)  # NaN: transparent (not a key of the query)
            if j == t:
                grid[:, w] = column
                grid[h, :] = row  # the centre's weight is in the row
                label = f"row+column {row.sum() + column.sum():.3f}"
            elif result.temporal:
                grid[h, w] = time[j]
                label = f"time {time[j]:.3f}"
            else:
                label = "(per-frame attention)"
            ax = axes[r, j]
            ax.imshow(frames[j])
            im = ax.imshow(grid, cmap="inferno", norm=norm, alpha=0.75, extent=(0, W, H, 0),
                           interpolation="nearest")
            ax.plot(pixel[1], pixel[0], marker="+", ms=10, mew=2,
                    color="red" if j == t else "cyan")
            ax.set_xticks([])
            ax.set_yticks([])
            query = " (query)" if j == t else ""
            ax.set_title(f"frame {indices[j]}{query}\n{label}", fontsize=8)
        axes[r, 0].set_ylabel(f"recurrence {r + 1}")
        fig.colorbar(im, ax=list(axes[r]), label="weight (sqrt scale)")
    # wrapped to the picture's width (about 13 characters an inch at 9 pt): 1-2 frames are narrow
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 13)), fontsize=9)
    save_figure(fig, path)  # a .png (checked by main)


def run(args: argparse.Namespace) -> dict:
    """Read the clip, compute the weights, draw them; returns the JSON summary."""
    import torch

    from vidccnet.data.clips import anchor_position, clip_indices
    from vidccnet.data.video import open_video
    from vidccnet.nn import model_attention_weights
    from vidccnet.predict import VideoSegmenter

    out = Path(args.out)
    if msg := missing_folder(out, "--out") or unwritable(out, "--out"):
        raise ValueError(msg)
    for given, what in ((args.video, "the input video"), (args.checkpoint, "the checkpoint")):
        if out.resolve() == Path(given).resolve():
            raise ValueError(f"--out '{out}' is {what}; choose another file name")
    source = Path(args.video).resolve()
    if source.is_dir() and source in out.resolve().parents:
        raise ValueError(f"--out '{out}' is inside the input folder '{args.video}', whose files "
                         "are the video's frames; write the picture elsewhere")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out '{out}' exists; choose another name or pass --overwrite")
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out '{out}' must end in .png (the picture is a PNG)")
    if args.clip_len is not None and not 1 <= args.clip_len <= MAX_CLIP_LEN:
        raise ValueError(f"--clip-len {args.clip_len}: the picture has one column per clip "
                         f"frame; give 1 to {MAX_CLIP_LEN}")
    seg = VideoSegmenter(args.checkpoint, device=args.device, clip_len=args.clip_len)
    if seg.clip_len > MAX_CLIP_LEN:
        raise ValueError(f"the checkpoint's clip length {seg.clip_len} is more columns than the "
                         f"picture takes; pass --clip-len 1 to {MAX_CLIP_LEN}")
    with open_video(args.video) as reader:
        n, (H, W) = len(reader), reader.size
        if not 0 <= args.frame < n:
            raise ValueError(f"--frame {args.frame} is outside the video ({n} frames: 0..{n - 1})")
        y, x = args.pixel
        if not (0 <= y < H and 0 <= x < W):
            raise ValueError(f"--pixel {y} {x} is outside the {H}x{W} frame (Y < {H}, X < {W})")
        T = seg.clip_len
        indices = clip_indices(args.frame, n, T, seg.frame_stride, args.anchor)
        frames = reader.get_batch(indices)  # (T, H, W, 3) uint8
    size = seg.inference_size_for(H, W)  # (h, w): the checkpoint's scale, as segment_video
    clip = torch.stack([seg._prepare(f, size) for f in frames], dim=1)[None]  # (1, 3, T, h, w)
    query = resized_pixel((y, x), (H, W), size)
    result = model_attention_weights(seg.model, clip, anchor_position(T, args.anchor), query)
    kind = "3D (time line, row, column)" if result.temporal else "per-frame 2D (row, column)"
    title = (f"{Path(args.checkpoint).name}: {kind} attention of pixel (y={y}, x={x}) in frame "
             f"{args.frame}, feature cell {result.cell[1:]} of {result.grid[1]}x{result.grid[2]}")
    draw(frames, indices, (y, x), result, title, out)
    return {
        "out": str(out), "frames": indices, "query_frame": args.frame, "pixel": [y, x],
        "inference_size": list(size),
        "cell": list(result.cell), "grid": list(result.grid), "temporal": result.temporal,
        "time_weights": [[round(float(v), 6) for v in wt.time] for wt in result.loops],
        "row_column_weight": [round(float(wt.row.sum() + wt.column.sum()), 6)
                              for wt in result.loops],
    }


@interruptible(PROG, "no picture was written")
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    from vidccnet.data.video import VideoReadError
    from vidccnet.engine.checkpoint import CheckpointError

    try:
        with sigterm_unwinds():  # the picture's temporary file is removed as on Ctrl-C
            summary = run(args)
    except (CheckpointError, VideoReadError, ValueError, IndexError, OSError) as exc:
        if args.debug:
            raise
        return fail(PROG, exc)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
