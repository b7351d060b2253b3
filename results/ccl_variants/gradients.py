"""Gradient norms of each training-loss term on a few parameters of the demo network.

    PYTHONPATH=. python results/ccl_variants/gradients.py RUN/best.pt

RUN is a demo-recipe run (`scripts/train.py --config configs/synthetic_tiny.yaml
runtime.seed=0`). On one batch of 8 training clips (fixed draw) it prints, for a fresh network
(seed 0) and for the trained one: the cross-entropies (main + 0.4 aux, class weights as
configured) and the category-consistent loss's variance, distance and regularisation terms
(alpha = beta = 1, gamma = 0.001), each with the norm of its gradient on the attention's gamma
(signed), its value projection, the head's first conv, a backbone conv and the embedding.
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
from vidccnet.losses import cross_entropy
from vidccnet.models.build import build_model

WATCH = {"gamma": "head.cca.cca.gamma", "value": "head.cca.cca.value.weight",
         "conva": "head.conva.0.weight", "layer4": "backbone.layer4.1.conv2.weight",
         "layer1": "backbone.layer1.0.conv1.weight", "embed": "head.embed.weight"}


def fixed_batch(cfg, clips: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw of ``clips`` training clips (the same for every call with the same data
    config; each call augments anew): clips (B, 3, T, H, W) and labels (B, T, H, W)."""
    data = build_train_dataset(cfg)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:clips].tolist()
    items = [data[i] for i in idx]
    return torch.stack([it["clip"] for it in items]), torch.stack([it["labels"] for it in items])


def main(path: str) -> None:
    torch.set_num_threads(1)
    trained, cfg = build_model_from_checkpoint(load_checkpoint(path))
    torch.manual_seed(0)
    fresh = build_model(cfg, len(cfg.data.class_names), pretrained=False)
    crit = build_criterion(cfg)
    x, y = fixed_batch(cfg)
    w, cc = crit.class_weights, crit.cc
    print("| network | term | value | " + " | ".join(WATCH) + " |")
    print("|---|---|---:|" + "---:|" * len(WATCH))
    for name, model in (("fresh", fresh), ("trained", trained)):
        model.train()
        params = dict(model.named_parameters())
        out = model(x)
        terms = {"CE + 0.4 aux": cross_entropy(out["out"], y, weight=w)
                 + 0.4 * cross_entropy(out["aux"], y, weight=w)}
        for a, b, g, key in ((1, 0, 0, "variance"), (0, 1, 0, "distance"),
                             (0, 0, 0.001, "0.001 reg")):
            cc.alpha, cc.beta, cc.gamma = a, b, g
            terms[key] = cc.terms(out["features"], y)["loss"]
        for key, loss in terms.items():
            grads = torch.autograd.grad(loss, [params[p] for p in WATCH.values()],
                                        retain_graph=True, allow_unused=True)
            cells = [0.0 if g is None else (g.sum() if g.numel() == 1 else g.norm()).item()
                     for g in grads]
            print(f"| {name} | {key} | {loss.item():.3f} | "
                  + " | ".join(f"{c:+.3f}" for c in cells) + " |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="best.pt of a demo-recipe run")
    try:
        main(ap.parse_args().checkpoint)
    except CheckpointError as exc:
        sys.exit(fail("gradients.py", exc))
