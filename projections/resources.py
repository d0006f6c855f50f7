"""Resources that drift (SPEC 11.3): which resources keep being corrected, keep failing, or
fight their own configuration, counted in bounded memory whatever the input.

Each partition keeps, per kind (`changed`, `failed`, `non_idempotent`) and per hourly
bucket of `resources.window`, a Space-Saving summary (Metwally, Agrawal and El Abbadi,
2005) of at most `capacity` counters and `budget` bytes of ids; the fleet owner merges
the partitions' buckets the mergeable-summaries way (Agarwal et al., 2012). Every entry
reports `count` (an over-estimate: never below the true number of runs) and `error`
(the most it can be over): true count in [count - error, count].

Why a *floor*: an id that is not monitored has a true count of at most `floor` (the
largest count ever evicted, or the sum of the floors of the summaries merged into this
one). A newcomer enters with `floor + 1` and error `floor`; this is the classic rule
(the newcomer takes the minimum's count) stated so that it also holds after evictions
made for the byte budget and after merges, where "the minimum" is not what bounds the
unmonitored ids any more.

`envoys` is a KMV sketch (the k smallest 32-bit hashes of the envoy ids; exact up to
`SKETCH_K` envoys, then an estimate within about 1/sqrt(k-2)), mergeable by union. It
counts the envoys seen since the entry was (re)admitted, so it can miss envoys of an
entry that was evicted and came back.

The summary is mutable on purpose: a million updates must not copy a thousand counters
each. It holds no clock and does no I/O; time (record times, now) is passed in.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from projections.runs import RunSummary
from topics.events import Run

Kind = Literal["changed", "failed", "non_idempotent"]
KINDS: Final[tuple[Kind, ...]] = ("changed", "failed", "non_idempotent")
HOUR_MS: Final = 3_600_000
#: KMV sketch size: distinct envoys are exact up to this many.
SKETCH_K: Final = 16
_HASH_SPACE: Final = 1 << 32
#: What one counter costs besides its id and module (counts, the sketch at its fullest):
#: the unit of the byte budget, an upper bound of its encoded size.
ENTRY_OVERHEAD: Final = 24 + 5 * SKETCH_K
#: A resource changed in this many consecutive runs at one version is non-idempotent.
NON_IDEMPOTENT_RUNS: Final = 3


def envoy_hash(envoy_id: str) -> int:
    """A uniform 32-bit hash of an envoy id (the sketch needs uniformity, not secrecy)."""
    digest = hashlib.blake2b(envoy_id.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def sketch_add(sketch: list[int], value: int) -> None:
    """Keep the `SKETCH_K` smallest distinct hashes, sorted."""
    if len(sketch) >= SKETCH_K and value >= sketch[-1]:
        return
    if value in sketch:
        return
    insort(sketch, value)
    if len(sketch) > SKETCH_K:
        sketch.pop()


def sketch_union(sketches: Iterable[Sequence[int]]) -> list[int]:
    return heapq.nsmallest(SKETCH_K, set().union(*sketches))


def sketch_estimate(sketch: Sequence[int]) -> int:
    """Exact below `SKETCH_K` hashes; beyond, the KMV estimate (k-1) / (k-th hash / 2^32)."""
    if len(sketch) < SKETCH_K:
        return len(sketch)
    return max(SKETCH_K, round((SKETCH_K - 1) * _HASH_SPACE / (sketch[-1] + 1)))


def id_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class Counter:
    """One monitored id: its over-estimated count, the error bound, its module, the
    envoys sketch and what it costs of the byte budget."""

    __slots__ = ("count", "error", "module", "size", "sketch")

    def __init__(self, count: int, error: int, module: str, sketch: list[int], size: int) -> None:
        self.count = count
        self.error = error
        self.module = module
        self.sketch = sketch
        self.size = size


@dataclass(frozen=True, slots=True)
class Top:
    """One reported entry: `runs` over-counts by at most `error`."""

    id: str
    module: str
    runs: int
    error: int
    envoys: int


class SpaceSaving:
    """At most `capacity` counters and `budget` bytes of them (`ENTRY_OVERHEAD` plus the
    UTF-8 of id and module each). Counters are grouped by count (the stream-summary
    layout), so finding the minimum costs O(1) per update; within a count, the oldest
    goes first, so a replay of the same stream evicts the same ids."""

    def __init__(self, capacity: int, budget: int, floor: int = 0) -> None:
        self.capacity = capacity
        self.budget = budget
        self.floor = floor
        self.counters: dict[str, Counter] = {}
        self.bytes = 0
        self._by_count: dict[int, dict[str, None]] = {}
        self._min: int | None = None

    def __len__(self) -> int:
        return len(self.counters)

    def add(self, item: str, module: str, envoy: int) -> None:
        """One more run in which `item` was seen, reported by the envoy hashed `envoy`."""
        counter = self.counters.get(item)
        if counter is None:
            size = id_bytes(item) + id_bytes(module) + ENTRY_OVERHEAD
            if size > self.budget:
                # Too large to monitor at all (not with ids within topics.limits and the
                # worker's budget): it stays unmonitored, and the floor still bounds it.
                self.floor += 1
                return
            while self.counters and (
                len(self.counters) >= self.capacity or self.bytes + size > self.budget
            ):
                self._evict_min()
            self._insert(item, Counter(self.floor + 1, self.floor, module, [envoy], size))
            return
        self._move(item, counter, counter.count + 1)
        sketch_add(counter.sketch, envoy)

    def _insert(self, item: str, counter: Counter) -> None:
        self.counters[item] = counter
        self.bytes += counter.size
        self._by_count.setdefault(counter.count, {})[item] = None
        if self._min is None or counter.count < self._min:
            self._min = counter.count

    def _move(self, item: str, counter: Counter, count: int) -> None:
        old = counter.count
        bucket = self._by_count[old]
        del bucket[item]
        counter.count = count
        self._by_count.setdefault(count, {})[item] = None
        if not bucket:
            del self._by_count[old]
            if old == self._min:
                # Every other counter is at old + 1 or more: one step up is the minimum.
                self._min = count if count == old + 1 else min(self._by_count)

    def _evict_min(self) -> None:
        assert self._min is not None
        bucket = self._by_count[self._min]
        item = next(iter(bucket))
        del bucket[item]
        counter = self.counters.pop(item)
        self.bytes -= counter.size
        self.floor = max(self.floor, counter.count)
        if not bucket:
            del self._by_count[self._min]
            self._min = min(self._by_count) if self._by_count else None

    def ordered(self) -> list[tuple[str, Counter]]:
        """Counters by count, oldest first within a count: the order that rebuilds an
        equal summary (`from_wire`)."""
        return [
            (item, self.counters[item])
            for count in sorted(self._by_count)
            for item in self._by_count[count]
        ]

    def top(self, limit: int) -> list[Top]:
        """The `limit` largest counts, ties by id."""
        best = heapq.nsmallest(limit, self.counters.items(), key=lambda kv: (-kv[1].count, kv[0]))
        return [
            Top(item, c.module, c.count, c.error, sketch_estimate(c.sketch)) for item, c in best
        ]

    def to_wire(self) -> list[Any]:
        """`[floor, [[id, module, count, error, [hash...]], ...]]`, plain values."""
        entries = [[item, c.module, c.count, c.error, c.sketch] for item, c in self.ordered()]
        return [self.floor, entries]

    @classmethod
    def from_wire(cls, capacity: int, budget: int, wire: Sequence[Any]) -> SpaceSaving:
        """Rebuilt within this capacity and budget (configured lower since: the smallest go)."""
        floor, entries = wire
        summary = cls(capacity, budget, int(floor))
        for item, module, count, error, sketch in entries:
            size = id_bytes(item) + id_bytes(module) + ENTRY_OVERHEAD
            summary._insert(item, Counter(int(count), int(error), module, list(sketch), size))
        summary._shrink()
        return summary

    def _shrink(self) -> None:
        while self.counters and (len(self.counters) > self.capacity or self.bytes > self.budget):
            self._evict_min()


def merge(summaries: Sequence[SpaceSaving], capacity: int, budget: int) -> SpaceSaving:
    """The mergeable-summaries merge: an id's count is the sum over the summaries of its
    count where it is monitored and of the summary's floor where it is not (its true
    count there is at most the floor); its error likewise. The `capacity` largest are
    kept (within `budget`); the floor of the result is the larger of the floors' sum and
    the largest count dropped, so the guarantees hold for the result."""
    total_floor = sum(s.floor for s in summaries)
    count: dict[str, int] = {}
    error: dict[str, int] = {}
    module: dict[str, str] = {}
    sketches: dict[str, list[Sequence[int]]] = {}
    for summary in summaries:
        for item, c in summary.counters.items():
            count[item] = count.get(item, total_floor) + c.count - summary.floor
            error[item] = error.get(item, total_floor) + c.error - summary.floor
            module.setdefault(item, c.module)
            sketches.setdefault(item, []).append(c.sketch)
    ranked = sorted(count, key=lambda item: (-count[item], item))
    merged = SpaceSaving(capacity, budget, total_floor)
    kept: list[str] = []
    spent = 0
    for item in ranked:
        size = id_bytes(item) + id_bytes(module[item]) + ENTRY_OVERHEAD
        if len(kept) < capacity and spent + size <= budget:
            kept.append(item)
            spent += size
        else:
            merged.floor = max(merged.floor, count[item])
    for item in reversed(kept):  # smallest first: the eviction order of the rebuilt summary
        size = id_bytes(item) + id_bytes(module[item]) + ENTRY_OVERHEAD
        sketch = sketch_union(sketches[item])
        merged._insert(item, Counter(count[item], error[item], module[item], sketch, size))
    return merged


# -- hourly buckets ------------------------------------------------------------------------


def bucket_of(record_ms: int) -> int:
    """The start of the hour a run's record time falls in."""
    return record_ms - record_ms % HOUR_MS


