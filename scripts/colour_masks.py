"""Convert colour masks (one RGB colour per class) into index masks (value k = class k).

    python scripts/colour_masks.py labels_rgb/ --classes /data/mine/classes.txt \
        --out /data/mine/data/clip1/mask
    python scripts/colour_masks.py frame7.png --classes classes.txt --out frame7_index.png \
        --void 0 0 0 --unknown ignore

The colours come from classes.txt ("name R G B", class k on line k; ``--classes`` takes the file
or its folder): every class needs one, and no two classes may share one. A folder is converted
recursively (symlinked folders followed) into OUT with the same layout and names (``.png``); a
file into OUT/NAME.png, or OUT itself when OUT ends in ``.png`` (another image extension is
refused). The outputs are palette PNGs holding the class index, shown in the class's colour;
``--void R G B`` (repeatable) writes a colour as 255 (ignore; shown in the first one). Any other
colour stops the run once every mask is read, counting the files that hold one and naming the
first ones with their most frequent such colours, unless ``--unknown ignore`` writes it as 255.

Inputs are RGB PNGs (any alpha fully opaque) and palette PNGs, read by their colours. A palette
PNG whose indices already are the class numbers (as VOC's) needs no conversion: the dataset reads
a palette PNG's indices, not its colours. JPEG masks are refused (lossy: the colours at class
borders are not exact); grey masks are index masks already.
Nothing is written unless every mask converts (they are staged in a temporary folder, then moved
into place); existing outputs are replaced only with ``--overwrite``. Expected errors print one
line on stderr and exit with code 2 (130 after Ctrl-C, 143 after SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidccnet.cli import fail, file_above, interrupted, interruptible, plural, sigterm_unwinds  # noqa: E402
from vidccnet.visualize import mask_to_image, palette_array  # noqa: E402
from vidccnet.writer import write_atomically  # noqa: E402

PROG = "colour_masks.py"
IGNORE = 255
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")  # the dataset's: as
# vidccnet.data.video.IMAGE_EXTENSIONS, whose import loads torch (seconds) before the checks


class ConvertError(Exception):
    """An expected problem with the inputs: reported as one line, exit code 2."""


def pack(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> int32 (...) keys 0xRRGGBB."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colour_table(classes: Path, void: list[tuple[int, int, int]]
                 ) -> tuple[list[str], list, np.ndarray, np.ndarray]:
    """Class names, the outputs' palette (the class colours; 255 in the first ``--void``
    colour), the packed colours of classes.txt and ``--void`` (sorted, int32) and the index
    each one becomes (uint8; 255 for a void colour)."""
    from vidccnet.data.folders import read_class_list  # imports torch: after the argument checks

    path = classes / "classes.txt" if classes.is_dir() else classes
    if path.suffix.lower() in EXTENSIONS and path.is_file():  # a mask or a colour legend
        raise ConvertError(f"--classes '{path}' is an image, not a class list: pass the "
                           "classes.txt with a 'name R G B' line per class, or its folder")
    try:
        names, colours = read_class_list(path)
    except FileNotFoundError:
        raise ConvertError(f"--classes '{path}' not found; pass a classes.txt with 'name R G B' "
                           "lines, or its folder") from None
    if bare := [n for n, c in zip(names, colours) if c is None]:
        raise ConvertError(f"'{classes}' gives no colour for class '{bare[0]}'"
                           f"{f' (and {len(bare) - 1} more)' if len(bare) > 1 else ''}: write "
                           "'name R G B' on every line, with the colour the masks use for it")
    table: dict[tuple[int, int, int], int] = {}
    for k, c in enumerate(colours):
        if c in table:
            raise ConvertError(f"'{classes}' gives classes '{names[table[c]]}' and '{names[k]}' "
                               f"the same colour {c}: each colour must name one class")
        table[c] = k
    for c in void:
        if table.get(c, IGNORE) != IGNORE:
            raise ConvertError(f"--void {' '.join(map(str, c))} is the colour of class "
                               f"'{names[table[c]]}' in '{classes}'; drop one of them")
        table[c] = IGNORE
    keys, values = zip(*sorted((int(pack(np.array(c, np.uint8))), k) for c, k in table.items()))
    palette = palette_array(colours).tolist()  # 256 colours: the classes', then defaults
    if void:
        palette[IGNORE] = void[0]
    return names, palette, np.array(keys, np.int32), np.array(values, np.uint8)


def read_colours(path: Path) -> np.ndarray:
    """A colour mask as uint8 (H, W, 3)."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                raise ConvertError(f"'{path}' is a JPEG: its lossy compression changes the "
                                   "colours at class borders; export the masks as PNG")
            if im.mode in ("1", "L", "LA", "F") or im.mode.startswith("I"):
                raise ConvertError(f"'{path}' is a grey image, so already an index mask (value "
                                   "k = class k): use it as it is, no conversion needed")
            rgba = np.asarray(im.convert("RGBA"))
    except OSError as exc:  # not an image, truncated
        raise ConvertError(f"cannot read image '{path}': {exc}") from None
    if (rgba[..., 3] != 255).any():
        raise ConvertError(f"'{path}' has transparent pixels: save the mask without "
                           "transparency (every pixel opaque, in its class's colour)")
    return rgba[..., :3]


