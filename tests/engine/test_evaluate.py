"""Evaluator (sliding clips, streaming, TTA) and report writing, with stand-in models."""

from __future__ import annotations

import io
import json
import math
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from vidccnet.data.base import EvalVideo
from vidccnet.engine.evaluate import Evaluator, clip_tensor, plan_clips
from vidccnet.engine.report import evaluate_and_report, format_table

IGN = 255
STEP = 20  # red-channel value per class in the "label encoded in the frame" videos


# ----------------------------------------------------------------------------- stand-ins


class _Decoder(nn.Module):
    """Recovers the uint8 red channel from a normalised clip, whatever affine normalisation."""

    def __init__(self) -> None:
        super().__init__()
        lo = clip_tensor(np.zeros((1, 1, 1, 3), np.uint8))[0, 0, 0, 0].item()
        hi = clip_tensor(np.full((1, 1, 1, 3), 255, np.uint8))[0, 0, 0, 0].item()
        self.lo, self.span = lo, hi - lo

    def red(self, clip: torch.Tensor) -> torch.Tensor:
        return (clip[:, 0] - self.lo) / self.span * 255.0  # (B, T, H, W)


class RedChannelModel(_Decoder):
    """Pointwise: class k where the red value is closest to k * STEP; logits -|red - k * STEP|,
    piecewise linear in red, so logits resized between two classes' pixels pick one of the two
    (quadratic ones would pick a class in between).

    Pointwise, hence equivariant to flips, crops and translations. ``mute_even_calls`` makes the
    1st, 3rd, ... forward pass return uniform logits, so the other pass alone decides.
    """

    def __init__(self, k: int, mute_even_calls: bool = False) -> None:
        super().__init__()
        self.k = k
        self.mute = mute_even_calls
        self.calls = 0
        self.register_buffer("centres", torch.arange(k, dtype=torch.float32) * STEP)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W)
        assert not self.training, "the evaluator must call the model in eval mode"
        self.calls += 1
        v = self.red(clip).unsqueeze(1)  # (B, 1, T, H, W)
        logits = -(v - self.centres.view(1, -1, 1, 1, 1)).abs()  # (B, K, T, H, W)
        if self.mute and self.calls % 2 == 1:
            logits = torch.zeros_like(logits)
        return logits


