"""Optimisation from a config: SGD / AdamW with per-group learning rates for the attention, and
the poly schedule with linear warm-up (resume-aware)."""

from __future__ import annotations

import re

import torch
from torch import nn

from .config import Config, OptimConfig

__all__ = ["PolyWarmup", "build_optimizer", "build_scheduler", "configure_resumed_optimizer"]


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay on all parameters, one LR, as the official CCNet) or AdamW.

    With ``optim.gamma_lr_mult != 1`` the attention's residual weights (``*.cca.gamma``), and
    with ``optim.attention_lr_mult != 1`` its query / key / value projections, get their own
    parameter groups at ``lr * mult``; the schedule scales every group alike. With
    ``optim.norm_bias_decay`` false the parameters of fewer than 2 dimensions (norm weights
    and biases, biases, gamma) get their own groups without weight decay.
    """
    o = cfg.optim
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # (lr mult, decayed) -> parameters, model order; keyed on the flag, not the decay's value,
    # so that a resume with weight_decay 0 keeps the groups its optimizer state was saved with
    groups: dict[tuple[float, bool], list] = {}
    for n, p in named:
        groups.setdefault((_lr_mult(n, o), o.norm_bias_decay or p.ndim > 1), []).append(p)
    params: list = [
        {"params": ps, "lr": o.lr * m, "weight_decay": o.weight_decay if decayed else 0.0}
        for (m, decayed), ps in groups.items()
    ]
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def _lr_mult(name: str, o: OptimConfig) -> float:
    """The learning-rate multiplier of parameter `name`."""
    if name.endswith("cca.gamma"):
        return o.gamma_lr_mult
    if re.search(r"cca\.(query|key|value)\.", name):
        return o.attention_lr_mult
    return 1.0


class PolyWarmup:
    """LR factor of step ``it``: linear warm-up then poly decay (a picklable LambdaLR lambda).

    factor(it) = warm(it) * max((1 - it / total) ** power, min_ratio), warm(it) going linearly from
    ``warmup_ratio`` (it = 0) to 1 (it >= warmup_iters).
    """

    def __init__(
        self, total: int, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 0.1,
        min_ratio: float = 0.0,
    ) -> None:
        self.total = int(total)
        self.power = float(power)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.min_ratio = float(min_ratio)

    def __call__(self, it: int) -> float:
        frac = min(it, self.total) / self.total
        factor = max((1.0 - frac) ** self.power, self.min_ratio)
        if self.warmup_iters > 0 and it < self.warmup_iters:
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup_iters
        return factor


def build_scheduler(
    cfg: Config, optimizer: torch.optim.Optimizer, start: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The poly-with-warm-up schedule of ``cfg`` positioned at iteration ``start``.

    Each parameter group's learning rate becomes its base rate (its ``initial_lr``, set by
    :func:`configure_resumed_optimizer` on resume) times ``PolyWarmup(...)(start)``: a resumed
    run follows the schedule of the config it is resumed with, not the restored one's.
    """
    s = cfg.schedule
    factor = PolyWarmup(s.iterations, s.poly_power, s.warmup_iters, s.warmup_ratio,
                        s.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start - 1)


def configure_resumed_optimizer(optimizer: torch.optim.Optimizer, state: dict,
                                params: list[nn.Parameter] | None = None) -> None:
    """Load a checkpoint's optimizer ``state`` (momentum buffers, step counts) but keep the
    hyper-parameters (lr, momentum, weight decay, ...) of the freshly built ``optimizer``, i.e.
    of the config the run is resumed with. Each group's configured lr becomes its
    ``initial_lr``, the base of :func:`build_scheduler`. ``params``, the model's parameters in
    order, lets a state saved with one group per learning rate (runs with weight_decay 0 and
    norm_bias_decay false, before the groups were keyed on decayed-or-not) load.

    Raises:
        ValueError / KeyError / TypeError: ``state`` does not fit ``optimizer`` (from
            ``load_state_dict``).
    """
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if params is not None and len(state["param_groups"]) != len(optimizer.param_groups):
        state = _regrouped(state, optimizer, params)
    optimizer.load_state_dict(state)
    for group, hyper in zip(optimizer.param_groups, configured):
        group.update(hyper)
        group["initial_lr"] = hyper["lr"]


def _regrouped(state: dict, optimizer: torch.optim.Optimizer, params: list) -> dict:
    """``state`` with its parameter ids regrouped as ``optimizer``'s groups, where it was saved
    with the groups of one learning rate merged (model order within each); else unchanged."""
    position = {id(p): i for i, p in enumerate(params)}
    merged: dict[float, list] = {}  # lr -> the optimizer's parameters, in model order
    for g in optimizer.param_groups:
        merged.setdefault(g["lr"], []).extend(g["params"])
    merged = {lr: sorted(ps, key=lambda p: position[id(p)]) for lr, ps in merged.items()}
    merged = dict(sorted(merged.items(), key=lambda kv: position[id(kv[1][0])]))
    saved = state["param_groups"]
    if [len(ps) for ps in merged.values()] != [len(g["params"]) for g in saved]:
        return state  # another layout: load_state_dict says it does not fit
    saved_id = {id(p): i for ps, g in zip(merged.values(), saved)
                for p, i in zip(ps, g["params"])}
    first = {lr: g for lr, g in zip(merged, saved)}
    groups = [{**first[g["lr"]], "params": [saved_id[id(p)] for p in g["params"]]}
              for g in optimizer.param_groups]
    return {**state, "param_groups": groups}
