"""Resources that drift (SPEC 11.3), the pure core and the counter without Kafka:
Space-Saving guarantees against exact counts (Hypothesis), the merge, hourly buckets,
non-idempotent detection, state bounded under a million distinct ids, and the counter's
exactly-once rule across a crash between its checkpoint write and the envoys'."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.resources import (
    SUMMARY_BYTES,
    ResourceCounter,
    ResourceSettings,
    bucket_key,
    decode_bucket,
    encode_bucket,
    parse_key,
)
from processor.state import HeldTable
from processor.web.documents import BadQuery
from processor.web.resources import NotCounted, parse_top_query
from projections.envoy import Position, Rules, apply_event
from projections.resources import (
    ENTRY_OVERHEAD,
    HOUR_MS,
    KINDS,
    SKETCH_K,
    Bucket,
    SpaceSaving,
    bucket_count,
    bucket_of,
    envoy_hash,
    is_live,
    merge,
    non_idempotent,
    oldest_live_bucket,
    run_resources,
    sketch_add,
    sketch_estimate,
    slot_of,
)
from projections.runs import RunSummary
from topics.events import Enrollment, Resource, Run
from topics.limits import MAX_NAME_BYTES
from topics.statuses import RunOutcome

ITEMS = st.lists(st.integers(0, 40).map(lambda n: f"r{n}"), max_size=400)
SMALL_ITEMS = st.lists(st.integers(0, 12).map(lambda n: f"r{n}"), max_size=200)
NOW = 1_800_000_000_000


def summarize(items: Sequence[str], capacity: int, budget: int = SUMMARY_BYTES) -> SpaceSaving:
    summary = SpaceSaving(capacity, budget)
    for item in items:
        summary.add(item, "m", envoy_hash(item))
    return summary


def assert_guarantees(summary: SpaceSaving, exact: Counter[str]) -> None:
    """Every reported count is at least the truth and at most truth + error; an id not
    monitored occurred at most `floor` times."""
    for item, counter in summary.counters.items():
        assert exact[item] <= counter.count <= exact[item] + counter.error, item
        assert 0 <= counter.error <= summary.floor
    for item, n in exact.items():
        if item not in summary.counters:
            assert n <= summary.floor, item
    for top in summary.top(len(summary)):
        assert exact[top.id] <= top.runs <= exact[top.id] + top.error


@settings(max_examples=300, deadline=None)
@given(ITEMS, st.integers(1, 12))
def test_space_saving_never_undercounts_and_overcounts_at_most_error(
    items: list[str], capacity: int
) -> None:
    summary = summarize(items, capacity)
    assert_guarantees(summary, Counter(items))
    assert len(summary) <= capacity
    # The classic bound: no error above N / capacity.
    assert summary.floor <= len(items) // capacity
    # The ids above N / capacity are always monitored (the heavy hitters are found).
    for item, n in Counter(items).items():
        if n > len(items) // capacity:
            assert item in summary.counters


@settings(max_examples=200, deadline=None)
@given(ITEMS, st.integers(1, 12), st.integers(ENTRY_OVERHEAD + 3, 6 * (ENTRY_OVERHEAD + 4)))
def test_the_byte_budget_keeps_the_guarantees(items: list[str], capacity: int, budget: int) -> None:
    summary = summarize(items, capacity, budget)
    assert summary.bytes <= budget
    assert summary.bytes == sum(c.size for c in summary.counters.values())
    assert_guarantees(summary, Counter(items))


@settings(max_examples=200, deadline=None)
@given(st.lists(SMALL_ITEMS, min_size=1, max_size=6), st.integers(1, 8), st.integers(1, 8))
def test_merge_preserves_the_guarantees(
    streams: list[list[str]], capacity: int, merged_capacity: int
) -> None:
    """Summaries of parts (partitions, hours) merged give the guarantees for the whole."""
    parts = [summarize(stream, capacity) for stream in streams]
    merged = merge(parts, merged_capacity, SUMMARY_BYTES)
    assert len(merged) <= merged_capacity
    assert_guarantees(merged, Counter(item for stream in streams for item in stream))
    # Merges of merges too (the fleet owner merges partitions' hours).
    again = merge([merged, summarize(streams[0], capacity)], merged_capacity, SUMMARY_BYTES)
    assert_guarantees(again, Counter([*streams[0], *(i for s in streams for i in s)]))


@settings(max_examples=200, deadline=None)
@given(ITEMS, st.integers(0, 400), st.integers(1, 10))
def test_a_restored_summary_continues_exactly_as_the_uninterrupted_one(
    items: list[str], cut: int, capacity: int
) -> None:
    """Decoding rebuilds the eviction order too: a worker restarted from a checkpoint
    counts the rest of the stream into an equal summary (same ids evicted)."""
    whole = summarize(items, capacity)
    first = summarize(items[:cut], capacity)
    restored = SpaceSaving.from_wire(capacity, SUMMARY_BYTES, first.to_wire())
    assert restored.to_wire() == first.to_wire()
    for item in items[cut:]:
        restored.add(item, "m", envoy_hash(item))
    assert restored.to_wire() == whole.to_wire()


def test_a_million_distinct_ids_stay_within_capacity_and_bytes() -> None:
    """SPEC 11.3 / 10.9: state bounded whatever the input."""
    summary = SpaceSaving(1000, SUMMARY_BYTES)
    envoy = envoy_hash("web-01")
    started = time.monotonic()
    for n in range(1_000_000):
        summary.add(f"file[/etc/hostile/{n}]", "files", envoy)
        if n % 100_000 == 0:
            assert len(summary) <= 1000
    assert len(summary) == 1000
    assert time.monotonic() - started < 60
    bucket = Bucket("", "changed", 3, bucket_of(NOW), 1_000_000, summary)
    assert len(encode_bucket(bucket)) < SUMMARY_BYTES
    assert summary.floor <= 1000  # N / capacity


def test_ids_at_the_size_limit_are_bounded_by_bytes_not_only_by_count() -> None:
    """1,000 counters of 1,024-byte ids and modules would be 2 MB: the byte budget keeps a
    summary (and so each record) far below the broker's 1 MiB."""
    summary = SpaceSaving(1000, SUMMARY_BYTES)
    for n in range(5000):
        summary.add(f"{n:08d}".ljust(MAX_NAME_BYTES, "x"), "m".ljust(MAX_NAME_BYTES, "é")[:512], 1)
    assert summary.bytes <= SUMMARY_BYTES
    assert len(summary) < 1000
    encoded = encode_bucket(Bucket("", "failed", 0, 0, 0, summary))
    assert len(encoded) <= SUMMARY_BYTES
    decoded = decode_bucket(encoded, 1000)
    assert decoded is not None and decoded.summary.to_wire() == summary.to_wire()