class ClipMaxModel(_Decoder):
    """Every position of a clip predicts the largest frame index in the clip (red = 10 * index)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, clip: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W)
        b, _, t, h, w = clip.shape
        idx = (self.red(clip).mean(dim=(2, 3)) / 10.0).round().long()  # (B, T)
        top = idx.max(dim=1).values  # (B,)
        logits = torch.zeros(b, self.k, t, h, w)
        logits[torch.arange(b), top] = 1.0
        return logits


def encoded_video(pred_maps, gt_maps, name="v", consecutive=False, labelled=None, stats=None):
    """Frames whose red channel encodes ``pred_maps`` (so RedChannelModel predicts them)."""
    pred_maps = np.asarray(pred_maps)
    gt_maps = np.asarray(gt_maps)
    length = len(pred_maps)

    def load_frame(i):
        frame = np.zeros((*pred_maps.shape[1:], 3), np.uint8)
        frame[..., 0] = pred_maps[i] * STEP
        frame[..., 1] = 90
        if stats is not None:
            stats["loads"] += 1
            stats["live"] = [r for r in stats["live"] if r() is not None]
            stats["live"].append(weakref.ref(frame))
            stats["max_live"] = max(stats["max_live"], len(stats["live"]))
        return frame

    return EvalVideo(
        name=name,
        num_frames=length,
        load_frame=load_frame,
        load_label=lambda i: gt_maps[i].astype(np.int64),
        labelled=list(range(length)) if labelled is None else labelled,
        consecutive=consecutive,
    )


def index_video(length, size=(4, 6)):
    def load_frame(i):
        frame = np.zeros((*size, 3), np.uint8)
        frame[..., 0] = 10 * i
        return frame

    return EvalVideo(
        "idx", length, load_frame, lambda i: np.zeros(size, np.int64), list(range(length)), True
    )


def block_labels(rng, length, k, blocks=(3, 4), block=8):
    """Piecewise-constant (block x block) label maps, asymmetric left-right."""
    small = rng.integers(0, k, size=(length, *blocks))
    small[:, 0, 0] = 0
    small[:, 0, -1] = k - 1
    return np.kron(small, np.ones((1, block, block), dtype=np.int64))


# ----------------------------------------------------------------------------- numpy references


def np_vc_ratios(pred, gt, n):
    ratios = []
    for i in range(len(gt) - n):
        g = np.all(gt[i : i + n] == gt[i], axis=0) & (gt[i] != IGN)
        p = np.all(pred[i : i + n] == pred[i], axis=0)
        if g.sum():
            ratios.append((g & p).sum() / g.sum())
    return ratios


def np_miou(preds, gts, k):
    p = np.concatenate([x.ravel() for x in preds])
    g = np.concatenate([x.ravel() for x in gts])
    keep = g != IGN
    p, g = p[keep], g[keep]
    ious = []
    for c in range(k):
        union = np.sum((p == c) | (g == c))
        if union:
            ious.append(np.sum((p == c) & (g == c)) / union)
    return float(np.mean(ious))


# ----------------------------------------------------------------------------- plan_clips


def test_plan_clips_causal_and_centre():
    plans = plan_clips(range(5), 5, clip_len=3)
    assert [p.indices for p in plans] == [(0, 0, 0), (0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 4)]
    assert all(p.targets == ((i, 2),) for i, p in enumerate(plans))
    plans = plan_clips([0, 4], 5, clip_len=3, anchor="centre")
    assert [p.indices for p in plans] == [(0, 0, 1), (3, 4, 4)]
    assert [p.targets for p in plans] == [((0, 1),), ((4, 1),)]
    assert plan_clips([0, 4], 5, clip_len=3, anchor="center") == plans  # the US spelling
    # stride 2, causal: one pass predicts the last two clip positions
    plans = plan_clips(range(5), 5, clip_len=4, clip_stride=2)
    assert [p.indices for p in plans] == [(0, 0, 0, 1), (0, 1, 2, 3), (2, 3, 4, 4)]
    assert [p.targets for p in plans] == [((0, 2), (1, 3)), ((2, 2), (3, 3)), ((4, 2),)]
    # sparse needed frames are never grouped beyond the stride
    plans = plan_clips([9, 2, 2, 3], 10, clip_len=2, clip_stride=2)
    assert [p.targets for p in plans] == [((2, 0), (3, 1)), ((9, 0),)]
    with pytest.raises(ValueError, match="clip_stride"):
        plan_clips([0], 3, clip_len=2, clip_stride=3)
    with pytest.raises(ValueError, match="anchor"):
        plan_clips([0], 3, clip_len=2, anchor="future")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        plan_clips([3], 3, clip_len=2)


@pytest.mark.parametrize(
    "clip_len,stride,anchor",
    [
        (1, 1, "causal"),
        (4, 1, "causal"),
        (5, 1, "centre"),
        (4, 1, "centre"),
        (4, 2, "causal"),
        (4, 4, "causal"),
        (6, 3, "centre"),
        (6, 2, "centre"),
    ],
)
def test_each_frame_sees_the_clip_the_rule_says(clip_len, stride, anchor):
    """ClipMaxModel's prediction for frame i = the largest index of the clip that predicted i."""
    length = 13
    ev = Evaluator(num_classes=16, clip_len=clip_len, clip_stride=stride, anchor=anchor)
    got = {i: int(p[0, 0]) for i, p in ev.predict_video(ClipMaxModel(16), index_video(length))}
    assert sorted(got) == list(range(length))
    offset = clip_len - stride if anchor == "causal" else (clip_len - stride + 1) // 2
    first = 0
    while first < length:  # independent restatement of the grouping rule
        last_in_clip = min(first - offset + clip_len - 1, length - 1)
        for j in range(first, min(first + stride, length)):
            assert got[j] == last_in_clip, (j, got[j], last_in_clip)
            if anchor == "causal" and stride == 1:
                assert got[j] == j  # strictly causal: frame i only saw frames <= i
        first += stride