def to_index(path: Path, keys: np.ndarray, values: np.ndarray
             ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The colour mask ``path`` as uint8 (H, W) class indices (255 for a colour not in the
    table), and those colours (packed) with their pixel counts, the most frequent first.
    ``keys``: the table's packed colours, sorted; ``values``: their indices."""
    rgb = read_colours(path)
    colours, inverse, counts = np.unique(pack(rgb).ravel(), return_inverse=True,
                                         return_counts=True)
    at = np.searchsorted(keys, colours).clip(max=len(keys) - 1)
    known = keys[at] == colours
    order = np.argsort(-counts[~known], kind="stable")
    index = np.where(known, values[at], IGNORE).astype(np.uint8)
    return (index[inverse.ravel()].reshape(rgb.shape[:2]),
            list(zip(colours[~known][order].tolist(), counts[~known][order].tolist())))


def unknown_error(bad: list[tuple[Path, list[tuple[int, int]]]]) -> ConvertError:
    """One line for the files holding colours in no class: the first three files, each with
    its five most frequent such colours."""
    def listed(found: list[tuple[int, int]]) -> str:
        return ", ".join(f"({c >> 16}, {c >> 8 & 255}, {c & 255}) x {n}"
                         for c, n in found[:5]) + " ..." * (len(found) > 5)

    distinct = len({c for _, found in bad for c, _ in found})
    what = f"{plural(distinct, 'colour')} that classes.txt does not list (pixels)"
    if len(bad) == 1:
        head = f"'{bad[0][0]}' holds {what}: {listed(bad[0][1])}"
    else:
        head = f"{len(bad)} files hold {what}: " + "; ".join(
            f"'{path}' {listed(found)}" for path, found in bad[:3])
        head += f"; {plural(len(bad) - 3, 'more file')}" if len(bad) > 3 else ""
    return ConvertError(f"{head}; add {'it' if distinct == 1 else 'them'} to classes.txt, pass "
                        "--void R G B for a colour that is no class, or --unknown ignore")


def mask_files(folder: Path) -> list[Path]:
    """The mask images under ``folder``, sorted, hidden names skipped; symlinked folders are
    followed, as the folders dataset follows them (not a link back to a folder above)."""

    def unreadable(exc: OSError) -> None:
        raise ConvertError(f"cannot list the folder '{exc.filename}' ({exc.strerror}); make it "
                           "readable or move it out of the input")

    files = []
    chains = {os.fspath(folder): (os.path.realpath(folder),)}  # real folders down to each one
    for top, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        chain = chains.pop(top)
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and os.path.realpath(os.path.join(top, d)) not in chain]
        chains.update((os.path.join(top, d), (*chain, os.path.realpath(os.path.join(top, d))))
                      for d in dirs)
        files += [Path(top, n) for n in names if not n.startswith(".")
                  and Path(n).suffix.lower() in EXTENSIONS and os.path.isfile(Path(top, n))]
    return sorted(files)


def plan(source: Path, out: Path, overwrite: bool) -> tuple[Path, list[tuple[Path, Path]]]:
    """The output folder and the (colour mask, output file) pairs, checked before any work."""
    if not source.exists():
        raise ConvertError(f"input '{source}' not found; pass a colour mask or a folder of them")
    if out.suffix.lower() in set(EXTENSIONS) - {".png"} and not out.is_dir():
        raise ConvertError(f"--out '{out}': index masks are written as PNG (lossless); pass a "
                           ".png path (one mask) or a folder")
    if (blocking := file_above(out)) is not None:
        raise ConvertError(f"--out '{out}': '{blocking}' is a file, not a folder; choose another")
    src = source.resolve()
    if source.is_file():
        single = out.suffix.lower() == ".png" and not out.is_dir()
        pairs = [(source, Path(out.name if single else source.stem + ".png"))]
        if (out.parent if single else out).resolve() / pairs[0][1] == src:
            raise ConvertError(f"--out '{out}' would replace the input '{source}'; write the "
                               "index mask elsewhere")
    else:
        files = mask_files(source)
        if not files:
            raise ConvertError(f"'{source}' holds no mask images ({' '.join(EXTENSIONS)})")
        pairs = [(f, f.relative_to(source).with_suffix(".png")) for f in files]
        if twice := [r for r, n in Counter(r for _, r in pairs).items() if n > 1]:
            both = [str(f) for f, r in pairs if r == twice[0]]
            raise ConvertError(f"{' and '.join(both)} would both be written to "
                               f"{twice[0]}; keep one of them")
    base = out.parent if source.is_file() and single else out
    if base.exists() and not base.is_dir():
        raise ConvertError(f"--out '{out}' is a file; pass a folder (or a .png path for one mask)")
    if source.is_dir():  # --out the input, inside it, or above it: P/colour/colour, --out P
        inputs = {f.resolve() for f, _ in pairs}
        if clash := next((base / r for _, r in pairs if (base / r).resolve() in inputs
                          or src in (base / r).resolve().parents), None):
            raise ConvertError(f"--out '{out}' would write '{clash}' inside the input folder "
                               f"'{source}'; write the index masks elsewhere")
    one_per_folder = {(base / r).parent: base / r for _, r in pairs}.values()
    if (blocking := next(filter(None, map(file_above, one_per_folder)), None)) is not None:
        raise ConvertError(f"'{blocking}' is a file where an output folder goes; move it or "
                           "choose another --out")
    there = [base / r for _, r in pairs if (base / r).exists()]
    if folders := [p for p in there if p.is_dir()]:
        raise ConvertError(f"'{folders[0]}' is a folder; choose another --out")
    if there and not overwrite:
        one = len(there) == 1
        raise ConvertError(f"{plural(len(there), 'output')} {'exists' if one else 'exist'} "
                           f"already ({'' if one else 'e.g. '}'{there[0]}'); pass --overwrite to "
                           f"replace {'it' if one else 'them'}, or choose another --out")
    return base, [(f, base / r) for f, r in pairs]


