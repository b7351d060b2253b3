"""What the command-line scripts share: expected errors reported as one line, exit code 2."""

from __future__ import annotations

import re
import sys
from pathlib import Path

EXIT_USAGE = 2


def one_line(exc: BaseException) -> str:
    """The exception's message on a single line (its type name when the message is empty).

    An error a DataLoader worker re-raised carries the worker's traceback as its message: the
    line shows the original message only."""
    text = str(exc)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        # the traceback's last line: "[module.]ErrorName: message"
        lines = list(re.finditer(r"\n[A-Za-z_][\w.]*: ", text))
        if lines:
            return " ".join(text[lines[-1].end():].split()) + " (in a data loader worker)"
    return " ".join(text.split()) or type(exc).__name__


def fail(prog: str, exc: BaseException) -> int:
    """Print `PROG: error: MESSAGE` on stderr and return the exit code for expected errors."""
    print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
    return EXIT_USAGE


def missing_folder(path: str | Path | None, option: str) -> str | None:
    """The one-line error for an output `path` whose folder does not exist (None when it
    exists or no path was given). Scripts check it before long work, not after it."""
    if path is None or Path(path).resolve().parent.is_dir():
        return None
    return f"{option} {path}: its folder does not exist; create it first"
