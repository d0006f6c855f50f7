"""`processor.heap`: the idle worker gives the C heap's free pages back, rate-limited, and
its start-up objects stay out of the full garbage collections."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref

from processor.heap import HeapTrimmer, _libc_trim, freeze_startup_objects


def test_trims_at_most_once_per_interval() -> None:
    now = [100.0]
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    trimmer = HeapTrimmer(lambda: now[0], every_s=10.0, trim=trim)
    assert trimmer.when_idle()  # the first idle checkpoint trims at once
    now[0] += 9.9
    assert not trimmer.when_idle()
    now[0] += 0.1
    assert trimmer.when_idle()
    assert calls == [0, 0]  # malloc_trim(0): keep no padding at the heap's top


def test_glibc_gives_the_real_malloc_trim() -> None:
    """This machine (Debian, glibc) has it; without it the trimmer would do nothing."""
    trim = _libc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)
    assert HeapTrimmer(lambda: 0.0).trim is not None


def _rss_kept_after_freeing_large_buffers(fix: bool) -> int:
    """KiB of RSS a fresh interpreter keeps after it freed 64 buffers of 1 MiB allocated
    one after another, each after a small record that stays (as the worker's fetch
    responses are, between the envoy records it keeps)."""
    code = textwrap.dedent(f"""
        from processor.heap import keep_large_buffers_mapped
        if {fix}:
            assert keep_large_buffers_mapped()
        def rss():
            with open("/proc/self/status") as status:
                return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))
        first = bytearray(1 << 20)
        del first  # freed: glibc raises its threshold to 1 MiB unless it is fixed
        before = rss()
        kept, buffers = [], []
        for i in range(64):
            buffers.append(bytearray(1 << 20))
            kept.append(bytes(700) + bytes([i % 256]))
        buffers.clear()
        print(rss() - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_large_buffers_are_given_back_when_the_threshold_is_fixed() -> None:
    """Without the fix glibc, having freed one 1 MiB buffer, serves the next from its heap,
    and the small records kept between them hold most of those pages: tens of MiB stay.
    With it each buffer is unmapped when freed."""
    assert _rss_kept_after_freeing_large_buffers(fix=False) > 32 * 1024
    assert _rss_kept_after_freeing_large_buffers(fix=True) < 4 * 1024


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_startup_objects_leave_the_collections_and_garbage_is_still_collected() -> None:
    kept = _Node()  # alive at start-up: moved out of every generation
    cycle_a, cycle_b = _Node(), _Node()  # garbage at start-up: collected first, not frozen
    cycle_a.other, cycle_b.other = cycle_b, cycle_a
    garbage = weakref.ref(cycle_a)
    del cycle_a, cycle_b
    try:
        frozen = freeze_startup_objects()
        assert frozen > 1000  # this test process' modules and functions too
        assert garbage() is None
        walked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert id(kept) not in walked
        later = _Node()  # made after start-up: collected as before
        assert id(later) in {id(o) for o in gc.get_objects(0)}
    finally:
        gc.unfreeze()  # the rest of the suite runs as usual
