"""The "folders" dataset (the user's own videos): classes.txt, index masks, layout errors, the
trainer and evaluator on it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidccnet.data import build_dataset, build_eval_videos, dataset_info
from vidccnet.data.folders import VideoFolders, read_classes

REPO = Path(__file__).resolve().parents[2]


def _write_root(root, classes="road\ncar 255 0 0\nperson\n", videos=(("a", 4), ("b", 3)),
                split="train", num_values=3, seed=0, h=16, w=20):
    """Frames and index masks (values 0..num_values-1 and 255) of each video; the third frame of
    every video has no mask."""
    rng = np.random.default_rng(seed)
    (root / "classes.txt").write_text(classes)
    (root / f"{split}.txt").write_text("".join(f"{n}\n" for n, _ in videos))
    out = {}
    for name, n in videos:
        frames = rng.integers(0, 255, (n, h, w, 3), np.uint8)
        masks = rng.integers(0, num_values + 1, (n, h, w)).astype(np.uint8)
        masks[masks == num_values] = 255
        d = root / "data" / name
        (d / "origin").mkdir(parents=True)
        (d / "mask").mkdir()
        for t in range(n):
            Image.fromarray(frames[t]).save(d / "origin" / f"frame_{t + 1}.png")
            if t != 2:
                Image.fromarray(masks[t], mode="L").save(d / "mask" / f"frame_{t + 1}.png")
        out[name] = (frames, masks)
    return out


def test_read_classes_names_and_colours(tmp_path):
    (tmp_path / "classes.txt").write_text("# my classes\nroad\n\ncar 255 0 0\nside walk 1 2 3\n")
    names, palette = read_classes(tmp_path)
    assert names == ["road", "car", "side walk"]
    assert palette[1] == (255, 0, 0) and palette[2] == (1, 2, 3)
    assert len(set(palette)) == 3  # the unset colour is a default one, distinct from the others
    info = dataset_info("folders", root=tmp_path)
    assert info == {"class_names": names, "palette": palette, "num_classes": 3}


@pytest.mark.parametrize("text, match", [
    ("", "no class"),
    ("road\nroad\n", "twice .lines 1 and 2"),
    ("road\ncar 255 0 300\n", "line 2"),
    ("".join(f"c{i}\n" for i in range(256)), "255"),
])
def test_read_classes_errors(tmp_path, text, match):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_classes(tmp_path)


def test_missing_classes_file_and_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        dataset_info("folders", root=tmp_path)
    with pytest.raises(ValueError, match="root"):
        dataset_info("folders")


def test_clips_labels_and_eval_videos(tmp_path):
    data = _write_root(tmp_path)
    ds = build_dataset("folders", "train", root=tmp_path, clip_len=2)
    assert len(ds) == 7 and ds.num_classes == 3
    assert ds.frame_short_side == 16  # 16x20 frames
    assert ds.class_names == ["road", "car", "person"]
    frames, masks = data["a"]
    item = ds[1]  # video a, anchor 1 (causal): frames 0, 1
    labels = item["labels"].numpy()
    np.testing.assert_array_equal(labels[0], masks[0].astype(np.int64))  # value k is class k
    assert (labels[0] == 255).any() and (labels[0] == 2).any()
    assert (ds[2]["labels"][1] == 255).all()  # frame 3 has no mask: ignored
    videos = build_eval_videos("folders", "train", root=tmp_path, clip_len=2, augment=True)
    assert [v.name for v in videos] == ["a", "b"]
    assert not any(v.consecutive for v in videos)  # frame 3 has no mask: not consecutive
    assert list(videos[0].labelled) == [0, 1, 3]
    np.testing.assert_array_equal(videos[0].load_frame(3), frames[3])
    np.testing.assert_array_equal(videos[1].load_label(1), data["b"][1][1].astype(np.int64))
    assert VideoFolders(tmp_path, "train", clip_len=2, augment=True,
                        crop_size=8)[(0, 5)]["clip"].shape == (3, 2, 8, 8)


def test_mask_value_outside_classes_is_refused(tmp_path):
    _write_root(tmp_path, num_values=5)  # values 3, 4 do not exist in a 3-class classes.txt
    with pytest.raises(ValueError, match=r"frame_1\.png.*0-2 and 255"):
        VideoFolders(tmp_path, "train", clip_len=1)  # a video's first mask is checked up front


def test_bad_later_mask_is_refused_when_drawn(tmp_path):
    _write_root(tmp_path)
    bad = np.zeros((16, 20), np.uint8)
    bad[0, 0] = 7
    Image.fromarray(bad, mode="L").save(tmp_path / "data" / "a" / "mask" / "frame_2.png")
    ds = VideoFolders(tmp_path, "train", clip_len=1)
    with pytest.raises(ValueError, match=r"frame_2\.png.*\[7\]"):
        ds[1]


def test_layout_errors(tmp_path):
    (tmp_path / "classes.txt").write_text("road\n")
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        VideoFolders(tmp_path, "val")
    (tmp_path / "val.txt").write_text("nowhere\n")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoFolders(tmp_path, "val")
    with pytest.raises(ValueError, match="root"):
        build_dataset("folders", "val")


def test_trainer_and_evaluator_on_folders(tmp_path):
    from vidccnet.engine.checkpoint import load_checkpoint
    from vidccnet.engine.config import load_config
    from vidccnet.engine.train import train

    root = tmp_path / "mydata"
    root.mkdir()
    _write_root(root, h=32, w=32)
    (root / "val.txt").write_text("b\n")
    out = tmp_path / "run"
    cfg = load_config(None, [
        "model.name=ccnet3d_resnet18", "model.kwargs.head_channels=16",
        "model.attention_backend=reference", "data.name=folders", f"data.root={root}",
        "data.clip_len=2", "data.batch_size=2", "data.crop_size=[32, 32]",
        "schedule.iterations=2", "schedule.warmup_iters=0", "eval.interval=2",
        "eval.vc_windows=[2]", "runtime.device=cpu", "runtime.tensorboard=false",
        "runtime.progress=false", f"runtime.output_dir={out}",
        "data.frame_short_side=99",  # stale (e.g. a config copied from another run)
    ])
    result = train(cfg)
    assert result["val"] is not None and 0.0 <= result["val"]["mIoU"] <= 1.0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["data"]["class_names"] == ["road", "car", "person"]
    assert ckpt["config"]["data"]["palette"][1] == [255, 0, 0]
    assert ckpt["config"]["data"]["frame_short_side"] == 32  # segment_video.py's --size model
    assert ckpt["config"]["eval"]["metric_convention"] == "auto"

    other = tmp_path / "other"
    other.mkdir()
    _write_root(other, classes="road\nperson\ncar\n", split="val", h=32, w=32)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--checkpoint",
                           str(out / "last.pt"), f"data.root={other}", "--no-plots"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "names and order must match" in proc.stderr
    assert not (out / "eval_val").exists()


def test_train_script_one_line_error_without_classes(tmp_path):
    repo = REPO
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "mine.yaml").write_text(f"data: {{name: folders, root: '{tmp_path}'}}\n")
    proc = subprocess.run(
        [sys.executable, str(repo / "scripts" / "train.py"), "--config",
         str(tmp_path / "mine.yaml"), f"runtime.output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "classes.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_systematic_mask_mistakes_stop_the_build(tmp_path):
    """A colour rendering or a mask of another size is refused when the dataset is built, not
    hours into training when its clip is first drawn."""
    _write_root(tmp_path)
    mask = tmp_path / "data" / "b" / "mask" / "frame_1.png"
    Image.fromarray(np.full((16, 20, 3), (200, 0, 0), np.uint8)).save(mask)
    with pytest.raises(ValueError, match=r"frame_1\.png.*colour.*scripts/colour_masks\.py"):
        VideoFolders(tmp_path, "train")
    Image.fromarray(np.zeros((8, 20), np.uint8), mode="L").save(mask)
    with pytest.raises(ValueError, match=r"frame_1\.png.*size"):
        VideoFolders(tmp_path, "train")


def test_binary_and_16_bit_masks_keep_their_values(tmp_path):
    from vidccnet.data.images import load_index_png

    fg = np.zeros((4, 5), bool)
    fg[1:3, 2:4] = True
    Image.fromarray(fg).save(tmp_path / "m1.png")  # mode "1"
    np.testing.assert_array_equal(load_index_png(tmp_path / "m1.png"), fg.astype(np.uint8))
    v16 = np.array([[0, 2, 255]], np.uint16)
    Image.fromarray(v16).save(tmp_path / "m16.png")  # mode "I;16"
    np.testing.assert_array_equal(load_index_png(tmp_path / "m16.png"), v16.astype(np.uint8))
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"big\.png.*300"):
        load_index_png(tmp_path / "big.png")


@pytest.mark.parametrize("line, name, colour", [
    ("lane 1", "lane 1", None),
    ("42", "42", None),
    ("zone 3 10 20 30", "zone 3", (10, 20, 30)),
    ("traffic light 250 170 30", "traffic light", (250, 170, 30)),
    ("road 1 2", "road 1 2", None),
    ("road 128 64 128  # asphalt", "road", (128, 64, 128)),
    ("car # vehicles", "car", None),
])
def test_class_names_with_numbers(tmp_path, line, name, colour):
    (tmp_path / "classes.txt").write_text(f"sky\n{line}\n")
    names, palette = read_classes(tmp_path)
    assert names == ["sky", name]
    if colour is not None:
        assert palette[1] == colour


def test_numeric_class_names_with_colours(tmp_path):
    (tmp_path / "classes.txt").write_text("0 0 0 0\n1 255 0 0\n")
    assert read_classes(tmp_path) == (["0", "1"], [(0, 0, 0), (255, 0, 0)])


@pytest.mark.parametrize("text, match", [
    ("name,r,g,b\nsky,128,128,128\n", "comma"),
    ("0 sky\n1 road\n", "index"),
    ("1 sky 70 130 180\n2 road 128 64 128\n", "index"),
    # a tab-separated export with its header: 'name r g b' became class 0, every name shifted
    ("name\tr\tg\tb\nsky\t70\t130\t180\nroad\t128\t64\t128\n", r"line 1 .* header"),
    ("class_name R G B\nsky 70 130 180\n", r"line 1 .* header"),
    ("name red green blue\nsky 70 130 180\n", r"line 1 .* header"),
])
def test_class_list_in_another_format_is_refused(tmp_path, text, match):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_classes(tmp_path)


def test_class_list_not_utf8_names_the_file(tmp_path):
    (tmp_path / "classes.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"classes\.txt.*UTF-8"):
        read_classes(tmp_path)


def test_video_listed_twice_is_refused(tmp_path):
    _write_root(tmp_path)
    (tmp_path / "train.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"'a'.*line 3"):
        VideoFolders(tmp_path, "train")


def test_broken_first_frame_is_a_clear_error(tmp_path):
    from vidccnet.data.images import ImageReadError

    _write_root(tmp_path)
    (tmp_path / "data" / "a" / "origin" / "frame_1.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"frame_1\.png"):
        VideoFolders(tmp_path, "train")


def test_spot_check_spreads_over_the_split():
    assert VideoFolders._spot_check_indices(12, 4) == [0, 4, 7, 11]
    assert VideoFolders._spot_check_indices(3, 8) == [0, 1, 2]
    assert VideoFolders._spot_check_indices(1, 8) == [0]


def test_masks_named_unlike_their_frames(tmp_path, caplog):
    _write_root(tmp_path)
    mask_dir = tmp_path / "data" / "b" / "mask"
    for m in mask_dir.iterdir():
        m.rename(m.with_suffix(".jpg"))
    with pytest.raises(FileNotFoundError, match=r"frame_1\.jpg.*PNG"):
        VideoFolders(tmp_path, "train")
    for m in mask_dir.iterdir():
        m.rename(m.with_suffix(".png"))
    (mask_dir / "frame_2.png").rename(mask_dir / "frame_2.PNG")
    Image.fromarray(np.zeros((16, 20), np.uint8), mode="L").save(mask_dir / "extra_7.png")
    with caplog.at_level("WARNING", logger="vidccnet.data.folders"):
        ds = VideoFolders(tmp_path, "train")
    assert "1 mask files" in caplog.text and "extra_7.png" in caplog.text
    assert list(ds.eval_videos()[1].labelled) == [0, 1]  # frame_2.PNG is frame_2's mask


def test_binary_masks_saved_as_0_and_255_are_warned_about(tmp_path, caplog):
    """A foreground saved as 255 (a common binary-mask export) would be ignored: warn."""
    _write_root(tmp_path, classes="background\nperson\n")
    for m in (tmp_path / "data").glob("*/mask/*.png"):
        fg = np.zeros((16, 20), np.uint8)
        fg[4:9, 5:12] = 255
        Image.fromarray(fg, mode="L").save(m)
    with caplog.at_level("WARNING", logger="vidccnet.data.folders"):
        VideoFolders(tmp_path, "train")
    assert "only 0 and 255" in caplog.text
    caplog.clear()
    (tmp_path / "ok").mkdir()
    _write_root(tmp_path / "ok", classes="background\nperson\n", num_values=2)
    with caplog.at_level("WARNING", logger="vidccnet.data.folders"):
        VideoFolders(tmp_path / "ok", "train")
    assert "only 0 and 255" not in caplog.text
    # masks that are all 255 hold nothing to train on: said as such (not '0 and 255')
    for m in (tmp_path / "data").glob("*/mask/*.png"):
        Image.fromarray(np.full((16, 20), 255, np.uint8), mode="L").save(m)
    with caplog.at_level("WARNING", logger="vidccnet.data.folders"):
        VideoFolders(tmp_path, "train")
    assert "hold only 255" in caplog.text and "only 0 and 255" not in caplog.text


def _write_sparse(root, n=20, every=10, name="s", h=16, w=20):
    """One video of ``n`` frames with a mask on every ``every``-th frame (frames 0, 10, ...)."""
    rng = np.random.default_rng(1)
    d = root / "data" / name
    (d / "origin").mkdir(parents=True)
    (d / "mask").mkdir()
    for t in range(n):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(
            d / "origin" / f"frame_{t + 1}.png")
        if t % every == 0:
            Image.fromarray(rng.integers(0, 3, (h, w)).astype(np.uint8), mode="L").save(
                d / "mask" / f"frame_{t + 1}.png")


@pytest.mark.parametrize("kw, anchors", [
    (dict(clip_len=2), [0, 1, 10, 11]),  # causal: frames (a-1, a) hold frame 0 or 10
    (dict(clip_len=3, frame_stride=2, anchor="centre"), [0, 1, 2, 8, 10, 12]),
    (dict(clip_len=2, label_all_frames=False), [0, 10]),  # the anchor frame needs the mask
])
def test_sparse_labels_keep_only_clips_with_a_label(tmp_path, caplog, kw, anchors):
    """A mask every 10th frame: a clip without any labelled frame would train a step on loss 0;
    only clips that carry a label are items, and one info line says how many."""
    (tmp_path / "classes.txt").write_text("road\ncar\nperson\n")
    (tmp_path / "train.txt").write_text("s\n")
    _write_sparse(tmp_path)
    with caplog.at_level("INFO", logger="vidccnet.data.folders"):
        ds = VideoFolders(tmp_path, "train", **kw)
    assert ds.items == [(0, a) for a in anchors]
    assert all((ds[i]["labels"] != 255).any() for i in range(len(ds)))
    assert f"{len(anchors)} clips of the 20 frames" in caplog.text


def test_dense_labels_keep_every_frame(tmp_path, caplog):
    _write_root(tmp_path)
    for v in ("a", "b"):  # give the third frame its mask too: every frame is labelled
        Image.fromarray(np.zeros((16, 20), np.uint8), mode="L").save(
            tmp_path / "data" / v / "mask" / "frame_3.png")
    with caplog.at_level("INFO", logger="vidccnet.data.folders"):
        ds = VideoFolders(tmp_path, "train", clip_len=1, label_all_frames=False)
    assert ds.items == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert "clips of the" not in caplog.text
    assert all(v.consecutive for v in ds.eval_videos())


def test_sparse_labels_are_not_consecutive_for_temporal_metrics(tmp_path):
    """mVC / flicker need masks on consecutive frames: masks 10 frames apart are not."""
    (tmp_path / "classes.txt").write_text("road\ncar\nperson\n")
    (tmp_path / "val.txt").write_text("s\nd\n")
    _write_sparse(tmp_path, name="s")
    _write_sparse(tmp_path, n=3, every=1, name="d")
    videos = VideoFolders(tmp_path, "val").eval_videos()
    assert list(videos[0].labelled) == [0, 10] and not videos[0].consecutive
    assert list(videos[1].labelled) == [0, 1, 2] and videos[1].consecutive


def test_frame_of_another_size_names_the_file(tmp_path):
    _write_root(tmp_path)
    odd = tmp_path / "data" / "a" / "origin" / "frame_2.png"
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(odd)
    ds = VideoFolders(tmp_path, "train", clip_len=2)
    with pytest.raises(ValueError, match=r"'a'.*frame_2\.png.*24x16.*20x16.*one size"):
        ds[1]  # frames 1, 2
    with pytest.raises(ValueError, match=r"'a'.*frame_2\.png.*24x16.*frame_1\.png' 20x16"):
        ds[2]  # frames 2, 3: the odd frame first in its clip is still the one named
    video = ds.eval_videos()[0]
    with pytest.raises(ValueError, match=r"'a'.*frame_2\.png.*24x16.*20x16.*one size"):
        video.load_frame(1)


def test_mask_of_another_size_names_the_file_in_evaluation_too(tmp_path):
    """Training named the mask; evaluation said only 'label of frame 1 of video a'."""
    _write_root(tmp_path)
    odd = tmp_path / "data" / "a" / "mask" / "frame_2.png"
    Image.fromarray(np.zeros((8, 10), np.uint8), mode="L").save(odd)
    ds = VideoFolders(tmp_path, "train", clip_len=2)
    with pytest.raises(ValueError, match=r"mask '.*frame_2\.png' is 10x8 pixels"):
        ds.eval_videos()[0].load_label(1)


def test_split_list_comments_and_blank_lines(tmp_path):
    _write_root(tmp_path)
    (tmp_path / "train.txt").write_text("# my videos\na  # the first\n\n  \nb\n")
    ds = VideoFolders(tmp_path, "train")
    assert [name for name, _ in ds.videos] == ["a", "b"]
    (tmp_path / "train.txt").write_text("# my videos\na\n\nb\na # again\n")
    with pytest.raises(ValueError, match=r"'a'.*line 5"):  # the file's own line number
        VideoFolders(tmp_path, "train")


def test_video_in_two_split_lists_is_warned_about_once(tmp_path, caplog):
    _write_root(tmp_path)
    (tmp_path / "val.txt").write_text("b\n")
    (tmp_path / "test.txt").write_text("# none yet\n")
    with caplog.at_level("WARNING", logger="vidccnet.data.folders"):
        VideoFolders(tmp_path, "train")
        VideoFolders(tmp_path, "val")
    overlap = [r for r in caplog.records if "also listed" in r.getMessage()]
    assert len(overlap) == 1, caplog.text
    assert "'b'" in overlap[0].getMessage() and "val.txt" in overlap[0].getMessage()
    caplog.clear()
    (tmp_path / "other").mkdir()
    _write_root(tmp_path / "other")
    (tmp_path / "other" / "val.txt").write_text("c\n")  # no video in both lists
    with caplog.at_level("WARNING", logger="vidccnet.data.folders"):
        VideoFolders(tmp_path / "other", "train")
    assert "also listed" not in caplog.text


def test_split_list_not_utf8_names_the_file(tmp_path):
    _write_root(tmp_path)
    (tmp_path / "train.txt").write_bytes("a\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"train\.txt.*UTF-8"):
        VideoFolders(tmp_path, "train")


def test_only_the_centre_anchor_frame_is_labelled_with_label_all_frames_off(tmp_path):
    """anchor="centre", label_all_frames=False: the clip of anchor frame 1 (frames 0, 1, 2)
    carries frame 1's mask at its middle position; frame 0's mask is left out."""
    data = _write_root(tmp_path)
    ds = VideoFolders(tmp_path, "train", clip_len=3, anchor="centre", label_all_frames=False)
    labels = ds[ds.items.index((0, 1))]["labels"].numpy()
    masks = data["a"][1]
    np.testing.assert_array_equal(labels[1], masks[1].astype(np.int64))
    assert (labels[[0, 2]] == 255).all()



@pytest.mark.parametrize("anchor, item, sources", [
    ("causal", (0, 0), [None, None, 0]),   # frames 0, 0, 0
    ("causal", (0, 1), [None, 0, 1]),      # frames 0, 0, 1
    ("centre", (0, 0), [None, 0, 1]),      # frames 0, 0, 1
    ("centre", (0, 3), [None, 3, None]),   # frames 2 (no mask), 3, 3: video a's last is 3
])
def test_a_frame_repeated_to_pad_a_clip_counts_its_label_once(tmp_path, anchor, item, sources):
    """A clip at a video's edge repeats the edge frame; its mask counted at every copy (up to
    T times in one clip's loss). The copy nearest the anchor keeps it, the others are 255."""
    masks = _write_root(tmp_path)["a"][1]
    ds = VideoFolders(tmp_path, "train", clip_len=3, anchor=anchor)
    labels = ds[ds.items.index(item)]["labels"].numpy()
    for position, frame in enumerate(sources):
        if frame is None:
            assert (labels[position] == 255).all(), position
        else:
            np.testing.assert_array_equal(labels[position], masks[frame].astype(np.int64))


