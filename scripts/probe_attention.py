"""Can the criss-cross attention layer learn to fetch a cue that only it can reach? A probe.

    python scripts/probe_attention.py                      # all tasks, variants, 3 seeds
    python scripts/probe_attention.py --task time --steps 200 --seeds 0 --json probe.json

No backbone, no temporal shift: random features (B, C, T, H, W) go through one
`RecurrentCrissCrossAttention` and a 1x1x1 linear readout to 2 classes. The label of a position
is the sign `s` of a cue that is written elsewhere in the clip, so a position can only be right
(beyond chance) if the attention brings the cue to it:

* task `time`: for each pixel (h, w), one frame t* carries a marker (channel 0) and the sign
  (channel 1); every frame of that pixel is labelled `s`. The cue is on the position's own time
  line: 3D attention reaches it in one step; per-frame (2D) attention only at t = t*.
* task `volume`: for each row h, one position (t*, h, w*) carries marker and sign, and every
  position of rows h (all frames, all columns) is labelled `s`. From (t, h, w) the cue is two
  hops away ((t, h, w) -> (t*, h, w) -> (t*, h, w*), or row first): recurrence R = 2 reaches it,
  R = 1 only where t = t* or w = w*.

Reported per variant (mean [min, max] over seeds): accuracy on the positions that do not hold the
cue after training (chance 50 %), the trained gamma, and the attention weight a query puts on
the cue's position on average (exact, from `criss_cross_weights`; `time` task only). Variants
differ in the attention's reach (3D / 2D, R) and its init (`identity` / `ccnet`, see
`CrissCrossAttention3d`), with the same optimiser and data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidccnet.cli import fail, interruptible, missing_folder
from vidccnet.engine.report import write_json

PROG = "probe_attention.py"

# name: (temporal, recurrence, init)
VARIANTS = {
    "3d_R2_identity": (True, 2, "identity"),
    "3d_R2_ccnet": (True, 2, "ccnet"),
    "3d_R1_identity": (True, 1, "identity"),
    "2d_R2_identity": (False, 2, "identity"),
}
TASKS = ("time", "volume")


def make_batch(task: str, B: int, C: int, T: int, H: int, W: int,
               g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Features x (B, C, T, H, W), labels (B, T, H, W) in {0, 1}, and cue mask (B, T, H, W)."""
    x = 0.5 * torch.randn(B, C, T, H, W, generator=g)
    cue = torch.zeros(B, T, H, W, dtype=torch.bool)
    if task == "time":
        t_star = torch.randint(0, T, (B, H, W), generator=g)
        cue.scatter_(1, t_star.unsqueeze(1), True)
        sign = torch.randint(0, 2, (B, H, W), generator=g)
        labels = sign.unsqueeze(1).expand(B, T, H, W)
    elif task == "volume":
        flat = torch.randint(0, T * W, (B, H), generator=g)
        t_star, w_star = flat // W, flat % W
        b_idx, h_idx = torch.meshgrid(torch.arange(B), torch.arange(H), indexing="ij")
        cue[b_idx, t_star, h_idx, w_star] = True
        sign = torch.randint(0, 2, (B, H), generator=g)
        labels = sign[:, None, :, None].expand(B, T, H, W)
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    x[:, 0] = torch.where(cue, torch.full_like(x[:, 0], 3.0), x[:, 0])
    x[:, 1] = torch.where(cue, 3.0 * (2.0 * labels.float() - 1.0), x[:, 1])
    return x, labels.contiguous(), cue


class Probe(nn.Module):
    """RCCA followed by a 1x1x1 readout to 2 classes."""

    def __init__(self, C: int, temporal: bool, recurrence: int, init: str) -> None:
        super().__init__()
        from vidccnet.nn import RecurrentCrissCrossAttention

        self.rcca = RecurrentCrissCrossAttention(C, recurrence, reduction=2, temporal=temporal,
                                                 backend="reference", init=init)
        self.readout = nn.Conv3d(C, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.rcca(x))  # (B, 2, T, H, W)


