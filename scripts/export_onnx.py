"""Export a trained vidccnet checkpoint to ONNX (dynamic batch, clip length and frame size).

    python scripts/export_onnx.py runs/demo/best.pt --out model.onnx
    python scripts/export_onnx.py runs/camvid_r50/best.pt --out camvid.onnx --check
    python scripts/export_onnx.py best.pt --out t5.onnx --static --example 1 5 360 480

The graph takes ``clip``: float32 (B, 3, T, H, W), RGB frames scaled to [0, 1] and normalised
with the ImageNet mean / std (stored in the file's metadata with the class names), and returns
``logits`` (B, K, T, H, W). B, T, H and W are dynamic (H, W >= 16) unless ``--static``.
``--check`` runs the file with onnxruntime at the example shape and at another shape and
compares with PyTorch before the file is put in place. The file is written atomically. Expected
errors print one line on stderr and exit with code 2. docs/export.md says what runs where.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
from pathlib import Path

from vidccnet.cli import (
    checkpoint_in_folder,
    fail,
    interruptible,
    missing_folder,
    one_line,
    sigterm_unwinds,
    unwritable,
)

PROG = "export_onnx.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", metavar="CKPT", help="a .pt written by scripts/train.py")
    p.add_argument("--out", required=True, help="destination .onnx file")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset, 18 or later (default: the exporter's)")
    p.add_argument("--check", action="store_true",
                   help="compare onnxruntime with PyTorch on random clips (needs onnxruntime)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="--check fails above this max |difference| per unit of logit scale "
                        "(max(1, max |logit|)); default 1e-4")
    p.add_argument("--static", action="store_true", help="fix the example's shape in the graph")
    p.add_argument("--example", type=int, nargs=4, metavar=("B", "T", "H", "W"), default=None,
                   help="example clip shape (default: 2, max(clip_len, 3), 64, 64)")
    p.add_argument("--no-optimize", action="store_true", help="skip the exporter's optimiser")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    return p.parse_args(argv)


class UserError(ValueError):
    """A mistake in the command line or its files."""


def check_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The checkpoint and output paths, validated before torch is imported."""
    ckpt, out = Path(args.checkpoint), Path(args.out)
    if ckpt.is_dir():
        raise UserError(f"checkpoint '{ckpt}' is a folder, not a checkpoint file; "
                        f"{checkpoint_in_folder(ckpt)}")
    if not ckpt.is_file():
        raise UserError(f"checkpoint '{ckpt}' not found")
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out must end in .onnx, got '{out}'")
    if out.exists() and (out.is_dir() or out.resolve() == ckpt.resolve()):
        raise UserError(f"--out '{out}' is a folder or the checkpoint itself")
    if out.exists() and not args.overwrite:
        raise UserError(f"--out '{out}' exists; pass --overwrite to replace it")
    if msg := missing_folder(out, "--out") or unwritable(out, "--out"):
        raise UserError(msg)
    if args.example is not None and min(args.example) < 1:
        raise UserError(f"--example sizes must be positive, got {args.example}")
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise UserError(f"--tolerance must be > 0, got {args.tolerance}")
    if args.opset is not None and args.opset < 18:  # vidccnet.export.MIN_OPSET
        raise UserError(f"--opset {args.opset}: torch.onnx's exporter writes opset 18 and later; "
                        "use opset 18 or later")
    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if args.check else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"{', '.join(missing)} not installed: pip install -e '.[export]'")
    import onnx

    if args.opset is not None and args.opset > (newest := onnx.defs.onnx_opset_version()):
        raise UserError(f"--opset {args.opset} is newer than the installed onnx knows "
                        f"({newest}); use opset 18 to {newest}, or upgrade onnx")
    return ckpt, out


