"""scripts/colour_masks.py: colour masks (one RGB colour per class) to index masks.

The masks are small synthetic arrays written here; ``main(argv)`` runs in process."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image

NAMES = ["road", "sky", "car", "person"]
PALETTE = np.array([(128, 64, 128), (70, 130, 180), (0, 0, 142), (220, 20, 60)], np.uint8)
BLACK = (0, 0, 0)


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("colour_masks")


@pytest.fixture
def classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in zip(NAMES, PALETTE)))
    return path


def index_masks(seed: int = 0) -> dict[str, np.ndarray]:
    """Relative path -> class indices: a 1x1, an odd-size and a larger mask in a sub-folder."""
    rng = np.random.default_rng(seed)
    return {"one.png": np.array([[2]]),
            "odd.png": rng.integers(0, 4, (7, 5)),
            "clip1/000003.png": rng.integers(0, 4, (16, 24))}


def write_colour(root, masks: dict[str, np.ndarray]) -> None:
    for rel, idx in masks.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(PALETTE[idx]).save(path)


def run(script, capsys, *argv) -> tuple[int, str]:
    rc = script.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def files_under(path) -> list[str]:
    """Every name under ``path`` (hidden and temporary ones too), relative."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_round_trip_keeps_the_layout_and_writes_palette_index_pngs(script, capsys, tmp_path,
                                                                    classes):
    """The outputs were grey: black in a viewer. Now in the classes' colours, as the inputs,
    and still read as the class indices."""
    from vidccnet.data.images import load_index_png

    masks = index_masks()
    write_colour(tmp_path / "colour", masks)
    out = tmp_path / "out"
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out)
    assert rc == 0, err
    assert files_under(out) == ["clip1", "clip1/000003.png", "odd.png", "one.png"]
    for rel, idx in masks.items():
        with Image.open(out / rel) as im:
            assert im.format == "PNG" and im.mode == "P", (rel, im.format, im.mode)
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), PALETTE[idx])
        np.testing.assert_array_equal(load_index_png(out / rel), idx)
    assert err.count("\n") == 1 and "wrote 3 index masks" in err, err
    assert "4 of 4 classes seen: road, sky, car, person" in err, err
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # the staging folder went


def test_single_file_into_a_folder_or_a_png_path(script, capsys, tmp_path, classes):
    """RGBA that is fully opaque is RGB; a palette PNG is read by its colours, not its indices
    (an annotation tool's palette order need not be classes.txt's)."""
    idx = index_masks()["odd.png"]
    pal = Image.fromarray(idx.astype(np.uint8))  # "L"; putpalette makes it "P"
    pal.putpalette(PALETTE[[3, 2, 1, 0]].ravel().tolist())  # stored value != class index
    pal.save(tmp_path / "pal.png")
    rc, err = run(script, capsys, tmp_path / "pal.png", "--classes", classes, "--out",
                  tmp_path / "from_palette")
    assert rc == 0, err
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "from_palette" / "pal.png")), 3 - idx)
    Image.fromarray(PALETTE[idx]).convert("RGBA").save(tmp_path / "rgba.png")
    rc, err = run(script, capsys, tmp_path / "rgba.png", "--classes", classes.parent, "--out",
                  tmp_path / "out")
    assert rc == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "rgba.png")), idx)
    rc, err = run(script, capsys, tmp_path / "rgba.png", "--classes", classes, "--out",
                  tmp_path / "named.png")
    assert rc == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "named.png")), idx)


def test_an_unknown_colour_is_refused_naming_the_file_and_colours(script, capsys, tmp_path,
                                                                  classes):
    masks = index_masks()
    write_colour(tmp_path / "colour", masks)
    bad = PALETTE[masks["odd.png"]].copy()
    bad[0, :3] = (1, 2, 3)
    bad[1, 0] = (9, 9, 9)
    Image.fromarray(bad).save(tmp_path / "colour" / "odd.png")
    out = tmp_path / "out"
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "odd.png' holds 2 colours that classes.txt does not list" in err, err
    assert "(1, 2, 3) x 3, (9, 9, 9) x 1" in err, err  # the most frequent first
    assert "--unknown ignore" in err and "--void" in err, err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]

    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out,
                  "--unknown", "ignore")
    assert rc == 0, err
    expected = masks["odd.png"].copy()
    expected[0, :3] = expected[1, 0] = 255
    np.testing.assert_array_equal(np.asarray(Image.open(out / "odd.png")), expected)
    assert "4 pixels 255 (ignore)" in err, err