def test_envoys_are_exact_up_to_the_sketch_size_then_estimated() -> None:
    sketch: list[int] = []
    for n in range(SKETCH_K - 1):
        sketch_add(sketch, envoy_hash(f"e{n}"))
        sketch_add(sketch, envoy_hash(f"e{n}"))  # the same envoy twice counts once
    assert sketch_estimate(sketch) == SKETCH_K - 1
    for n in range(5000):
        sketch_add(sketch, envoy_hash(f"e{n}"))
    assert len(sketch) == SKETCH_K
    assert 2000 <= sketch_estimate(sketch) <= 12_500


def test_merged_envoys_are_a_union() -> None:
    a, b = SpaceSaving(10, SUMMARY_BYTES), SpaceSaving(10, SUMMARY_BYTES)
    for envoy in ("e1", "e2", "e3"):
        a.add("x", "m", envoy_hash(envoy))
    for envoy in ("e3", "e4"):
        b.add("x", "m", envoy_hash(envoy))
    (top,) = merge([a, b], 10, SUMMARY_BYTES).top(5)
    assert (top.id, top.runs, top.error, top.envoys) == ("x", 5, 0, 4)


def test_hourly_buckets_over_the_window() -> None:
    window = 24 * HOUR_MS
    assert bucket_count(window) == 24 and bucket_count(90 * 60_000) == 2
    now = bucket_of(NOW) + 1234
    assert bucket_of(now) == bucket_of(NOW) and bucket_of(NOW) % HOUR_MS == 0
    assert oldest_live_bucket(now, window) == bucket_of(now) - 23 * HOUR_MS
    assert is_live(bucket_of(now), now, window)
    assert is_live(bucket_of(now) - 23 * HOUR_MS, now, window)
    assert not is_live(bucket_of(now) - 24 * HOUR_MS, now, window)
    # The live hours take distinct slots; the hour that left the window frees its own.
    starts = [bucket_of(now) - h * HOUR_MS for h in range(24)]
    assert sorted(slot_of(s, 24) for s in starts) == list(range(24))
    assert slot_of(bucket_of(now) + HOUR_MS, 24) == slot_of(bucket_of(now) - 23 * HOUR_MS, 24)


