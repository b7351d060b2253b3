"""Peak CPU memory of one call, from PyTorch's profiler (the benchmark scripts share it)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet_stderr_fd() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop lines) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_allocated(fn: Callable[[], Any]) -> int:
    """Run ``fn()`` under the profiler; return the peak bytes allocated on the CPU during the
    call above what was allocated before it."""
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        p.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    # "Total Allocated" of a [memory] event counts from the start of profiling
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0)
