"""Global-memory traffic of the fused criss-cross attention kernels, measured on CPU.

    python scripts/kernel_traffic.py                         # CamVid and VSPW shapes, B=1 T=2
    python scripts/kernel_traffic.py --case camvid --frames 2 3 --json traffic.json
    python scripts/kernel_traffic.py --sites                 # also every load/store site

Runs the real Triton kernels (forward, then backward) in Triton's CPU interpreter with every
tl.load / tl.store / atomic instrumented (vidccnet.ops.traffic.TrafficMeter) and reports, per
launch and in total, per position and as a multiple of the bandwidth floor:

* requested bytes: what all loads and stores ask for (re-reads included);
* distinct bytes: per launch, the bytes read at least once plus the bytes written at least once
  (re-reads inside a launch assumed served by L2), summed over launches;
* sector amplification: 32-byte sectors touched per instruction x 32 / bytes moved (1.0 =
  coalesced), overall, for the worst load/store site, and for the worst main site (one moving
  >= 1 % of its launch's bytes: q, k, v, out, dO, dq, dk, dv tiles rather than the 4-byte lse).

Floors (b = bytes per element): forward reads q, k, v and writes out and the fp32 lse once,
(2 Cqk + 2 Cv) b + 4 bytes per position; backward reads q, k, v, out, dO, lse and writes dq, dk, dv
once, (4 Cqk + 4 Cv) b + 4. Shapes keep H, W and the channels of the named case; B and T are
reduced for interpreter speed (pass several --frames to see that the per-position figures hold).
Only the kernels are measured: inputs are made channels-last so the op does no layout copy.
The forward is the two-launch kernel (the default) unless VIDCCNET_CCA_FUSED_FORWARD=1 (the
one-launch forward). Atomics (the fused forward's per-frame counters) count 4 bytes read and 4
written per executed instruction; in the interpreter a spin-wait executes once.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from vidccnet.cli import fail, interruptible, missing_folder  # noqa: E402
from vidccnet.engine.report import write_json  # noqa: E402

PROG = "kernel_traffic.py"

# name: (B, T, H, W, Cqk, Cv, dtype) as trained / evaluated.
CASES = {
    "camvid": (2, 5, 90, 120, 64, 512, torch.float16),
    "vspw": (4, 4, 60, 60, 64, 512, torch.bfloat16),
}


def floors(cqk: int, cv: int, nbytes: int) -> tuple[int, int]:
    """Forward and backward bandwidth floors in bytes per position."""
    return (2 * cqk + 2 * cv) * nbytes + 4, (4 * cqk + 4 * cv) * nbytes + 4


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) with channels-last storage (a view of a (B, T, H, W, C) tensor)."""
    return x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)


def measure(
    case: str,
    B: int,
    T: int,
    qk_std: float = 0.5,
    backward: bool = True,
    size: tuple[int, int] | None = None,
) -> dict:
    """Run forward + backward of the Triton kernels under the meter; return the figures."""
    from vidccnet.ops import triton_cca
    from vidccnet.ops.traffic import TrafficMeter

    _, _, H, W, cqk, cv, dtype = CASES[case]
    H, W = size if size is not None else (H, W)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(B, cqk, T, H, W, generator=g) * qk_std for _ in range(2))
    v, go = (torch.randn(B, cv, T, H, W, generator=g) for _ in range(2))
    q, k, v, go = (channels_last(x.to(dtype)) for x in (q, k, v, go))
    positions = B * T * H * W
    nbytes = q.element_size()
    floor_f, floor_b = floors(cqk, cv, nbytes)

    t0 = time.perf_counter()
    with TrafficMeter() as fwd:
        out, lse = triton_cca.cca_forward(q, k, v, 1.0)
    with TrafficMeter() as bwd:
        if backward:
            triton_cca.cca_backward(q, k, v, out, lse, go, 1.0)
    seconds = time.perf_counter() - t0

    def part(meter, floor: int) -> dict:
        tot = meter.totals()
        launches = []
        for lt in meter.launches:
            s = lt.summary()
            s["requested_per_position"] = lt.requested / positions
            s["distinct_per_position"] = lt.distinct / positions
            launches.append(s)
        return {
            "launch_count": tot["launches"],
            "floor_per_position": floor,
            "requested_per_position": tot["requested_bytes"] / positions,
            "distinct_per_position": tot["distinct_bytes"] / positions,
            "requested_x_floor": tot["requested_bytes"] / positions / floor,
            "distinct_x_floor": tot["distinct_bytes"] / positions / floor,
            "sector_amplification": tot["sector_amplification"],
            "max_site_amplification": tot["max_site_amplification"],
            "max_main_site_amplification": tot["max_main_site_amplification"],
            "launches": launches,
        }

    result = {
        "case": case,
        "B": B,
        "T": T,
        "H": H,
        "W": W,
        "Cqk": cqk,
        "Cv": cv,
        "dtype": str(dtype).replace("torch.", ""),
        "positions": positions,
        "interpreter_seconds": round(seconds, 1),
        "forward": part(fwd, floor_f),
    }
    if not backward:
        return result
    f, b = result["forward"], part(bwd, floor_b)
    both = {
        "launch_count": f["launch_count"] + b["launch_count"],
        "floor_per_position": floor_f + floor_b,
        "requested_per_position": f["requested_per_position"] + b["requested_per_position"],
        "distinct_per_position": f["distinct_per_position"] + b["distinct_per_position"],
    }
    both["requested_x_floor"] = both["requested_per_position"] / both["floor_per_position"]
    both["distinct_x_floor"] = both["distinct_per_position"] / both["floor_per_position"]
    return {**result, "backward": b, "forward_backward": both}


