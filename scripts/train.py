"""Train a video segmentation model.

    python scripts/train.py --config configs/synthetic_tiny.yaml
    python scripts/train.py --config configs/camvid_ccnet3d_r50.yaml data.root=/data/camvid \
        runtime.output_dir=runs/camvid_r50 optim.lr=0.005
    python scripts/train.py --config configs/synthetic_tiny.yaml --resume   # continue last.pt
    torchrun --nproc_per_node 4 scripts/train.py --config configs/camvid_ccnet3d_r50.yaml

Overrides are ``section.key=value`` (YAML values). Expected errors (missing config, unknown key,
missing checkpoint or dataset, non-finite loss) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from vidccnet.cli import fail

AMP_HELP = (
    "Mixed precision: runtime.amp=bf16|fp16 autocasts on CUDA only; on CPU it is ignored with a "
    "warning and training runs in float32 (CPU autocast is much slower than float32)."
)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from vidccnet.engine.checkpoint import CheckpointError
    from vidccnet.engine.config import ConfigError
    from vidccnet.engine.train import TrainingError

    errors: list[type[BaseException]] = [
        ConfigError, CheckpointError, TrainingError, FileNotFoundError, NotADirectoryError,
        ValueError, KeyError,
    ]
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=AMP_HELP)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--resume", action="store_true",
                        help="continue from runtime.output_dir/last.pt")
    parser.add_argument("--log-level", default="INFO", help="logging level (rank 0)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)

    rank = int(os.environ.get("RANK", "0"))
    level = getattr(logging, args.log_level.upper(), logging.INFO) if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from vidccnet.engine.config import load_config
    from vidccnet.engine.report import to_jsonable
    from vidccnet.engine.train import train

    try:
        cfg = load_config(args.config, args.overrides)
        result = train(cfg, resume=args.resume, name=args.config)
    except _expected_errors() as exc:
        if args.debug:
            raise
        return fail("train.py", exc)
    except KeyboardInterrupt:
        print("train.py: interrupted; continue with --resume (last.pt is kept)", file=sys.stderr)
        return 130
    if rank == 0:
        print(json.dumps(to_jsonable(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
