"""Shared memory, registers and spills of the Triton criss-cross attention kernels for given
input sizes, compiled for an NVIDIA GPU architecture on any machine (no GPU needed).

    python scripts/kernel_resources.py                  # CamVid size, 3 dtypes, sm_90, H100
    python scripts/kernel_resources.py --shape 64 512 5 128 256 --dtype bfloat16 \\
        --arch 80 --limit 166912                        # Cityscapes /8, bf16, A100

For each dtype and input size ``Cqk Cv T H W`` it compiles the launches the library makes (the
forward; the backward for all three gradients) through Triton's own launch path (the warm-up
compile: argument binding, specialisation, the full compile with the bundled ptxas) against a
stand-in driver for an sm_<arch> GPU that runs nothing, and prints each launch's tiles, shared
memory per block, registers and spill stack (``cuobjdump``), then the library's verdict
(``shared_memory_shortfall``, what backend ``auto`` follows) for inference (forward) and
training (forward + backward) against ``--limit`` bytes of shared memory per block (H100 / H200
232448, A100 166912, sm_86 / sm_89 101376). Autotuned kernels (the default, as on a GPU) are
compiled in every config and report the one with the least shared memory; ``--no-autotune``
compiles the single untuned config. Tens of seconds per launch (minutes for float32 at
256-wide lines). ``TRITON_INTERPRET`` must be unset.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from vidccnet.cli import fail, interruptible, missing_folder

PROG = "kernel_resources.py"
DTYPES = ("float32", "float16", "bfloat16")
CAMVID = (64, 512, 5, 90, 120)  # Cqk, Cv, T, H, W of the CamVid recipe (720 x 960 / 8)


class StandInDriver:
    """Triton's driver for an sm_<arch> GPU that is not there: Triton compiles for it (warm-up
    only; nothing is launched) and reads its shared-memory limit."""

    def __init__(self, arch: int, limit: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)
        self.utils = SimpleNamespace(get_device_properties=lambda index: {"max_shared_mem": limit})

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> object:
        return self.target

    def get_benchmarker(self):  # Triton 3.3's Autotuner asks for it when built; never called
        def refuse(*args, **kwargs):
            raise RuntimeError("nothing can be timed without a GPU")
        return refuse


def _usage(cubin: bytes, bindir: Path) -> dict[str, int]:
    """Registers per thread and spill stack bytes of a one-kernel cubin (``cuobjdump``)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run([str(bindir / "cuobjdump"), "--dump-resource-usage", f.name],
                             capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", res)
    return dict(registers=int(found[1]), stack=int(found[2])) if found else {}


@interruptible(PROG, "nothing written")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=5, action="append",
                    metavar=("CQK", "CV", "T", "H", "W"),
                    help=f"input size (repeatable; default {' '.join(map(str, CAMVID))})")
    ap.add_argument("--dtype", choices=DTYPES, action="append", help="repeatable; default all")
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90)")
    ap.add_argument("--limit", type=int, default=232448,
                    help="shared memory per block in bytes (default 232448: H100 / H200)")
    ap.add_argument("--no-autotune", action="store_true",
                    help="compile the one untuned config (VIDCCNET_CCA_AUTOTUNE=0)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if bad := next((shape for shape in args.shape or [] if min(shape) < 1), None):
        return fail(PROG, ValueError(f"--shape {' '.join(map(str, bad))}: sizes must be >= 1"))
    if args.limit < 1:
        return fail(PROG, ValueError(f"--limit must be >= 1 byte, got {args.limit}"))
    if msg := missing_folder(args.json, "--json"):  # before minutes of compiling, not after
        return fail(PROG, ValueError(msg))
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return fail(PROG, RuntimeError("unset TRITON_INTERPRET: this compiles for the GPU"))
    if args.no_autotune:
        os.environ["VIDCCNET_CCA_AUTOTUNE"] = "0"
    try:
        import torch
        import triton
        from triton.runtime import driver
    except ImportError as exc:
        return fail(PROG, exc)
    from vidccnet.ops import triton_cca

    driver.set_active(StandInDriver(args.arch, args.limit))
    torch.cuda.device = lambda index: contextlib.nullcontext()  # no CUDA device to select here
    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    cuda = torch.device("cuda", 0)
    results = []
    for name in args.dtype or DTYPES:
        dtype = getattr(torch, name)
        for cqk, cv, T, H, W in args.shape or [CAMVID]:
            shape = (1, T, H, W, cqk, cv)
            need = (True, True, True)
            launches = [("forward", x) for x in triton_cca._forward_launches(
                triton_cca._stand_ins(dtype), 1.0, shape)]
            launches += [("backward", x) for x in triton_cca._backward_launches(
                triton_cca._stand_ins(dtype, need), 1.0, shape, need)]
            print(f"{name} Cqk={cqk} Cv={cv} T={T} H={H} W={W}, sm_{args.arch}:", flush=True)
            rows = []
            for what, launch in launches:
                try:
                    compiled = triton_cca._compiled(launch)
                except Exception as exc:  # a compiler error is the finding here
                    return fail(PROG, exc)
                kwargs = launch[3]
                tiles = {n: kwargs[n] for n in ("BLOCK_L", "BLOCK_H", "BLOCK_W", "CQK_PAD")
                         if n in kwargs}
                meta = compiled.metadata
                row = dict(launch=what, kernel=meta.name, tiles=tiles, num_warps=meta.num_warps,
                           num_stages=meta.num_stages, shared=meta.shared,
                           **_usage(compiled.asm["cubin"], bindir))
                rows.append(row)
                usage = " ".join(f"{n}={row[n]}" for n in ("registers", "stack") if n in row)
                print(f"  {what:8s} {meta.name} {tiles} warps={meta.num_warps} "
                      f"stages={meta.num_stages}: "
                      f"shared={meta.shared} {usage}", flush=True)
            verdicts = {}
            for use, grads in (("inference", None), ("training", need)):
                why = triton_cca.shared_memory_shortfall(cuda, dtype, cqk, T, H, W, cv, grads)
                verdicts[use] = why
                print(f"  {use}: {'fits' if not why else why}", flush=True)
            results.append(dict(dtype=name, shape=dict(cqk=cqk, cv=cv, T=T, H=H, W=W),
                                launches=rows, inference=verdicts["inference"],
                                training=verdicts["training"]))
    if args.json:
        from vidccnet.engine.report import write_json

        write_json(args.json, dict(arch=args.arch, limit=args.limit,
                                   autotune=not args.no_autotune, results=results), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