@pytest.mark.parametrize("anchor", ["causal", "centre"])
def test_frame_stride_gives_each_frame_the_clip_training_gives_its_label(anchor):
    """data.frame_stride d > 1: the clip that predicts frame i is the training clip of a label
    at i (frames d apart, clip_indices); evaluation used to run consecutive frames."""
    from vidccnet.data.clips import anchor_position, clip_indices

    plans = plan_clips([3, 0, 11], 12, clip_len=4, anchor=anchor, frame_stride=3)
    pos = anchor_position(4, anchor)
    assert [p.targets for p in plans] == [((i, pos),) for i in (0, 3, 11)]
    assert [list(p.indices) for p in plans] == [clip_indices(i, 12, 4, 3, anchor)
                                                for i in (0, 3, 11)]
    ev = Evaluator(num_classes=16, clip_len=3, anchor=anchor, frame_stride=2)
    got = {i: int(p[0, 0]) for i, p in ev.predict_video(ClipMaxModel(16), index_video(9))}
    assert got == {i: max(clip_indices(i, 9, 3, 2, anchor)) for i in range(9)}
    with pytest.raises(ValueError, match="clip_stride"):  # one frame per clip then
        plan_clips([0], 9, clip_len=4, clip_stride=2, frame_stride=2)


def test_centre_anchor_puts_the_frame_where_training_put_the_label():
    """For even T the labelled frame of a centre-anchored training clip has one more past
    frame than future ones (vidccnet.data.clips.anchor_position); evaluation put the
    predicted frame one step earlier (one more future frame)."""
    from vidccnet.data.clips import anchor_position

    for clip_len in range(1, 8):
        (plan,) = plan_clips([10], 30, clip_len=clip_len, anchor="centre")
        assert plan.targets == ((10, anchor_position(clip_len, "centre")),), clip_len


# ----------------------------------------------------------------------------- evaluation


def test_perfect_model_gives_miou_one_and_restores_train_mode():
    rng = np.random.default_rng(0)
    k = 5
    labels = block_labels(rng, 6, k)
    model = RedChannelModel(k)
    model.train()
    ev = Evaluator(num_classes=k, clip_len=3)
    r = ev.run(model, [encoded_video(labels, labels, consecutive=True)])
    assert model.training
    assert r["mIoU"] == 1.0 and r["pixel_acc"] == 1.0 and r["fwIoU"] == 1.0
    assert r["frames"] == 6 and r["forward_passes"] == 6 and r["videos"] == 1
    assert r["fps"] > 0 and r["seconds"] > 0
    assert r["mVC_8"] is None and r["mVC_16"] is None  # 6 frames: no window of 8 or 16


