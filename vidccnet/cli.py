"""What the command-line scripts share: expected errors reported as one line (exit code 2),
Ctrl-C and SIGTERM reported as one line (130, 143)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM
Main = Callable[..., int]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``timeout``, SLURM, ``docker stop``): unwinds like Ctrl-C, so that
    cleanup code runs."""


def _ignore(signum: int, frame: object) -> None:
    pass


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup
    if hasattr(signal, "SIGCHLD"):  # not on Windows
        signal.signal(signal.SIGCHLD, _ignore)  # see sigterm_unwinds
    raise Terminated


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (in the main thread, where handlers
    can be set); the previous handler comes back after it.

    Once it is raised, SIGCHLD is ignored from then on, the block's end included (the process
    is on its way out): `timeout`, SLURM and torchrun send SIGTERM to the whole process group,
    and torch's SIGCHLD handler would report the DataLoader workers it ended ("DataLoader
    worker ... is killed by signal: Terminated") as an error in the middle of the cleanup, or
    after it when a worker takes longer to die."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(exc: KeyboardInterrupt) -> int:
    """The exit code for a Ctrl-C (130) or a SIGTERM (:class:`Terminated`, 143)."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def interrupted(prog: str, exc: KeyboardInterrupt, what: str) -> int:
    """Print `PROG: interrupted; WHAT` (or `terminated (SIGTERM)`) and return 130 / 143."""
    how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    print(f"{prog}: {how}; {what}", file=sys.stderr)
    return exit_code(exc)


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM (:class:`Terminated`) that ``exc`` is or was raised while
    handling (an error of the cleanup it caused, say), or None."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return None


def setup_logging(level: int | str, fmt: str, datefmt: str | None = None) -> None:
    """``logging.basicConfig`` for a script, with torch's own loggers kept at WARNING: at INFO
    torch prints its FakeTensor cache statistics when the process exits."""
    logging.basicConfig(level=level, format=fmt, datefmt=datefmt)
    logging.getLogger("torch").setLevel(logging.WARNING)


def interruptible(prog: str, what: str) -> Callable[[Main], Main]:
    """Decorate a script's ``main(argv)``: a Ctrl-C that reaches it (one in the first seconds,
    while torch is imported, before the script's own handlers) is reported as `interrupted`
    does, one line and exit code 130, instead of a traceback."""

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def guarded(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt as exc:
                return interrupted(prog, exc, what)

        return guarded

    return wrap


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


def checkpoint_in_folder(folder: str | Path) -> str:
    """What to pass instead of ``folder`` given as a checkpoint: its best.pt (or last.pt)."""
    found = [f"'{Path(folder) / n}'" for n in ("best.pt", "last.pt")
             if (Path(folder) / n).is_file()]
    if not found:
        return "pass a .pt file written by scripts/train.py (the folder holds no best.pt or " \
            "last.pt)"
    return f"pass {found[0]}" + (f" (or {found[1]})" if found[1:] else "")


def plural(count: int, word: str) -> str:
    """``1 video``, ``2 videos``: the count and the word, with an s unless the count is 1."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def fail(prog: str, exc: BaseException) -> int:
    """Print `PROG: error: MESSAGE` on stderr and return the exit code for expected errors."""
    print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
    return EXIT_USAGE


def missing_folder(path: str | Path | None, option: str) -> str | None:
    """The one-line error for an output `path` whose folder does not exist (None when it
    exists or no path was given), or whose path is a folder. Scripts check it before long
    work, not after it."""
    if path is not None and Path(path).is_dir():
        return f"{option} {path}: it is a folder; name a file (inside it or elsewhere)"
    if path is None or Path(path).resolve().parent.is_dir():
        return None
    blocking = file_above(path)
    if blocking is not None:
        return f"{option} {path}: '{blocking}' is a file, not a folder; choose another path"
    return f"{option} {path}: its folder does not exist; create it first"


def file_above(path: str | Path) -> Path | None:
    """The file among the folders above ``path`` (absolute), which makes it unwritable: None
    when there is none."""
    return next((p for p in Path(path).absolute().parents if p.is_file()), None)


def nearest_existing(path: str | Path) -> Path:
    """``path`` (absolute) or, when it is still to be made, the nearest existing path above it:
    where an output folder would be created. A dangling link counts as existing; a path below a
    folder that may not be searched does not (Path.exists raises PermissionError there), so
    the walk goes up to that folder."""
    existing = Path(path).absolute()
    while not os.path.lexists(existing):
        existing = existing.parent
    return existing


def unwritable(path: str | Path, option: str, *, folder: bool = False) -> str | None:
    """The one-line error for an output ``path`` that cannot be written (None when it can): the
    folder that receives the file (with ``folder``, ``path`` itself), or the nearest existing
    folder above it when it is still to be made, is a file or lacks write permission. Scripts
    check it before long work, not after it."""
    target = Path(path).absolute()
    existing = nearest_existing(target if folder else target.parent)
    if not existing.is_dir():
        what = "a file, not a folder" if existing.is_file() else "not a folder"
        return f"{option} {path}: '{existing}' is {what}; choose another path"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"{option} {path}: no permission to write in '{existing}'; choose a folder you "
                "can write to")
    return None
