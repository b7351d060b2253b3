"""How large the category-consistent loss's gradients are against the cross-entropies, at
initialisation, for the demo's network and for settings closer to the paper's.

    PYTHONPATH=. python results/ccl_variants/grad_scale.py demo ccnet_init head512 paperlike

For each setting (the demo recipe, `configs/synthetic_tiny.yaml`, plus the setting's overrides)
a fresh network (seed 0) sees one batch of 8 training clips (a fixed draw). The table gives each
term's value and the gradient it sends to the attention's gamma (signed), to the head's first
conv (`head.conva`), to a backbone conv and to the attention's output (the embedding's input);
the ratios are the variance and distance terms' gradient norms over the cross-entropies' (main
+ 0.4 aux, class weights as configured) on the head's first conv and on the attention's output.
"""

import sys

import torch

from results.ccl_variants.gradients import fixed_batch
from vidccnet.engine.config import load_config
from vidccnet.engine.train import build_criterion
from vidccnet.losses import CategoryConsistentLoss, cross_entropy
from vidccnet.models.build import build_model

SETTINGS = {
    "demo": [],
    "ccnet_init": ["model.kwargs.attention_init=ccnet"],
    "head512": ["model.kwargs.head_channels=512"],
    "paperlike": ["model.kwargs.attention_init=ccnet", "model.kwargs.head_channels=512"],
}
WATCH = ["head.cca.cca.gamma", "head.conva.0.weight", "backbone.layer4.1.conv2.weight"]


def run(name: str, overrides: list[str], clips: int = 8) -> None:
    cfg = load_config("configs/synthetic_tiny.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(cfg, 7, pretrained=False).train()
    weight = build_criterion(cfg).class_weights
    x, y = fixed_batch(cfg, clips)  # (B, 3, T, H, W), (B, T, H, W)
    seen = {}  # the attention's output: the embedding's input (the hook returns None)
    hook = model.head.embed.register_forward_hook(lambda m, i, o: seen.update(y=i[0]))
    out = model(x)
    hook.remove()
    params = dict(model.named_parameters())
    terms = {"CE+0.4aux": cross_entropy(out["out"], y, weight=weight)
             + 0.4 * cross_entropy(out["aux"], y, weight=weight)}
    for alpha, beta, key in ((1, 0, "var"), (0, 1, "dis")):
        loss = CategoryConsistentLoss(alpha=alpha, beta=beta, gamma=0)
        terms[key] = loss.terms(out["features"], y)["loss"]
    res = {}
    for key, value in terms.items():
        grads = torch.autograd.grad(value, [params[p] for p in WATCH] + [seen["y"]],
                                    retain_graph=True)
        res[key] = [value.item(), grads[0].sum().item()] + [g.norm().item() for g in grads[1:]]
    rms = seen["y"].detach().pow(2).mean().sqrt().item()
    print(f"\n== {name} {overrides}: attention output rms {rms:.2f}")
    print(f"{'term':10s} {'value':>7s} {'d gamma':>8s} {'conva':>8s} {'layer4':>8s} {'output':>8s}")
    for key, r in res.items():
        print(f"{key:10s} {r[0]:7.3f} {r[1]:+8.4f} {r[2]:8.4f} {r[3]:8.4f} {r[4]:8.4f}")
    ce = res["CE+0.4aux"]
    print(f"ratio to CE, conva: var {res['var'][2] / ce[2]:.1f}, dis {res['dis'][2] / ce[2]:.1f};"
          f" attention output: var {res['var'][4] / ce[4]:.1f}, dis {res['dis'][4] / ce[4]:.1f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in sys.argv[1:] or list(SETTINGS):
        run(name, SETTINGS[name])