def test_mask_value_outside_classes_says_to_extend_classes_txt(tmp_path):
    """A walkthrough on one's own data: a mask holding class 3 with 3 classes listed said only
    'is it from another label set?'; the fix is in classes.txt or the mask, and it says so."""
    _write_root(tmp_path, num_values=5)
    with pytest.raises(ValueError, match=r"classes\.txt' lists 3 classes \(0-2\).*not a grey "
                                         r"level.*fix the mask, or add the missing classes"):
        VideoFolders(tmp_path, "train", clip_len=1)


def test_mask_of_another_size_says_what_to_do(tmp_path):
    """The size used to read '(8, 10), its frame (16, 20)': (H, W) tuples and no remedy."""
    _write_root(tmp_path)
    odd = tmp_path / "data" / "a" / "mask" / "frame_1.png"
    Image.fromarray(np.zeros((8, 10), np.uint8), mode="L").save(odd)
    with pytest.raises(ValueError, match=r"mask '.*frame_1\.png' is 10x8 pixels, its frame "
                                         r"'frame_1\.png' 20x16: .*frame's size.*nearest"):
        VideoFolders(tmp_path, "train", clip_len=1)


def test_videos_shorter_than_a_clip_are_counted_in_one_line(tmp_path, caplog):
    """A 3-frame video with clip_len 5 trained on clips of repeated frames without a word."""
    _write_root(tmp_path, videos=(("a", 4), ("b", 3), ("c", 6)))
    with caplog.at_level("INFO", logger="vidccnet.data.folders"):
        VideoFolders(tmp_path, "train", clip_len=5)
    said = [r.getMessage() for r in caplog.records if "shorter than" in r.getMessage()]
    assert len(said) == 1, said
    assert "the train split has 2 videos shorter than a clip (5 frames" in said[0]
    assert "'a' (4 frames)" in said[0] and "repeat its end frames" in said[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="vidccnet.data.folders"):
        VideoFolders(tmp_path, "train", clip_len=2, frame_stride=3)  # spans 4 frames
    said = [r.getMessage() for r in caplog.records if "shorter than" in r.getMessage()]
    assert len(said) == 1, said
    assert "the train split has 1 video shorter" in said[0] and "'b' (3 frames)" in said[0]


