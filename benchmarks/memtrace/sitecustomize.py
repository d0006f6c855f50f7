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


if _OUT:
    tracemalloc.start(1)
    signal.signal(DUMP_SIGNAL, _dump)
