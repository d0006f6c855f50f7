"""`processor.heap`: the idle worker gives the C heap's free pages back, rate-limited."""

from __future__ import annotations

from processor.heap import HeapTrimmer, _libc_trim


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
