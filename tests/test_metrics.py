"""Metrics against direct float64 numpy implementations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidccnet.metrics import ConfusionMatrix, FlickerMeter, VideoConsistency, flicker_rate

IGN = 255


# ----------------------------------------------------------------------------- numpy references


def np_iou_figures(preds, gts, k, ignore=IGN):
    """Per-class IoU by direct counting (no confusion matrix), mIoU, fwIoU, pixel acc."""
    p = np.concatenate([np.asarray(x).ravel() for x in preds]).astype(np.int64)
    g = np.concatenate([np.asarray(x).ravel() for x in gts]).astype(np.int64)
    keep = g != ignore
    p, g = p[keep], g[keep]
    iou = np.full(k, np.nan, dtype=np.float64)
    for c in range(k):
        inter = np.sum((p == c) & (g == c))
        union = np.sum((p == c) | (g == c))
        if union > 0:
            iou[c] = inter / union
    miou = np.nanmean(iou) if np.any(~np.isnan(iou)) else np.nan
    fw = sum(np.mean(g == c) * iou[c] for c in range(k) if np.any(g == c)) if g.size else np.nan
    acc = np.mean(p == g) if g.size else np.nan
    return iou, miou, fw, acc


def np_vc_ratios(pred, gt, n, ignore=IGN):
    """The stricter variant (count_ignored=False): VSPW's loop with ignore pixels left out of g."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    ratios = []
    for i in range(len(gt) - n):
        g = np.ones(gt.shape[1:], dtype=bool)
        p = np.ones(gt.shape[1:], dtype=bool)
        for j in range(1, n):
            g &= gt[i] == gt[i + j]
            p &= pred[i] == pred[i + j]
        g &= gt[i] != ignore
        if g.sum() == 0:
            continue
        ratios.append(float((g & p).sum()) / float(g.sum()))
    return ratios


def official_vc_accs(gt_list, pred_list, clip_num):
    """VSPW's ``get_common`` (VC_perclip.py) transcribed: one accuracy per window, NaN for an
    empty g. No special case for ignore: a constant ignore pixel is consistent like any value."""
    h, w = gt_list[0].shape
    accs = []
    for i in range(len(gt_list) - clip_num):
        global_common = np.ones((h, w))
        predglobal_common = np.ones((h, w))
        for j in range(1, clip_num):
            common = gt_list[i] == gt_list[i + j]
            global_common = np.logical_and(global_common, common)
            pred_common = pred_list[i] == pred_list[i + j]
            predglobal_common = np.logical_and(predglobal_common, pred_common)
        pred = predglobal_common * global_common
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = pred.sum() / global_common.sum()
        accs.append(acc)
    return accs


def official_mvc(videos, clip_num):
    """VSPW's script: videos with L <= clip_num are skipped, nan-mean over all windows."""
    total = []
    for pred, gt in videos:
        if len(gt) <= clip_num:
            continue
        total.extend(official_vc_accs(list(gt), list(pred), clip_num))
    return float(np.nanmean(np.array(total))) if total else math.nan


def official_miou(preds, gts, num_class):
    """VSPW's Evaluator transcribed: confusion matrix of gt in [0, K), IoU with the full union,
    mean over the classes present in the ground truth (rows with pixels)."""
    cm = np.zeros((num_class, num_class))
    for p, g in zip(preds, gts):
        g, p = np.asarray(g), np.asarray(p)
        mask = (g >= 0) & (g < num_class)
        label = num_class * g[mask].astype("int") + p[mask]
        cm += np.bincount(label, minlength=num_class**2).reshape(num_class, num_class)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(cm) / (np.sum(cm, axis=1) + np.sum(cm, axis=0) - np.diag(cm))
        isval = np.sum(cm, axis=1) > 0
        return float(np.nansum(iou * isval) / isval.sum())


def np_flicker(pred):
    pred = np.asarray(pred)
    if len(pred) < 2:
        return 0.0
    return float(np.mean([np.mean(pred[t] != pred[t - 1]) for t in range(1, len(pred))]))


# ----------------------------------------------------------------------------- ConfusionMatrix


def test_all_correct_gives_one():
    gt = torch.tensor([[0, 1, 2], [2, 1, 0]])
    cm = ConfusionMatrix(3)
    cm.update(gt.clone(), gt)
    r = cm.compute()
    assert r["mIoU"] == 1.0 and r["pixel_acc"] == 1.0 and r["fwIoU"] == 1.0
    assert r["IoU"] == [1.0, 1.0, 1.0]


