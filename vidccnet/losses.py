"""Training losses: cross-entropy (optional OHEM), category-consistent loss, combined criterion.

All losses take clip-shaped tensors: logits (B, K, T, H, W), labels (B, T, H, W) int64 with
`ignore_index` (255) for ignored pixels and for unlabelled frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_logits_labels(logits: Tensor, labels: Tensor, name: str) -> None:
    if logits.dim() != 5 or labels.dim() != 4:
        raise ValueError(
            f"{name}: expected logits (B, K, T, H, W) and labels (B, T, H, W); got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[:1] + logits.shape[2:] != labels.shape:
        raise ValueError(
            f"{name}: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree in "
            "(B, T, H, W); upsample the logits to the label size first"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError(f"{name}: labels must be an integer tensor, got {labels.dtype}")


def ohem_mask(
    prob_true: Tensor, valid: Tensor, thresh: float = 0.7, min_kept: int = 100_000
) -> Tensor:
    """OHEM pixel selection (CCNet): keep the valid pixels whose true-class probability is at
    most `thresh` (as the official code), and at least the `min_kept` hardest valid pixels
    (lowest probability).

    Args:
        prob_true: (...) probability of the true class (any values where not valid).
        valid: (...) bool, pixels with a label.

    Returns:
        (...) bool mask; exactly `max(#{valid, p <= thresh}, min(min_kept, #valid))` pixels.
    """
    keep = valid & (prob_true <= thresh)
    n_valid = int(valid.sum())
    k = min(int(min_kept), n_valid)
    if int(keep.sum()) >= k:
        return keep
    p = prob_true.detach().flatten().masked_fill(~valid.flatten(), float("inf"))
    idx = torch.topk(p, k, largest=False, sorted=False).indices
    keep = torch.zeros_like(valid.flatten())
    keep[idx] = True
    return keep.reshape(valid.shape)


def cross_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = 255,
    ohem: bool = False,
    ohem_thresh: float = 0.7,
    ohem_min_kept: int = 100_000,
) -> Tensor:
    """Pixel-wise cross-entropy, mean over kept labelled pixels (weighted mean with `weight`).

    Args:
        logits: (B, K, T, H, W). labels: (B, T, H, W).
        weight: optional (K,) class weights.
        ohem: online hard example mining (see `ohem_mask`), over all pixels of the batch.

    Returns:
        scalar; 0 (still attached to the graph) when no pixel is labelled or every labelled
        pixel has class weight 0.
    """
    _check_logits_labels(logits, labels, "cross_entropy")
    if logits.dtype in (torch.float16, torch.bfloat16):  # low precision: the loss in float32
        logits = logits.float()
    if weight is not None:
        weight = weight.to(logits.dtype)
    labels = labels.long()
    valid = labels != ignore_index  # (B, T, H, W)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    target = labels.masked_fill(~valid, 0)
    if int(target.max()) >= logits.shape[1] or int(target.min()) < 0:
        raise ValueError(
            f"labels hold values outside [0, {logits.shape[1]}) other than "
            f"ignore_index={ignore_index}"
            + ("; the datasets mark unlabelled pixels with 255 (loss.ignore_index: 255)"
               if ignore_index != 255 else "")
        )
    if not ohem:
        if weight is not None and not bool(weight[target[valid]].any()):  # F.cross_entropy: 0/0
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)
    logp = F.log_softmax(logits, dim=1)  # (B, K, T, H, W)
    logp_true = logp.gather(1, target.unsqueeze(1)).squeeze(1)  # (B, T, H, W)
    keep = ohem_mask(logp_true.detach().exp(), valid, ohem_thresh, ohem_min_kept)
    w = weight[target] if weight is not None else torch.ones_like(logp_true)
    w = w * keep
    return -(w * logp_true).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def _phi_var(d: Tensor, delta_v: float, delta_d: float) -> Tensor:
    """Piecewise variance penalty: 0 below delta_v, (d - delta_v)^2 up to delta_d, then
    linear `d - delta_d + (delta_d - delta_v)^2`."""
    quad = (d - delta_v).clamp_min(0.0) ** 2
    lin = d - delta_d + (delta_d - delta_v) ** 2
    return torch.where(d > delta_d, lin, quad)


class CategoryConsistentLoss(nn.Module):
    """Category-consistent loss of CCNet (section 3.4), applied frame by frame.

    For each labelled frame with classes c (present at feature resolution), pixel features h_i,
    class means mu_c, C = number of classes present:
    l_var = 1/C sum_c 1/N_c sum_i phi(||mu_c - h_i||) (see `_phi_var`),
    l_dis = 1/(C(C-1)) sum_{a != b} max(0, 2*delta_d - ||mu_a - mu_b||)^2 (0 when C = 1),
    l_reg = 1/C sum_c ||mu_c||; frame loss = alpha*l_var + beta*l_dis + gamma*l_reg.
    The loss is the mean over frames with at least one labelled pixel (0 if there is none).

    Labels are resized to the feature size with nearest-neighbour sampling. Computed in float32
    (float64 for float64 features), vectorised over all frames and classes with segment ids.
    """

    def __init__(
        self,
        delta_v: float = 0.5,
        delta_d: float = 1.5,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 0.001,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if not 0 <= delta_v < delta_d:
            raise ValueError(f"need 0 <= delta_v < delta_d, got {delta_v}, {delta_d}")
        self.delta_v, self.delta_d = float(delta_v), float(delta_d)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.ignore_index = ignore_index

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """features: (B, C, T, h, w); labels: (B, T, H, W) -> scalar."""
        return self.terms(features, labels)["loss"]

    def terms(self, features: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The loss and its terms (each a mean over labelled frames): loss, var, dis, reg."""
        if features.dim() != 5 or labels.dim() != 4:
            raise ValueError(
                f"CategoryConsistentLoss: expected features (B, C, T, h, w) and labels "
                f"(B, T, H, W); got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        B, C, T, h, w = features.shape
        if labels.shape[:2] != (B, T):
            raise ValueError(
                f"CategoryConsistentLoss: features {tuple(features.shape)} and labels "
                f"{tuple(labels.shape)} disagree in (B, T)"
            )
        acc = torch.float64 if features.dtype == torch.float64 else torch.float32
        if labels.shape[-2:] != (h, w):
            lab = labels.reshape(B * T, 1, *labels.shape[-2:]).float()
            lab = F.interpolate(lab, size=(h, w), mode="nearest").long().view(B * T, h * w)
        else:
            lab = labels.reshape(B * T, h * w).long()
        feats = features.to(acc).permute(0, 2, 3, 4, 1).reshape(B * T, h * w, C)
        zero = features.sum().to(acc) * 0.0
        valid = lab != self.ignore_index  # (F, P)
        if not bool(valid.any()):
            return {"loss": zero, "var": zero.detach(), "dis": zero.detach(),
                    "reg": zero.detach()}
        frame_idx, pix_idx = valid.nonzero(as_tuple=True)  # (M,)
        cls = lab[frame_idx, pix_idx]
        n_cls = int(cls.max()) + 1
        seg_key = frame_idx * n_cls + cls
        keys, seg = torch.unique(seg_key, return_inverse=True)  # (S,), (M,)
        S = keys.numel()
        seg_frame = keys // n_cls  # (S,) frame of each (frame, class) segment
        frames, seg_f = torch.unique(seg_frame, return_inverse=True)  # labelled frames
        nF = frames.numel()
        h_i = feats[frame_idx, pix_idx]  # (M, C)

        count = torch.zeros(S, dtype=acc, device=h_i.device).index_add_(
            0, seg, torch.ones_like(seg, dtype=acc)
        )  # (S,)
        mu = torch.zeros(S, C, dtype=acc, device=h_i.device).index_add(0, seg, h_i)
        mu = mu / count[:, None]  # (S, C)
        n_classes = torch.zeros(nF, dtype=acc, device=h_i.device).index_add_(
            0, seg_f, torch.ones(S, dtype=acc, device=h_i.device)
        )  # (nF,) C per frame

        # variance: mean over each class's pixels, then over the frame's classes
        d = torch.linalg.vector_norm(h_i - mu[seg], dim=1)  # (M,)
        pen = _phi_var(d, self.delta_v, self.delta_d)
        var_seg = torch.zeros(S, dtype=acc, device=h_i.device).index_add(0, seg, pen) / count
        l_var = torch.zeros(nF, dtype=acc, device=h_i.device).index_add(0, seg_f, var_seg)
        l_var = l_var / n_classes

        # distance: ordered pairs of different classes in the same frame
        same = (seg_f[:, None] == seg_f[None, :]) & ~torch.eye(
            S, dtype=torch.bool, device=h_i.device
        )
        a, b = same.nonzero(as_tuple=True)
        l_dis = torch.zeros(nF, dtype=acc, device=h_i.device)
        if a.numel():
            dist = torch.linalg.vector_norm(mu[a] - mu[b], dim=1)
            hinge = (2.0 * self.delta_d - dist).clamp_min(0.0) ** 2
            l_dis = l_dis.index_add(0, seg_f[a], hinge)
        pairs = n_classes * (n_classes - 1)
        l_dis = l_dis / pairs.clamp_min(1.0)  # frames with one class: no pair, 0

        # regularisation
        reg = torch.linalg.vector_norm(mu, dim=1)  # (S,)
        l_reg = torch.zeros(nF, dtype=acc, device=h_i.device).index_add(0, seg_f, reg)
        l_reg = l_reg / n_classes

        loss = self.alpha * l_var + self.beta * l_dis + self.gamma * l_reg
        return {
            "loss": loss.mean() + zero,
            "var": l_var.mean().detach(),
            "dis": l_dis.mean().detach(),
            "reg": l_reg.mean().detach(),
        }


class SegmentationCriterion(nn.Module):
    """Training criterion: CE (OHEM optional) on `out` + aux_weight * CE on `aux` +
    cc_weight * category-consistent loss on `features`.

    OHEM applies to the main output only; the auxiliary head uses plain CE (as CCNet's
    CriterionOhemDSN).

    Args:
        aux_weight: weight of the auxiliary loss (0.4); skipped when outputs have no "aux".
        cc_weight: weight of the category-consistent loss (0 disables it).
        ohem, ohem_thresh, ohem_min_kept: OHEM on the main output.
        class_weights: optional (K,) weights for the cross-entropies.
        ignore_index: label value to ignore.
        cc_kwargs: keyword arguments of `CategoryConsistentLoss`.
    """

    def __init__(
        self,
        aux_weight: float = 0.4,
        cc_weight: float = 1.0,
        ohem: bool = False,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        class_weights: Sequence[float] | Tensor | None = None,
        ignore_index: int = 255,
        cc_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.aux_weight, self.cc_weight = float(aux_weight), float(cc_weight)
        self.ohem, self.ohem_thresh, self.ohem_min_kept = bool(ohem), ohem_thresh, ohem_min_kept
        self.ignore_index = ignore_index
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        self.register_buffer("class_weights", weights, persistent=False)
        cc_kwargs = dict(cc_kwargs or {})
        cc_kwargs.setdefault("ignore_index", ignore_index)
        self.cc = CategoryConsistentLoss(**cc_kwargs)

    def forward(
        self, outputs: Mapping[str, Tensor] | Tensor, labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """outputs: model train() dict ({"out": (B, K, T, H, W), "aux": ..., "features":
        (B, C, T, h, w)}) or a bare logits tensor; labels: (B, T, H, W) int64.

        Returns:
            (loss scalar tensor, parts {"ce", "aux", "cc", "var", "dis", "reg", "total"}
            detached scalar tensors on the loss's device, so that reading them waits for the
            device only when the caller does; a disabled or absent part is 0; "cc" already
            includes alpha/beta/gamma, not cc_weight).
        """
        if isinstance(outputs, Tensor):
            outputs = {"out": outputs}
        if "out" not in outputs:
            raise KeyError(f"outputs must hold 'out'; got keys {sorted(outputs)}")
        w = self.class_weights
        if w is not None:
            w = w.to(outputs["out"].device)
        if w is not None and w.numel() != outputs["out"].shape[1]:
            raise ValueError(
                f"class_weights has {w.numel()} entries but the model predicts "
                f"{outputs['out'].shape[1]} classes"
            )
        ce = cross_entropy(
            outputs["out"], labels, weight=w, ignore_index=self.ignore_index, ohem=self.ohem,
            ohem_thresh=self.ohem_thresh, ohem_min_kept=self.ohem_min_kept,
        )
        loss = ce
        zero = torch.zeros((), device=ce.device)
        parts = dict.fromkeys(("ce", "aux", "cc", "var", "dis", "reg"), zero)
        parts["ce"] = ce.detach()
        if self.aux_weight > 0 and "aux" in outputs:
            aux = cross_entropy(outputs["aux"], labels, weight=w, ignore_index=self.ignore_index)
            loss = loss + self.aux_weight * aux
            parts["aux"] = aux.detach()
        if self.cc_weight > 0:
            if "features" not in outputs:
                raise KeyError(
                    "cc_weight > 0 needs outputs['features'] (the model in train() mode); "
                    "set cc_weight=0 to disable the category-consistent loss"
                )
            t = self.cc.terms(outputs["features"], labels)
            loss = loss + self.cc_weight * t["loss"].to(loss.dtype)
            parts.update(cc=t["loss"].detach(), var=t["var"].detach(), dis=t["dis"].detach(),
                         reg=t["reg"].detach())
        parts["total"] = loss.detach()
        return loss, parts
