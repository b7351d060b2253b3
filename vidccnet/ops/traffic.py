"""Global-memory traffic of Triton kernels, measured by running them in Triton's interpreter.

:class:`TrafficMeter` patches the interpreter (``TRITON_INTERPRET=1``) so that every masked
``tl.load`` / ``tl.store`` of every program records the addresses of its active lanes. Per
launch it reports, for each pointer argument of the kernel:

* **requested bytes**: the bytes all load / store instructions of all programs ask for (what an
  ideal cache hierarchy would serve from L1/L2 when re-read);
* **distinct bytes**: the bytes of the buffer that the launch reads at least once, plus those it
  writes at least once (a byte both read and written counts twice). With every re-read inside the
  launch served by L2, this is the launch's DRAM traffic;
* per instruction site (kernel source line, load or store): **sector amplification**, the 32-byte
  sectors the instruction touches (all active lanes of one program's tile together) times 32,
  divided by the bytes it moves; 1.0 means fully coalesced.

Atomics (``tl.atomic_add`` and the other read-modify-writes, ``tl.atomic_cas``) are counted
too, as instruction kind ``"atomic"``: each active lane reads and writes its element once (its
bytes count as read and as written, requested and distinct). A spin loop on an atomic runs once
per program in the interpreter (programs run one after another), so the meter counts the
fewest atomics such a loop can execute on a GPU.

Sites are keyed by the source line of the instruction and by the line of the launched kernel it
is reached from (``call_line``; the same line unless the instruction is in a device function the
kernel calls), so one device function called from two places of a kernel gives two sites.

Sectors are counted per program-level instruction: a GPU splits a tile among warps, and a warp's
share can touch more sectors than its fraction of the tile when the tile's rows are shorter than
a sector; for rows of >= 32 contiguous bytes (every main load of the channels-last kernels) the
two counts agree.

The interpreter runs on CPU tensors, so no GPU is needed; results depend only on the kernels'
address arithmetic, not on timing.
"""

from __future__ import annotations

import bisect
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SECTOR_BYTES = 32

__all__ = ["BufferTraffic", "LaunchTraffic", "SiteTraffic", "TrafficMeter", "SECTOR_BYTES"]


@dataclass
class SiteTraffic:
    """One load or store instruction of a kernel, summed over its executions in a launch."""

    kind: str  # "load", "store" or "atomic"
    line: int  # source line in the kernel's file
    buffer: str  # kernel argument the pointers fall into
    call_line: int = -1  # line of the launched kernel the instruction is reached from
    bytes: int = 0  # bytes moved by active lanes
    sectors: int = 0  # 32-byte sectors touched, summed over executions
    executions: int = 0  # executions with at least one active lane

    @property
    def amplification(self) -> float:
        """Sector bytes / moved bytes (1.0 = fully coalesced); nan if nothing moved."""
        return self.sectors * SECTOR_BYTES / self.bytes if self.bytes else float("nan")


@dataclass
class BufferTraffic:
    """Traffic of one pointer argument of a launch."""

    name: str
    base: int
    nbytes: int
    elem_bytes: int
    read_requested: int = 0
    write_requested: int = 0
    _read: np.ndarray | None = field(default=None, repr=False)  # touched elements
    _written: np.ndarray | None = field(default=None, repr=False)

    def mark(self, kind: str, addrs: np.ndarray, elem_bytes: int) -> None:
        if elem_bytes != self.elem_bytes:  # a kernel reinterpreting the buffer: byte granularity
            self._regrain(1)
            idx = (addrs[:, None] - self.base + np.arange(elem_bytes)).reshape(-1)
        else:
            idx = (addrs - self.base) // self.elem_bytes
        size = self.nbytes // self.elem_bytes
        idx = idx[(idx >= 0) & (idx < size)]
        if kind in ("load", "atomic"):
            self.read_requested += addrs.size * elem_bytes
            if self._read is None:
                self._read = np.zeros(size, dtype=bool)
            self._read[idx] = True
        if kind in ("store", "atomic"):
            self.write_requested += addrs.size * elem_bytes
            if self._written is None:
                self._written = np.zeros(size, dtype=bool)
            self._written[idx] = True

    def _regrain(self, grain: int) -> None:
        if grain == self.elem_bytes:
            return
        rep = self.elem_bytes // grain
        for attr in ("_read", "_written"):
            arr = getattr(self, attr)
            if arr is not None:
                setattr(self, attr, np.repeat(arr, rep))
        self.elem_bytes = grain

    @property
    def distinct_read(self) -> int:
        return 0 if self._read is None else int(self._read.sum()) * self.elem_bytes

    @property
    def distinct_written(self) -> int:
        return 0 if self._written is None else int(self._written.sum()) * self.elem_bytes


