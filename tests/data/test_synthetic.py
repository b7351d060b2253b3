"""Synthetic video world: determinism, content, dataset, writers (mp4 + masks, VSPW layout)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from vidccnet.data import build_dataset, build_eval_videos, dataset_info
from vidccnet.data.synthetic import (
    CLASS_NAMES,
    PALETTE,
    SyntheticVideoWorld,
    corrupted_frames,
)
from vidccnet.data.video import open_video
from vidccnet.data.vspw import VSPW


def test_deterministic_from_seed_and_index():
    a = SyntheticVideoWorld(seed=3, height=48, width=64).video(5, 12)
    b = SyntheticVideoWorld(seed=3, height=48, width=64).video(5, 12)
    c = SyntheticVideoWorld(seed=4, height=48, width=64).video(5, 12)
    d = SyntheticVideoWorld(seed=3, height=48, width=64).video(6, 12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[1], d[1])
    assert a[0].shape == (12, 48, 64, 3) and a[0].dtype == np.uint8
    assert a[1].shape == (12, 48, 64) and a[1].dtype == np.uint8


def test_any_size_and_length():
    w = SyntheticVideoWorld(seed=0, height=33, width=71)
    f, lab = w.video(0, 1)
    assert f.shape == (1, 33, 71, 3) and lab.shape == (1, 33, 71)
    f, lab = w.video(1, 40)
    assert f.shape[0] == 40 and lab.max() < len(CLASS_NAMES)


def test_generation_is_fast():
    w = SyntheticVideoWorld(seed=0, height=64, width=96)
    w.video(0, 16)
    t = time.process_time()  # CPU time: robust to other processes sharing the machine
    for i in range(10):
        w.video(i, 16)
    per_video = (time.process_time() - t) / 10
    assert per_video < 0.1  # typically ~0.03 s on one core


def test_content_classes_motion_dropouts_and_ambiguity():
    w = SyntheticVideoWorld(seed=0, height=64, width=96)
    counts = np.zeros(len(CLASS_NAMES))
    n_corrupt, n_frames, moved = 0, 0, 0
    for i in range(12):
        v = w.render(i, 16)
        counts += np.bincount(v.labels.ravel(), minlength=len(CLASS_NAMES))
        n_corrupt += int(v.corrupted.sum())
        n_frames += 16
        moved += int((v.labels[0] != v.labels[-1]).any())
        # dropout pixels keep their object label but the image there no longer shows it
        for f in np.flatnonzero(v.corrupted):
            m = v.corruption_mask[f]
            assert m.any() and (v.labels[f][m] > 0).any()
        assert not v.corrupted[0]
        # the background moves too: frames differ even where the label is background
        bg = (v.labels[0] == 0) & (v.labels[8] == 0)
        assert np.abs(v.frames[0][bg].astype(int) - v.frames[8][bg]).mean() > 3
    assert (counts > 0).all(), counts  # every class appears
    assert counts[0] / counts.sum() < 0.85
    assert 0.05 < n_corrupt / n_frames < 0.3
    assert moved == 12


def test_crate_and_beacon_differ_only_on_flash_frames():
    w = SyntheticVideoWorld(seed=0, height=64, width=96, noise=(0, 0), blur_prob=0,
                            dropout_prob=0)
    found = False
    for i in range(40):
        v = w.render(i, 8)
        beacon = v.labels == 6
        if not beacon.any():
            continue
        found = True
        # the ambiguity mask marks beacon pixels on non-flash frames (pixel-wise: several
        # beacons may flash on different frames) and every crate pixel
        magenta = v.frames[..., 2] > 160  # blue channel: magenta ~225, crate brown ~85
        flashing = (beacon & magenta).reshape(8, -1).any(1)
        dark = (beacon & ~magenta).reshape(8, -1).any(1)
        assert flashing.any() and dark.any()  # flashes on some frames, crate-like on others
        assert not v.ambiguous[beacon & magenta].any()
        assert v.ambiguous[beacon & ~magenta].all()
        assert v.ambiguous[v.labels == 5].all()
    assert found


def test_dataset_items_and_eval_videos():
    ds = build_dataset("synthetic", "train", clip_len=4, num_videos=3, num_frames=8,
                       height=48, width=64, seed=1)
    assert len(ds) == 24 and ds.num_classes == 7 and ds.class_names == CLASS_NAMES
    item = ds[9]  # video 1, anchor frame 1: clip frames [0, 0, 0, 1]
    assert item["clip"].shape == (3, 4, 48, 64) and item["clip"].dtype == torch.float32
    assert item["labels"].shape == (4, 48, 64) and item["labels"].dtype == torch.int64
    v = ds.get_video(1)
    np.testing.assert_array_equal(item["labels"].numpy(), v.labels[[0, 0, 0, 1]])
    only_anchor = build_dataset("synthetic", "train", clip_len=4, num_videos=3, num_frames=8,
                                height=48, width=64, seed=1, label_all_frames=False)[9]
    assert (only_anchor["labels"][:3] == 255).all()
    assert torch.equal(only_anchor["labels"][3], item["labels"][3])
    aug = build_dataset("synthetic", "train", clip_len=4, num_videos=3, num_frames=8,
                        height=48, width=64, augment=True, crop_size=(40, 40))
    assert aug[(5, 7)]["clip"].shape == (3, 4, 40, 40)
    assert torch.equal(aug[(5, 7)]["clip"], aug[(5, 7)]["clip"])
    val = build_dataset("synthetic", "val", num_videos=2, num_frames=8, height=48, width=64)
    assert not np.array_equal(val.get_video(0).labels, ds.get_video(0).labels)

    videos = build_eval_videos("synthetic", "val", num_videos=2, num_frames=8, height=48,
                               width=64, augment=True)
    assert len(videos) == 2 and all(v.consecutive for v in videos)
    ev = videos[0]
    assert ev.num_frames == 8 and list(ev.labelled) == list(range(8))
    np.testing.assert_array_equal(ev.load_label(3), val.get_video(0).labels[3])
    assert ev.load_frame(3).shape == (48, 64, 3)
    assert corrupted_frames(ev) == [int(i) for i in np.flatnonzero(val.get_video(0).corrupted)]
    assert ev.load_corruption_mask(0).shape == (48, 64)
    info = dataset_info("synthetic")
    assert info["num_classes"] == 7 and info["palette"] == [tuple(c) for c in PALETTE]


def test_write_mp4_and_masks_round_trip(tmp_path):
    w = SyntheticVideoWorld(seed=2, height=48, width=64)
    path = w.write_video(tmp_path, 0, 10, fps=15)
    frames, labels = w.video(0, 10)
    with open_video(path) as r:
        assert len(r) == 10 and r.size == (48, 64) and r.fps == pytest.approx(15)
        got = r.read_all(strict=True)
    assert np.abs(got.astype(float) - frames).mean() < 12  # lossy, noisy content
    masks = sorted((tmp_path / "video_00000_masks").glob("*.png"))
    assert len(masks) == 10
    with Image.open(masks[4]) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels[4])


def test_vspw_layout_round_trip_through_the_real_loader(tmp_path):
    w = SyntheticVideoWorld(seed=5, height=40, width=56)
    w.write_vspw(tmp_path, splits={"train": 2, "val": 1}, num_frames=6)
    assert (tmp_path / "train.txt").read_text().split() == ["syn_train_0000", "syn_train_0001"]
    ds = VSPW(tmp_path, split="train", clip_len=3)
    assert len(ds) == 12
    item = ds[6 + 4]  # second video, anchor frame 4 -> frames 2, 3, 4
    _, labels = w.video(1, 6)
    np.testing.assert_array_equal(item["labels"].numpy(), labels[[2, 3, 4]])
    (ev,) = VSPW(tmp_path, split="val").eval_videos()
    frames, labels = w.video(1_000_000, 6)
    assert ev.consecutive and ev.num_frames == 6 and list(ev.labelled) == list(range(6))
    np.testing.assert_array_equal(ev.load_label(5), labels[5])
    assert np.abs(ev.load_frame(5).astype(float) - frames[5]).mean() < 12  # jpeg q95, noisy


def test_only_the_centre_anchor_frame_is_labelled_with_label_all_frames_off():
    """anchor="centre", label_all_frames=False: the clip of anchor frame 4 is frames 3, 4, 5
    and only its middle frame (frame 4) keeps its labels."""
    kw = dict(clip_len=3, anchor="centre", num_videos=2, num_frames=8, height=32, width=48,
              seed=2)
    ds = build_dataset("synthetic", "train", label_all_frames=False, **kw)
    item = ds[8 + 4]  # video 1, anchor frame 4
    v = ds.get_video(1)
    labels = item["labels"].numpy()
    np.testing.assert_array_equal(labels[1], v.labels[4])
    assert (labels[[0, 2]] == 255).all()
    full = build_dataset("synthetic", "train", **kw)[8 + 4]["labels"].numpy()
    np.testing.assert_array_equal(full, v.labels[[3, 4, 5]])