def cue_weight(model: Probe, x: Tensor, cue: Tensor) -> float:
    """Mean attention weight (first recurrence) that the positions without the cue put on the
    cue of their time line (task `time`), exact (`criss_cross_weights`), over all of them."""
    from vidccnet.ops import criss_cross_weights

    cca = model.rcca.cca
    with torch.no_grad():
        q, k = cca.query(x), cca.key(x)
    where = (~cue).nonzero()  # (n, 4): b, t, h, w
    total = 0.0
    for b, t, h, w in where.tolist():
        time_w = criss_cross_weights(q, k, (t, h, w), batch=b).time  # (T,)
        total += float(time_w[cue[b, :, h, w]].sum())
    return total / max(len(where), 1)


def run(task: str, variant: str, seed: int, steps: int, size: tuple[int, int, int, int, int],
        lr: float, optim: str = "sgd") -> dict:
    """Train one probe; return its figures."""
    temporal, recurrence, init = VARIANTS[variant]
    B, C, T, H, W = size
    torch.manual_seed(seed)
    model = Probe(C, temporal, recurrence, init)
    if optim == "sgd":  # as the training recipes (momentum 0.9)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1000 + seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y, _ = make_batch(task, B, C, T, H, W, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    g_test = torch.Generator().manual_seed(10_000 + seed)
    x, y, cue = make_batch(task, 4 * B, C, T, H, W, g_test)
    with torch.no_grad():
        pred = model(x).argmax(1)
    result = {
        "task": task, "variant": variant, "seed": seed, "steps": steps,
        "accuracy": float((pred == y)[~cue].float().mean()),
        "gamma": model.rcca.cca.gamma.item(),
        "seconds": time.perf_counter() - t0,
    }
    if task == "time" and temporal:
        result["cue_weight"] = cue_weight(model, x, cue)
    return result


def summarise(runs: list[dict]) -> dict:
    """Mean, min and max of every figure per (task, variant)."""
    out: dict = {}
    for r in runs:
        out.setdefault(f"{r['task']}/{r['variant']}", []).append(r)
    summary = {}
    for key, rs in out.items():
        figs = {}
        for name in ("accuracy", "gamma", "cue_weight"):
            vals = [r[name] for r in rs if name in r]
            if vals:
                figs[name] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
        summary[key] = figs
    return summary


@interruptible(PROG, "--json not written")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--task", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--optim", choices=("sgd", "adam"), default="sgd",
                   help="SGD with momentum 0.9 (as the training recipes) or Adam")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate")
    p.add_argument("--size", nargs=5, type=int, default=[8, 16, 6, 6, 6],
                   metavar=("B", "C", "T", "H", "W"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write every run and the summary here")
    args = p.parse_args(argv)
    try:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        B, C, T, H, W = args.size
        if min(args.size) < 1 or C % 2 or C < 2:
            raise ValueError(f"--size needs positive sizes and an even C >= 2, got {args.size}")
        if msg := missing_folder(args.json, "--json"):
            raise ValueError(msg)
    except ValueError as exc:
        return fail(PROG, exc)
    torch.set_num_threads(args.threads)
    runs = []
    for task in args.task:
        for variant in args.variants:
            for seed in args.seeds:
                r = run(task, variant, seed, args.steps, tuple(args.size), args.lr, args.optim)
                runs.append(r)
                print(json.dumps(r), flush=True)
    summary = summarise(runs)
    print("\n| task / variant | accuracy off the cue % | gamma | weight on the cue |")
    print("|---|---:|---:|---:|")
    for key, figs in summary.items():
        cells = []
        for name, scale in (("accuracy", 100), ("gamma", 1), ("cue_weight", 1)):
            f = figs.get(name)
            lo, mean, hi = (None if f is None else f[k] * scale for k in ("min", "mean", "max"))
            cells.append("-" if f is None else f"{mean:.2f} [{lo:.2f}, {hi:.2f}]")
        print(f"| {key} | " + " | ".join(cells) + " |")
    if args.json:
        write_json(args.json, {"args": vars(args), "runs": runs, "summary": summary}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