def test_figures_match_numpy_on_mixed_videos():
    """Frames encode an arbitrary prediction; figures must equal numpy on (pred, gt)."""
    rng = np.random.default_rng(1)
    k = 4
    videos, all_p, all_g, ratios, pairs = [], [], [], {3: [], 8: []}, []
    for v in range(4):
        length = [12, 20, 5, 9][v]
        consecutive = v != 2
        gt = np.cumsum(rng.random((length, 6, 7)) < 0.1, axis=0) % k
        gt[rng.random(gt.shape) < 0.05] = IGN
        pred = np.where(rng.random(gt.shape) < 0.85, gt % k, rng.integers(0, k, gt.shape))
        pred[gt == IGN] = 0
        labelled = list(range(length)) if consecutive else [1, 4]
        videos.append(encoded_video(pred, gt, f"v{v}", consecutive, labelled))
        all_p += [pred[i] for i in labelled]
        all_g += [gt[i] for i in labelled]
        if not consecutive:
            lone = ([pred[i] for i in labelled], [gt[i] for i in labelled])
        if consecutive:
            for n in ratios:
                ratios[n] += np_vc_ratios(pred, gt, n)
            pairs += [np.mean(pred[t] != pred[t - 1]) for t in range(1, length)]
    ev = Evaluator(num_classes=k, clip_len=4, clip_stride=2, vc_windows=(3, 8), batch_size=3)
    r = ev.run(RedChannelModel(k), videos)
    assert r["mIoU"] == pytest.approx(np_miou(all_p, all_g, k), rel=1e-12)
    assert r["mVC_3"] == pytest.approx(np.mean(ratios[3]), rel=1e-12)
    assert r["mVC_8"] == pytest.approx(np.mean(ratios[8]), rel=1e-12)
    assert r["flicker"] == pytest.approx(np.mean(pairs), rel=1e-12)
    assert r["frames"] == len(all_p) and r["consecutive_videos"] == 3
    # no consecutive video: temporal figures are None
    r2 = ev.run(RedChannelModel(k), [videos[2]])
    assert r2["mVC_3"] is None and r2["flicker"] is None
    assert r2["mIoU"] == pytest.approx(np_miou(*lone, k), rel=1e-12)


def _official_vc(videos, clip_num):
    """VSPW's VC_perclip.py logic: raw equality of the labels (no ignore case), windows
    range(L - n), videos with L <= n skipped, nan-mean of all windows."""
    accs = []
    for pred, gt in videos:
        for i in range(len(gt) - clip_num if len(gt) > clip_num else 0):
            g = np.ones(gt.shape[1:], dtype=bool)
            p = np.ones(gt.shape[1:], dtype=bool)
            for j in range(1, clip_num):
                g &= gt[i] == gt[i + j]
                p &= pred[i] == pred[i + j]
            with np.errstate(invalid="ignore"):
                accs.append((g & p).sum() / g.sum())
    return float(np.nanmean(accs))


def _official_miou(preds, gts, k):
    """VSPW's Evaluator: IoU from the confusion matrix, mean over classes with gt pixels."""
    cm = np.zeros((k, k))
    for p, g in zip(preds, gts):
        mask = (g >= 0) & (g < k)
        cm += np.bincount(k * g[mask] + p[mask], minlength=k * k).reshape(k, k)
    with np.errstate(invalid="ignore"):
        iou = np.diag(cm) / (cm.sum(1) + cm.sum(0) - np.diag(cm))
    isval = cm.sum(1) > 0
    return float(np.nansum(iou * isval) / isval.sum())


def test_vspw_convention_equals_the_official_scripts():
    rng = np.random.default_rng(7)
    k = 4
    raw, videos = [], []
    for v, length in enumerate((12, 9, 5)):
        shape = (length, 6, 7)
        gt = np.cumsum(rng.random(shape) < 0.1, axis=0) % (k - 1)  # class k - 1 never in gt
        gt[:, :2, :3] = IGN  # constant void region, prediction flickers there
        gt[rng.random(shape) < 0.05] = IGN
        pred = np.where(rng.random(shape) < 0.85, gt % k, rng.integers(0, k, shape))
        pred[:, :2, :3] = rng.integers(0, k, (length, 2, 3))
        raw.append((pred, gt))
        videos.append(encoded_video(pred, gt, f"v{v}", consecutive=True))
    kw = dict(num_classes=k, clip_len=3, vc_windows=(2, 8))
    r = Evaluator(**kw, metric_convention="vspw").run(RedChannelModel(k), videos)
    preds = [f for p, _ in raw for f in p]
    gts = [f for _, g in raw for f in g]
    assert r["metric_convention"] == "vspw"
    assert r["mIoU"] == pytest.approx(_official_miou(preds, gts, k), rel=1e-12)
    assert r["mVC_2"] == pytest.approx(_official_vc(raw, 2), rel=1e-12)
    assert r["mVC_8"] == pytest.approx(_official_vc(raw, 8), rel=1e-12)
    old = Evaluator(**kw).run(RedChannelModel(k), videos)  # default: the mmseg convention
    assert old["metric_convention"] == "mmseg"
    assert old["mIoU"] == pytest.approx(np_miou(preds, gts, k), rel=1e-12)
    assert old["mIoU"] < r["mIoU"]
    # mmsegmentation has no mVC: every convention's mVC is VSPW's definition (void counted)
    assert old["mVC_2"] == r["mVC_2"] and old["mVC_8"] == r["mVC_8"]
    # the labelled-pixels-only variant is a named option, never the default
    strict = Evaluator(**kw, vc_labelled_only=True).run(RedChannelModel(k), videos)
    ratios = [x for p, g in raw for x in np_vc_ratios(p, g, 2)]
    assert strict["mVC_2"] == pytest.approx(np.mean(ratios), rel=1e-12)
    assert strict["mVC_2"] != r["mVC_2"] and strict["mIoU"] == old["mIoU"]
    for key in ("fwIoU", "pixel_acc", "flicker"):
        assert old[key] == r[key] == strict[key]
    with pytest.raises(ValueError, match="metric_convention"):
        Evaluator(**kw, metric_convention="auto")