def test_frame_and_mask_folders_under_other_names_are_named(tmp_path):
    """ROOT/data/VIDEO/images and .../masks (not origin / mask) said only that origin was not
    found, or that no mask was found at .../mask/<frame>.png."""
    _write_root(tmp_path)
    video = tmp_path / "data" / "a"
    (video / "mask").rename(video / "masks")
    with pytest.raises(FileNotFoundError, match=r"has no mask.*'.*data/a' holds no mask folder "
                                                r"but 'masks'.*ROOT/data/VIDEO/mask/"):
        VideoFolders(tmp_path, "train", clip_len=1)
    (video / "origin").rename(video / "images")
    with pytest.raises(FileNotFoundError, match=r"data/a/origin' \(listed in .*train\.txt\) not "
                                                r"found; '.*data/a' holds 'images', 'masks': .*"
                                                r"ROOT/data/VIDEO/origin/"):
        VideoFolders(tmp_path, "train", clip_len=1)
    (video / "images").rename(tmp_path / "elsewhere")
    (video / "masks").rename(tmp_path / "elsewhere2")
    video.rmdir()
    with pytest.raises(FileNotFoundError, match=r"video folder '.*data/a' \(listed in "):
        VideoFolders(tmp_path, "train", clip_len=1)


def test_video_listed_but_missing_says_what_to_do(tmp_path):
    """A split list naming a video that ROOT/data lacks said only 'not found'; a video file
    listed instead of its frame folder was called a folder that is 'not found'."""
    _write_root(tmp_path, videos=(("a", 4), ("b", 3)))
    (tmp_path / "train.txt").write_text("a\nc\n")
    with pytest.raises(FileNotFoundError, match=r"video folder '.*data/c' \(listed in .*train"
                                                r"\.txt\) not found; '.*data' holds 'a', 'b': "
                                                r"correct the name in .*train\.txt"):
        VideoFolders(tmp_path, "train", clip_len=1)
    (tmp_path / "data" / "c.mp4").write_bytes(b"\0" * 16)
    (tmp_path / "train.txt").write_text("a\nc.mp4\n")
    with pytest.raises(FileNotFoundError, match=r"'.*data/c\.mp4' \(listed in .*train\.txt\) is "
                                                r"a file, not a folder of frames: .*"
                                                r"ROOT/data/c/origin/.*list 'c'"):
        VideoFolders(tmp_path, "train", clip_len=1)
    (tmp_path / "train.txt").write_text("a\nc\n")
    with pytest.raises(FileNotFoundError, match=r"data/c' \(listed in .*\) not found; '.*data' "
                                                r"holds the file 'c\.mp4'.*ROOT/data/c/origin/"):
        VideoFolders(tmp_path, "train", clip_len=1)


