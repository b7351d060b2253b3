"""VSPW: label remap, layout errors, clips of consecutive frames, whole-video eval."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidccnet.data import build_dataset, build_eval_videos, dataset_info
from vidccnet.data.vspw import CLASS_NAMES, NUM_CLASSES, PALETTE, VSPW, remap_vspw_mask


def test_remap_against_reference():
    mask = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ref = np.array([255 if v == 0 or v > 124 else v - 1 for v in range(256)]).reshape(16, 16)
    out = remap_vspw_mask(mask)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, ref)
    assert out[0, 0] == 255 and out[15, 15] == 255 and out[0, 1] == 0 and out[7, 12] == 123


def test_class_metadata():
    assert len(CLASS_NAMES) == NUM_CLASSES == 124 and len(set(CLASS_NAMES)) == 124
    assert len(set(PALETTE)) == 124
    info = dataset_info("vspw")
    assert info["num_classes"] == 124 and info["class_names"][0] == "wall"


def _write_video(root, name, n, h=20, w=24, masks=True, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n, h, w, 3), np.uint8)
    stored = rng.integers(0, 126, (n, h, w), np.uint8)  # VSPW's values: 0..124 and 255
    stored[stored == 125] = 255
    d = root / "data" / name
    (d / "origin").mkdir(parents=True)
    (d / "mask").mkdir()
    for t in range(n):
        Image.fromarray(frames[t]).save(d / "origin" / f"{t * 5:08d}.png")  # lossless frames
        if masks and t != 2:
            Image.fromarray(stored[t], mode="L").save(d / "mask" / f"{t * 5:08d}.png")
    return frames, stored


def test_clips_and_eval_videos(tmp_path):
    f1, m1 = _write_video(tmp_path, "v1", 5, seed=1)
    f2, m2 = _write_video(tmp_path, "v2", 3, seed=2)
    (tmp_path / "val.txt").write_text("v1\nv2\n")
    ds = build_dataset("vspw", "val", root=tmp_path, clip_len=3, frame_stride=2)
    assert len(ds) == 8 and ds.num_classes == 124
    item = ds[4]  # v1, anchor 4 -> frames 0, 2, 4
    expect = np.stack([f1[0], f1[2], f1[4]]).astype(np.float64) / 255
    got = item["clip"].numpy().transpose(1, 2, 3, 0) * np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got + np.array([0.485, 0.456, 0.406]), expect, atol=1e-5)
    labels = item["labels"].numpy()
    np.testing.assert_array_equal(labels[0], remap_vspw_mask(m1[0]))
    assert (labels[1] == 255).all()  # frame 2 has no mask file
    item = ds[5]  # v2 anchor 0: padding by repetition, the frame's mask counted once
    assert (item["labels"][:2] == 255).all()
    np.testing.assert_array_equal(item["labels"][2].numpy(), remap_vspw_mask(m2[0]))
    videos = build_eval_videos("vspw", "val", root=tmp_path, clip_len=3, augment=True)
    assert [v.name for v in videos] == ["v1", "v2"]
    assert not any(v.consecutive for v in videos)  # frame 2 has no mask
    assert videos[0].num_frames == 5 and list(videos[0].labelled) == [0, 1, 3, 4]
    np.testing.assert_array_equal(videos[0].load_frame(3), f1[3])
    np.testing.assert_array_equal(videos[1].load_label(1), remap_vspw_mask(m2[1]))
    aug = VSPW(tmp_path, "val", clip_len=2, augment=True, crop_size=16)
    assert aug[(1, 3)]["clip"].shape == (3, 2, 16, 16)


def test_dense_videos_keep_every_anchor_and_are_consecutive(tmp_path):
    """VSPW masks every frame: every frame is a clip anchor, and mVC / flicker use every video."""
    _write_video(tmp_path, "v1", 5, seed=1)
    Image.fromarray(np.zeros((20, 24), np.uint8), mode="L").save(
        tmp_path / "data" / "v1" / "mask" / "00000010.png")  # the one frame left without
    (tmp_path / "train.txt").write_text("v1\n")
    for kw in (dict(clip_len=3, frame_stride=2), dict(clip_len=1, label_all_frames=False)):
        ds = VSPW(tmp_path, "train", **kw)
        assert ds.items == [(0, i) for i in range(5)]
    assert VSPW(tmp_path, "train").eval_videos()[0].consecutive


def test_a_video_missing_masks_warns_that_it_leaves_the_temporal_figures(tmp_path, caplog):
    """VSPW ships a mask for every image: a missing one (a partial download) takes the video
    out of mVC / flicker, which VSPW's own evaluator would count. That was an info line about
    the split; it is a warning naming the video and a missing file."""
    _write_video(tmp_path, "v1", 5, seed=1)  # frame 2 (00000010.png) without its mask
    _write_video(tmp_path, "v2", 3, seed=2)
    Image.fromarray(np.zeros((20, 24), np.uint8), mode="L").save(
        tmp_path / "data" / "v2" / "mask" / "00000010.png")  # v2: every mask
    (tmp_path / "val.txt").write_text("v1\nv2\n")
    with caplog.at_level("WARNING", logger="vidccnet"):
        videos = VSPW(tmp_path, "val").eval_videos()
    assert [v.consecutive for v in videos] == [False, True]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1, warned
    assert "'v1'" in warned[0] and "00000010.png" in warned[0] and "mVC" in warned[0]


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.txt"):
        VSPW(tmp_path, "train")
    (tmp_path / "train.txt").write_text("missing_video\n")
    with pytest.raises(FileNotFoundError, match="missing_video"):
        VSPW(tmp_path, "train")
    with pytest.raises(ValueError, match="root"):
        build_dataset("vspw", "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("kitti", "train")


def test_a_video_without_masks_is_refused(tmp_path):
    """Masks under another folder name, another extension or other frame names would make every
    label 'ignore' (training on nothing, loss 0): a labelled split whose video has no mask is
    refused, naming the path the mask was looked for at. The test split has no masks."""
    _write_video(tmp_path, "v1", 3, seed=1)
    _write_video(tmp_path, "v2", 3, seed=2, masks=False)
    for split in ("train", "test"):
        (tmp_path / f"{split}.txt").write_text("v1\nv2\n")
    with pytest.raises(FileNotFoundError, match=r"'v2' has no mask.*v2/mask/00000000.png"):
        VSPW(tmp_path, "train")
    assert len(VSPW(tmp_path, "test")) == 6


def test_colour_masks_are_refused(tmp_path):
    """An RGB mask (a colour rendering) is not class indices: converting it to grey gave wrong
    classes; single-channel, palette and grey-as-RGB masks still load."""
    from vidccnet.data.images import load_index_png

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="colour.png.*single-channel class indices"):
        load_index_png(tmp_path / "colour.png")
    grey = np.full((4, 5, 3), 7, np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey_rgb.png")
    assert (load_index_png(tmp_path / "grey_rgb.png") == 7).all()


def test_unreadable_images_name_the_file(tmp_path):
    """A zero-byte or truncated frame (or a macOS '._' file) is one error naming the file, a
    ValueError the scripts report in one line (PIL's own errors did not all name it)."""
    import io

    from vidccnet.data.images import load_index_png, load_rgb

    (tmp_path / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:200])
    for name in ("empty.png", "cut.jpg"):
        with pytest.raises(ValueError, match=f"cannot read image '.*{name}'"):
            load_rgb(tmp_path / name)
    with pytest.raises(ValueError, match="cannot read image '.*empty.png'"):
        load_index_png(tmp_path / "empty.png")