def summary_of(run_id: str, changed: tuple[str, ...], version: str | None) -> RunSummary:
    outcome = RunOutcome.CHANGED if changed else RunOutcome.CLEAN
    return RunSummary(run_id, "", 0, outcome, changed, (), (), len(changed), 0, 0, version)


def run_of(run_id: str, version: str | None, *changed: str) -> Run:
    resources = tuple(Resource(item, "m", "changed") for item in changed)
    return Run("e", run_id, "", "", 0, resources, (), version)


def test_non_idempotent_needs_three_consecutive_runs_at_one_version() -> None:
    run = run_of("r3", "v1", "a", "b", "c")
    changed = run_resources(run, "changed")
    history = [
        summary_of("r3", ("a", "b", "c"), "v1"),
        summary_of("r2", ("a", "b"), "v1"),
        summary_of("r1", ("a", "c"), "v1"),
    ]
    assert non_idempotent(history, run, changed) == ["a"]
    assert non_idempotent(history[:2], run, changed) == []  # only two runs
    other = [history[0], history[1], summary_of("r1", ("a",), "v0")]
    assert non_idempotent(other, run, changed) == []  # the third was another version
    clean = [history[0], summary_of("r2", (), "v1"), history[2]]
    assert non_idempotent(clean, run, changed) == []  # a clean run broke the streak
    late = [summary_of("r9", ("a",), "v1"), *history]
    assert non_idempotent(late, run, changed) == []  # a late run is not judged
    unversioned = [summary_of(r.run_id, r.changed, None) for r in history]
    assert non_idempotent(unversioned, run_of("r3", None, "a"), {"a": "m"}) == ["a"]


def test_a_run_counts_an_id_once() -> None:
    run = Run(
        "e",
        "r",
        "",
        "",
        0,
        (
            Resource("a", "files", "changed"),
            Resource("a", "other", "changed"),
            Resource("b", "m", "failed"),
            Resource("c", "m", "ok"),
        ),
    )
    assert run_resources(run, "changed") == {"a": "files"}
    assert run_resources(run, "failed") == {"b": "m"}


def test_records_decode_to_none_when_malformed_never_raise() -> None:
    good = encode_bucket(Bucket("env=prod", "changed", 2, 0, 5, summarize(["a", "b", "a"], 4)))
    decoded = decode_bucket(good, 4)
    assert decoded is not None and decoded.summary.top(1)[0].runs == 2
    wrong = ([2, "", "changed", 0, 0, 0, 0, []], [1, "", "nope", 0, 0, 0, 0, []],
             [1, "", "changed", 0, 0, 0, 0, [["a"]]], [1, "", "changed"])  # fmt: skip
    for bad in (b"", b"\xc1", good[:-3], *map(msgspec.msgpack.encode, wrong)):
        assert decode_bucket(bad, 4) is None
    key = bucket_key(7, "non_idempotent", 23, "role=a/b=c")
    assert parse_key(key) == (7, "non_idempotent", "role=a/b=c")
    assert parse_key(b"p3") is None and parse_key(b"r/x/changed/1/") is None


def test_the_top_query() -> None:
    assert parse_top_query({}, (), ()) == parse_top_query(
        {"kind": "changed", "limit": "20"}, (), ()
    )
    q = parse_top_query(
        {"kind": "failed", "limit": "5", "label": "role=db"}, ("role",), ("role=db",)
    )
    assert (q.kind, q.scope, q.limit) == ("failed", "role=db", 5)
    for bad in ({"kind": "ok"}, {"limit": "0"}, {"limit": "1001"}, {"limit": "²"},
                {"limit": "-1"}, {"label": "role"}, {"label": "env=prod"}):  # fmt: skip
        with pytest.raises(BadQuery):
            parse_top_query(bad, ("role",), ("role=db",))
    with pytest.raises(NotCounted):
        parse_top_query({"label": "role=web"}, ("role",), ("role=db",))


# -- the counter, with the envoy rules and a table in a dict ----------------------------------


@dataclass
class FakeWriter:
    table: dict[Any, Any] = field(default_factory=dict)


