"""Losses against direct float64 implementations written here (loops over frames and classes)."""

import math

import numpy as np
import pytest
import torch

from vidccnet.losses import (
    CategoryConsistentLoss,
    SegmentationCriterion,
    cross_entropy,
    ohem_mask,
)

DV, DD = 0.5, 1.5


def cc_loop(feats, labels, alpha=1.0, beta=1.0, gamma=0.001, ignore=255):
    """Per-frame category-consistent loss in float64 with Python loops.

    feats (B, C, T, h, w) numpy; labels (B, T, h, w) numpy already at feature size.
    """
    B, C, T, h, w = feats.shape
    losses, regimes = [], set()
    for b in range(B):
        for t in range(T):
            f = feats[b, :, t].reshape(C, -1).T  # (P, C)
            lab = labels[b, t].reshape(-1)
            classes = sorted(set(lab.tolist()) - {ignore})
            if not classes:
                continue
            mus = []
            l_var = 0.0
            for c in classes:
                hc = f[lab == c]
                mu = hc.mean(0)
                mus.append(mu)
                acc = 0.0
                for hi in hc:
                    d = math.sqrt(((mu - hi) ** 2).sum())
                    if d < DV:
                        regimes.add("zero")
                    elif d <= DD:
                        acc += (d - DV) ** 2
                        regimes.add("quad")
                    else:
                        acc += d - DD + (DD - DV) ** 2
                        regimes.add("lin")
                l_var += acc / len(hc)
            n = len(classes)
            l_var /= n
            l_dis = 0.0
            for i in range(n):
                for j in range(n):
                    if i != j:
                        dist = math.sqrt(((mus[i] - mus[j]) ** 2).sum())
                        l_dis += max(0.0, 2 * DD - dist) ** 2
            l_dis = l_dis / (n * (n - 1)) if n > 1 else 0.0
            l_reg = sum(math.sqrt((m**2).sum()) for m in mus) / n
            losses.append(alpha * l_var + beta * l_dis + gamma * l_reg)
    return (float(np.mean(losses)) if losses else 0.0), regimes


def make_case(seed=0, B=2, T=3, C=4, h=5, w=6, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, C, T, h, w, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, 8, (B, T, h, w), generator=g)
    labels[labels == 1] = 255  # ignore pixels; class 1 absent everywhere
    labels[0, 1] = 255  # an unlabelled frame
    labels[1, 0] = 5  # a single-class frame
    labels[1, 0, 0, 0] = 255
    labels[1, 2] = 255
    labels[1, 2, 2, 3] = 6  # a frame with a single pixel of a single class
    labels[1, 1][labels[1, 1] == 3] = 4  # class 3 absent from this frame
    return feats, labels