@dataclass
class LaunchTraffic:
    """All global loads and stores of one kernel launch (every program of its grid)."""

    kernel: str
    grid: tuple[int, int, int]
    buffers: dict[str, BufferTraffic] = field(default_factory=dict)
    sites: dict[tuple[str, int, int, str], SiteTraffic] = field(default_factory=dict)

    @property
    def requested(self) -> int:
        return sum(b.read_requested + b.write_requested for b in self.buffers.values())

    @property
    def distinct(self) -> int:
        return sum(b.distinct_read + b.distinct_written for b in self.buffers.values())

    @property
    def amplification(self) -> float:
        moved = sum(s.bytes for s in self.sites.values())
        return sum(s.sectors for s in self.sites.values()) * SECTOR_BYTES / moved if moved else 0.0

    def main_sites(self, share: float = 0.01) -> list[SiteTraffic]:
        """Sites moving at least `share` of the launch's bytes (the main loads and stores)."""
        moved = sum(s.bytes for s in self.sites.values())
        return [s for s in self.sites.values() if s.bytes and s.bytes >= share * moved]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly totals, per buffer and per instruction site."""
        return {
            "kernel": self.kernel,
            "grid": list(self.grid),
            "requested_bytes": self.requested,
            "distinct_bytes": self.distinct,
            "sector_amplification": self.amplification,
            "buffers": {
                n: {
                    "read_requested": b.read_requested,
                    "write_requested": b.write_requested,
                    "distinct_read": b.distinct_read,
                    "distinct_written": b.distinct_written,
                }
                for n, b in self.buffers.items()
            },
            "sites": [
                {
                    "kind": s.kind,
                    "line": s.line,
                    "call_line": s.call_line,
                    "buffer": s.buffer,
                    "bytes": s.bytes,
                    "sector_amplification": s.amplification,
                    "executions": s.executions,
                }
                for s in sorted(self.sites.values(), key=lambda s: (s.call_line, s.line, s.kind))
            ],
        }


class TrafficMeter:
    """Context manager recording the global traffic of interpreted Triton launches.

    Usage (``TRITON_INTERPRET=1`` must be set before Triton is imported)::

        with TrafficMeter() as meter:
            kernel[grid](x, y, n, BLOCK=64)
        launch = meter.launches[0]
        launch.requested, launch.distinct, launch.amplification

    Only pointer arguments that are torch tensors are attributed by name; addresses outside
    them are attributed to ``"?"``.
    """

    def __init__(self) -> None:
        self.launches: list[LaunchTraffic] = []
        self._current: LaunchTraffic | None = None
        self._bases: list[int] = []
        self._names: list[str] = []
        self._saved: list[tuple[Any, str, Any]] = []
        self._file = ""

    # -- patching --------------------------------------------------------------------------
    def __enter__(self) -> TrafficMeter:
        from triton.runtime import interpreter as interp

        if not _interpreting():
            raise RuntimeError(
                "TrafficMeter needs Triton's interpreter: set TRITON_INTERPRET=1 "
                "before triton is first imported"
            )
        builder = interp.interpreter_builder
        meter = self
        orig_load, orig_store = builder.create_masked_load, builder.create_masked_store
        orig_rmw, orig_cas = builder.create_atomic_rmw, builder.create_atomic_cas
        orig_call, orig_init = interp.GridExecutor.__call__, interp.GridExecutor._init_args_hst

        def masked_load(ptrs, mask, other, *args):
            meter._record("load", ptrs, mask)
            return orig_load(ptrs, mask, other, *args)

        def masked_store(ptrs, value, mask, *args):
            meter._record("store", ptrs, mask)
            return orig_store(ptrs, value, mask, *args)

        def atomic_rmw(rmw_op, ptr, val, mask, *args):
            meter._record("atomic", ptr, mask)
            return orig_rmw(rmw_op, ptr, val, mask, *args)

        def atomic_cas(ptr, cmp, val, *args):
            meter._record("atomic", ptr, None)
            return orig_cas(ptr, cmp, val, *args)

        def call(executor, *args, **kwargs):
            meter._begin(executor)
            try:
                return orig_call(executor, *args, **kwargs)
            finally:
                meter._end()

        def init_args(executor, args_dev, kwargs):
            args_hst, kwargs_hst = orig_init(executor, args_dev, kwargs)
            meter._register(executor, args_hst, kwargs_hst)
            return args_hst, kwargs_hst

        self._saved = [
            (builder, "create_masked_load", None),
            (builder, "create_masked_store", None),
            (builder, "create_atomic_rmw", None),
            (builder, "create_atomic_cas", None),
            (interp.GridExecutor, "__call__", orig_call),
            (interp.GridExecutor, "_init_args_hst", orig_init),
        ]
        builder.create_masked_load = masked_load  # instance attributes shadow the methods
        builder.create_masked_store = masked_store
        builder.create_atomic_rmw = atomic_rmw
        builder.create_atomic_cas = atomic_cas
        interp.GridExecutor.__call__ = call
        interp.GridExecutor._init_args_hst = init_args
        return self

    def __exit__(self, *exc: object) -> None:
        for obj, name, orig in self._saved:
            if orig is None:
                delattr(obj, name)
            else:
                setattr(obj, name, orig)
        self._saved = []

    # -- recording -------------------------------------------------------------------------
    def _begin(self, executor: Any) -> None:
        self._current = LaunchTraffic(kernel=executor.fn.__name__, grid=(0, 0, 0))
        self._file = executor.fn.__code__.co_filename
        self._bases, self._names = [], []

    def _register(self, executor: Any, args: list, kwargs: dict) -> None:
        launch = self._current
        if launch is None:
            return
        named = list(zip(executor.arg_names, args)) + list(kwargs.items())
        for name, arg in named:
            if hasattr(arg, "data_ptr") and hasattr(arg, "element_size"):
                if arg.numel() == 0:
                    continue
                span = (
                    arg.storage_offset()
                    + 1
                    + sum((s - 1) * st for s, st in zip(arg.shape, arg.stride()))
                )
                base = arg.data_ptr()
                nbytes = (span - arg.storage_offset()) * arg.element_size()
                launch.buffers[name] = BufferTraffic(name, base, nbytes, arg.element_size())
        order = sorted(launch.buffers.values(), key=lambda b: b.base)
        self._bases = [b.base for b in order]
        self._names = [b.name for b in order]

    def _end(self) -> None:
        from triton.runtime import interpreter as interp

        if self._current is not None:
            self._current.grid = tuple(int(g) for g in interp.interpreter_builder.grid_dim)
            self.launches.append(self._current)
        self._current = None

    def _record(self, kind: str, ptrs: Any, mask: Any) -> None:
        launch = self._current
        if launch is None:
            return
        addrs = np.asarray(ptrs.data, dtype=np.uint64)
        if mask is None:
            active = np.ones(addrs.shape, dtype=bool)
        else:
            active = np.broadcast_to(np.asarray(mask.data, dtype=bool), addrs.shape)
        addrs = addrs[active].astype(np.int64)
        elem_bytes = ptrs.get_element_ty().primitive_bitwidth // 8
        if not addrs.size:  # every lane masked: nothing moves
            return
        self._accessed(kind, addrs)
        line, call_line = _kernel_lines(launch.kernel, self._file)
        buffer = "?"
        i = bisect.bisect_right(self._bases, int(addrs[0])) - 1
        if i >= 0:
            b = launch.buffers[self._names[i]]
            if int(addrs[0]) < b.base + b.nbytes:
                buffer = b.name
        key = (kind, line, call_line, buffer)
        site = launch.sites.get(key)
        if site is None:
            site = launch.sites[key] = SiteTraffic(kind, line, buffer, call_line)
        site.executions += 1
        site.bytes += addrs.size * elem_bytes
        site.sectors += int(np.unique(addrs // SECTOR_BYTES).size)
        if buffer != "?":
            launch.buffers[buffer].mark(kind, addrs, elem_bytes)

    def _accessed(self, kind: str, addrs: np.ndarray) -> None:
        """Hook for subclasses: the byte addresses (int64) of one access's active lanes, in the
        order the interpreter runs the programs; the program is ``interpreter_builder.grid_idx``."""

    # -- totals ----------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """Requested and distinct bytes summed over launches, and amplification per site."""
        sites: dict[tuple[str, str, int, int, str], list[int]] = defaultdict(lambda: [0, 0])
        for launch in self.launches:
            for (kind, line, call_line, buf), s in launch.sites.items():
                acc = sites[(launch.kernel, kind, line, call_line, buf)]
                acc[0] += s.bytes
                acc[1] += s.sectors
        moved = sum(v[0] for v in sites.values())
        return {
            "launches": len(self.launches),
            "requested_bytes": sum(lt.requested for lt in self.launches),
            "distinct_bytes": sum(lt.distinct for lt in self.launches),
            "sector_amplification": (
                sum(v[1] for v in sites.values()) * SECTOR_BYTES / moved if moved else 0.0
            ),
            "max_site_amplification": max(
                (s.amplification for lt in self.launches for s in lt.sites.values() if s.bytes),
                default=0.0,
            ),
            "max_main_site_amplification": max(
                (s.amplification for lt in self.launches for s in lt.main_sites()), default=0.0
            ),
        }


def _interpreting() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


def _kernel_lines(kernel: str, filename: str) -> tuple[int, int]:
    """``(line, call_line)`` of the instruction being executed: the line of the innermost frame
    of the kernel's file (the kernel or a device function it calls) and the line of the kernel
    `kernel` itself on the current stack; ``-1`` where not found."""
    frame = sys._getframe(2)
    line = -1
    while frame is not None:
        code = frame.f_code
        if line < 0 and code.co_filename == filename:
            line = frame.f_lineno
        if code.co_name == kernel and code.co_filename == filename:
            return line, frame.f_lineno
        frame = frame.f_back
    return line, -1