def counter(table: dict[Any, Any], groups: tuple[str, ...] = ()) -> ResourceCounter:
    held = HeldTable(cast(Any, FakeWriter(table)))
    result = ResourceCounter(
        app=cast(Any, None),
        table=cast(Any, table),
        held=held,
        partials_topic=cast(Any, None),
        settings=ResourceSettings(24 * HOUR_MS, 50, groups),
        clock=lambda: NOW / 1000,
    )
    held.encode = result.encode
    return result


def flush(counter: ResourceCounter, table: dict[Any, Any]) -> None:
    for _, key, value in counter.held.take():
        table[key] = value


RUNS = st.lists(
    st.tuples(
        st.integers(0, 3),  # envoy
        st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["ok", "changed", "failed"]))),
        st.sampled_from(["v1", "v1", "v2"]),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(RUNS, st.integers(0, 40), st.integers(0, 40))
def test_a_crash_between_the_two_checkpoint_writes_counts_each_run_once(
    runs: list[tuple[int, list[tuple[int, str]], str]], flushed: int, crash: int
) -> None:
    """The summaries are written before the envoy states: a worker that dies between the
    two writes replays runs its summaries hold already, and skips them by offset. The
    counts then equal exact counts (no eviction at this size: error 0)."""
    flushed = min(flushed, len(runs))
    crash = min(max(crash, flushed), len(runs))
    rules = Rules(intentional_changes=False)
    table: dict[Any, Any] = {}
    count = counter(table)
    states: dict[str, Any] = {}
    durable: dict[str, Any] = {}
    events = [
        Run(f"e{envoy}", f"run-{i}", "", "", NOW, tuple(
            Resource(f"res{r}", "m", cast(Any, result)) for r, result in resources
        ), (), version)
        for i, (envoy, resources, version) in enumerate(runs)
    ]  # fmt: skip

    def apply(i: int, run: Run) -> None:
        applied = apply_event(states.get(run.envoy_id), run, NOW, rules, Position(2, i))
        if applied.state is not None and applied.state is not states.get(run.envoy_id):
            states[run.envoy_id] = applied.state
            count.on_event(0, i, NOW, run, applied)

    for i, run in enumerate(events[:crash]):
        apply(i, run)
        if i + 1 == flushed:
            flush(count, table)
            durable = dict(states)
    flush(count, table)  # the summaries' write made it, the envoys' did not
    states = dict(durable)
    count = counter(table)
    for i, run in enumerate(events[flushed:], start=flushed):
        apply(i, run)
    flush(count, table)
    for kind in ("changed", "failed"):
        exact = Counter(
            f"res{r}" for run in runs for r in {r for r, result in run[1] if result == kind}
        )
        key = bucket_key(0, kind, slot_of(bucket_of(NOW), 24), "")
        bucket = decode_bucket(table[key], 50) if key in table else None
        got = {t.id: t.runs for t in bucket.summary.top(50)} if bucket else {}
        assert got == dict(exact)


def test_groups_counted_apart_and_runs_outside_the_window_ignored() -> None:
    table: dict[Any, Any] = {}
    count = counter(table, groups=("role=db", "role=(none)"))
    rules = Rules()
    state = None
    for i, labels in enumerate(({"role": "db"}, {"role": "web"}, {})):
        enrolled = apply_event(None, Enrollment(f"e{i}", "enrolled", "", labels), NOW, rules)
        state = enrolled.state
        run = Run(f"e{i}", f"r{i}", "", "", NOW, (Resource("x", "m", "failed"),))
        applied = apply_event(state, run, NOW, rules, Position(2, i))
        count.on_event(0, i, NOW, run, applied)
    old = Run("e0", "old", "", "", NOW, (Resource("x", "m", "failed"),))
    stale_ms = NOW - 25 * HOUR_MS
    count.on_event(0, 9, stale_ms, old, apply_event(state, old, stale_ms, rules, Position(2, 9)))
    flush(count, table)
    slot = slot_of(bucket_of(NOW), 24)

    def runs(scope: str) -> int:
        bucket = decode_bucket(table[bucket_key(0, "failed", slot, scope)], 50)
        assert bucket is not None
        return bucket.summary.top(1)[0].runs

    assert (runs(""), runs("role=db"), runs("role=(none)")) == (3, 1, 1)
    assert len(table) == 3 and all(parse_key(k)[1] == "failed" for k in table)  # type: ignore[index]
    assert set(KINDS) == {"changed", "failed", "non_idempotent"}