def bucket_count(window_ms: int) -> int:
    """Hourly buckets covering the window (`24h`: 24)."""
    return max(1, -(-window_ms // HOUR_MS))


def slot_of(bucket_ms: int, buckets: int) -> int:
    """Buckets live in a ring of `buckets` slots: a new hour takes the slot of the hour
    that left the window, so the keys a partition writes are a fixed, finite set."""
    return (bucket_ms // HOUR_MS) % buckets


def oldest_live_bucket(now_ms: int, window_ms: int) -> int:
    """Buckets from this start on are inside the window ending now (the current hour
    included); older ones are dropped."""
    return bucket_of(now_ms) - (bucket_count(window_ms) - 1) * HOUR_MS


def is_live(bucket_ms: int, now_ms: int, window_ms: int) -> bool:
    return bucket_ms >= oldest_live_bucket(now_ms, window_ms)


@dataclass
class Bucket:
    """One partition's summary of one kind for one hour, in one scope (the fleet, or a
    group `KEY=VALUE`), and the highest runs-topic offset counted into it: a run at or
    below it is not counted again (a replay after a crash between the two checkpoint
    writes, `processor.resources`)."""

    scope: str
    kind: Kind
    partition: int
    start_ms: int
    upto: int
    summary: SpaceSaving


# -- what a run contributes ----------------------------------------------------------------


def run_resources(run: Run, result: str) -> dict[str, str]:
    """Ids with `result` in the run, each once (a run counts once per id), with the module
    of its first occurrence."""
    found: dict[str, str] = {}
    for resource in run.resources:
        if resource.result == result and resource.id not in found:
            found[resource.id] = resource.module
    return found


def non_idempotent(history: Sequence[RunSummary], run: Run, changed: Iterable[str]) -> list[str]:
    """The ids of `changed` (the run's changed ids) that were also changed in the 2 runs
    before it at the same `config_version` (None counts as a version of its own), read from
    the envoy's history after the run was applied (newest first). The history keeps at
    most 20 changed ids per run, so only those of the earlier runs are considered; a
    late run (not at the head of the history) is not judged."""
    needed = NON_IDEMPOTENT_RUNS - 1
    if len(history) <= needed or history[0].run_id != run.run_id:
        return []
    earlier = history[1 : 1 + needed]
    if any(r.config_version != run.config_version for r in earlier):
        return []
    common = set(earlier[0].changed).intersection(*(r.changed for r in earlier[1:]))
    return [item for item in changed if item in common]
