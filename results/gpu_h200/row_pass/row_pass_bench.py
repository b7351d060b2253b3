"""Three versions of the Triton kernels side by side on a GPU: correctness and speed.

    python results/gpu_h200/row_pass/row_pass_bench.py --warm VERSION CASE   # compile only
    python results/gpu_h200/row_pass/row_pass_bench.py --json OUT.json        # check and time

Versions, each a copy of vidccnet/ops/triton_cca.py loaded as a module of its own: ``order``
(the library at commit "row launch frames fastest": the row launch in (b, h, t) order),
``head`` (the library before it, frame-major rows) and ``new`` (order + the row backward's
time-line dP loop with the row's dO and V chunks loaded once for all T frames), the last two
made from the library file by the line edits in versions/<name>.json (refused if the library
file is not the one they were made from). Cases as scripts/bench_attention.py: camvid
(2, 5, 90, 120, 64, 512) float16, vspw (4, 4, 60, 60, 64, 512) bfloat16; unit-normal inputs,
scale 1. For each case: every version's out, dq, dk, dv against the float64 reference path
(err/tol as bench_attention.py) and bitwise against ``head``; then forward and forward +
backward wall times (min of the interleaved repeats), untuned (GPU_CONFIGS[1]) and autotuned.
The JSON is rewritten after every case.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
import bench_attention as ba  # noqa: E402

VERSIONS = ("head", "order", "new")
CASES = {  # quick: a dry run on the CPU interpreter
    "camvid": (ba.CASES["camvid"], torch.float16),
    "vspw": (ba.CASES["vspw"], torch.bfloat16),
    "quick": (ba.CASES["quick"], torch.float16),
}


def source(name: str) -> Path:
    """The version's kernel file: the library's, or it with the line edits of versions/NAME.json."""
    import atexit
    import hashlib
    import shutil
    import tempfile

    lib = ROOT / "vidccnet" / "ops" / "triton_cca.py"
    if name == "order":
        return lib
    spec = json.loads((HERE / "versions" / f"{name}.json").read_text())
    text = lib.read_text()
    if hashlib.sha256(text.encode()).hexdigest() != spec["base_sha256"]:
        raise SystemExit(f"{lib} is not the file versions/{name}.json was made from")
    lines = text.splitlines(keepends=True)
    for i1, i2, new in reversed(spec["edits"]):
        lines[i1:i2] = [new] if new else []
    folder = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, folder, True)
    path = Path(folder) / f"triton_cca_{name}.py"
    path.write_text("".join(lines))
    return path


def load(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"vidccnet.ops.tc_{name}", source(name))
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "vidccnet.ops"
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def fwd_bwd(mod, q, k, v, go):
    out, lse = mod.cca_forward(q, k, v, 1.0)
    return (out, *mod.cca_backward(q, k, v, out, lse, go, 1.0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", nargs=2, metavar=("VERSION", "CASE"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=["camvid", "vspw"])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    if args.warm and (args.warm[0] not in VERSIONS or args.warm[1] not in CASES):
        ap.error(f"--warm VERSION CASE: versions {', '.join(VERSIONS)}; cases {', '.join(CASES)}")
    dev = torch.device(args.device)
    if args.warm:  # compile every config (autotune) and the untuned one: fills Triton's cache
        mod = load(args.warm[0])
        c, dt = CASES[args.warm[1]]
        q, k, v, go = ba.make_inputs(c, dev, dt)
        for tune in ("0", "1"):  # untuned first: the bench's checks need it first
            os.environ["VIDCCNET_CCA_AUTOTUNE"] = tune
            fwd_bwd(mod, q, k, v, go)
        ba.sync(dev)
        print("warm", args.warm, flush=True)
        return
    mods = {n: load(n) for n in VERSIONS}
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    result = {"gpu": gpu, "torch": torch.__version__, "triton": __import__("triton").__version__,
              "cases": {}}
    for case in args.cases:
        c, dt = CASES[case]
        inputs = ba.make_inputs(c, dev, dt)
        q, k, v, go = inputs
        ref_out, ref_grads = ba.float64_reference(inputs)
        ref = (ref_out, *ref_grads)
        row = {"dtype": str(dt), "shape": [c.B, c.T, c.H, c.W, c.Cqk, c.Cv], "check": {}, "ms": {}}
        os.environ["VIDCCNET_CCA_AUTOTUNE"] = "0"
        outs = {n: fwd_bwd(m, q, k, v, go) for n, m in mods.items()}
        for n, o in outs.items():
            again = fwd_bwd(mods[n], q, k, v, go)
            row["check"][n] = {
                "err_tol": {name: ba.error_vs_float64([x], [r], ba.TOLERANCE[dt])
                            for name, x, r in zip(("out", "dq", "dk", "dv"), o, ref)},
                "bitwise_equal_to_head": [bool(torch.equal(x, y)) for x, y in zip(o, outs["head"])],
                "repeatable": [bool(torch.equal(x, y)) for x, y in zip(o, again)],
            }
        del outs
        for tune in ("0", "1"):
            os.environ["VIDCCNET_CCA_AUTOTUNE"] = tune
            for m in mods.values():  # autotune / warm outside the timing
                fwd_bwd(m, q, k, v, go)
            times = {(n, w): [] for n in mods for w in ("fwd", "fwd_bwd")}
            names = list(mods)
            for r in range(args.repeats):
                for n in names[r % 3:] + names[: r % 3]:  # rotated: each version goes first
                    m = mods[n]
                    ba.sync(dev)
                    t0 = time.perf_counter()
                    m.cca_forward(q, k, v, 1.0)
                    ba.sync(dev)
                    t1 = time.perf_counter()
                    fwd_bwd(m, q, k, v, go)
                    ba.sync(dev)
                    t2 = time.perf_counter()
                    times[(n, "fwd")].append((t1 - t0) * 1e3)
                    times[(n, "fwd_bwd")].append((t2 - t1) * 1e3)
            row["ms"]["tuned" if tune == "1" else "untuned"] = {
                f"{n} {w}": round(min(ts), 4) for (n, w), ts in times.items()}
        result["cases"][case] = row
        print(json.dumps({case: row}), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