def test_mask_values_outside_the_label_set_are_refused(tmp_path):
    """A mask holding values VSPW does not use (125..254: another label set) is refused,
    naming the file, instead of those pixels becoming 'ignore' without a word."""
    _write_video(tmp_path, "v1", 2, seed=1)
    bad = tmp_path / "data" / "v1" / "mask" / "00000005.png"
    Image.fromarray(np.full((20, 24), 200, np.uint8), mode="L").save(bad)
    (tmp_path / "train.txt").write_text("v1\n")
    ds = VSPW(tmp_path, "train", clip_len=1)
    with pytest.raises(ValueError, match="00000005.png' holds values.*200"):
        ds[1]


def test_split_list_with_a_byte_order_mark_or_empty(tmp_path):
    _write_video(tmp_path, "v1", 2, seed=1)
    (tmp_path / "train.txt").write_text("\ufeffv1\n", encoding="utf-8")
    assert len(VSPW(tmp_path, "train")) == 2
    (tmp_path / "train.txt").write_text("\n")
    with pytest.raises(FileNotFoundError, match="train.txt' is empty"):
        VSPW(tmp_path, "train")


def test_frames_whose_order_is_unknown_are_refused(tmp_path):
    """A stray image among a video's frames (a thumbnail) would be read as a frame, and macOS
    '._' metadata files as unreadable frames: the first is refused by name, the second skipped."""
    _write_video(tmp_path, "v1", 3, seed=1)
    (tmp_path / "train.txt").write_text("v1\n")
    origin = tmp_path / "data" / "v1" / "origin"
    (origin / "._00000000.png").write_bytes(b"AppleDouble")
    assert len(VSPW(tmp_path, "train")) == 3
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(origin / "thumbnail.png")
    with pytest.raises(ValueError, match="VSPW video 'v1'.*'thumbnail.png' has no frame number"):
        VSPW(tmp_path, "train")
