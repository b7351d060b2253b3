"""CamVid: name parsing, label remap, context frames, stretch, and prepare_camvid matching."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidccnet.data import build_eval_videos
from vidccnet.data.camvid import CamVid, parse_camvid_name, remap_camvid_label
from vidccnet.data.synthetic import SyntheticVideoWorld
from vidccnet.data.transforms import from_clip_tensor
from vidccnet.data.video import write_video


@pytest.mark.parametrize("name,expected", [
    ("0001TP_006690", ("0001TP", 6690)), ("0006R0_f00930", ("0006R0", 930)),
    ("Seq05VD_f00000", ("Seq05VD", 0)), ("0016E5_00390", ("0016E5", 390)),
    ("0016E5_07959.png", ("0016E5", 7959)),
])
def test_parse_names(name, expected):
    assert parse_camvid_name(name) == expected


def test_parse_bad_name():
    with pytest.raises(ValueError, match="sequence"):
        parse_camvid_name("frame.png")


def test_label_remap():
    lab = np.array([[0, 5, 10, 11, 12, 255]], np.uint8)
    np.testing.assert_array_equal(remap_camvid_label(lab), [[0, 5, 10, 255, 255, 255]])


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.fixture(scope="module")
def camvid_raw(tmp_path_factory):
    """SegNet-like root + 2x-resolution sequence videos. 0016E5 names are one frame early
    (deliberate off-by-one); 0006R0 names are exact."""
    tmp = tmp_path_factory.mktemp("camvid")
    root, raw = tmp / "CamVid", tmp / "raw"
    world = SyntheticVideoWorld(seed=7, height=48, width=64)
    seqs = {"0016E5": (world.render(0, 30), -1, "{:05d}", "mp4"),
            "0006R0": (world.render(1, 30), 0, "f{:05d}", "avi")}
    truth = {}
    for seq, (v, shift, fmt, ext) in seqs.items():
        big = v.frames.repeat(2, axis=1).repeat(2, axis=2)  # the "960x720" original
        raw.mkdir(exist_ok=True)
        write_video(raw / f"{seq}.{ext}", big, fps=30,
                    codec="libx264" if ext == "mp4" else "mjpeg")
        for split, true_idx in (("train", 10), ("train", 20), ("test", 15)):
            name = f"{seq}_{fmt.format(true_idx + shift)}"
            _save(root / split / f"{name}.png", v.frames[true_idx])
            _save(root / f"{split}annot" / f"{name}.png", v.labels[true_idx])
            truth[name] = (seq, true_idx)
    (root / "val").mkdir()
    (root / "valannot").mkdir()
    return root, raw, world, seqs, truth


def test_prepare_camvid_finds_offsets_and_extracts_frames(load_script, camvid_raw, tmp_path):
    root, raw, world, seqs, truth = camvid_raw
    mod = load_script("prepare_camvid")
    out = tmp_path / "out"
    rc = mod.main(["--segnet", str(root), "--out", str(out), "--videos", str(raw / "0016E5.mp4"),
                   f"0006R0={raw / '0006R0.avi'}", "--window", "3", "--context-before", "2",
                   "--context-after", "1"])
    assert rc == 0
    report = json.loads((out / "frames" / "matches.json").read_text())
    for name, (seq, idx) in truth.items():
        m = report["matches"][name]
        assert m["seq"] == seq and m["index"] == idx, (name, m)
        assert m["offset"] == (1 if seq == "0016E5" else 0)
        assert m["mad"] < m["runner_up_mad"]
    assert report["sequences"]["0016E5"]["offsets"] == {"1": 3}
    # extracted frames: labelled size, right content, the clip's range only
    v = seqs["0016E5"][0]
    for j in (8, 9, 10, 11):
        img = np.asarray(Image.open(out / "frames" / "0016E5" / f"{j:06d}.png"))
        assert img.shape == (48, 64, 3)
        d = [mad(img, v.frames[k]) for k in range(30)]
        assert int(np.argmin(d)) == j
    assert not (out / "frames" / "0016E5" / "000007.png").exists()

    # the dataset reads the matches and builds clips from the extracted frames
    for sub in ("train", "trainannot", "test", "testannot", "val", "valannot"):
        (out / sub).symlink_to(root / sub)
    ds = CamVid(out, "train", clip_len=3, augment=False)
    assert len(ds) == 4 and ds.num_classes == 11
    names = [n for n, _, _ in ds.items]
    k = names.index("0016E5_00009")  # true index 10
    item = ds[k]
    frames = from_clip_tensor(item["clip"])  # (T, H, W, 3)
    for t, j in enumerate((8, 9, 10)):
        d = [mad(frames[t], v.frames[kk]) for kk in range(30)]
        assert int(np.argmin(d)) == j
    labels = item["labels"].numpy()
    assert (labels[:2] == 255).all()
    np.testing.assert_array_equal(labels[2], v.labels[10])

    videos = build_eval_videos("camvid", "test", root=out, clip_len=3, augment=True)
    assert len(videos) == 2 and not any(e.consecutive for e in videos)
    ev = [e for e in videos if e.name.startswith("0016E5")][0]
    assert ev.num_frames == 13 and list(ev.labelled) == [8]  # 8 before, 4 after
    nearest = [int(np.argmin([mad(ev.load_frame(j), v.frames[kk]) for kk in range(30)]))
               for j in (0, 6, 7, 8, 9, 12)]
    # frame 7 was not extracted (nearest inwards: 8, extracted for the train frame 10), 19 was
    assert nearest == [8, 13, 14, 15, 16, 19]


def test_prepare_camvid_on_a_video_shorter_than_the_names_suggests_the_offset(
        load_script, camvid_raw, tmp_path, capsys):
    """A video that covers none of the names' frame indices (an extract that starts later)
    gets the option that fixes it, not only 'frame index 9 is beyond the video's 3 frames'."""
    root, raw, world, seqs, truth = camvid_raw
    short = tmp_path / "0016E5.mp4"
    write_video(short, seqs["0016E5"][0].frames[:3].repeat(2, axis=1).repeat(2, axis=2), fps=30,
                codec="libx264")
    mod = load_script("prepare_camvid")
    rc = mod.main(["--segnet", str(root), "--out", str(tmp_path / "out"), "--videos", str(short)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--index-offset 0016E5=-N" in err[0], err


def test_missing_context_falls_back_to_the_labelled_frame(camvid_raw, caplog):
    """One warning, when the dataset is built: it was logged at the first clip read, once
    per DataLoader worker (each has its own copy of the dataset)."""
    root, *_ = camvid_raw
    with caplog.at_level(logging.WARNING):
        ds = CamVid(root, "test", clip_len=4, anchor="centre", augment=True, crop_size=(32, 32))
    (msg,) = [r.getMessage() for r in caplog.records if "context frame" in r.getMessage()]
    assert f"all {3 * len(ds)} context frames" in msg and "not found" in msg, msg
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        item = ds[0]
        ds[1]
        copy.deepcopy(ds)[0]  # a worker's copy
    assert not [r for r in caplog.records if "context frame" in r.getMessage()]
    assert item["clip"].shape == (3, 4, 32, 32)
    frames = item["clip"]
    for t in range(4):  # every frame repeats the labelled one (same augmentation)
        assert np.array_equal(frames[:, t].numpy(), frames[:, 0].numpy())
    assert (item["labels"][[0, 1, 3]] == 255).all()


def test_context_frames_under_other_names_are_named_in_the_warning(camvid_raw, tmp_path,
                                                                   caplog):
    """Frames extracted by hand (ffmpeg's %06d.jpg) are not the context frames the loader
    reads: the warning names the file it looked for and the files it found instead (it only
    said to run prepare_camvid.py)."""
    import shutil

    root = tmp_path / "CamVid"
    shutil.copytree(camvid_raw[0], root)
    seq = root / "frames" / "0016E5"
    seq.mkdir(parents=True)
    for i in range(10, 20):
        _save(seq / f"{i:06d}.jpg", np.zeros((48, 64, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        CamVid(root, "test", clip_len=4, anchor="centre")
    (msg,) = [r.getMessage() for r in caplog.records if "context frame" in r.getMessage()]
    assert re.search(re.escape(str(seq)) + r"/0000\d\d\.png'", msg) and "not found" in msg, msg
    assert "000010.jpg" in msg and "10 files" in msg, msg


def test_val_stretch_is_one_consecutive_video(tmp_path):
    rng = np.random.default_rng(0)
    seq_frames = {i: rng.integers(0, 255, (12, 16, 3), np.uint8) for i in range(7955, 7966)}
    for i in (7959, 7961, 7963):
        _save(tmp_path / "val" / f"0016E5_{i:05d}.png", seq_frames[i])
        _save(tmp_path / "valannot" / f"0016E5_{i:05d}.png", np.full((12, 16), i % 11, np.uint8))
    _save(tmp_path / "val" / "0001TP_006690.png", seq_frames[7955])
    _save(tmp_path / "valannot" / "0001TP_006690.png", np.zeros((12, 16), np.uint8))
    videos = CamVid(tmp_path, "val", clip_len=3).eval_videos()  # no frames/: labelled only
    stretch = [v for v in videos if v.consecutive]
    assert len(videos) == 2 and len(stretch) == 1
    assert stretch[0].num_frames == 3 and list(stretch[0].labelled) == [0, 1, 2]
    for i in range(7955, 7966):
        _save(tmp_path / "frames" / "0016E5" / f"{i:06d}.png", seq_frames[i])
    (s,) = [v for v in CamVid(tmp_path, "val", clip_len=3).eval_videos() if v.consecutive]
    assert s.num_frames == 17 and list(s.labelled) == [8, 10, 12]  # 7951..7967
    np.testing.assert_array_equal(s.load_frame(0), seq_frames[7955])  # padded inwards
    np.testing.assert_array_equal(s.load_frame(9), seq_frames[7960])
    np.testing.assert_array_equal(s.load_frame(16), seq_frames[7965])
    np.testing.assert_array_equal(s.load_label(10), np.full((12, 16), 7961 % 11))
    (s2,) = [v for v in CamVid(tmp_path, "val", clip_len=3, frame_stride=2).eval_videos()
             if v.consecutive]  # frames 2 apart: 7943, 7945, ..., 7971
    assert s2.num_frames == 15 and list(s2.labelled) == [8, 9, 10]
    np.testing.assert_array_equal(s2.load_frame(9), seq_frames[7961])
    np.testing.assert_array_equal(s2.load_frame(7), seq_frames[7957])
    np.testing.assert_array_equal(s2.load_label(9), np.full((12, 16), 7961 % 11))
    isolated = CamVid(tmp_path, "val", clip_len=3).eval_videos(stretch=False)
    assert len(isolated) == 4 and not any(v.consecutive for v in isolated)


def test_prepare_camvid_cli_errors(load_script, tmp_path, capsys):
    """Expected errors: one line on stderr, exit code 2 (in-process: no torch re-import)."""
    mod = load_script("prepare_camvid")
    assert mod.main(["--segnet", str(tmp_path / "none"), "--videos", "x.avi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none" in err and "Traceback" not in err
    for sub in ("train", "val", "test"):
        (tmp_path / sub).mkdir()
    _save(tmp_path / "train" / "0001TP_000001.png", np.zeros((8, 8, 3), np.uint8))
    assert mod.main(["--segnet", str(tmp_path), "--videos", "mystery.avi"]) == 2
    assert "SEQ=PATH" in capsys.readouterr().err
    assert mod.main(["--segnet", str(tmp_path), "--videos", f"0001TP={tmp_path / 'no.avi'}"]) == 2
    assert "no.avi" in capsys.readouterr().err


def test_prepare_camvid_checks_every_video_before_writing(load_script, camvid_raw, tmp_path,
                                                         capsys):
    """A broken video, or an alias given as SEQ=, is found before any frame is written: the
    broken one fails at once (nothing under OUT), the alias reaches its sequence."""
    root, raw, *_ = camvid_raw
    mod = load_script("prepare_camvid")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "out"
    argv = ["--segnet", str(root), "--out", str(out), "--window", "1", "--context-before", "0",
            "--context-after", "0", "--videos"]
    assert mod.main([*argv, str(raw / "0006R0.avi"), f"0016E5={garbage}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "garbage.mp4" in err, err
    assert not out.exists()
    assert mod.main([*argv, f"16E5={raw / '0016E5.mp4'}"]) == 2  # not a known name
    assert "16E5" in capsys.readouterr().err and not out.exists()
    assert mod.main([*argv, f"0016e5={raw / '0016E5.mp4'}"]) == 0  # case and aliases resolve
    report = json.loads((out / "frames" / "matches.json").read_text())
    assert report["sequences"]["0016E5"]["labelled"] == 3


def _extract(tmp_path, video):
    """A frame-folder 'video' at 2x size that starts at sequence frame 5 (an extract)."""
    folder = tmp_path / "extract"
    for j in range(5, 30):
        _save(folder / f"img{j - 5}.png", video.frames[j].repeat(2, 0).repeat(2, 1))
    return folder


def test_prepare_camvid_video_extract_with_index_offset(load_script, camvid_raw, tmp_path):
    """A frame-folder 'video' that starts at sequence frame 5 (an extract): --index-offset."""
    root, _, _, seqs, truth = camvid_raw
    v = seqs["0006R0"][0]
    folder = _extract(tmp_path, v)
    out = tmp_path / "out"
    rc = load_script("prepare_camvid").main(["--segnet", str(root), "--out", str(out), "--videos",
                              f"0006R0={folder}", "--index-offset", "0006R0=-5",
                              "--window", "2", "--context-before", "1", "--context-after", "0"])
    assert rc == 0
    report = json.loads((out / "frames" / "matches.json").read_text())
    assert report["missing_videos"] == {"0016E5": 3}
    for name, (seq, idx) in truth.items():
        if seq == "0006R0":
            m = report["matches"][name]
            assert (m["index"], m["video_index"], m["poor"]) == (idx, idx - 5, False)
    img = np.asarray(Image.open(out / "frames" / "0006R0" / "000019.png"))
    assert int(np.argmin([mad(img, v.frames[k]) for k in range(30)])) == 19


def test_prepare_camvid_rerun_with_another_index_offset_rewrites_the_frames(
        load_script, camvid_raw, tmp_path):
    """A first run without the extract's --index-offset writes frames of the wrong indices; the
    rerun with the offset (as the poor-match warning advises) must not keep them: every frame
    file on disk then holds the sequence frame its name says."""
    root, _, _, seqs, _ = camvid_raw
    v = seqs["0006R0"][0]
    folder = _extract(tmp_path, v)
    out = tmp_path / "out"
    common = ["--segnet", str(root), "--out", str(out), "--videos", f"0006R0={folder}",
              "--window", "2", "--context-before", "1", "--context-after", "0"]
    mod = load_script("prepare_camvid")
    assert mod.main(common) == 0
    assert mod.main(common + ["--index-offset", "0006R0=-5"]) == 0
    files = sorted((out / "frames" / "0006R0").glob("*.png"))
    assert files
    for f in files:
        img = np.asarray(Image.open(f))
        assert int(np.argmin([mad(img, v.frames[k]) for k in range(30)])) == int(f.stem), f.name


def test_label_of_another_size_is_refused(camvid_raw, tmp_path):
    """A label PNG of another size than its frame would be stretched to fit by the
    augmentation: refused, naming both files."""
    import shutil

    root, *_ = camvid_raw
    copy = tmp_path / "CamVid"
    shutil.copytree(root, copy)
    label = sorted((copy / "trainannot").glob("*.png"))[0]
    Image.fromarray(np.zeros((24, 64), np.uint8)).save(label)
    ds = CamVid(copy, "train", clip_len=2, augment=True, crop_size=(16, 16))
    k = [n for n, _, _ in ds.items].index(label.stem)
    with pytest.raises(ValueError, match=f"label '.*{label.name}' has size \\(24, 64\\)"):
        ds[k]


def test_label_values_outside_the_label_set_are_refused(camvid_raw, tmp_path):
    """Values beyond CamVid's 0-11 (e.g. the 32-class labels) are refused, naming the file."""
    import shutil

    from vidccnet.data.camvid import _load_label

    root, *_ = camvid_raw
    label = tmp_path / "l.png"
    shutil.copyfile(sorted((root / "trainannot").glob("*.png"))[0], label)
    Image.fromarray(np.array([[0, 10, 11, 255]], np.uint8)).save(label)
    np.testing.assert_array_equal(_load_label(label), [[0, 10, 255, 255]])  # 11: void
    Image.fromarray(np.array([[0, 11, 255, 31]], np.uint8)).save(label)
    with pytest.raises(ValueError, match="l.png' holds values \\[31\\]"):
        _load_label(label)


def test_a_malformed_matches_report_names_its_file(camvid_raw, tmp_path):
    import shutil

    root, *_ = camvid_raw
    copy = tmp_path / "CamVid"
    shutil.copytree(root, copy)
    (copy / "frames").mkdir(exist_ok=True)
    (copy / "frames" / "matches.json").write_text("{'matches': }")
    with pytest.raises(ValueError, match="matches.json' is not a matches report"):
        CamVid(copy, "train", clip_len=2)


def test_split_folder_quirks(camvid_raw, tmp_path):
    """Upper-case .PNG frames are read, macOS '._' files skipped, and a frame without its
    label is refused when the dataset is built (not when the frame is drawn)."""
    import shutil

    root, *_ = camvid_raw
    copy = tmp_path / "CamVid"
    shutil.copytree(root, copy)
    first = sorted((copy / "train").glob("*.png"))[0]
    n = len(CamVid(copy, "train", clip_len=2))
    first.rename(first.with_suffix(".PNG"))
    (copy / "trainannot" / first.name).rename((copy / "trainannot" / first.name).with_suffix(
        ".PNG"))
    (copy / "train" / "._0016E5_00009.png").write_bytes(b"\0\5resource fork")
    assert len(CamVid(copy, "train", clip_len=2)) == n
    (copy / "trainannot" / first.with_suffix(".PNG").name).unlink()
    with pytest.raises(FileNotFoundError, match="label .* of frame .* not found"):
        CamVid(copy, "train", clip_len=2)


def _prepare_args(root, out, *videos):
    return ["--segnet", str(root), "--out", str(out), "--videos", *map(str, videos),
            "--window", "3", "--context-before", "1", "--context-after", "0"]


def test_prepare_camvid_run_per_video_keeps_the_earlier_matches(load_script, camvid_raw,
                                                                 tmp_path, capsys):
    """Videos prepared one run at a time (as they are downloaded): the report keeps every
    sequence's matches. It was rebuilt by each run, so the dataset then read 0016E5's frames
    by the names' index, one frame off, without a warning."""
    root, raw, *_ = camvid_raw
    mod = load_script("prepare_camvid")
    out = tmp_path / "out"
    assert mod.main(_prepare_args(root, out, raw / "0016E5.mp4")) == 0
    assert mod.main(_prepare_args(root, out, f"0006R0={raw / '0006R0.avi'}")
                    + ["--report", str(tmp_path / "copy.json")]) == 0
    report = json.loads((out / "frames" / "matches.json").read_text())
    assert set(report["sequences"]) == {"0016E5", "0006R0"} and not report["missing_videos"]
    assert report["matches"]["0016E5_00009"]["index"] == 10
    assert report["matches"]["0006R0_f00010"]["index"] == 10
    assert json.loads((tmp_path / "copy.json").read_text()) == report  # --report: a copy


def test_prepare_camvid_failing_midway_keeps_the_finished_sequences(load_script, camvid_raw,
                                                                    tmp_path, monkeypatch):
    root, raw, *_ = camvid_raw
    mod = load_script("prepare_camvid")
    real, calls = mod.match_frame, []

    def match_then_fail(*args, **kwargs):  # 0006R0 (3 labelled frames) first, then 0016E5
        calls.append(1)
        if len(calls) > 3:
            raise mod.PrepareError("the disk is full")
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "match_frame", match_then_fail)
    out = tmp_path / "out"
    assert mod.main(_prepare_args(root, out, raw / "0016E5.mp4",
                                  f"0006R0={raw / '0006R0.avi'}")) == 2
    report = json.loads((out / "frames" / "matches.json").read_text())
    assert set(report["sequences"]) == {"0006R0"}


def test_frames_without_matches_are_warned_about(camvid_raw, tmp_path, caplog):
    """frames/<seq>/ on disk but no report entry for it (a report lost or from another run):
    the names' index is used, which is off by one for some sequences; say so."""
    import shutil

    root, *_ = camvid_raw
    copy = tmp_path / "CamVid"
    shutil.copytree(root, copy)
    _save(copy / "frames" / "0016E5" / "000009.png", np.zeros((48, 64, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        CamVid(copy, "train", clip_len=2)
    assert any("0016E5" in r.message and "matches.json" in r.message for r in caplog.records)


def test_prepare_camvid_skips_macos_resource_files(load_script, camvid_raw, tmp_path):
    import shutil

    root, raw, *_ = camvid_raw
    copy = tmp_path / "CamVid"
    shutil.copytree(root, copy)
    (copy / "train" / "._0006R0_f00020.png").write_bytes(b"\0\5resource fork")
    first = sorted((copy / "test").glob("0006R0*.png"))[0]
    first.rename(first.with_suffix(".PNG"))
    out = tmp_path / "out"
    assert load_script("prepare_camvid").main(
        _prepare_args(copy, out, f"0006R0={raw / '0006R0.avi'}")) == 0
    report = json.loads((out / "frames" / "matches.json").read_text())
    assert first.stem in report["matches"] and len(report["matches"]) == 3


def _stretch_root(tmp_path, frames_differ=False):
    """The val stretch 0016E5_07959..07963 (every 2nd frame labelled) with its context frames
    7951..7971; with `frames_differ` the extracted frames at the labelled positions differ
    from the SegNet images (a video decode at another size is never the same pixels)."""
    rng = np.random.default_rng(0)
    seq_frames = {i: rng.integers(0, 255, (12, 16, 3), np.uint8) for i in range(7951, 7972)}
    for i in (7959, 7961, 7963):
        _save(tmp_path / "val" / f"0016E5_{i:05d}.png", seq_frames[i])
        _save(tmp_path / "valannot" / f"0016E5_{i:05d}.png", np.full((12, 16), i % 11, np.uint8))
    for i, f in seq_frames.items():
        _save(tmp_path / "frames" / "0016E5" / f"{i:06d}.png", 255 - f if frames_differ and
              i in (7959, 7961, 7963) else f)
    return seq_frames


def test_the_stretch_scores_the_segnet_images(tmp_path):
    """The labels were drawn on the SegNet images: the stretch's labelled positions show
    those, as the training clips do (they showed the frames extracted from the video)."""
    seq_frames = _stretch_root(tmp_path, frames_differ=True)
    (s,) = CamVid(tmp_path, "val", clip_len=3).eval_videos()
    assert list(s.labelled) == [8, 10, 12]  # 7959, 7961, 7963 from 7951
    np.testing.assert_array_equal(s.load_frame(10), seq_frames[7961])  # the SegNet image
    np.testing.assert_array_equal(s.load_frame(9), seq_frames[7960])  # context: extracted


def test_a_frame_stride_that_misses_the_stretch_spacing_evaluates_each_frame(tmp_path, caplog):
    """frame_stride 4 (labelled frames 2 apart): each labelled frame gets its own clip of
    frames 4 apart, as in training (the stretch ran as one video of consecutive frames)."""
    seq_frames = _stretch_root(tmp_path)
    with caplog.at_level(logging.WARNING):
        videos = CamVid(tmp_path, "val", clip_len=3, frame_stride=4).eval_videos()
    assert any("frame_stride 4" in r.message for r in caplog.records)
    assert len(videos) == 3 and not any(v.consecutive for v in videos)
    v = [v for v in videos if v.name == "0016E5_07961"][0]
    (at,) = v.labelled
    np.testing.assert_array_equal(v.load_frame(at), seq_frames[7961])
    np.testing.assert_array_equal(v.load_frame(at - 1), seq_frames[7957])
    np.testing.assert_array_equal(v.load_frame(at - 2), seq_frames[7953])


def test_the_stretch_with_frame_stride_2_needs_only_its_frames(tmp_path, caplog):
    """prepare_camvid.py --frame-stride 2 extracts every 2nd frame: the stretch's check for its
    context looked for every frame from the first labelled one to the last, so it fell back to
    its labelled frames only (no context) and warned that frames were missing."""
    seq_frames = _stretch_root(tmp_path)
    for i in range(7952, 7972, 2):  # keep the odd frames: those a stride-2 stretch reads
        (tmp_path / "frames" / "0016E5" / f"{i:06d}.png").unlink()
    with caplog.at_level(logging.WARNING):
        (s,) = CamVid(tmp_path, "val", clip_len=3, frame_stride=2).eval_videos()
    assert not [r for r in caplog.records if "missing" in r.message]
    assert s.consecutive and list(s.labelled) == [8, 9, 10]  # 7959, 7961, 7963 from 7943
    for j in range(4, s.num_frames):  # frames 7951 .. 7971, 2 apart (before: padding)
        np.testing.assert_array_equal(s.load_frame(j), seq_frames[7943 + 2 * j])


def test_prepare_camvid_rerun_with_a_wrong_index_offset_keeps_the_frames(
        load_script, camvid_raw, tmp_path, capsys):
    """A rerun whose --index-offset puts the names outside the video fails (one line, exit 2)
    before it touches the sequence: the frames of the earlier, good run stay on disk and the
    report still describes them."""
    root, _, _, seqs, _ = camvid_raw
    folder = _extract(tmp_path, seqs["0006R0"][0])
    out = tmp_path / "out"
    common = ["--segnet", str(root), "--out", str(out), "--videos", f"0006R0={folder}",
              "--window", "2", "--context-before", "1", "--context-after", "0"]
    mod = load_script("prepare_camvid")
    assert mod.main(common + ["--index-offset", "0006R0=-5"]) == 0
    frames = out / "frames" / "0006R0"
    before = {f.name: f.read_bytes() for f in frames.glob("*.png")}
    report = (out / "frames" / "matches.json").read_text()
    assert len(before) == 6
    capsys.readouterr()
    assert mod.main(common + ["--index-offset", "0006R0=-500"]) == 2  # a typo: -500 for -5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--index-offset" in err, err
    assert sorted(f.name for f in frames.glob("*.png")) == sorted(before)
    assert all((frames / name).read_bytes() == data for name, data in before.items())
    assert (out / "frames" / "matches.json").read_text() == report


@pytest.mark.parametrize("option", ["--window", "--context-before", "--context-after",
                                    "--frame-stride"])
def test_prepare_camvid_refuses_negative_sizes(load_script, tmp_path, capsys, option):
    """A negative window or context (or a stride < 1) is a usage error naming the option; a
    negative --window was reported as every name being 'beyond the video'."""
    mod = load_script("prepare_camvid")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--segnet", str(tmp_path), "--videos", "0001TP.avi", option,
                  "0" if option == "--frame-stride" else "-1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and option in err and "Traceback" not in err, err


def test_a_missing_context_frame_falls_back_in_steps_of_the_frame_stride(tmp_path):
    """frame_stride 2: a missing frame at offset -6 is replaced by the frame at -4 (the next
    one towards the labelled frame on the clip's grid), not by the one at -5."""
    seq_frames = _stretch_root(tmp_path)
    (tmp_path / "frames" / "0016E5" / "007955.png").unlink()  # offset -6 of 7961
    ds = CamVid(tmp_path, "val", clip_len=4, frame_stride=2)
    (i,) = [i for i, (name, _, _) in enumerate(ds.items) if name == "0016E5_07961"]
    clip = from_clip_tensor(ds[i]["clip"])  # (T, H, W, 3) uint8
    for t, frame in enumerate((7957, 7957, 7959, 7961)):
        assert mad(clip[t], seq_frames[frame]) < 1.0, (t, frame)


def _prepared_root(tmp_path, split, names, frames, video_frames=None):
    """A prepared CamVid root: labelled frames `names` of `split` (12 x 16, a frame's pixels
    show its index), context frames `frames` {seq: indices} and a matches.json whose matches
    are the names' indices; `video_frames` {seq: length} records the videos' lengths as
    prepare_camvid does."""
    def frame(i):
        return np.full((12, 16, 3), i % 251, np.uint8)

    matches = {}
    for name in names:
        seq, idx = parse_camvid_name(name)
        _save(tmp_path / split / f"{name}.png", frame(idx))
        _save(tmp_path / f"{split}annot" / f"{name}.png", np.full((12, 16), 3, np.uint8))
        matches[name] = {"index": idx, "seq": seq}
    for seq, indices in frames.items():
        for i in indices:
            _save(tmp_path / "frames" / seq / f"{i:06d}.png", frame(i))
    sequences = {seq: {"frames": n, "index_offset": 0} for seq, n in (video_frames or {}).items()}
    (tmp_path / "frames" / "matches.json").write_text(
        json.dumps({"matches": matches, "sequences": sequences}))
    return tmp_path


def _context_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "context frame" in r.getMessage()]


def test_frames_beyond_a_sequences_ends_are_not_missing_context(tmp_path, caplog):
    """A labelled frame at a sequence's first frame (Seq05VD_f00000) or its video's last frame:
    the clip is padded there by design, so a correctly prepared dataset gets no 'context
    frames not found ... run prepare_camvid.py' warning (it warned about frame -00004.png)."""
    root = _prepared_root(tmp_path, "train", ["Seq05VD_f00000", "0006R0_f00029"],
                          {"Seq05VD": range(0, 3), "0006R0": range(25, 30)},
                          video_frames={"0006R0": 30})
    with caplog.at_level(logging.WARNING):
        ds = CamVid(root, "train", clip_len=5)  # causal: 4 before
        CamVid(root, "train", clip_len=4, anchor="centre")  # 2 before, 1 after
    assert not _context_warnings(caplog), _context_warnings(caplog)
    (k,) = [k for k, (name, _, _) in enumerate(ds.items) if name == "Seq05VD_f00000"]
    clip = from_clip_tensor(ds[k]["clip"])
    assert (clip == 0).all()  # frame 0 repeated
    (root / "frames" / "0006R0" / "000027.png").unlink()  # within the sequence: missing
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        CamVid(root, "train", clip_len=4, anchor="centre")
    (msg,) = _context_warnings(caplog)
    assert "1 of the 3 context frames" in msg and "000027.png" in msg, msg


def test_evaluation_reading_missing_frames_beyond_the_clip_warns_once(tmp_path, caplog):
    """prepare_camvid's default context (4 before, 2 after) covers a causal clip of 5, so the
    dataset is quiet when built; an evaluation with eval.clip_stride 4 also reads 3 frames after
    the labelled one (the eval videos carry 8 before / 4 after): the missing one was padded
    silently. Now one warning at the first such frame read, naming what to run; frames before
    the sequence's start (Seq05VD_f00000) are padding, not missing."""
    from vidccnet.engine.evaluate import plan_clips

    root = _prepared_root(tmp_path, "test", ["0006R0_f00060", "Seq05VD_f00000"],
                          {"0006R0": range(56, 63), "Seq05VD": range(0, 3)})
    with caplog.at_level(logging.WARNING):
        ds = CamVid(root, "test", clip_len=5)
        videos = {v.name: v for v in ds.eval_videos()}
        for v in videos.values():
            for plan in plan_clips(v.labelled, v.num_frames, 5):  # the training clip
                [v.load_frame(i) for i in plan.indices]
        assert not _context_warnings(caplog), _context_warnings(caplog)
        v = videos["0006R0_f00060"]
        (plan,) = plan_clips(v.labelled, v.num_frames, 5, clip_stride=4)
        frames = [v.load_frame(i) for i in plan.indices]  # 59 .. 63
        [v.load_frame(i) for i in range(v.num_frames)]
        [videos["Seq05VD_f00000"].load_frame(i) for i in range(8)]
    assert [int(f[0, 0, 0]) for f in frames] == [59, 60, 61, 62, 62]  # 63 padded
    (msg,) = _context_warnings(caplog)
    assert "000063.png" in msg and "--context-before 8 --context-after 4" in msg, msg


def test_the_stretch_warns_about_missing_frames_past_its_clips_when_read(tmp_path, caplog):
    """The same for the consecutive 15 Hz stretch: its frames past the last labelled one's clip
    are read by eval.clip_stride > 1 only; a missing one warns then, once."""
    from vidccnet.engine.evaluate import plan_clips

    _stretch_root(tmp_path)
    (tmp_path / "frames" / "0016E5" / "007967.png").unlink()  # 4 after the last labelled
    with caplog.at_level(logging.WARNING):
        (s,) = CamVid(tmp_path, "val", clip_len=3).eval_videos()
        for plan in plan_clips(s.labelled, s.num_frames, 3):
            [s.load_frame(i) for i in plan.indices]
        assert not _context_warnings(caplog), _context_warnings(caplog)
        [s.load_frame(i) for i in range(s.num_frames)]
    (msg,) = _context_warnings(caplog)
    assert "007967.png" in msg and "+4 frames" in msg, msg