def format_report(r: dict, sites: bool) -> str:
    head = (
        f"{r['case']}: B={r['B']} T={r['T']} {r['H']}x{r['W']} Cqk={r['Cqk']} Cv={r['Cv']} "
        f"{r['dtype']} ({r['positions']} positions, {r['interpreter_seconds']} s in the "
        "interpreter)"
    )
    lines = [
        head,
        "| part | launch | grid | requested B/pos | distinct B/pos | sector amp | worst site amp |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    parts = [n for n in ("forward", "backward") if n in r]
    for name in parts:
        part = r[name]
        for lt in part["launches"]:
            worst = max((s["sector_amplification"] for s in lt["sites"] if s["bytes"]), default=0.0)
            lines.append(
                f"| {name} | {lt['kernel']} | {tuple(lt['grid'])} "
                f"| {lt['requested_per_position']:.0f} | {lt['distinct_per_position']:.0f} "
                f"| {lt['sector_amplification']:.2f} | {worst:.2f} |"
            )
    lines.append("")
    lines.append(
        "| part | launches | floor B/pos | requested B/pos (x floor) | distinct B/pos (x floor) "
        "| sector amp | worst site amp | worst main site amp |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in [n for n in ("forward", "backward", "forward_backward") if n in r]:
        p = r[name]
        amp = (
            f"{p['sector_amplification']:.2f} | {p['max_site_amplification']:.2f} "
            f"| {p['max_main_site_amplification']:.2f}"
            if "sector_amplification" in p
            else " | | "
        )
        launches = p.get("launch_count", "")
        lines.append(
            f"| {name} | {launches} | {p['floor_per_position']} "
            f"| {p['requested_per_position']:.0f} ({p['requested_x_floor']:.2f}x) "
            f"| {p['distinct_per_position']:.0f} ({p['distinct_x_floor']:.2f}x) | {amp} |"
        )
    if sites:
        lines += [
            "",
            "| part | kernel | line | via kernel line | kind | buffer | B/pos | sector amp |",
            "|---|---|---:|---:|---|---|---:|---:|",
        ]
        for name in parts:
            for lt in r[name]["launches"]:
                for s in lt["sites"]:
                    lines.append(
                        f"| {name} | {lt['kernel']} | {s['line']} | {s['call_line']} "
                        f"| {s['kind']} "
                        f"| {s['buffer']} | {s['bytes'] / r['positions']:.1f} "
                        f"| {s['sector_amplification']:.2f} |"
                    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--case", nargs="+", choices=sorted(CASES), default=["camvid", "vspw"])
    ap.add_argument("--batch", type=int, default=1, help="B (reduced for speed; default 1)")
    ap.add_argument(
        "--frames",
        type=int,
        nargs="+",
        default=[2],
        help="T values to measure (reduced for speed; default 2)",
    )
    ap.add_argument("--sites", action="store_true", help="also list every load/store site")
    ap.add_argument("--forward-only", action="store_true", help="skip the backward")
    ap.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="override the case's feature size (channels and dtype kept)",
    )
    ap.add_argument(
        "--block-v",
        type=int,
        default=None,
        help="Cv chunk of the kernels' inner loop in the interpreter (default: the "
        "CPU config, 64). Any power of 2 dividing Cv moves the same bytes in the "
        "same rows; larger is faster to interpret",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write all figures here")
    return ap.parse_args(argv)


@interruptible(PROG, "nothing written")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.batch < 1 or min(args.frames) < 1 or (args.size and min(args.size) < 1):
            raise ValueError("--batch, --frames and --size must be >= 1")
        if args.block_v is not None and (args.block_v < 1 or args.block_v & (args.block_v - 1)):
            raise ValueError(f"--block-v {args.block_v}: the kernels' Cv chunk must be a power "
                             "of 2 (tl.arange), e.g. 64 or 512")
        if msg := missing_folder(args.json, "--json"):
            raise ValueError(msg)
        from vidccnet.ops.triton_cca import triton_available

        ok, why = triton_available(torch.device("cpu"))
        if not ok:
            raise RuntimeError(f"the Triton interpreter is not usable: {why}")
    except (ValueError, RuntimeError) as exc:
        return fail(PROG, exc)
    results = []
    if args.block_v is not None:
        from vidccnet.ops import triton_cca

        if hasattr(triton_cca, "CPU_CONFIG"):
            triton_cca.CPU_CONFIG = (args.block_v, triton_cca.CPU_CONFIG[1])
    for case in args.case:
        for T in args.frames:
            r = measure(
                case,
                args.batch,
                T,
                backward=not args.forward_only,
                size=tuple(args.size) if args.size else None,
            )
            results.append(r)
            print(format_report(r, args.sites), flush=True)
            print(flush=True)
    if args.json is not None:
        write_json(args.json, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