def test_nested_video_names_are_read_and_a_missing_one_is_named_right(tmp_path):
    """Video names may be paths under ROOT/data (cam1/day/a). A missing one was reported as if
    ROOT lacked data/ (its parent folder was taken for data/), and a video file listed, or lying
    where the folder should be, was to be extracted into ROOT/data/<file stem>/origin/, dropping
    the folders above it."""
    _write_root(tmp_path, videos=(("cam1/day/a", 4), ("b", 3)))
    ds = VideoFolders(tmp_path, "train", clip_len=1)
    assert [name for name, _ in ds.videos] == ["cam1/day/a", "b"]
    data = tmp_path / "data"
    (tmp_path / "train.txt").write_text("cam1/day/a\ncam2/c\n")
    with pytest.raises(FileNotFoundError) as err:
        VideoFolders(tmp_path, "train", clip_len=1)
    assert str(err.value).startswith(f"folders dataset video folder '{data / 'cam2' / 'c'}' "
                                     "(listed in "), err.value
    assert f"; '{data}' holds 'b', 'cam1': correct the name" in str(err.value), err.value
    assert "ROOT must hold data/" not in str(err.value)
    (data / "cam1" / "day" / "c.mp4").write_bytes(b"\0" * 16)
    (tmp_path / "train.txt").write_text("cam1/day/c.mp4\n")
    with pytest.raises(FileNotFoundError, match=r"is a file, not a folder of frames: .*"
                                                r"ROOT/data/cam1/day/c/origin/ .* and list "
                                                r"'cam1/day/c'$"):
        VideoFolders(tmp_path, "train", clip_len=1)
    (tmp_path / "train.txt").write_text("cam1/day/c\n")
    with pytest.raises(FileNotFoundError, match=r"day' holds the file 'c\.mp4': .*"
                                                r"ROOT/data/cam1/day/c/origin/"):
        VideoFolders(tmp_path, "train", clip_len=1)


