"""Loaded by a worker started with this directory on PYTHONPATH (`bench_memory.py --trace`):
traces allocations and, on signal SIGRTMIN+2 (Faust takes SIGUSR1 and SIGUSR2), writes
where the live memory was allocated (by line) and what it is (objects by type,
`sys.getsizeof`) to $VIGO_MEMTRACE_OUT. A benchmark aid, never installed with the package."""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from collections import Counter
from types import FrameType

_OUT = os.environ.get("VIGO_MEMTRACE_OUT")
#: What `bench_memory.py --trace` sends for a dump.
DUMP_SIGNAL = signal.SIGRTMIN + 2


def _dump(signum: int, frame: FrameType | None) -> None:
    assert _OUT is not None
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__name__
        sizes[name] += sys.getsizeof(obj)
        counts[name] += 1
    with open(_OUT, "w") as out:
        total = sum(stat.size for stat in snapshot.statistics("filename"))
        out.write(f"traced {total}\n")
        for stat in snapshot.statistics("lineno")[:40]:
            out.write(f"line {stat.size} {stat.count} {stat.traceback[0]}\n")
        for name, size in sizes.most_common(25):
            out.write(f"type {size} {counts[name]} {name}\n")


#: What `bench_memory.py --heap` sends: where the resident memory is, without tracing.
HEAP_SIGNAL = signal.SIGRTMIN + 3


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _heap(signum: int, frame: FrameType | None) -> None:
    """RSS, then pymalloc's arenas (`sys._debugmallocstats`), then RSS after glibc gave
    back its free pages (`malloc_trim`): how much is fragmentation, and whose."""
    import ctypes

    assert _OUT is not None
    gc.collect()
    before = _rss_kib()
    saved = os.dup(2)
    with open(_OUT + ".pymalloc", "w") as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open(_OUT, "w") as out:
        out.write(f"rss_kib {before}\nrss_after_malloc_trim_kib {_rss_kib()}\n")


def _watch_peak() -> None:
    """With VIGO_MEMTRACE_PEAK set: every half second, when the traced memory is 1 MiB
    above the last peak written, where it was allocated then (by line) goes to
    $VIGO_MEMTRACE_OUT.peak: what the transient peak that leaves arenas behind is."""
    import threading
    import time

    assert _OUT is not None
    out_path = _OUT + ".peak"

    def watch() -> None:
        written = 0
        while True:
            time.sleep(0.5)
            current, _ = tracemalloc.get_traced_memory()
            if current < written + (1 << 20):
                continue
            written = current
            snapshot = tracemalloc.take_snapshot()
            with open(out_path, "w") as out:
                out.write(f"traced {current}\n")
                for stat in snapshot.statistics("lineno")[:30]:
                    out.write(f"line {stat.size} {stat.count} {stat.traceback[0]}\n")

    threading.Thread(target=watch, name="memtrace-peak", daemon=True).start()


if _OUT and os.environ.get("VIGO_MEMTRACE_MODE") == "heap":
    signal.signal(HEAP_SIGNAL, _heap)
elif _OUT:
    tracemalloc.start(1)
    signal.signal(DUMP_SIGNAL, _dump)
    if os.environ.get("VIGO_MEMTRACE_PEAK"):
        _watch_peak()
