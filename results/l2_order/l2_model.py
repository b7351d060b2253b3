"""Modelled DRAM reads of the Triton kernels' launches under an LRU L2, per program order.

    TRITON_INTERPRET=1 PYTHONPATH=. python results/l2_order/l2_model.py [--json OUT]

Runs each kernel version (``head``, ``order``, ``new``: results/gpu_h200/row_pass/row_pass_bench.py)
forward and backward in Triton's interpreter at a scaled-down CamVid shape and records, per
program, every load's 32-byte sectors in program order (TrafficMeter, vidccnet/ops/traffic.py).
Then it replays each launch as a GPU would, in a simple model: ``P`` programs in flight in
lockstep (one load instruction each in turn), a finished program's slot taken by the next
program id, all loads through one LRU cache of ``L2`` bytes; a miss is a DRAM read.

Scaling (CamVid on an H200: B 2, T 5, H 90, W 120, Cv 512 fp16; 132 SMs, one row-backward block per
SM; 50 MB of L2) is scaled by its programs in flight: the model keeps 1.47 frames of rows in
flight (132 / 90), 6.8 programs per slot (900 / 132), and an L2 that holds 3.08 rows of one
(B, T, H, W, Cv) tensor per program in flight (50 MB / 120 KiB = 407 rows for 132): B 2, T 5,
H 30, W 16, Cqk 16, Cv 64 fp16, P 44, L2 136 rows of 2 KiB. Cqk / Cv is 1/4 here, 1/8 at
CamVid: q and k weigh twice as much in the scaled traffic.
"""
import argparse
import collections
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]
from vidccnet.cli import fail, missing_folder  # noqa: E402
from vidccnet.ops.traffic import SECTOR_BYTES, TrafficMeter  # noqa: E402

VERSIONS = ("head", "order", "new")
B, T, H, W, CQK, CV = 2, 5, 30, 16, 16, 64
P = 44
L2 = 136 * W * CV * 2  # 407 * 44 / 132 rows


class StreamMeter(TrafficMeter):
    """TrafficMeter that also keeps, per launch, each program's load sectors in order."""

    def _begin(self, executor):
        super()._begin(executor)
        self._streams = collections.defaultdict(list)

    def _end(self):
        launch = self._current
        super()._end()
        if launch is not None:
            launch.streams = dict(self._streams)

    def _accessed(self, kind, addrs):
        if kind == "load":
            from triton.runtime import interpreter as interp

            pid = interp.interpreter_builder.grid_idx[0]
            self._streams[pid].append(np.unique(addrs // SECTOR_BYTES))


def replay(streams: dict, in_flight: int, cache_bytes: int) -> int:
    """DRAM bytes read: the programs' loads interleaved in lockstep through an LRU cache."""
    cache, capacity, missed = collections.OrderedDict(), cache_bytes // SECTOR_BYTES, 0
    pending = [streams[p] for p in sorted(streams)]
    slots = [iter(pending.pop(0)) for _ in range(min(in_flight, len(pending)))]
    while slots:
        alive = []
        for it in slots:
            sectors = next(it, None)
            if sectors is None:
                if pending:
                    alive.append(iter(pending.pop(0)))
                continue
            for s in sectors.tolist():
                if s in cache:
                    cache.move_to_end(s)
                else:
                    missed += 1
                    cache[s] = None
                    if len(cache) > capacity:
                        cache.popitem(last=False)
            alive.append(it)
        slots = alive
    return missed * SECTOR_BYTES


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if msg := missing_folder(args.json, "--json"):  # before minutes of work, not after
        return fail("l2_model.py", ValueError(msg))
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return fail("l2_model.py", RuntimeError(
            "set TRITON_INTERPRET=1: the kernels' loads are recorded in Triton's interpreter"))
    sys.path.insert(0, str(ROOT / "results" / "gpu_h200" / "row_pass"))
    from row_pass_bench import load

    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(B, CQK, T, H, W, generator=g).half() for _ in range(2))
    v, go = (torch.randn(B, CV, T, H, W, generator=g).half() for _ in range(2))
    positions = B * T * H * W
    rows = {}
    for name in VERSIONS:
        mod = load(name)
        with StreamMeter() as meter:
            out, lse = mod.cca_forward(q, k, v, 1.0)
            mod.cca_backward(q, k, v, out, lse, go, 1.0)
        for i, launch in enumerate(meter.launches):
            what = ("fwd column", "fwd row", "bwd column", "bwd row")[i]
            loads = sum(s.bytes for s in launch.sites.values() if s.kind == "load")
            dram = replay(launch.streams, P, L2)
            rows[f"{name} {what}"] = dict(
                programs=len(launch.streams), requested_load_B_per_pos=loads / positions,
                modelled_dram_read_B_per_pos=dram / positions)
            print(f"{name:6s} {what:11s} programs {len(launch.streams):4d}  requested loads "
                  f"{loads / positions:8.1f} B/pos  modelled DRAM reads "
                  f"{dram / positions:8.1f} B/pos", flush=True)
    if args.json:
        args.json.write_text(json.dumps(dict(shape=dict(B=B, T=T, H=H, W=W, Cqk=CQK, Cv=CV),
                                             in_flight=P, l2_bytes=L2, launches=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