def test_all_wrong_gives_zero():
    gt = torch.tensor([[0, 1, 2], [2, 1, 0]])
    cm = ConfusionMatrix(3)
    cm.update((gt + 1) % 3, gt)
    r = cm.compute()
    assert r["mIoU"] == 0.0 and r["pixel_acc"] == 0.0 and r["fwIoU"] == 0.0


def test_absent_class_is_nan_and_excluded_from_mean():
    gt = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    r = cm.compute()
    # class 0: inter 1, union 2; class 1: inter 2, union 3; classes 2, 3 absent
    assert r["IoU"][0] == pytest.approx(0.5)
    assert r["IoU"][1] == pytest.approx(2 / 3)
    assert math.isnan(r["IoU"][2]) and math.isnan(r["IoU"][3])
    assert r["mIoU"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert r["fwIoU"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert r["pixel_acc"] == pytest.approx(0.75)
    assert r["mAcc"] == pytest.approx((0.5 + 1.0) / 2)


def test_class_only_in_prediction_gets_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([2, 0]), torch.tensor([0, 0]))
    r = cm.compute()
    assert r["IoU"][2] == 0.0 and r["IoU"][0] == 0.5 and math.isnan(r["IoU"][1])


def test_miou_over_gt_leaves_out_a_class_only_predicted():
    gt = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])  # class 2 is only predicted: IoU 0
    union, over_gt = ConfusionMatrix(3), ConfusionMatrix(3, miou_over="gt")
    for cm in (union, over_gt):
        cm.update(pred, gt)
    ru, rg = union.compute(), over_gt.compute()
    assert ru["IoU"] == rg["IoU"] == [0.5, 1.0, 0.0]
    assert ru["mIoU"] == pytest.approx((0.5 + 1.0 + 0.0) / 3, rel=1e-15)
    assert rg["mIoU"] == pytest.approx((0.5 + 1.0) / 2, rel=1e-15)
    assert rg["mIoU"] == pytest.approx(official_miou([pred.numpy()], [gt.numpy()], 3), rel=1e-15)
    # the other figures do not depend on miou_over
    for key in ("fwIoU", "pixel_acc", "mAcc", "pixels"):
        assert ru[key] == rg[key]
    with pytest.raises(ValueError, match="miou_over"):
        ConfusionMatrix(3, miou_over="present")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_over_gt_random_vs_official_evaluator(seed):
    rng = np.random.default_rng(seed)
    k = 7
    cm = ConfusionMatrix(k, miou_over="gt")
    preds, gts = [], []
    for _ in range(3):
        shape = (int(rng.integers(1, 4)), 6, 7)
        g = rng.integers(0, k - 2, size=shape)  # classes k-2, k-1 never in the ground truth
        g[rng.random(shape) < 0.2] = IGN
        p = np.where(rng.random(shape) < 0.6, g, rng.integers(0, k, size=shape))
        p[p == IGN] = k - 1  # predicted under ignore and elsewhere: must not count
        preds.append(p)
        gts.append(g)
        cm.update(p, g)
    expected = official_miou(preds, gts, k)
    assert cm.compute()["mIoU"] == pytest.approx(expected, rel=1e-12)
    # the mmseg figure differs here: classes k-2, k-1 are predicted but never in the gt
    union = ConfusionMatrix(k)
    assert union.miou_over == "union"
    for p, g in zip(preds, gts):
        union.update(p, g)
    assert union.compute()["mIoU"] < expected


def test_ignore_pixels_are_not_counted():
    gt = torch.tensor([0, IGN, 1, IGN])
    pred = torch.tensor([0, 1, 1, 2])  # predictions under ignore are wrong but must not count
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    r = cm.compute()
    assert r["mIoU"] == 1.0 and r["pixels"] == 2
    assert math.isnan(r["IoU"][2])


def test_empty_matrix_is_nan():
    cm = ConfusionMatrix(2)
    r = cm.compute()
    assert math.isnan(r["mIoU"]) and math.isnan(r["pixel_acc"])
    cm.update(torch.full((2, 2), 0), torch.full((2, 2), IGN))
    assert math.isnan(cm.compute()["mIoU"])