def test_many_unknown_colours_list_the_five_most_frequent(script, capsys, tmp_path, classes):
    rgb = np.repeat(PALETTE[:1], 64, axis=0)[None]  # a 1x64 mask of 'road'
    for i in range(7):  # colour (i, i, i) on i + 1 pixels
        rgb[0, i * 8:i * 8 + i + 1] = i
    Image.fromarray(rgb).save(tmp_path / "m.png")
    rc, err = run(script, capsys, tmp_path / "m.png", "--classes", classes, "--out",
                  tmp_path / "out")
    assert rc == 2 and "holds 7 colours" in err, err
    listed = ", ".join(f"({i}, {i}, {i}) x {i + 1}" for i in range(6, 1, -1))
    assert f"(pixels): {listed} ...; add" in err, err


def test_every_file_with_unknown_colours_is_reported_in_one_run(script, capsys, tmp_path,
                                                                classes):
    """The run stopped at the first such file: one run per bad file to find them all."""
    masks = {f"{c}.png": np.zeros((2, 3), int) for c in "abcde"}
    write_colour(tmp_path / "colour", masks)
    for c in "bcde":  # (1, 2, 3) in four files, (9, 9, 9) in 'a' only
        rgb = PALETTE[masks[f"{c}.png"]]
        rgb[0, 0] = (1, 2, 3)
        Image.fromarray(rgb).save(tmp_path / "colour" / f"{c}.png")
    rgb[0, :2] = (9, 9, 9)
    Image.fromarray(rgb).save(tmp_path / "colour" / "a.png")
    out = tmp_path / "out"
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out)
    assert rc == 2 and err.count("\n") == 1, err
    first = "; ".join(f"'{tmp_path / 'colour' / n}' {c}" for n, c in [
        ("a.png", "(9, 9, 9) x 2"), ("b.png", "(1, 2, 3) x 1"), ("c.png", "(1, 2, 3) x 1")])
    assert "5 files hold 2 colours that classes.txt does not list (pixels): " \
        f"{first}; 2 more files; add them to classes.txt" in err, err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]

    rc, err = run(script, capsys, tmp_path / "colour" / "b.png", "--classes", classes, "--out",
                  out)
    assert rc == 2 and "b.png' holds 1 colour that classes.txt does not list (pixels): " \
        "(1, 2, 3) x 1; add it to classes.txt" in err, err


def test_void_colours_become_255_and_may_not_be_a_class_colour(script, capsys, tmp_path,
                                                                classes):
    idx = index_masks()["clip1/000003.png"]
    rgb = PALETTE[idx].copy()
    rgb[:2] = BLACK
    rgb[-1] = (255, 255, 255)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    rc, err = run(script, capsys, tmp_path / "m.png", "--classes", classes, "--out",
                  tmp_path / "out", "--void", *BLACK, "--void", 255, 255, 255)
    assert rc == 0, err
    expected = idx.copy()
    expected[:2] = expected[-1] = 255
    with Image.open(tmp_path / "out" / "m.png") as im:
        np.testing.assert_array_equal(np.asarray(im), expected)
        shown = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(shown[:2], 0)  # 255 shown in the first --void colour
    np.testing.assert_array_equal(shown[2:-1], rgb[2:-1])

    rc, err = run(script, capsys, tmp_path / "m.png", "--classes", classes, "--out",
                  tmp_path / "out2", "--void", *PALETTE[1])
    assert rc == 2 and "--void 70 130 180 is the colour of class 'sky'" in err, err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("lines, said", [
    ("road 128 64 128\nsky 70 130 180\nlane 128 64 128\n",
     "classes 'road' and 'lane' the same colour (128, 64, 128)"),
    ("road 128 64 128\nsky\ncar\n", "no colour for class 'sky' (and 1 more)"),
])
def test_classes_txt_must_give_every_class_its_own_colour(script, capsys, tmp_path, lines,
                                                         said):
    write_colour(tmp_path / "colour", index_masks())
    (tmp_path / "classes.txt").write_text(lines)
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", tmp_path / "classes.txt",
                  "--out", tmp_path / "out")
    assert rc == 2 and err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, said", [
    ("jpeg", "is a JPEG: its lossy compression"),
    ("grey", "is a grey image, so already an index mask"),
    ("transparent", "has transparent pixels"),
])
def test_inputs_that_are_no_exact_colour_masks_are_refused(script, capsys, tmp_path, classes,
                                                           kind, said):
    masks = index_masks()
    write_colour(tmp_path / "colour", masks)
    odd = PALETTE[masks["odd.png"]]
    if kind == "jpeg":
        Image.fromarray(odd).save(tmp_path / "colour" / "zz.jpg", quality=100)
    elif kind == "grey":
        Image.fromarray(masks["odd.png"].astype(np.uint8)).save(tmp_path / "colour" / "zz.png")
    else:
        rgba = np.dstack([odd, np.full(odd.shape[:2], 255, np.uint8)])
        rgba[3, 3, 3] = 0
        Image.fromarray(rgba).save(tmp_path / "colour" / "zz.png")
    out = tmp_path / "out"
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out)
    assert rc == 2 and err.count("\n") == 1 and said in err and "Traceback" not in err, err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_existing_outputs_need_overwrite_and_others_are_kept(script, capsys, tmp_path, classes):
    write_colour(tmp_path / "colour", index_masks())
    out = tmp_path / "out"
    out.mkdir()
    (out / "odd.png").write_bytes(b"earlier")
    (out / "notes.txt").write_text("mine")
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out)
    assert rc == 2 and "1 output exists already" in err and "--overwrite" in err, err
    assert files_under(out) == ["notes.txt", "odd.png"]
    assert (out / "odd.png").read_bytes() == b"earlier"
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out,
                  "--overwrite")
    assert rc == 0, err
    assert files_under(out) == ["clip1", "clip1/000003.png", "notes.txt", "odd.png", "one.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "odd.png")),
                                  index_masks()["odd.png"])


