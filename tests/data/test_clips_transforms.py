"""Clip sampling at sequence edges, normalisation, clip-consistent augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidccnet.data.clips import anchor_position, clip_indices, clip_offsets, first_copies
from vidccnet.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipAugment,
    apply_geometry,
    apply_photometric,
    from_clip_tensor,
    to_clip_tensor,
)


def test_clip_indices_causal_and_centre():
    assert clip_indices(10, 20, 4) == [7, 8, 9, 10]
    assert clip_indices(10, 20, 4, frame_stride=2) == [4, 6, 8, 10]
    assert clip_indices(10, 20, 5, anchor="centre") == [8, 9, 10, 11, 12]
    assert clip_indices(10, 20, 4, anchor="centre") == [8, 9, 10, 11]
    assert anchor_position(4, "causal") == 3 and anchor_position(4, "centre") == 2
    assert clip_offsets(3, 3) == [-6, -3, 0]


def test_clip_indices_pad_by_repetition_at_edges():
    assert clip_indices(0, 20, 4) == [0, 0, 0, 0]
    assert clip_indices(1, 20, 4, frame_stride=2) == [0, 0, 0, 1]
    assert clip_indices(19, 20, 5, anchor="centre") == [17, 18, 19, 19, 19]
    assert clip_indices(0, 1, 3, anchor="centre") == [0, 0, 0]
    assert clip_indices(5, 6, 1) == [5]


def test_first_copies_keep_each_frame_once_nearest_the_anchor():
    assert first_copies([0, 0, 0, 0], 3) == [False, False, False, True]
    assert first_copies([0, 0, 0, 1], 3) == [False, False, True, True]  # stride 2, anchor 1
    assert first_copies([17, 18, 19, 19, 19], 2) == [True, True, True, False, False]
    assert first_copies([0, 0, 1, 2], 1) == [False, True, True, True]
    assert first_copies([7, 8, 9, 10], 3) == [True] * 4
    assert first_copies([5], 0) == [True]


def test_clip_indices_errors():
    with pytest.raises(IndexError):
        clip_indices(20, 20, 4)
    with pytest.raises(ValueError, match="anchor"):
        clip_indices(0, 5, 4, anchor="middle")
    with pytest.raises(ValueError, match="frame_stride"):
        clip_indices(0, 5, 4, frame_stride=0)
    with pytest.raises(ValueError, match="clip_len must be >= 1"):  # not an empty clip
        clip_indices(0, 5, 0)


def test_center_is_accepted_as_centre():
    assert anchor_position(5, "center") == anchor_position(5, "centre") == 2
    assert clip_indices(10, 20, 4, anchor="center") == [8, 9, 10, 11]


def test_to_clip_tensor_matches_float64_reference():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    x = to_clip_tensor(frames)
    assert x.shape == (3, 3, 5, 7) and x.dtype == torch.float32
    ref = (frames.astype(np.float64) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x.numpy(), ref.transpose(3, 0, 1, 2), atol=1e-5)
    np.testing.assert_array_equal(from_clip_tensor(x), frames)
    with pytest.raises(ValueError, match="T, H, W, 3"):
        to_clip_tensor(frames[0])


def test_augment_is_identical_for_every_frame_of_a_clip():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (30, 40), dtype=np.uint8)
    aug = ClipAugment(crop_size=(24, 32), hue=0.05)
    for seed in range(6):
        clip, lab = aug(np.stack([frame] * 4), np.stack([label] * 4),
                        torch.Generator().manual_seed(seed))
        assert clip.shape == (3, 4, 24, 32) and lab.shape == (4, 24, 32)
        assert lab.dtype == torch.int64
        for t in range(1, 4):
            torch.testing.assert_close(clip[:, t], clip[:, 0], rtol=0, atol=0)
            assert torch.equal(lab[t], lab[0])
    # same seed -> same result; different seeds -> different crops/scales
    a = aug(np.stack([frame] * 2), np.stack([label] * 2), torch.Generator().manual_seed(3))
    b = aug(np.stack([frame] * 2), np.stack([label] * 2), torch.Generator().manual_seed(3))
    c = aug(np.stack([frame] * 2), np.stack([label] * 2), torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_labels_follow_the_image_geometry():
    """Colour-coded labels: after scale/crop/flip (no photometric jitter) the label of each
    pixel still names the colour under it, and padding is 255."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    lab = np.zeros((40, 48), np.uint8)
    lab[:, 12:] = 1
    lab[20:, 24:] = 2
    lab[5:15, 30:44] = 3
    frames = np.stack([colours[lab], colours[np.roll(lab, 3, axis=1)]])  # 2 different frames
    labels = np.stack([lab, np.roll(lab, 3, axis=1)])
    aug = ClipAugment(crop_size=(48, 60), brightness=0, contrast=0, saturation=0)
    padded_any = False
    for seed in range(8):
        clip, out = aug(frames, labels, torch.Generator().manual_seed(seed))
        img = from_clip_tensor(clip).astype(np.int64)  # (T, h, w, 3)
        out = out.numpy()
        for t in range(2):
            valid = out[t] != 255
            pad = ~valid
            padded_any |= bool(pad.any())
            # interior pixels (away from label borders) carry exactly the label's colour
            lt = out[t]
            interior = valid.copy()
            for dy in range(-3, 4):  # erode: the whole 7x7 neighbourhood has the same label
                for dx in range(-3, 4):
                    interior &= np.roll(lt, (dy, dx), axis=(0, 1)) == lt
            interior[:3], interior[-3:], interior[:, :3], interior[:, -3:] = 0, 0, 0, 0
            assert interior.sum() > 20
            err = np.abs(img[t][interior] - colours[lt[interior]]).max()
            # a swapped or unflipped label gives >= 120; a shift of a pixel or two does not
            # show on the eroded interior (test_labels_are_scaled_by_exact_nearest...)
            assert err <= 2
    assert padded_any  # scale < 1 happened and was padded with ignore


