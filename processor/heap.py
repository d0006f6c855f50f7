"""The worker's heap: large buffers kept out of the C heap (`keep_large_buffers_mapped`),
the C heap's free pages given back to the operating system when the worker is idle
(`HeapTrimmer`), and the objects of its start-up kept out of Python's
full garbage collections (`freeze_startup_objects`).

Working off a backlog, the worker allocates and frees many buffers of fetched records,
encoded states and changelog batches; glibc keeps the freed pages in its heap, so the
RSS an operator pays (and a pod's memory limit counts) stays at the backlog's peak long
after. `malloc_trim(0)` returns every free page, not only the heap's top. It takes a few
milliseconds for a heap of a few hundred MiB, so it runs only after a checkpoint that
found the inputs worked off, and at most once per `TRIM_EVERY_S`
(benchmarks/bench_memory.py --heap measures what it gives back). On a C library without
`malloc_trim` (musl, macOS) it does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

#: At most one trim in this many seconds.
TRIM_EVERY_S: Final = 10.0
#: Allocations this large get pages of their own (glibc's default before it adapts).
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
#: glibc's `mallopt` parameter number for it (malloc.h).
_M_MMAP_THRESHOLD: Final = -3


def keep_large_buffers_mapped(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fixes glibc's mmap threshold at `threshold`, once, when the worker starts.

    glibc gives an allocation of 128 KiB or more pages of its own and unmaps them when it
    is freed, but each time such a buffer is freed it raises that threshold to the
    buffer's size (up to 32 MiB). The worker's fetch responses (a few hundred KiB each) then
    come from the heap, between the envoy records the memory store keeps, and their
    pages stay with the process after they are freed: RSS per envoy 2,150-2,190 bytes
    against 1,386 with the threshold fixed (benchmarks/bench_memory.py, 7 December 2026).
    Setting it also ends the adapting. True when the C library took it (False on musl
    and macOS, which have no such setting)."""
    mallopt = _libc_function("mallopt")
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def _libc_function(name: str) -> Callable[..., int] | None:
    """A glibc extension by name, or None where the C library has no such function."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    return function


def _libc_trim() -> Callable[[int], int] | None:
    return _libc_function("malloc_trim")


@dataclass
class HeapTrimmer:
    """Calls `malloc_trim(0)` when asked while idle, no more often than `every_s`."""

    clock: Callable[[], float]
    every_s: float = TRIM_EVERY_S
    trim: Callable[[int], int] | None = None
    _last: float = float("-inf")

    def __post_init__(self) -> None:
        if self.trim is None:
            self.trim = _libc_trim()

    def when_idle(self) -> bool:
        """Trim if the last trim is `every_s` old; True when it trimmed."""
        now = self.clock()
        if self.trim is None or now - self._last < self.every_s:
            return False
        self._last = now
        self.trim(0)
        return True


def freeze_startup_objects() -> int:
    """Moves every object alive now (modules, classes, functions: Faust, aiokafka and
    ours, some 80,000) into the collector's permanent generation, once the worker has
    started. Python's full collections walk every tracked object; with these in, each
    took 40-70 ms on the benchmark machine every few seconds, a pause every status change
    queued behind (the p99 of benchmarks/bench_latency.py). What is collected as garbage
    is unchanged: a collection first, and what start-up leaves never becomes garbage.
    Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