def test_cc_loss_matches_loop_reference():
    feats, labels = make_case(scale=0.8)
    ref, regimes = cc_loop(feats.numpy(), labels.numpy())
    assert regimes == {"zero", "quad", "lin"}  # every branch of phi is exercised
    loss = CategoryConsistentLoss()(feats, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(ref, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("alpha,beta,gamma", [(0.0, 1.0, 0.0), (2.0, 0.0, 0.5), (1, 1, 1)])
def test_cc_loss_weights(alpha, beta, gamma):
    feats, labels = make_case(seed=1, scale=0.3)  # small features: the hinge is active
    ref, _ = cc_loop(feats.numpy(), labels.numpy(), alpha, beta, gamma)
    loss = CategoryConsistentLoss(alpha=alpha, beta=beta, gamma=gamma)(feats, labels)
    assert loss.item() == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_cc_loss_downsamples_labels_nearest():
    feats, labels = make_case(seed=2)
    big = labels.repeat_interleave(3, dim=2).repeat_interleave(2, dim=3)  # (B, T, 3h, 2w)
    big[..., 1::3, :] = 7  # rows nearest sampling never reads
    big[..., :, 1::2] = 255
    ref, _ = cc_loop(feats.numpy(), labels.numpy())
    loss = CategoryConsistentLoss()(feats, big)
    assert loss.item() == pytest.approx(ref, rel=1e-10)


def test_cc_loss_float32_and_gradients_finite():
    feats, labels = make_case(seed=3)
    f32 = feats.float().requires_grad_()
    t = CategoryConsistentLoss().terms(f32, labels)
    assert t["loss"].dtype == torch.float32
    ref, _ = cc_loop(feats.numpy(), labels.numpy())
    assert t["loss"].item() == pytest.approx(ref, rel=1e-5)
    t["loss"].backward()
    assert torch.isfinite(f32.grad).all()
    # the unlabelled frame gets no gradient; the single-pixel class (variance distance exactly
    # 0) only gets the regulariser's gamma * h / ||h|| / (number of labelled frames = 5)
    assert f32.grad[0, :, 1].abs().sum() == 0
    h = feats[1, :, 2, 2, 3]
    torch.testing.assert_close(f32.grad[1, :, 2, 2, 3].double(), 0.001 * h / h.norm() / 5)
    g = f32.grad[1, :, 2].clone()
    g[:, 2, 3] = 0
    assert g.abs().sum() == 0


@pytest.mark.parametrize("scale", [0.3, 0.8])  # the hinges active / every branch of phi
def test_cc_loss_gradcheck(scale):
    """Gradients of every term against finite differences, float64. The single-pixel class
    is dropped: its variance distance is exactly 0, where the norm has no derivative."""
    feats, labels = make_case(seed=4, scale=scale)
    labels[1, 2, 2, 3] = 255
    feats.requires_grad_()
    assert torch.autograd.gradcheck(lambda f: CategoryConsistentLoss(gamma=0.5)(f, labels),
                                    (feats,), eps=1e-6, atol=1e-7)


def test_cc_loss_no_labels_is_zero_and_differentiable():
    feats = torch.randn(1, 8, 2, 3, 3, requires_grad=True)
    labels = torch.full((1, 2, 3, 3), 255)
    loss = CategoryConsistentLoss()(feats, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_cc_loss_shape_errors():
    with pytest.raises(ValueError, match="disagree"):
        CategoryConsistentLoss()(torch.randn(1, 4, 2, 3, 3), torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError, match="delta_v"):
        CategoryConsistentLoss(delta_v=2.0, delta_d=1.0)


def ce_ref(logits, labels, weight=None, keep=None, ignore=255):
    """Weighted mean NLL in float64 numpy; logits (B, K, T, H, W)."""
    x = logits.double().numpy()
    lse = np.log(np.exp(x).sum(1))
    num = den = 0.0
    B, K, T, H, W = x.shape
    for idx in np.ndindex(B, T, H, W):
        y = int(labels[idx])
        if y == ignore or (keep is not None and not keep[idx]):
            continue
        b, t, i, j = idx
        wy = 1.0 if weight is None else float(weight[y])
        num += wy * (lse[idx] - x[b, y, t, i, j])
        den += wy
    return num / den


def test_cross_entropy_weighted_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 2, 3, 5, generator=g)
    labels = torch.randint(0, 4, (2, 2, 3, 5), generator=g)
    labels[0, 0, :2] = 255
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    got = cross_entropy(logits, labels, weight=w)
    assert got.item() == pytest.approx(ce_ref(logits, labels.numpy(), w.numpy()), rel=1e-5)
    got = cross_entropy(logits, labels)
    assert got.item() == pytest.approx(ce_ref(logits, labels.numpy()), rel=1e-5)
    # float64 stays float64 (only float16 / bfloat16 logits are widened), weighted and OHEM
    for ohem in (False, True):
        got = cross_entropy(logits.double(), labels, weight=w, ohem=ohem, ohem_min_kept=1000)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(ce_ref(logits, labels.numpy(), w.numpy()), rel=1e-12)
    assert cross_entropy(logits.half(), labels).dtype == torch.float32


@pytest.mark.parametrize("min_kept", [0, 10, 50, 1000])
def test_ohem_keeps_the_right_pixels(min_kept):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 6, 7, generator=g) * 2
    labels = torch.randint(0, 3, (1, 2, 6, 7), generator=g)
    labels[0, 1, :3] = 255
    valid = (labels != 255).numpy()
    p = torch.softmax(logits.double(), 1).gather(1, labels.clamp(max=2)[:, None])[:, 0].numpy()
    n_valid = int(valid.sum())
    n_easy_hard = int(((p <= 0.7) & valid).sum())
    expect = max(n_easy_hard, min(min_kept, n_valid))
    keep = ohem_mask(torch.from_numpy(p), torch.from_numpy(valid), 0.7, min_kept).numpy()
    assert keep.sum() == expect and not (keep & ~valid).any()
    # the kept pixels are the hardest ones
    assert p[keep].max() <= p[valid & ~keep].min() if (valid & ~keep).any() else True
    got = cross_entropy(logits, labels, ohem=True, ohem_thresh=0.7, ohem_min_kept=min_kept)
    assert got.item() == pytest.approx(ce_ref(logits, labels.numpy(), keep=keep), rel=1e-5)


def test_cross_entropy_unlabelled_batch_and_errors():
    logits = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    loss = cross_entropy(logits, torch.full((1, 2, 4, 4), 255), ohem=True)
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="disagree"):
        cross_entropy(logits, torch.zeros(1, 2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        cross_entropy(logits, torch.full((1, 2, 4, 4), 3))


def test_segmentation_criterion_combines_parts():
    g = torch.Generator().manual_seed(4)
    out = torch.randn(2, 5, 2, 16, 16, generator=g, requires_grad=True)
    aux = torch.randn(2, 5, 2, 16, 16, generator=g, requires_grad=True)
    feats = torch.randn(2, 8, 2, 4, 4, generator=g, requires_grad=True)
    labels = torch.randint(0, 5, (2, 2, 16, 16), generator=g)
    labels[1, 0] = 255
    crit = SegmentationCriterion(aux_weight=0.4, cc_weight=0.5, ohem=True, ohem_min_kept=100)
    loss, parts = crit({"out": out, "aux": aux, "features": feats}, labels)
    assert set(parts) == {"ce", "aux", "cc", "var", "dis", "reg", "total"}
    # detached tensors: reading them (a device sync on a GPU) is the caller's choice
    assert all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad
               for v in parts.values())
    parts = {k: float(v) for k, v in parts.items()}
    assert loss.item() == pytest.approx(parts["ce"] + 0.4 * parts["aux"] + 0.5 * parts["cc"],
                                        rel=1e-5)
    cc = CategoryConsistentLoss()(feats, labels).item()
    assert parts["cc"] == pytest.approx(cc, rel=1e-6)
    assert parts["aux"] == pytest.approx(cross_entropy(aux, labels).item(), rel=1e-6)
    loss.backward()
    for t in (out, aux, feats):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_segmentation_criterion_options_and_errors():
    out = torch.randn(1, 3, 1, 8, 8)
    labels = torch.randint(0, 3, (1, 1, 8, 8))
    loss, parts = SegmentationCriterion(cc_weight=0)(out, labels)  # bare logits, no features
    assert parts["cc"] == 0.0 and parts["aux"] == 0.0
    assert loss.item() == pytest.approx(cross_entropy(out, labels).item())
    with pytest.raises(KeyError, match="cc_weight"):
        SegmentationCriterion()({"out": out}, labels)
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationCriterion(cc_weight=0, class_weights=[1.0, 2.0])(out, labels)
    crit = SegmentationCriterion(cc_weight=0, class_weights=[1.0, 2.0, 3.0])
    ref = ce_ref(out, labels.numpy(), np.array([1.0, 2.0, 3.0]))
    assert crit(out, labels)[0].item() == pytest.approx(ref, rel=1e-5)


def test_cross_entropy_with_zero_weight_on_every_labelled_class_is_zero() -> None:
    """Class weights may be 0: a batch whose labelled pixels all have weight 0 gives a loss of 0
    with a zero gradient (plain cross-entropy divided 0 by 0: NaN), as with OHEM."""
    from vidccnet.losses import cross_entropy

    logits = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    labels[0, 0, 0, 0] = 255
    weight = torch.tensor([0.0, 1.0, 1.0])
    for ohem in (False, True):
        loss = cross_entropy(logits, labels, weight=weight, ohem=ohem)
        assert torch.isfinite(loss) and loss.item() == 0.0, ohem
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.count_nonzero(grad) == 0


def test_labels_out_of_range_with_another_ignore_index_name_255():
    """loss.ignore_index=0 on data that marks unlabelled pixels with 255: the error says so."""
    from vidccnet.losses import cross_entropy

    logits = torch.zeros(1, 3, 1, 2, 2)  # (B, K, T, H, W)
    labels = torch.tensor([[[[0, 1], [2, 255]]]])
    with pytest.raises(ValueError, match=r"ignore_index=0; the datasets mark .* 255"):
        cross_entropy(logits, labels, ignore_index=0)
    with pytest.raises(ValueError, match=r"ignore_index=255$"):
        cross_entropy(logits, torch.tensor([[[[0, 1], [2, 7]]]]))


def test_cc_loss_terms_are_the_named_terms():
    """terms()' var / dis / reg are each term's mean over labelled frames (the loop reference
    with the other two weights at 0), and loss is their weighted sum."""
    feats, labels = make_case(seed=5, scale=0.6)
    t = CategoryConsistentLoss(alpha=2.0, beta=3.0, gamma=0.5).terms(feats, labels)
    npf, npl = feats.numpy(), labels.numpy()
    for name, weights in (("var", (1, 0, 0)), ("dis", (0, 1, 0)), ("reg", (0, 0, 1))):
        ref, _ = cc_loop(npf, npl, *weights)
        assert ref > 0, name  # every term is present in this case
        assert t[name].item() == pytest.approx(ref, rel=1e-10), name
    want = 2.0 * t["var"] + 3.0 * t["dis"] + 0.5 * t["reg"]
    assert t["loss"].item() == pytest.approx(want.item(), rel=1e-10)
    assert len({t[n].item() for n in ("var", "dis", "reg")}) == 3  # distinct, not one copied


def test_ohem_mask_keeps_pixels_at_most_at_the_threshold():
    """As the official OhemCrossEntropy2d (pred <= threshold): a pixel at the threshold is kept
    (it was dropped, so ohem_thresh=1.0 left out the pixels already certain)."""
    p = torch.tensor([0.5, 0.25, 0.9, 0.49, 0.3])
    valid = torch.tensor([True, True, True, True, False])
    keep = ohem_mask(p, valid, thresh=0.5, min_kept=0)
    assert keep.tolist() == [True, True, False, True, False]
    keep = ohem_mask(torch.tensor([1.0, 0.5, 1.0, 0.9]), torch.ones(4, dtype=torch.bool), 1.0, 0)
    assert keep.all()


def test_segmentation_criterion_passes_its_options_on():
    """ohem_thresh, ohem_min_kept and ignore_index reach the losses, class_weights reach the
    auxiliary cross-entropy too (each was replaced by its default, unnoticed)."""
    g = torch.Generator().manual_seed(6)
    out = torch.randn(1, 3, 2, 6, 7, generator=g) * 2
    aux = torch.randn(1, 3, 2, 6, 7, generator=g)
    feats = torch.randn(1, 4, 2, 6, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, 2, 6, 7), generator=g)
    # OHEM: thresh and min_kept as given, not the defaults (0.7, 100000: every pixel here)
    for thresh, min_kept in ((0.4, 5), (0.9, 60)):
        crit = SegmentationCriterion(aux_weight=0, cc_weight=0, ohem=True, ohem_thresh=thresh,
                                     ohem_min_kept=min_kept)
        want = cross_entropy(out, labels, ohem=True, ohem_thresh=thresh, ohem_min_kept=min_kept)
        assert crit(out, labels)[0].item() == pytest.approx(want.item(), rel=1e-6)
        assert want.item() != pytest.approx(cross_entropy(out, labels, ohem=True).item())
    # class weights on the auxiliary loss
    w = [1.0, 5.0, 0.2]
    crit = SegmentationCriterion(aux_weight=0.4, cc_weight=0, class_weights=w)
    _, parts = crit({"out": out, "aux": aux}, labels)
    ref = ce_ref(aux, labels.numpy(), np.array(w))
    assert parts["aux"] == pytest.approx(ref, rel=1e-5)
    assert ref != pytest.approx(ce_ref(aux, labels.numpy()), rel=1e-3)
    # ignore_index reaches the category-consistent loss: class 0 ignored everywhere
    crit = SegmentationCriterion(aux_weight=0, cc_weight=1.0, ignore_index=0)
    _, parts = crit({"out": out, "aux": aux, "features": feats}, labels)
    masked = labels.masked_fill(labels == 0, 255)
    assert parts["cc"] == pytest.approx(CategoryConsistentLoss()(feats, masked).item(), rel=1e-10)
    assert parts["cc"] != pytest.approx(CategoryConsistentLoss()(feats, labels).item(), rel=1e-3)