def _palette_png(path, index, colours):
    im = Image.fromarray(index.astype(np.uint8), mode="L")
    im.putpalette([v for c in colours for v in c] + [0] * (768 - 3 * len(colours)))
    im.save(path)


def test_palette_masks_numbered_in_another_order_stop_the_build(tmp_path):
    """A palette PNG whose index 1 is drawn in the colour classes.txt gives class 2 was read by
    its indices without a word: classes 1 and 2 swapped silently in training and evaluation.
    Palette colours that are no class's colour, or agree with classes.txt, are not a concern."""
    classes = "road 0 0 0\ncar 200 30 30\nperson 30 200 30\n"
    _write_root(tmp_path, classes=classes)
    mask = tmp_path / "data" / "a" / "mask" / "frame_1.png"
    index = np.zeros((16, 20), np.uint8)
    index[4:8], index[10:12] = 1, 2
    _palette_png(mask, index, [(0, 0, 0), (30, 200, 30), (200, 30, 30)])  # the tool's order
    with pytest.raises(ValueError, match=r"frame_1\.png' is a palette PNG .* index 1 is drawn "
                                         r"in \(30, 200, 30\), the colour of class 2 'person' "
                                         r".*scripts/colour_masks\.py"):
        VideoFolders(tmp_path, "train", clip_len=1)
    _palette_png(mask, index, [(0, 0, 0), (200, 30, 30), (30, 200, 30)])  # as colour_masks.py
    VideoFolders(tmp_path, "train", clip_len=1)
    _palette_png(mask, index, [(1, 1, 1), (2, 2, 2), (3, 3, 3)])  # no class's colour
    VideoFolders(tmp_path, "train", clip_len=1)
    (tmp_path / "classes.txt").write_text("road\ncar\nperson\n")  # no colours to compare
    _palette_png(mask, index, [(0, 0, 0), (30, 200, 30), (200, 30, 30)])
    VideoFolders(tmp_path, "train", clip_len=1)
    # PIL's stub palette of a mask saved as mode "P" without one: only index 0, black, which
    # classes.txt may give another class (CamVid lists 'Void 0 0 0' last)
    (tmp_path / "classes.txt").write_text("road 10 20 30\ncar 200 30 30\nvoid 0 0 0\n")
    Image.fromarray(index, mode="P").save(mask)
    VideoFolders(tmp_path, "train", clip_len=1)
    _palette_png(mask, np.zeros_like(index), [(0, 0, 0)])  # one class: too little to tell
    VideoFolders(tmp_path, "train", clip_len=1)


