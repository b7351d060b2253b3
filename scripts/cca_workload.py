#!/usr/bin/env python
"""Run the Triton criss-cross attention kernels, forward and backward, a few times: the workload
that a profiler or sanitizer wraps (``scripts/gpu_check.sh``, steps ``ncu_camvid`` and
``sanitize``).

    ncu --clock-control none -k regex:"_(fwd|bwd)" --launch-skip 4 --launch-count 4 \\
        python scripts/cca_workload.py --iters 2        # the second iteration's 4 kernels
    compute-sanitizer --tool racecheck python scripts/cca_workload.py --shape 1 64 128 2 16 128

Each iteration is one ``cca_forward`` and one ``cca_backward`` of all three gradients: 4
launches with the default two-launch forward (3 with ``VIDCCNET_CCA_FUSED_FORWARD=1``). Set
``VIDCCNET_CCA_AUTOTUNE=0`` so that no autotuning launches come first (the untuned config is
then the one measured). Inputs are channels-last, as the model's attention hands them over, so
no layout copy runs between the kernels. Prints one line: the shape, dtype, launches per
iteration and the run's wall time. Runs on CPU under ``TRITON_INTERPRET=1`` too (slowly; for
tests).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidccnet.cli import fail  # noqa: E402

PROG = "cca_workload.py"
DTYPES = ("float16", "bfloat16", "float32")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=6, default=[2, 64, 512, 5, 90, 120],
                   metavar=("B", "CQK", "CV", "T", "H", "W"),
                   help="input size (default: the CamVid case of bench_attention.py)")
    p.add_argument("--dtype", choices=DTYPES, default="float16")
    p.add_argument("--iters", type=int, default=2, help="forward + backward iterations")
    p.add_argument("--device", default="cuda", help="cuda, or cpu under TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    if args.iters < 1:
        p.error("--iters must be >= 1")
    if min(args.shape) < 1:
        p.error("--shape needs six sizes >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from vidccnet.ops import triton_cca

    try:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise RuntimeError(f"--device {args.device} is not a device: use cuda (or cpu under "
                               "TRITON_INTERPRET=1)") from None
        ok, why = triton_cca.triton_available(device)
        if not ok:
            raise RuntimeError(f"the Triton kernels cannot run on {args.device}: {why}")
        B, cqk, cv, T, H, W = args.shape
        dtype = getattr(torch, args.dtype)
        g = torch.Generator().manual_seed(0)

        def channels_last(c: int, std: float) -> torch.Tensor:  # (B, c, T, H, W) view
            x = torch.randn(B, T, H, W, c, generator=g) * std
            return x.to(device, dtype).permute(0, 4, 1, 2, 3)

        q, k = channels_last(cqk, cqk**-0.25), channels_last(cqk, cqk**-0.25)
        v, go = channels_last(cv, 1.0), channels_last(cv, 1.0)
        launches = 3 if triton_cca.fused_forward_enabled() else 4
        t0 = time.perf_counter()
        for _ in range(args.iters):
            out, lse = triton_cca.cca_forward(q, k, v, 1.0)
            triton_cca.cca_backward(q, k, v, out, lse, go, 1.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    except (RuntimeError, ValueError) as exc:
        return fail(PROG, exc)
    print(f"{PROG}: shape {tuple(args.shape)} {args.dtype}, {args.iters} iterations of "
          f"{launches} launches, {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
