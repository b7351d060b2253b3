"""Registers and spills of the fused criss-cross attention kernels, compiled for sm_90 on CPU.

    python scripts/kernel_resources.py  # fp16, 128-wide lines, BLOCK_V 64, 8 warps
    python scripts/kernel_resources.py --dtype bf16 --block-l 64 --block-v 128 --warps 8

Compiles each kernel variant (forward column / row of the two-launch fallback, the one-launch
forward with both line lengths --block-l, backward column / row) with Triton's NVIDIA
backend and its bundled ptxas (no GPU needed; TRITON_INTERPRET must be unset) and prints
`cuobjdump --dump-resource-usage` (REG = registers per thread, STACK = spill stack bytes).
Compiling takes tens of seconds per variant.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vidccnet.cli import fail

DTYPES = ("fp16", "bf16", "fp32")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dtype", choices=DTYPES, default="fp16")
    ap.add_argument("--block-l", type=int, default=128, help="line tile (power of two >= 16)")
    ap.add_argument("--cqk", type=int, default=64, help="padded Cqk (power of two >= 16)")
    ap.add_argument("--block-v", type=int, default=64)
    ap.add_argument("--warps", type=int, default=8)
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args(argv)
    prog = Path(sys.argv[0]).name
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return fail(prog, RuntimeError("unset TRITON_INTERPRET: this compiles for the GPU"))
    try:
        import triton
        import triton.language as tl
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from triton.compiler import compile as triton_compile
    except ImportError as exc:
        return fail(prog, exc)
    from vidccnet.ops import triton_cca

    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    dot = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32}[args.dtype]
    ds = (
        (tl.float16, "ieee")
        if args.dtype == "fp16"
        else (tl.float32, "tf32" if args.dtype == "bf16" else "ieee")
    )
    ints = {"L", "D1", "D2", "S1", "S2", "STRIDE", "NPB", "HW", "T", "CQK", "CV", "H", "W"}
    fp32 = {
        "LSE": "*fp32",
        "DELTA": "*fp32",
        "DQP": "*fp32",
        "DKP": "*fp32",
        "scale": "fp32",
        "CNT": "*i32",
    }
    tiles = dict(BLOCK_L=args.block_l, CQK_PAD=args.cqk, BLOCK_V=args.block_v, T_PAD=8, DOT_TY=dot)
    jitted = triton_cca.jit_functions()
    for raw in triton_cca._KERNEL_FNS:
        fn = jitted[raw.__name__]
        fused = raw.__name__ == "_fwd_fused_kernel"
        for last in (None,) if fused else (False, True):
            consts = dict(tiles, LAST=last)
            if fused:
                del consts["LAST"], consts["BLOCK_L"]
                consts.update(BLOCK_H=args.block_l, BLOCK_W=args.block_l)
            if raw.__name__ == "_bwd_kernel":
                consts.update(
                    NEED_DQ=True,
                    NEED_DK=True,
                    NEED_DV=True,
                    NEED_DS=True,
                    DS_TY=ds[0],
                    DS_PREC=ds[1],
                )
            sig = {
                n: "constexpr"
                if n in consts
                else fp32.get(n, "i32" if n in ints else "*" + args.dtype)
                for n in fn.arg_names
            }
            try:
                k = triton_compile(
                    ASTSource(fn, sig, consts),
                    target=GPUTarget("cuda", args.arch, 32),
                    options=dict(num_warps=args.warps),
                )
            except Exception as exc:  # compiler errors are the finding here
                return fail(prog, exc)
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(k.asm["cubin"])
                f.flush()
                res = subprocess.run(
                    [str(bindir / "cuobjdump"), "--dump-resource-usage", f.name],
                    capture_output=True,
                    text=True,
                ).stdout
            usage = " ".join(line.strip() for line in res.splitlines() if "REG" in line)
            part = "column + row" if fused else ("row" if last else "column")
            print(f"{raw.__name__} {part}: {usage} shared={k.metadata.shared}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