def test_classes_txt_is_read_once_per_dataset(tmp_path, monkeypatch):
    """The class list was read again for every video whose first mask the build checks (to
    compare palette masks with its colours): once is enough."""
    _write_root(tmp_path, classes="road 0 0 0\ncar 200 30 30\nperson\n",
                videos=(("a", 3), ("b", 3), ("c", 3)))
    reads = []
    real = Path.read_text

    def counting(self, *args, **kwargs):
        if self.name == "classes.txt":
            reads.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    ds = VideoFolders(tmp_path, "train", clip_len=1)
    assert len(reads) == 1, reads
    assert ds.class_names == ["road", "car", "person"]
    assert ds.palette == read_classes(tmp_path)[1]  # the colours given, a default for person
    assert ds.palette[:2] == [(0, 0, 0), (200, 30, 30)]


def test_a_tool_palette_sharing_some_colours_with_classes_txt_is_not_refused(tmp_path):
    """A mask numbered as classes.txt but saved with another tool's palette (labelme's VOC
    colour map) was refused whenever its few held indices' colours happened to be classes.txt
    colours: CamVid's classes with 'void 0 0 0' last, VOC's index 0 black and index 1 (128, 0,
    0), CamVid's building. Only a palette that is classes.txt's colours reordered tells."""
    from vidccnet.data.camvid import CLASS_NAMES, PALETTE

    classes = "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in zip(CLASS_NAMES, PALETTE))
    _write_root(tmp_path, classes=classes + "void 0 0 0\n")
    voc = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128)]
    index = np.zeros((16, 20), np.uint8)
    index[4:8] = 1  # sky and building, numbered as classes.txt
    _palette_png(tmp_path / "data" / "a" / "mask" / "frame_1.png", index, voc)
    VideoFolders(tmp_path, "train", clip_len=1)


def test_evaluate_names_a_data_root_that_is_gone(tmp_path, save_tiny_checkpoint):
    """Evaluating a checkpoint whose dataset was moved (or another machine's) said
    "'ROOT/classes.txt' not found", as if the data lacked its class list, where train.py says
    that data.root does not exist."""
    data = {"name": "folders", "root": str(tmp_path / "moved")}
    ckpt = save_tiny_checkpoint(
        tmp_path / "c.pt", ["road", "car"], data=data,
        model={"name": "ccnet3d_resnet18", "kwargs": {"head_channels": 16, "backbone_width": 8}})
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--checkpoint",
                           str(ckpt), "--no-plots"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"data\.root '.*moved' does not exist; set data\.root", proc.stderr)
    assert not (tmp_path / "eval_val").exists()