def test_out_of_range_labels_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="ground truth"):
        cm.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="prediction"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="prediction"):  # ignore_index is no valid prediction
        cm.update(torch.tensor([0, IGN]), torch.tensor([0, 1]))
    assert cm.matrix().sum() == 0  # nothing counted by the refused updates
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="argmax"):
        cm.update(torch.zeros(2), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_random_vs_numpy(seed):
    rng = np.random.default_rng(seed)
    k = 6
    preds, gts = [], []
    cm = ConfusionMatrix(k)
    for _ in range(4):
        shape = (rng.integers(1, 4), rng.integers(3, 9), rng.integers(3, 9))
        g = rng.integers(0, k - 1, size=shape)  # class k-1 never in gt
        g[rng.random(shape) < 0.2] = IGN
        p = np.where(rng.random(shape) < 0.6, g % k, rng.integers(0, k, size=shape))
        p[p == IGN] = 0
        preds.append(p)
        gts.append(g)
        cm.update(torch.from_numpy(p), torch.from_numpy(g))
    iou, miou, fw, acc = np_iou_figures(preds, gts, k)
    r = cm.compute()
    np.testing.assert_allclose(r["IoU"], iou, rtol=1e-12, equal_nan=True)
    assert r["mIoU"] == pytest.approx(miou, rel=1e-12)
    assert r["fwIoU"] == pytest.approx(fw, rel=1e-12)
    assert r["pixel_acc"] == pytest.approx(acc, rel=1e-12)
    # numpy inputs and reset
    cm2 = ConfusionMatrix(k)
    for p, g in zip(preds, gts):
        cm2.update(p, g)
    np.testing.assert_array_equal(cm2.matrix(), cm.matrix())
    cm2.reset()
    assert cm2.matrix().sum() == 0


def test_merge_of_shards_equals_whole():
    rng = np.random.default_rng(5)
    p = rng.integers(0, 4, size=(6, 5, 5))
    g = rng.integers(0, 4, size=(6, 5, 5))
    whole = ConfusionMatrix(4)
    whole.update(p, g)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(p[:2], g[:2])
    b.update(p[2:], g[2:])
    np.testing.assert_array_equal(a.matrix() + b.matrix(), whole.matrix())


def test_all_reduce_single_process_group(tmp_path):
    """all_reduce runs through torch.distributed (gloo, world size 1) and keeps the state."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    vc = VideoConsistency(1)
    vc.update(torch.zeros(3, 2, 2, dtype=torch.long), torch.zeros(3, 2, 2, dtype=torch.long))
    fm = FlickerMeter()
    fm.update(torch.zeros(2, 2))
    fm.update(torch.ones(2, 2))
    before = (cm.matrix(), vc.compute(), fm.compute())
    cm.all_reduce()  # no process group: no-op
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        cm.all_reduce()
        vc.all_reduce()
        fm.all_reduce()
    finally:
        dist.destroy_process_group()
    np.testing.assert_array_equal(cm.matrix(), before[0])
    assert (vc.compute(), fm.compute()) == before[1:]


# ----------------------------------------------------------------------------- VideoConsistency


def _const_video(length, value=1, size=(4, 5)):
    return torch.full((length, *size), value, dtype=torch.long)


def test_vc_windows_range_l_minus_n():
    n = 4
    gt = _const_video(n)
    vc = VideoConsistency(n)
    vc.update(gt, gt)  # L == n: range(0) -> no window
    assert vc.windows == 0 and math.isnan(vc.compute())
    vc.reset()
    gt = _const_video(n + 1)
    vc.update(gt, gt)  # L == n + 1: exactly one window
    assert vc.windows == 1 and vc.compute() == 1.0
    vc.reset()
    gt = _const_video(n + 3)
    vc.update(gt, gt)
    assert vc.windows == 3


def test_vc_constant_vs_alternating_predictions():
    n = 3
    gt = _const_video(8)
    const_pred = _const_video(8, value=2)  # wrong but constant: perfectly consistent
    vc = VideoConsistency(n)
    vc.update(const_pred, gt)
    assert vc.compute() == 1.0
    alt = torch.stack([_const_video(1, value=t % 2)[0] for t in range(8)])
    vc.reset()
    vc.update(alt, gt)
    assert vc.compute() == 0.0


def test_vc_ignore_and_empty_windows_stricter_convention():
    n = 2
    gt = _const_video(5, value=IGN)
    vc = VideoConsistency(n, count_ignored=False)
    vc.update(gt.clone(), gt)  # all ignore: every window has empty g -> skipped
    assert vc.windows == 0 and math.isnan(vc.compute())
    # half the pixels ignored, the other half constant and predicted constant
    gt = _const_video(5, value=1)
    gt[:, :2] = IGN
    pred = _const_video(5, value=0)
    pred[:, :2] = torch.arange(5).view(5, 1, 1)  # flickers only under ignore
    vc.reset()
    vc.update(pred, gt)
    assert vc.compute() == 1.0 and vc.windows == 3


def test_vc_hand_made_partial():
    # 1x2 frames, L=4, n=2 -> windows 0, 1 (range(2)); pixel 0 gt constant, pixel 1 changes at t=1
    gt = torch.tensor([[[0, 0]], [[0, 1]], [[0, 1]], [[0, 1]]])
    pred = torch.tensor([[[0, 0]], [[1, 1]], [[1, 1]], [[0, 0]]])
    # window 0 (t 0,1): g={px0}, p={} -> 0; window 1 (t 1,2): g={px0,px1}, p={both} -> 1
    vc = VideoConsistency(2)
    vc.update(pred, gt)
    assert vc.windows == 2 and vc.compute() == pytest.approx(0.5)
    assert np_vc_ratios(pred.numpy(), gt.numpy(), 2) == [0.0, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vc_random_vs_numpy_stricter_convention(seed):
    rng = np.random.default_rng(seed)
    vcs = {n: VideoConsistency(n, count_ignored=False) for n in (1, 2, 3, 5)}
    ratios = {n: [] for n in vcs}
    for _ in range(3):
        length = int(rng.integers(1, 12))
        shape = (length, 5, 6)
        # slowly changing labels so that consistent pixels exist
        gt = np.cumsum(rng.random(shape) < 0.15, axis=0) % 3
        gt[rng.random(shape) < 0.1] = IGN
        pred = np.cumsum(rng.random(shape) < 0.2, axis=0) % 3
        for n, vc in vcs.items():
            vc.update(torch.from_numpy(pred), torch.from_numpy(gt))
            ratios[n] += np_vc_ratios(pred, gt, n)
    for n, vc in vcs.items():
        assert vc.windows == len(ratios[n])
        if ratios[n]:
            assert vc.compute() == pytest.approx(float(np.mean(ratios[n])), rel=1e-12)
        else:
            assert math.isnan(vc.compute())


def test_vc_streaming_matches_update_and_merges():
    rng = np.random.default_rng(9)
    pred = torch.from_numpy(rng.integers(0, 2, size=(10, 3, 3)))
    gt = torch.from_numpy(np.cumsum(rng.random((10, 3, 3)) < 0.1, axis=0) % 2)
    whole = VideoConsistency(3)
    whole.update(pred, gt)
    stream = VideoConsistency(3)
    stream.start_video()
    for t in range(10):
        stream.push(pred[t], gt[t])
    stream.end_video()
    assert (stream.ratio_sum, stream.windows) == (whole.ratio_sum, whole.windows)
    with pytest.raises(ValueError, match="size"):
        stream.start_video()
        stream.push(pred[0], gt[0])
        stream.push(pred[0, :2], gt[0, :2])


def _void_videos(seed, lengths, k=3, size=(6, 7)):
    """Slowly changing labels with a constant void block, flickering void pixels and
    predictions that flicker under the void (so the two conventions differ)."""
    rng = np.random.default_rng(seed)
    videos = []
    for length in lengths:
        shape = (length, *size)
        gt = np.cumsum(rng.random(shape) < 0.1, axis=0) % k
        gt[:, :2, :3] = IGN  # a constant void region
        gt[rng.random(shape) < 0.05] = IGN  # scattered void pixels
        pred = np.where(rng.random(shape) < 0.9, gt % k, rng.integers(0, k, size=shape))
        pred[:, :2, :3] = rng.integers(0, k, size=(length, 2, 3))  # flickers under the void
        videos.append((pred, gt))
    return videos


def test_vc_default_is_vspw_definition_with_void_regions():
    """Constant void pixels count (no special case for ignore), as in VSPW's code."""
    # 1x4 frames: pixels 0, 1 constant class 1 predicted constant; pixels 2, 3 constant void
    # with a flickering prediction. VSPW: g = all 4 pixels, p = pixels 0, 1 -> 0.5 per window.
    gt = torch.tensor([[[1, 1, IGN, IGN]]] * 4)
    pred = torch.tensor([[[1, 1, t % 2, t % 3]] for t in range(4)])
    official = official_mvc([(pred.numpy(), gt.numpy())], 2)
    assert official == 0.5
    vc = VideoConsistency(2)
    vc.update(pred, gt)
    assert vc.windows == 2 and vc.compute() == official
    strict = VideoConsistency(2, count_ignored=False)
    strict.update(pred, gt)
    assert strict.compute() == 1.0  # the stricter convention only sees pixels 0, 1


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_vc_default_random_vs_official_code(n):
    videos = _void_videos(n, lengths=[n, n + 1, 5, 12, 3])  # includes L <= n and L == n + 1
    # a video whose ground truth changes everywhere every frame: every window has empty g (NaN)
    moving = np.broadcast_to(np.arange(6)[:, None, None] % 3, (6, 6, 7)).copy()
    videos.append((moving.copy(), moving))
    vc = VideoConsistency(n)
    for pred, gt in videos:
        vc.update(torch.from_numpy(pred), torch.from_numpy(gt))
    expected = official_mvc(videos, n)
    windows = sum(
        int(np.sum(~np.isnan(official_vc_accs(list(g), list(p), n))))
        for p, g in videos
        if len(g) > n
    )
    assert vc.windows == windows
    if math.isnan(expected):
        assert math.isnan(vc.compute())
    else:
        assert vc.compute() == pytest.approx(expected, rel=1e-12)
    strict = VideoConsistency(n, count_ignored=False)
    for pred, gt in videos:
        strict.update(pred, gt)
    ratios = [r for pred, gt in videos for r in np_vc_ratios(pred, gt, n)]
    if ratios:
        assert strict.compute() == pytest.approx(float(np.mean(ratios)), rel=1e-12)
        if n > 1:  # n = 1: every window scores 1 in both conventions
            assert strict.compute() != pytest.approx(vc.compute(), rel=1e-6)


def test_vc_videos_not_longer_than_n_contribute_nothing():
    n = 4
    short_pred = torch.stack([torch.full((2, 2), t % 2) for t in range(n)])  # would score 0
    gt_short = torch.zeros(n, 2, 2, dtype=torch.long)
    vc = VideoConsistency(n)
    vc.update(short_pred, gt_short)
    assert vc.windows == 0 and math.isnan(vc.compute())
    long_gt = torch.zeros(n + 2, 2, 2, dtype=torch.long)
    vc.update(long_gt.clone(), long_gt)
    assert vc.windows == 2 and vc.compute() == 1.0
    assert (
        official_mvc(
            [(short_pred.numpy(), gt_short.numpy()), (long_gt.numpy(), long_gt.numpy())], n
        )
        == 1.0
    )


def _meters_rank_main(rank, world, store, videos, k, queue):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        queue.put((rank, _meter_figures(videos[rank::world], k, reduce=True)))
    finally:
        dist.destroy_process_group()


def _meter_figures(videos, k, reduce=False):
    meters = {
        "cm_union": ConfusionMatrix(k),
        "cm_gt": ConfusionMatrix(k, miou_over="gt"),
        "vc_vspw": VideoConsistency(3),
        "vc_strict": VideoConsistency(3, count_ignored=False),
        "flicker": FlickerMeter(),
    }
    for pred, gt in videos:
        for name in ("cm_union", "cm_gt"):
            meters[name].update(pred, gt)
        for name in ("vc_vspw", "vc_strict"):
            meters[name].update(pred, gt)
        meters["flicker"].start_video()
        for frame in pred:
            meters["flicker"].update(frame)
    if reduce:
        for m in meters.values():
            m.all_reduce()
    return {
        "mIoU_union": meters["cm_union"].compute()["mIoU"],
        "mIoU_gt": meters["cm_gt"].compute()["mIoU"],
        "mVC_vspw": meters["vc_vspw"].compute(),
        "mVC_strict": meters["vc_strict"].compute(),
        "windows": meters["vc_vspw"].windows,
        "flicker": meters["flicker"].compute(),
        "pairs": meters["flicker"].pairs,
    }


def test_two_ranks_all_reduce_both_conventions(tmp_path, fork_ranks):
    """Sharding videos over two gloo ranks and all_reduce gives the single-process figures."""
    k = 4
    videos = [
        (torch.from_numpy(p), torch.from_numpy(g))
        for p, g in _void_videos(11, lengths=[6, 9, 4, 7], k=k - 1)
    ]
    pred0, gt0 = videos[0]
    pred0[0][gt0[0] != IGN] = k - 1  # class k - 1 only predicted (the gt has classes 0..k-2)
    local = _meter_figures(videos, k)
    assert local["mIoU_union"] != pytest.approx(local["mIoU_gt"], rel=1e-6)
    results = fork_ranks(_meters_rank_main, 2, tmp_path / "store", videos, k)
    assert sorted(results) == [0, 1]
    for r in results.values():
        assert r["windows"] == local["windows"] and r["pairs"] == local["pairs"]
        for key in ("mIoU_union", "mIoU_gt", "mVC_vspw", "mVC_strict", "flicker"):
            assert r[key] == pytest.approx(local[key], rel=1e-12), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vc_and_flicker_frames_make_no_host_sync():
    """push / update keep their sums on the GPU: no synchronisation until compute()."""
    (pred, gt), *_ = _void_videos(3, lengths=[10])
    cpu_vc, cpu_fm = VideoConsistency(3), FlickerMeter()
    cpu_vc.update(pred, gt)
    for frame in pred:
        cpu_fm.update(frame)
    pred_d, gt_d = torch.from_numpy(pred).cuda(), torch.from_numpy(gt).cuda()
    vc, fm = VideoConsistency(3), FlickerMeter()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        vc.start_video()
        for t in range(len(pred)):
            vc.push(pred_d[t], gt_d[t])
            fm.update(pred_d[t])
        vc.end_video()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert vc.compute() == cpu_vc.compute() and vc.windows == cpu_vc.windows
    # the same frames: equal up to the order of float64 additions (an H200 gave 0.26190476190476186
    # against the CPU's 0.261904761904762)
    assert fm.compute() == pytest.approx(cpu_fm.compute(), rel=1e-12)


# ----------------------------------------------------------------------------- flicker


def test_flicker_hand_made():
    assert flicker_rate(_const_video(6)) == 0.0
    alt = torch.stack([_const_video(1, value=t % 2)[0] for t in range(6)])
    assert flicker_rate(alt) == 1.0
    assert flicker_rate(_const_video(1)) == 0.0
    assert flicker_rate(torch.zeros(0, 2, 2, dtype=torch.long)) == 0.0
    v = torch.tensor([[[0, 0, 0, 0]], [[0, 1, 0, 0]], [[0, 1, 0, 0]]])
    assert flicker_rate(v) == pytest.approx((0.25 + 0.0) / 2)
    with pytest.raises(ValueError, match="L, H, W"):
        flicker_rate(torch.zeros(2, 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_flicker_random_vs_numpy_and_meter(seed):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 3, size=(7, 4, 5))
    expected = np_flicker(video)
    assert flicker_rate(torch.from_numpy(video)) == pytest.approx(expected, rel=1e-12)
    meter = FlickerMeter()
    for frame in video:
        meter.update(torch.from_numpy(frame))
    assert meter.compute() == pytest.approx(expected, rel=1e-12)
    # a second video: pairs are pooled, no pair spans the two videos
    other = rng.integers(0, 3, size=(3, 4, 5))
    meter.start_video()
    for frame in other:
        meter.update(frame)
    pairs = [np.mean(v[t] != v[t - 1]) for v in (video, other) for t in range(1, len(v))]
    assert meter.pairs == 8 and meter.compute() == pytest.approx(np.mean(pairs), rel=1e-12)
    assert FlickerMeter().compute() == 0.0


def test_confusion_update_waits_for_the_device_only_for_its_check_and_bincount():
    """On a GPU each op whose result size or value the host needs waits for the device. An
    update read its range check (one bool), then selected the labelled pixels with two
    boolean masks (a nonzero() each), then bincount (which reads its input's min and max).
    The labelled-pixel selection is now a where() into a spare bin: same matrix, two waits
    fewer. Seen here as the aten ops an update dispatches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Waits(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            masks = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                        for a in args if isinstance(a, (list, tuple)) for i in a)
            if name in ("_local_scalar_dense", "nonzero", "masked_select", "bincount",
                        "unique", "_unique2") or (name == "index" and masks):
                self.ops.append(name)
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 4, (2, 3, 5, 6), generator=g)
    target = torch.randint(0, 4, (2, 3, 5, 6), generator=g)
    target[0, 1] = IGN
    pred[0, 1, 0, 0] = IGN  # an ignored pixel's prediction is not checked nor counted
    cm = ConfusionMatrix(4)
    with Waits() as seen:
        cm.update(pred, target)
    assert seen.ops == ["_local_scalar_dense", "bincount"]
    want = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != IGN:
            want[t, p] += 1
    assert np.array_equal(cm.matrix(), want) and cm.matrix().dtype == np.int64
    cm.update(pred, target)
    assert np.array_equal(cm.matrix(), 2 * want)
