"""How class-consistent are the attention's input and output of a trained demo network?

    PYTHONPATH=. python results/ccl_variants/consistency.py RUN/best.pt [RUN2/best.pt ...]

On 32 training clips (fixed draw) it takes the recurrent attention module's input (the head's
first conv) and output, both (B, C, T, h, w). For each it fits a fresh 1x1 projection C -> 16
(what the category-consistent loss's embedding is) to that loss alone, frame by frame (Adam, lr
1e-2, full batch, 400 steps; 3 initialisations, averaged), with the network frozen. The
converged loss is the lowest the embedding can reach on those features: the lower, the more
consistent each class is within a frame. With gamma = 0 the output equals the input, so the
input's figure is what switching the attention off would reach. Prints one Markdown row per
checkpoint.
"""

import argparse
import sys

import torch

from vidccnet.cli import fail
from vidccnet.engine.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    load_checkpoint,
)
from vidccnet.engine.train import build_criterion, build_train_dataset
from vidccnet.losses import CategoryConsistentLoss

TERMS = ("loss", "var", "dis")


def fit(cc: CategoryConsistentLoss, feats: torch.Tensor, labels: torch.Tensor,
        seed: int, steps: int = 400) -> dict[str, float]:
    """Fit a fresh 1x1 projection feats (B, C, T, h, w) -> (B, 16, T, h, w) to `cc` alone."""
    torch.manual_seed(seed)
    proj = torch.nn.Conv3d(feats.shape[1], 16, 1)
    opt = torch.optim.Adam(proj.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = cc.terms(proj(feats), labels)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        t = cc.terms(proj(feats), labels)
    return {k: float(t[k]) for k in TERMS}


def row(path: str) -> str:
    model, cfg = build_model_from_checkpoint(load_checkpoint(path))
    if model.head.cca.recurrence == 0:
        raise CheckpointError(f"{path} has no attention (recurrence 0)")
    model.eval()
    cc = build_criterion(cfg).cc
    ds = build_train_dataset(cfg)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:32].tolist()
    torch.manual_seed(0)  # the augmentation draws from the global generator
    items = [ds[i] for i in idx]
    clips = torch.stack([it["clip"] for it in items])
    labels = torch.stack([it["labels"] for it in items])
    seen = {}
    hook = model.head.cca.register_forward_hook(
        lambda m, args, out: seen.update(input=args[0], output=out))
    with torch.no_grad():
        model(clips)
    hook.remove()
    cells = []
    for key in ("input", "output"):
        fits = [fit(cc, seen[key], labels, s) for s in range(3)]
        cells.append({k: sum(f[k] for f in fits) / len(fits) for k in TERMS})
    gamma = model.head.cca.cca.gamma.item()
    return (f"| {path} | {gamma:.2f} | " + " | ".join(
        f"{cells[0][k]:.3f} / {cells[1][k]:.3f}" for k in TERMS) + " |")


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    for i, path in enumerate(paths):
        line = row(path)
        if i == 0:
            print("| checkpoint | gamma | loss, input / output | variance | distance |")
            print("|---|---:|---:|---:|---:|")
        print(line, flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="best.pt of demo-recipe runs")
    try:
        main(ap.parse_args().checkpoints)
    except CheckpointError as exc:
        sys.exit(fail("consistency.py", exc))
