"""Convert a published CCNet checkpoint (mmsegmentation or the official release) for vidccnet.

    python scripts/convert_checkpoint.py ccnet_r50-d8_512x1024_80k_cityscapes_*.pth \
        --format mmseg --out ccnet_r50_cityscapes.pt
    python scripts/convert_checkpoint.py CS_scenes_60000.pth --format ccnet --out ccnet_r101.pt

The output is a vidccnet checkpoint of the per-frame model ``ccnet2d_resnet{50,101}`` with the
class names, palette and config it needs (input: vidccnet's RGB ImageNet normalisation); it
loads with ``torch.load(weights_only=True)``, so

    python scripts/segment_video.py drive.mp4 --checkpoint ccnet_r50_cityscapes.pt --out masks/
    python scripts/train.py --config configs/camvid_ccnet3d_r50.yaml \
        model.init_from=ccnet_r50_cityscapes.pt model.kwargs.stem=deep ...

work with it. Class names: ``--classes`` (cityscapes, ade20k), else the mmseg file's own
``meta`` (CLASSES / PALETTE, or mmseg 1.x's dataset_meta), else Cityscapes for 19 classes and
ADE20K for 150, else generic names. Every tensor of the source is converted or the conversion
fails naming the leftovers; the non-weight entries (``meta``, ``optimizer``) are listed in the
summary printed on stdout (JSON).
A file that is not such a checkpoint, or is a vidccnet checkpoint already (no conversion needed),
gives one line on stderr and exit code 2. The output is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from vidccnet.cli import fail, interruptible, sigterm_unwinds

PROG = "convert_checkpoint.py"


def _class_names(args: argparse.Namespace, conv: object) -> tuple[list[str], list, str, str]:
    """(names, palette, dataset name, where they came from)."""
    from vidccnet.data.label_sets import LABEL_SETS, label_set
    from vidccnet.visualize import default_palette

    k = conv.num_classes  # type: ignore[attr-defined]
    if args.classes:
        names, palette = label_set(args.classes)
        if len(names) != k:
            raise ValueError(
                f"--classes {args.classes} has {len(names)} classes but the checkpoint predicts {k}"
            )
        return names, palette, args.classes.lower(), "--classes"
    meta = conv.meta  # type: ignore[attr-defined]
    dataset_meta = meta.get("dataset_meta") or {}  # mmseg 1.x; 0.x: CLASSES / PALETTE
    names = meta.get("CLASSES") or dataset_meta.get("classes")
    if isinstance(names, (list, tuple)) and len(names) == k:
        pal = meta.get("PALETTE") or dataset_meta.get("palette")
        palette = (
            [tuple(int(v) for v in c) for c in pal]
            if isinstance(pal, (list, tuple)) and len(pal) == k else default_palette(k)
        )
        return [str(n).strip() for n in names], palette, "converted", "the file's meta"
    for name, (set_names, set_palette) in LABEL_SETS.items():
        if len(set_names) == k:
            return list(set_names), [tuple(c) for c in set_palette], name, f"{k} classes: {name}"
    return [f"class_{i}" for i in range(k)], default_palette(k), "converted", "generic"


@interruptible(PROG, "nothing was written")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("src", help="source checkpoint (.pth)")
    parser.add_argument("--format", required=True, choices=("mmseg", "ccnet"),
                        help="mmseg: mmsegmentation CCNet; ccnet: the official CCNet release")
    parser.add_argument("--out", required=True, help="output vidccnet checkpoint (.pt)")
    parser.add_argument("--classes", default=None, metavar="SET",
                        help="class names and palette: cityscapes or ade20k (default: the mmseg "
                        "file's meta, else cityscapes for 19 classes and ade20k for 150, "
                        "else generic names)")
    parser.add_argument("--recurrence", type=int, default=None, metavar="R",
                        help="criss-cross attention loops the model was trained with (default: "
                        "from the mmseg config in the file, else 2; the official release has "
                        "R=1 and R=2 models)")
    parser.add_argument("--trust-source", action="store_true",
                        help="allow full unpickling when weights_only loading fails (runs code "
                        "from the file: only for files from a source you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from vidccnet.engine.checkpoint import (
        CheckpointError,
        build_model_from_checkpoint,
        save_checkpoint,
    )
    from vidccnet.models.convert import (
        ConversionError,
        convert_file,
        recurrence_from_meta,
        to_checkpoint,
    )

    try:
        if os.path.isdir(args.out):
            raise ValueError(f"--out {args.out} is a folder; name the checkpoint file to write, "
                             f"e.g. {os.path.join(args.out, 'model.pt')}")
        if os.path.exists(args.out) and os.path.exists(args.src) and os.path.samefile(
                args.out, args.src):
            raise ValueError(f"--out {args.out} is the source checkpoint; choose another path")
        if os.path.exists(args.out) and not args.overwrite:
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        if args.recurrence is not None and args.recurrence < 0:
            raise ValueError(f"--recurrence must be >= 0, got {args.recurrence}")
        conv = convert_file(args.src, args.format, trust=args.trust_source)
        names, palette, dataset, origin = _class_names(args, conv)
        recurrence = args.recurrence
        if recurrence is None:
            recurrence = recurrence_from_meta(conv.meta)
        if recurrence is None:
            recurrence = 2
        ckpt = to_checkpoint(
            conv, class_names=names, palette=palette, dataset=dataset, recurrence=recurrence,
            source={"file": os.path.basename(args.src), "format": args.format},
        )
        build_model_from_checkpoint(ckpt)  # the config rebuilds the model; strict load
        with sigterm_unwinds():  # the temporary file is removed as on Ctrl-C
            save_checkpoint(args.out, ckpt)
    except (ConversionError, CheckpointError, ValueError, FileExistsError, OSError) as exc:
        if args.debug:
            raise
        return fail(PROG, exc)
    summary = {
        "out": args.out,
        "model": ckpt["config"]["model"]["name"],
        "model_kwargs": ckpt["config"]["model"]["kwargs"],
        "recurrence": recurrence,
        "num_classes": conv.num_classes,
        "classes": origin,
        "tensors_converted": len(conv.used),
        "ignored_entries": conv.ignored,
        "notes": conv.notes,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
