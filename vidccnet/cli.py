"""What the command-line scripts share: expected errors reported as one line, exit code 2."""

from __future__ import annotations

import sys

EXIT_USAGE = 2


def one_line(exc: BaseException) -> str:
    """The exception's message on a single line (its type name when the message is empty)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def fail(prog: str, exc: BaseException) -> int:
    """Print `PROG: error: MESSAGE` on stderr and return the exit code for expected errors."""
    print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
    return EXIT_USAGE