def test_two_inputs_for_one_output_are_refused(script, capsys, tmp_path, classes):
    write_colour(tmp_path / "colour", index_masks())
    Image.open(tmp_path / "colour" / "odd.png").save(tmp_path / "colour" / "odd.bmp")
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out",
                  tmp_path / "out")
    assert rc == 2 and "odd.bmp and " in err and "both be written to odd.png" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["input", "inside", "same file"])
def test_never_writes_into_the_input(script, capsys, tmp_path, classes, where):
    write_colour(tmp_path / "colour", index_masks())
    src, out = {"input": ("colour", "colour"), "inside": ("colour", "colour/index"),
                "same file": ("colour/one.png", "colour")}[where]
    before = files_under(tmp_path / "colour")
    rc, err = run(script, capsys, tmp_path / src, "--classes", classes, "--out", tmp_path / out,
                  "--overwrite")
    assert rc == 2 and err.count("\n") == 1, err
    assert "the input" in err and "elsewhere" in err, err
    assert f"--out '{tmp_path / out}' would" in err, err  # quoted as the other paths are
    assert files_under(tmp_path / "colour") == before


@pytest.mark.parametrize("how, code, said", [("ctrl-c", 130, "interrupted"),
                                             ("sigterm", 143, "terminated (SIGTERM)")])