def test_metric_convention_from_the_config():
    from vidccnet.engine.build import evaluator_kwargs
    from vidccnet.engine.config import Config, ConfigError, apply_overrides

    def convention(*overrides):
        return evaluator_kwargs(apply_overrides(Config(), list(overrides)), "cpu")[
            "metric_convention"
        ]

    assert Config().eval.metric_convention == "auto"
    assert convention() == "mmseg"  # synthetic
    assert convention("data.name=camvid") == "mmseg"
    assert convention("data.name=vspw") == "vspw"
    assert convention("data.name=vspw", "eval.metric_convention=mmseg") == "mmseg"
    assert convention("eval.metric_convention=vspw") == "vspw"
    with pytest.raises(ConfigError, match="metric_convention"):
        convention("eval.metric_convention=official")
    kwargs = evaluator_kwargs(apply_overrides(Config(), ["eval.vc_labelled_only=true"]), "cpu")
    assert kwargs["vc_labelled_only"] is True
    assert evaluator_kwargs(Config(), "cpu")["vc_labelled_only"] is False


def test_long_video_streams_with_bounded_memory():
    """300 frames: frames are loaded once each and only a few are alive at any time."""
    rng = np.random.default_rng(2)
    k = 3
    length, clip_len = 300, 4
    labels = np.repeat(rng.integers(0, k, size=(length // 30, 1, 2, 3)), 30, axis=0)
    labels = np.kron(labels, np.ones((1, 1, 4, 4), dtype=np.int64))[:, 0]  # (300, 8, 12)
    stats = {"loads": 0, "live": [], "max_live": 0}
    video = encoded_video(labels, labels, consecutive=True, stats=stats)
    ev = Evaluator(num_classes=k, clip_len=clip_len)
    r = ev.run(RedChannelModel(k), [video])
    assert r["mIoU"] == 1.0 and r["mVC_8"] == 1.0 and r["mVC_16"] == 1.0
    assert r["frames"] == length
    assert stats["loads"] == length  # every frame decoded exactly once
    assert stats["max_live"] <= clip_len + 1
    assert r["max_cached_frames"] <= clip_len


@pytest.mark.parametrize(
    "kwargs,mute",
    [
        ({"flip": True}, True),  # the flipped pass alone decides: it must be flipped back
        ({"scales": (1.0, 0.5)}, True),  # the 0.5 pass alone decides: resized back correctly
        ({"scales": (1.0, 0.5)}, False),
        ({"crop_size": 8}, False),  # 24 x 32 frames in overlapping 8 x 8 tiles
        ({"crop_size": (16, 12), "flip": True, "scales": (1.0, 0.5)}, False),
        ({"amp": True}, False),
        ({"amp": "bf16"}, False),
    ],
)
def test_tta_paths_keep_an_equivariant_prediction(kwargs, mute):
    rng = np.random.default_rng(3)
    k = 6
    labels = block_labels(rng, 3, k)  # (3, 24, 32)
    video = encoded_video(labels, labels, consecutive=True)
    model = RedChannelModel(k, mute_even_calls=mute)
    ev = Evaluator(num_classes=k, clip_len=2, **kwargs)
    preds = dict(ev.predict_video(model, video))
    for i in range(3):
        np.testing.assert_array_equal(preds[i].numpy(), labels[i])
    if "crop_size" in kwargs and kwargs["crop_size"] == 8:
        # tiles: rows 0, 6, 12, 16 x columns 0, 6, 12, 18, 24 -> 4 * 5 passes per clip
        assert ev.stats["forward_passes"] == 3 * 20


def test_batched_equals_unbatched_and_centre_anchor_runs():
    rng = np.random.default_rng(4)
    k = 4
    gt = np.cumsum(rng.random((9, 5, 5)) < 0.2, axis=0) % k
    pred = rng.integers(0, k, gt.shape)
    video = encoded_video(pred, gt, consecutive=True)
    a = Evaluator(num_classes=k, clip_len=3, vc_windows=(2,)).run(RedChannelModel(k), [video])
    b = Evaluator(num_classes=k, clip_len=3, vc_windows=(2,), batch_size=4, anchor="centre").run(
        RedChannelModel(k), [video]
    )
    for key in ("mIoU", "fwIoU", "mVC_2", "flicker"):
        assert a[key] == b[key]
    assert b["forward_passes"] == 3


def test_clear_errors():
    k = 3
    labels = np.zeros((2, 4, 4), np.int64)
    video = encoded_video(labels, labels)
    with pytest.raises(ValueError, match="num_classes"):
        Evaluator(num_classes=k + 1, clip_len=2).run(RedChannelModel(k), [video])
    bad_label = EvalVideo("b", 2, video.load_frame, lambda i: np.zeros((3, 3), np.int64), [0])
    with pytest.raises(ValueError, match="label"):
        Evaluator(num_classes=k, clip_len=2).run(RedChannelModel(k), [bad_label])
    sizes = EvalVideo("s", 2, lambda i: np.zeros((4 + i, 4, 3), np.uint8), video.load_label, [1])
    with pytest.raises(ValueError, match="one size"):
        Evaluator(num_classes=k, clip_len=2).run(RedChannelModel(k), [sizes])
    with pytest.raises(ValueError, match="no videos"):
        Evaluator(num_classes=k, clip_len=2).run(RedChannelModel(k), [])
    with pytest.raises(ValueError, match="scales"):
        Evaluator(num_classes=k, clip_len=2, scales=(0.0,))
    with pytest.raises(ValueError, match="amp"):
        Evaluator(num_classes=k, clip_len=2, amp="fp8")
    with pytest.raises(ValueError, match="crop_size"):
        Evaluator(num_classes=k, clip_len=2, crop_size=(4, 0))


# ----------------------------------------------------------------------------- report


def test_evaluate_and_report_writes_table_json_and_plots(tmp_path):
    rng = np.random.default_rng(5)
    k = 4
    gt = block_labels(rng, 10, k, blocks=(2, 3), block=4)  # (10, 8, 12)
    pred = gt.copy()
    pred[5:, :4] = (pred[5:, :4] + 1) % k
    names = ["sky", "road", "car", "person"]
    videos = [
        encoded_video(pred, gt, "clip/a", consecutive=True),
        encoded_video(pred, gt, "b", labelled=[3]),
    ]
    out = io.StringIO()
    report = evaluate_and_report(
        RedChannelModel(k),
        videos,
        tmp_path / "eval",
        class_names=names,
        config={"model": {"name": "stand-in"}},
        clip_len=3,
        vc_windows=(2, 8),
        strip_frames=4,
        stream=out,
    )
    table = out.getvalue()
    for word in names + ["mIoU", "fwIoU", "mVC_2", "mVC_8", "flicker"]:
        assert word in table
    data = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert data == report
    assert data["config"] == {"model": {"name": "stand-in"}}
    assert data["evaluator"]["clip_len"] == 3
    assert data["metric_convention"] == data["metrics"]["metric_convention"] == "mmseg"
    assert data["evaluator"]["miou_over"] == "union"
    assert data["evaluator"]["vc_count_ignored"] is True  # VSPW's mVC, whatever the mIoU
    assert "metric convention: mmseg" in table
    assert set(data["class_iou"]) == set(names)
    assert data["metrics"]["frames"] == 11
    expected = np_miou(
        [pred[i] for i in range(10)] + [pred[3]], [gt[i] for i in range(10)] + [gt[3]], k
    )
    assert data["metrics"]["mIoU"] == pytest.approx(expected, rel=1e-12)
    assert (tmp_path / "eval" / "class_iou.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "strip_clip_a.png").stat().st_size > 1000
    assert data["files"]["strip"].endswith("strip_clip_a.png")


def test_table_and_json_handle_nan(tmp_path):
    results = {
        "mIoU": 0.5,
        "IoU": [0.5, math.nan],
        "fwIoU": 0.5,
        "pixel_acc": 0.75,
        "mVC_8": None,
        "flicker": 0.1,
        "frames": 2,
        "videos": 1,
        "seconds": 1.0,
        "fps": 2.0,
    }
    table = format_table(results, ["a", "b"])
    assert "n/a" in table and "50.00" in table and "10.00" in table
    with pytest.raises(ValueError, match="class names"):
        format_table(results, ["a"])


# ----------------------------------------------------------------------------- distributed


def _rank_main(rank, world, store, videos, k, queue):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        r = Evaluator(num_classes=k, clip_len=3, vc_windows=(2,)).run(RedChannelModel(k), videos)
        queue.put((rank, r))
    finally:
        dist.destroy_process_group()


def _mixed_videos(seed, k, count=3):
    rng = np.random.default_rng(seed)
    videos = []
    for v in range(count):
        gt = np.cumsum(rng.random((6 + v, 5, 5)) < 0.2, axis=0) % k
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, k, gt.shape))
        videos.append(encoded_video(pred, gt, f"v{v}", consecutive=v != 1))
    return videos


def test_two_ranks_shard_videos_and_reduce_to_the_local_figures(tmp_path, fork_ranks):
    k = 3
    videos = _mixed_videos(6, k)
    local = Evaluator(num_classes=k, clip_len=3, vc_windows=(2,)).run(RedChannelModel(k), videos)
    results = fork_ranks(_rank_main, 2, tmp_path / "store", videos, k)
    for r in results.values():
        assert r["frames"] == local["frames"] and r["videos"] == 3
        assert r["consecutive_videos"] == 2
        for key in ("mIoU", "fwIoU", "pixel_acc", "mVC_2", "flicker"):
            assert r[key] == pytest.approx(local[key], rel=1e-12), key
        np.testing.assert_allclose(r["IoU"], local["IoU"], rtol=1e-12)


def test_distributed_true_without_group_is_a_clear_error():
    with pytest.raises(RuntimeError, match="process group"):
        Evaluator(num_classes=3, clip_len=2).run(RedChannelModel(3), _mixed_videos(0, 3), True)


def test_normalisation_matches_the_data_package():
    transforms = pytest.importorskip("vidccnet.data.transforms")
    frames = np.random.default_rng(7).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    torch.testing.assert_close(clip_tensor(frames), transforms.to_clip_tensor(frames))
    x = frames.astype(np.float64) / 255.0
    ref = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(clip_tensor(frames).numpy(), ref.transpose(3, 0, 1, 2), atol=1e-5)


def test_the_table_says_why_a_temporal_figure_is_missing(caplog):
    """mVC_n and flicker are n/a for sparse labels (no consecutive labelled frames) and mVC_n
    for videos of n or fewer labelled frames: a line below the table says which and why."""
    rng = np.random.default_rng(0)
    labels = block_labels(rng, 10, 3)
    ev = Evaluator(num_classes=3, clip_len=3)
    sparse = ev.run(RedChannelModel(3), [encoded_video(labels, labels, consecutive=False)])
    table = format_table(sparse)
    assert "n/a: mVC_8, mVC_16 and flicker need consecutive labelled frames" in table
    assert "sparse" in table
    short = ev.run(RedChannelModel(3), [encoded_video(labels, labels, consecutive=True)])
    assert short["mVC_8"] is not None and short["mVC_16"] is None
    table = format_table(short)
    assert "n/a: mVC_16 needs a video of more than 16 labelled frames; the longest has 10" \
        in table
    assert "mVC_8 needs" not in table and "flicker needs" not in table



def test_one_video_is_singular(caplog):
    labels = block_labels(np.random.default_rng(0), 4, 3)
    ev = Evaluator(num_classes=3, clip_len=3)
    with caplog.at_level("INFO", logger="vidccnet.engine.evaluate"):
        r = ev.run(RedChannelModel(3), [encoded_video(labels, labels)])
    assert "of 1 video in" in caplog.text
    assert "4 labelled frames, 1 video," in format_table(r)


def test_tta_merges_as_mmsegmentation():
    """Test-time augmentation as mmsegmentation's inference: logits averaged over overlapping
    tiles, resized to the frame (bilinear), then the softmax, and the probabilities averaged
    over scales and flips; a scaled size is int(size * scale + 0.5) (mmcv). The evaluator took
    the softmax per tile, resized probabilities, and rounded half to even (13 * 0.5 -> 6)."""
    import torch.nn.functional as F

    from vidccnet.engine.evaluate import _tile_starts

    torch.manual_seed(0)
    k, t, h, w = 5, 2, 13, 21
    conv = nn.Conv3d(3, k, (1, 3, 3), padding=(0, 1, 1)).eval()  # zero padding: tiles differ
    sizes = []

    class Model(nn.Module):
        def forward(self, clip):
            sizes.append(tuple(clip.shape[-2:]))
            return 4 * conv(clip)

    def slide(x, crop):
        _, _, _, hh, ww = x.shape
        th, tw = min(crop, hh), min(crop, ww)
        total = torch.zeros(1, k, t, hh, ww)
        count = torch.zeros(1, 1, 1, hh, ww)
        for y in _tile_starts(hh, th):
            for x0 in _tile_starts(ww, tw):
                total[..., y:y + th, x0:x0 + tw] += Model()(x[..., y:y + th, x0:x0 + tw])
                count[..., y:y + th, x0:x0 + tw] += 1
        return total / count

    clip = torch.randn(1, 3, t, h, w)
    scales, crop = (0.5, 1.0, 1.75), 9
    probs = 0
    for s in scales:
        size = (int(h * s + 0.5), int(w * s + 0.5))
        x = clip if size == (h, w) else F.interpolate(clip, size=(t, *size), mode="trilinear",
                                                      align_corners=False)
        for flipped in (False, True):
            logits = slide(x.flip(-1) if flipped else x, crop)
            logits = (logits.flip(-1) if flipped else logits)[0].transpose(0, 1)  # (T, K, ., .)
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            probs = probs + logits.softmax(1)
    expected = probs.argmax(1)  # (T, h, w)
    reference_sizes = list(sizes)
    sizes.clear()
    ev = Evaluator(num_classes=k, clip_len=t, scales=scales, flip=True, crop_size=crop)
    select = (torch.zeros(t, dtype=torch.long), torch.arange(t))
    with torch.no_grad():
        got = ev._predict(Model(), clip, select)
    assert sizes == reference_sizes
    assert torch.equal(got, expected), (got != expected).float().mean()
