"""The "folders" dataset (the user's own videos): classes.txt, index masks, layout errors, the
trainer and evaluator on it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidccnet.data import build_dataset, build_eval_videos, dataset_info
from vidccnet.data.folders import VideoFolders, read_classes


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
    ("road\nroad\n", "twice"),
    ("road\ncar 255 0\n", "line 2"),
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
    assert ds.class_names == ["road", "car", "person"]
    frames, masks = data["a"]
    item = ds[1]  # video a, anchor 1 (causal): frames 0, 1
    labels = item["labels"].numpy()
    np.testing.assert_array_equal(labels[0], masks[0].astype(np.int64))  # value k is class k
    assert (labels[0] == 255).any() and (labels[0] == 2).any()
    assert (ds[2]["labels"][1] == 255).all()  # frame 3 has no mask: ignored
    videos = build_eval_videos("folders", "train", root=tmp_path, clip_len=2, augment=True)
    assert [v.name for v in videos] == ["a", "b"] and all(v.consecutive for v in videos)
    assert list(videos[0].labelled) == [0, 1, 3]
    np.testing.assert_array_equal(videos[0].load_frame(3), frames[3])
    np.testing.assert_array_equal(videos[1].load_label(1), data["b"][1][1].astype(np.int64))
    assert VideoFolders(tmp_path, "train", clip_len=2, augment=True,
                        crop_size=8)[(0, 5)]["clip"].shape == (3, 2, 8, 8)


def test_mask_value_outside_classes_is_refused(tmp_path):
    _write_root(tmp_path, num_values=5)  # values 3, 4 do not exist in a 3-class classes.txt
    ds = VideoFolders(tmp_path, "train", clip_len=1)
    with pytest.raises(ValueError, match=r"frame_1\.png.*0-2 and 255"):
        ds[0]


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
    ])
    result = train(cfg)
    assert result["val"] is not None and 0.0 <= result["val"]["mIoU"] <= 1.0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["data"]["class_names"] == ["road", "car", "person"]
    assert ckpt["config"]["data"]["palette"][1] == [255, 0, 0]
    assert ckpt["config"]["eval"]["metric_convention"] == "auto"


def test_train_script_one_line_error_without_classes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "mine.yaml").write_text(f"data: {{name: folders, root: '{tmp_path}'}}\n")
    proc = subprocess.run(
        [sys.executable, str(repo / "scripts" / "train.py"), "--config",
         str(tmp_path / "mine.yaml"), f"runtime.output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "classes.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