def test_geometry_against_numpy_crop_and_flip():
    rng = np.random.default_rng(2)
    video = torch.from_numpy(rng.integers(0, 256, (3, 3, 10, 12), dtype=np.uint8))
    mask = torch.from_numpy(rng.integers(0, 9, (3, 10, 12), dtype=np.uint8))
    p = {"scaled": (10, 12), "crop": (2, 3, 6, 8), "flip": True}
    v, m = apply_geometry(video, mask, p)
    ref_v = video.numpy()[:, :, 2:8, 3:11][..., ::-1]
    ref_m = mask.numpy()[:, 2:8, 3:11][..., ::-1]
    np.testing.assert_array_equal(v.numpy(), ref_v)
    np.testing.assert_array_equal(m.numpy(), ref_m)
    # crop larger than the image: image padded with the mean colour, labels with 255
    p = {"scaled": (10, 12), "crop": (0, 0, 12, 14), "flip": False}
    v, m = apply_geometry(video, mask, p)
    assert v.shape == (3, 3, 12, 14) and (m[:, 10:] == 255).all() and (m[:, :, 12:] == 255).all()
    np.testing.assert_array_equal(v[:, 0, 10:].numpy(), 124)


def test_labels_are_scaled_by_exact_nearest_neighbour_sampling():
    """Label pixel i of the scaled mask is input pixel floor((i + 0.5) * in / out), the sampling
    that keeps labels centred on the bilinearly scaled image (plain 'nearest', floor(i * in /
    out), shifts them by up to a pixel: the eroded colour check above cannot see that)."""
    rng = np.random.default_rng(3)
    video = torch.from_numpy(rng.integers(0, 256, (2, 3, 10, 12), dtype=np.uint8))
    mask = torch.from_numpy(rng.integers(0, 9, (2, 10, 12), dtype=np.uint8))
    p = {"scaled": (25, 30), "crop": (0, 0, 25, 30), "flip": False}
    v, m = apply_geometry(video, mask, p)
    assert v.shape == (2, 3, 25, 30)
    rows = np.minimum(((np.arange(25) + 0.5) * 10 / 25).astype(int), 9)
    cols = np.minimum(((np.arange(30) + 0.5) * 12 / 30).astype(int), 11)
    np.testing.assert_array_equal(m.numpy(), mask.numpy()[:, rows][:, :, cols])


def test_padding_uses_the_augments_ignore_index():
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, (2, 10, 12), dtype=np.uint8)
    aug = ClipAugment(crop_size=(16, 16), scale_range=(1.0, 1.0), flip=False, ignore_index=254)
    _, lab = aug(frames, labels, torch.Generator().manual_seed(0))
    assert (lab[:, 10:] == 254).all() and (lab[:, :, 12:] == 254).all()
    assert not (lab == 255).any()
    np.testing.assert_array_equal(lab[:, :10, :12].numpy(), labels)


def test_photometric_jitter_runs_in_the_drawn_order():
    import torchvision.transforms.v2.functional as F

    rng = np.random.default_rng(5)
    video = torch.from_numpy(rng.integers(0, 256, (2, 3, 6, 7), dtype=np.uint8))
    p = {"brightness": 1.3, "contrast": 0.6, "saturation": 1.4, "hue": 0.0}
    ops = {0: lambda v: F.adjust_brightness(v, 1.3), 1: lambda v: F.adjust_contrast(v, 0.6),
           2: lambda v: F.adjust_saturation(v, 1.4), 3: lambda v: v}
    results = []
    for order in ([2, 1, 0, 3], [0, 1, 2, 3]):
        want = video
        for k in order:
            want = ops[k](want)
        got = apply_photometric(video, {**p, "order": order})
        assert torch.equal(got, want), order
        results.append(got)
    assert not torch.equal(*results)  # the order matters for these factors