def run(args: argparse.Namespace, ckpt_path: Path, out: Path) -> dict:
    """Export (and check) the model; returns a summary dict. Raises CheckpointError & co."""
    import torch

    from vidccnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from vidccnet.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
    from vidccnet.export import MIN_FRAMES, MIN_SIZE, compare_onnx, export_onnx

    if args.example is not None and not args.static:
        B, T, H, W = args.example
        if B < 2 or T < MIN_FRAMES or min(H, W) < MIN_SIZE:
            raise UserError(
                f"--example {B} {T} {H} {W}: a dynamic export needs B >= 2, T >= {MIN_FRAMES} "
                f"and H, W >= {MIN_SIZE}; raise them, or pass --static to fix this shape"
            )
    ckpt = load_checkpoint(ckpt_path)
    model, cfg = build_model_from_checkpoint(ckpt, "cpu")
    model.float()
    if args.example is not None:
        B, T, H, W = args.example
    else:
        B, T, H, W = 2, max(int(cfg.data.clip_len), MIN_FRAMES), 64, 64
    class_names = list(cfg.data.class_names or [])
    if not class_names:
        from vidccnet.data import dataset_info

        class_names = list(dataset_info(cfg.data.name, cfg.data.root)["class_names"])
    metadata = {
        "vidccnet.model": cfg.model.name,
        "vidccnet.class_names": json.dumps(class_names),
        "vidccnet.input": "clip float32 (B, 3, T, H, W): RGB / 255, normalised with mean, std",
        "vidccnet.mean": json.dumps(list(IMAGENET_MEAN)),
        "vidccnet.std": json.dumps(list(IMAGENET_STD)),
        "vidccnet.clip_len": str(cfg.data.clip_len),
        "vidccnet.checkpoint_iteration": str(ckpt.get("iteration")),
    }
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.check.onnx")
    try:
        export_onnx(
            model, tmp, example=(B, 3, T, H, W), dynamic=not args.static, opset=args.opset,
            optimize=not args.no_optimize, metadata=metadata,
        )
        checks = []
        if args.check:
            g = torch.Generator().manual_seed(0)
            shapes = [(B, 3, T, H, W)]
            if not args.static:  # a second shape proves the dimensions are dynamic
                shapes.append((max(1, B - 1), 3, T + 1, H + 8, W + 16))
            clips = [torch.randn(s, generator=g) for s in shapes]
            checks = compare_onnx(model, tmp, clips)
            for c in checks:
                allowed = args.tolerance * max(1.0, c["max_abs_logit"])
                if not c["max_abs_diff"] <= allowed:
                    raise RuntimeError(
                        f"onnxruntime and PyTorch differ by {c['max_abs_diff']:.3g} at clip shape "
                        f"{c['shape']} (allowed {allowed:.3g}); the file was not written"
                    )
        with open(tmp, "rb") as f:  # else a power cut can leave an empty file under the name
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "out": str(out),
        "bytes": out.stat().st_size,
        "model": cfg.model.name,
        "dynamic": not args.static,
        "example": [B, 3, T, H, W],
        "checks": [{**c, "shape": list(c["shape"])} for c in checks],
    }


@interruptible(PROG, "nothing written")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    try:
        ckpt_path, out = check_paths(args)  # before torch is imported: fails in a blink
    except UserError as exc:
        return fail(PROG, exc)
    from vidccnet.engine.checkpoint import CheckpointError

    try:
        with sigterm_unwinds():  # the temporary .onnx files are removed as on Ctrl-C
            summary = run(args, ckpt_path, out)
    except (UserError, CheckpointError, FileNotFoundError) as exc:
        if args.debug:
            raise
        return fail(PROG, exc)
    except Exception as exc:  # noqa: BLE001 - exporter / runtime failures: one line, exit 1
        if args.debug:
            raise
        print(f"{PROG}: error: export failed: {one_line(exc)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1
    dims = "B, 3, T, H, W (H, W >= 16)" if summary["dynamic"] else str(summary["example"])
    msg = f"{PROG}: wrote {summary['out']} ({summary['bytes'] / 1e6:.1f} MB), clip [{dims}]"
    for c in summary["checks"]:
        msg += f"; max |onnx - torch| {c['max_abs_diff']:.2g} at {tuple(c['shape'])}"
    print(msg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