def convert(base: Path, pairs: list[tuple[Path, Path]], palette: list, keys: np.ndarray,
            values: np.ndarray, unknown: str, moved: list[Path]) -> Counter:
    """Convert every mask into a temporary folder, then move them all into place (``moved``
    lists those moved). Returns the pixel count of each index written."""
    anchor = next(p for p in (base.absolute(), *base.absolute().parents) if p.is_dir())
    stage = Path(tempfile.mkdtemp(prefix=".colour_masks.tmp-", dir=anchor))
    seen: Counter = Counter()
    try:
        staged, bad = [], []
        for i, (src, dst) in enumerate(pairs):
            index, found = to_index(src, keys, values)
            if found and unknown == "error":
                bad.append((src, found))
            if bad:  # every mask is read, to name each file with unknown colours
                continue
            seen.update(dict(zip(*(a.tolist() for a in np.unique(index, return_counts=True)))))
            staged.append((stage / f"{i}.png", dst))
            image = mask_to_image(index, palette)  # value = class index, shown in its colour
            write_atomically(staged[-1][0], lambda f, im=image: im.save(f, format="PNG"))
        if bad:
            raise unknown_error(bad)
        for tmp, dst in staged:
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dst)
            except OSError as exc:  # no permission, another file system under --out
                raise ConvertError(
                    f"cannot write '{dst}' ({exc.strerror or exc}); {len(moved)} of the "
                    f"{len(staged)} index masks were in place: fix that and run it again with "
                    "--overwrite") from None
            moved.append(dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return seen


@interruptible(PROG, "nothing was written")
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("input", type=Path, help="a colour mask, or a folder of them (recursive)")
    ap.add_argument("--classes", required=True, type=Path, metavar="CLASSES_TXT",
                    help="classes.txt with a colour on every line ('name R G B'), or its folder")
    ap.add_argument("--out", required=True, type=Path, help="output folder (or .png file)")
    ap.add_argument("--void", type=int, nargs=3, action="append", default=[],
                    metavar=("R", "G", "B"), help="a colour written as 255, ignore (repeatable)")
    ap.add_argument("--unknown", choices=("error", "ignore"), default="error",
                    help="colours in no class and not --void: stop (default), or write 255")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = ap.parse_args(argv)
    if any(not 0 <= v <= 255 for c in args.void for v in c):
        ap.error("--void takes three values R G B in 0-255")
    moved: list[Path] = []
    try:
        with sigterm_unwinds():  # SIGTERM removes the temporary folder as Ctrl-C does
            base, pairs = plan(args.input, args.out, args.overwrite)
            names, palette, keys, values = colour_table(args.classes,
                                                        [tuple(c) for c in args.void])
            seen = convert(base, pairs, palette, keys, values, args.unknown, moved)
    except KeyboardInterrupt as exc:
        return interrupted(PROG, exc, f"{len(moved)} of the {len(pairs)} index masks were in "
                           "place (whole files); run it again with --overwrite" if moved else
                           "nothing was written")
    except (ConvertError, ValueError, OSError) as exc:
        return fail(PROG, exc)
    classes = [names[k] for k in sorted(seen) if k != IGNORE]
    ignored = f"; {plural(seen[IGNORE], 'pixel')} 255 (ignore)" if seen[IGNORE] else ""
    print(f"{PROG}: wrote {plural(len(pairs), 'index mask')} to '{args.out}'; "
          f"{len(classes)} of {len(names)} classes seen: {', '.join(classes[:12])}"
          f"{' ...' if len(classes) > 12 else ''}{ignored}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
