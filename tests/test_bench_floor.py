"""The throughput benchmark's floor and lean design do the worker's work, not less: a
lower bound that skipped a step would flatter the argument built on it (docs/performance.md,
"What the figures mean"). The lean design runs against the real broker."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pytest
from benchcommon import build_runs, create_topics, preload
from floor import NOW_MS, RECORD_MS, WorkerWork, floor_costs
from lean import VARIANTS, lean_loop

from processor.records import decode_stored_envoy
from projections.envoy import EnvoyState, Position, Rules, apply_event
from topics.decode import decode_input
from topics.events import DeadLetter, RecordMeta

RUNS, ENVOYS = 3_000, 300


def expected(records: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, EnvoyState], int]:
    """Each envoy's state and the number of status changes, by the rules alone."""
    rules = Rules(default_interval_s=300)
    states: dict[bytes, EnvoyState] = {}
    changes = 0
    for offset, (key, value) in enumerate(records):
        meta = RecordMeta("runs", 0, offset, RECORD_MS)
        event = decode_input(key, value, meta, now_ms=NOW_MS)
        assert not isinstance(event, DeadLetter), event
        applied = apply_event(states.get(key), event, RECORD_MS, rules, Position(2, offset))
        assert applied.state is not None
        states[key] = applied.state
        changes += applied.change is not None
    return states, changes


def test_the_floor_keeps_every_state_as_the_worker_stores_it() -> None:
    records = build_runs(RUNS, ENVOYS)
    states, changes = expected(records)
    work = WorkerWork(Rules(default_interval_s=300))
    published = 0
    for offset, (key, value) in enumerate(records):
        record, change = work.apply(key, value, 0, offset, RECORD_MS)
        assert record is not None  # every run changes the state (offsets, history)
        published += change is not None
    assert published == changes > ENVOYS  # first statuses and some changes after them
    assert {key: decode_stored_envoy(data).state for key, data in work.stored.items()} == states
    held = WorkerWork(Rules(default_interval_s=300))
    held_changes = 0
    for offset, (key, value) in enumerate(records):
        held_changes += held.hold(key, value, 0, offset, RECORD_MS) is not None
        if offset % 1000 == 999:  # a checkpoint now and then: reads then see the store
            assert len(held.flush()) <= ENVOYS
    held.flush()
    assert held_changes == changes
    assert held.stored == work.stored  # the same records, decoded fewer times
    costs = floor_costs(records[:500])
    assert 0 < costs["decode"] < costs["rules"] < costs["worker work"]


async def read_all(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(out) < n:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    out.extend((m.key, m.value) for m in messages if m.key and m.value)
    finally:
        await consumer.stop()
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_lean_design_publishes_every_change_and_checkpoints_every_state(
    kafka_bootstrap: str, variant: str
) -> None:
    prefix = f"lean-{uuid.uuid4().hex[:6]}."
    runs, changelog, changes = (f"{prefix}{name}" for name in ("runs", "changelog", "changes"))
    records = build_runs(RUNS, ENVOYS)
    states, expected_changes = expected(records)

    async def scenario() -> tuple[int, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        await create_topics(kafka_bootstrap, [runs, changelog, changes], 4)
        # A key's records stay in order within its partition, so each envoy's states
        # follow the same sequence as in `expected`.
        await preload(kafka_bootstrap, runs, records)
        done, *_ = await lean_loop(kafka_bootstrap, runs, changelog, changes, len(records), variant)
        published = await read_all(kafka_bootstrap, changes, expected_changes)
        written = await read_all(kafka_bootstrap, changelog, ENVOYS)
        return done, published, written

    done, published, written = asyncio.run(scenario())
    assert done == RUNS
    assert len(published) == expected_changes
    latest = dict(written)  # compaction's view: the last record per envoy
    assert len(latest) == ENVOYS
    # Offsets are the partitions' here, the single sequence's in `expected`: compare what
    # does not depend on them.
    for key, data in latest.items():
        stored, want = decode_stored_envoy(data).state, states[key]
        assert [run.run_id for run in stored.history] == [run.run_id for run in want.history]
        assert (stored.status, stored.version) == (want.status, want.version)