def test_an_interrupted_run_leaves_nothing(script, capsys, tmp_path, classes, monkeypatch,
                                           main_under_sigterm, how, code, said):
    """Stopped while the second mask is written: no output, no temporary file or folder."""
    write_colour(tmp_path / "colour", index_masks())
    real_save = Image.Image.save
    calls = []

    def stopped(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        calls.append(fp)
        if len(calls) == 2:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", stopped)
    out = tmp_path / "out"
    rc = main_under_sigterm(script.main, [str(tmp_path / "colour"), "--classes", str(classes),
                                          "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == code and err.count("\n") == 1 and said in err, err
    assert "nothing was written" in err, err
    assert len(calls) == 2
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_a_file_where_an_output_folder_goes_is_refused_before_any_write(script, capsys,
                                                                        tmp_path, classes):
    """'out/clip1' a file: the masks of other folders were moved into place first, then the
    folder could not be made ('[Errno 17] File exists'), leaving half the output behind."""
    masks = index_masks()
    masks["a/000000.png"] = masks["one.png"]  # sorted before clip1: moved before the failure
    write_colour(tmp_path / "colour", masks)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip1").write_text("mine")
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out,
                  "--overwrite")
    assert rc == 2 and err.count("\n") == 1, err
    assert "clip1' is a file" in err and "Errno" not in err, err
    assert files_under(out) == ["clip1"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_an_out_above_the_input_may_not_replace_input_masks(script, capsys, tmp_path,
                                                            classes):
    """Input P/colour holding colour/one.png, --out P: its output is P/colour/one.png, a mask
    of the input, which --overwrite replaced."""
    write_colour(tmp_path / "colour", {"one.png": np.array([[1]]),
                                       "colour/one.png": np.array([[2]])})
    before = (tmp_path / "colour" / "one.png").read_bytes()
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", tmp_path,
                  "--overwrite")
    assert rc == 2 and err.count("\n") == 1, err
    assert "inside the input folder" in err and "elsewhere" in err, err
    assert (tmp_path / "colour" / "one.png").read_bytes() == before


def test_symlinked_folders_are_converted_as_the_dataset_reads_them(script, capsys, tmp_path,
                                                                   classes):
    """A clip folder that is a symlink (the folders dataset follows them) was skipped without
    a word; a link back to a folder above is not followed round."""
    masks = index_masks()
    write_colour(tmp_path / "store", {"clip2/000000.png": masks["odd.png"]})
    write_colour(tmp_path / "colour", {"clip1/000003.png": masks["clip1/000003.png"]})
    (tmp_path / "colour" / "clip2").symlink_to(tmp_path / "store" / "clip2")
    (tmp_path / "colour" / "clip1" / "loop").symlink_to(tmp_path / "colour")
    out = tmp_path / "out"
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out)
    assert rc == 0, err
    assert files_under(out) == ["clip1", "clip1/000003.png", "clip2", "clip2/000000.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "clip2" / "000000.png")),
                                  masks["odd.png"])


def test_a_mask_that_cannot_be_moved_into_place_says_what_is_there(script, capsys, tmp_path,
                                                                   classes, monkeypatch):
    """A folder of --out without write permission (or on another file system): the error was
    the bare OSError, naming the deleted staging file, and not the masks already in place."""
    write_colour(tmp_path / "colour", index_masks())
    out = tmp_path / "out"
    real_replace = os.replace

    def refused(src, dst):
        if str(dst).startswith(str(out)) and str(dst).endswith("odd.png"):
            raise PermissionError(13, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", classes, "--out", out)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"cannot write '{out / 'odd.png'}' (Permission denied); 1 of the 3 index masks " \
        "were in place" in err and "--overwrite" in err, err
    assert files_under(out) == ["clip1", "clip1/000003.png"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


@pytest.mark.parametrize("given", ["missing.txt", "folder"])
def test_a_missing_classes_file_names_the_option(script, capsys, tmp_path, given):
    """The folders dataset's message named neither --classes nor the colours it needs (and
    said a colour was optional)."""
    write_colour(tmp_path / "colour", index_masks())
    (tmp_path / "folder").mkdir()
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", tmp_path / given, "--out",
                  tmp_path / "out")
    tried = tmp_path / ("folder/classes.txt" if given == "folder" else given)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--classes '{tried}' not found; pass a classes.txt with 'name R G B' lines, or " \
        "its folder" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["legend.png", "legend.JPG"])
def test_an_image_given_as_the_classes_file_is_refused(script, capsys, tmp_path, name):
    """--classes naming an image (a mask, a colour legend) was read as text: 'is not UTF-8
    text: save it as UTF-8', advice that does not apply."""
    write_colour(tmp_path / "colour", index_masks())
    legend = Image.fromarray(PALETTE[index_masks()["odd.png"]])
    legend.save(tmp_path / name, format="PNG" if name.endswith(".png") else "JPEG")
    rc, err = run(script, capsys, tmp_path / "colour", "--classes", tmp_path / name, "--out",
                  tmp_path / "out")
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--classes '{tmp_path / name}' is an image, not a class list: pass the " \
        "classes.txt with a 'name R G B' line per class, or its folder" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("src, out", [("colour/one.png", "one.jpg"), ("colour", "masks.TIF")])
def test_an_out_with_another_image_extension_is_refused(script, capsys, tmp_path, classes, src,
                                                        out):
    """--out x.jpg made a folder x.jpg holding the mask as PNG."""
    write_colour(tmp_path / "colour", index_masks())
    rc, err = run(script, capsys, tmp_path / src, "--classes", classes, "--out", tmp_path / out)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--out '{tmp_path / out}': index masks are written as PNG" in err, err
    assert "a .png path (one mask) or a folder" in err, err
    assert not (tmp_path / out).exists()


def test_the_mask_extensions_are_the_datasets(script):
    """A copy (importing vidccnet.data.video loads torch): it must not drift."""
    from vidccnet.data.video import IMAGE_EXTENSIONS

    assert script.EXTENSIONS == IMAGE_EXTENSIONS
