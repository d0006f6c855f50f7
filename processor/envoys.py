"""The envoy agent: applies input records to the per-envoy table through
`projections.envoy`, publishes status changes, dead-letters what cannot be applied, and
sweeps liveness deadlines on tick records.

The per-record path stays lean: raw bytes and orjson, no Faust Records or events, no
per-record logging; records come in the batches the consumer fetched
(`faust_compat.InputBatches`) and each envoy's table entry is written once per batch,
after the batch's outputs were acknowledged, the way every agent writes its state
(`processor.state`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import Message, TableT

from processor.config import Settings
from processor.deadlines import Deadlines
from processor.envoy_index import PartitionIndex
from processor.envoy_list_index import PartitionKeys
from processor.envoy_liveness import (
    LivenessSweeps,
    Purged,
    StaleHandler,
)
from processor.faust_compat import DeliveryGuard, partition_reader
from processor.metrics import Metrics
from processor.outputs import Outputs
from processor.progress import CatchUp
from processor.records import (
    StoredEnvoy,
    decode_stored_envoy,
    encode_stored_envoy,
)
from processor.resources import ResourceCounter
from processor.rollouts import PartitionRollouts
from processor.state import HeldTable, flush
from projections.envoy import (
    Applied,
    Position,
    Rules,
    StatusChange,
    apply_event,
)
from projections.fleet import FleetCounts
from projections.groups import GroupTally
from topics.codec import encode_deadletter, encode_status_change
from topics.decode import decode_input
from topics.events import DeadLetter, RecordMeta
from topics.names import TopicNames
from topics.timestamps import iso_from_ms


def envoy_rules(settings: Settings) -> Rules:
    """The status rules' parameters, from the configuration."""
    return Rules(
        default_interval_s=settings.checkin.interval_s,
        stale_after=settings.checkin.stale_policy,
        strict_enrollment=settings.enrollment.strict,
        intentional_changes=settings.runs.intentional_changes,
        deactivate_after_ms=settings.lifecycle.deactivate_after_ms,
        purge_after_ms=settings.lifecycle.purge_after_ms,
    )


def encode_envoy_record(record: StoredEnvoy | Purged) -> bytes | None:
    """What the envoys table is given for a held record: the encoded envoy, or None (a
    delete: the key leaves the store and gets a tombstone)."""
    return encode_stored_envoy(record) if type(record) is StoredEnvoy else None


@dataclass
class EnvoyProcessor(LivenessSweeps, PartitionIndex):
    table: TableT[Any, Any]
    #: The new states since the last checkpoint, held encoded as the store keeps them
    #: (None: the envoy is purged, SPEC 10.3, a tombstone in the changelog), written by
    #: `checkpoint`; reads see them first. Encoded, not decoded: a decoded envoy is some
    #: 4.5 KB of small objects, and thousands of them alive until each checkpoint left
    #: the interpreter's arenas fragmented (RSS an operator pays, bench_memory.py).
    state: HeldTable
    names: TopicNames
    status_topic: faust.TopicT
    deadletter_topic: faust.TopicT
    rules: Rules
    guard: DeliveryGuard
    catch_up: CatchUp
    outputs: Outputs
    metrics: Metrics
    clock: Callable[[], float]
    max_event_bytes: int
    stale_handlers: list[StaleHandler] = field(default_factory=list)
    #: `fleet.group_by` (SPEC 10.2); empty: no group is kept and the hot path skips them.
    group_by: tuple[str, ...] = ()
    deadlines: dict[int, Deadlines] = field(default_factory=dict)
    #: Per partition, its envoys by status (the fleet projection's first stage).
    counts: dict[int, FleetCounts] = field(default_factory=dict)
    #: Per partition, its envoys by group, built and dropped with `counts`.
    groups: dict[int, GroupTally] = field(default_factory=dict)
    #: Per partition, its envoy keys by status and group (the list index), built and
    #: dropped with `counts`.
    listing: dict[int, PartitionKeys] = field(default_factory=dict)
    #: Per partition, its envoys by `config_version` (SPEC 11.2), built and dropped with
    #: `counts`.
    rollouts: dict[int, PartitionRollouts] = field(default_factory=dict)
    #: SPEC 11.3: told of every applied run; its summaries are written before the states.
    resources: ResourceCounter | None = None
    _events: Counter[tuple[str, str]] = field(default_factory=Counter)
    _transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    _runs: Counter[str] = field(default_factory=Counter)
    _now_ms: int = 0

    def __post_init__(self) -> None:
        self.topic_index = {name: i for i, name in enumerate(self.names.inputs)}
        self._read = partition_reader(self.table)

    # -- input records -------------------------------------------------------------------

    def process_batch(self, messages: Sequence[Message]) -> None:
        """Apply a batch; synchronous, so no timer or web view interleaves with it. The new
        states are held until `commit` (outputs first: see `processor.outputs`)."""
        started = time.perf_counter()
        self._now_ms = int(self.clock() * 1000)  # record times are judged against it
        newest_ticks = self._newest_ticks(messages)
        applied_count = 0
        ticks = self.names.ticks
        accept = self.guard.accept
        for message in messages:
            if not accept(message.tp, message.offset):
                continue
            if message.topic == ticks:
                if newest_ticks.get(message.partition) == message.offset:
                    self._on_tick(message)
                continue
            applied_count += 1
            self._apply(message)
        self._flush_counts()
        if applied_count:
            per_record = (time.perf_counter() - started) / applied_count
            self.metrics.event_processing.observe(per_record)

    async def publish(self) -> None:
        """Per batch: its outputs (status changes, dead letters, stale alerts) acknowledged,
        so a change is seen within a batch whatever the checkpoint interval."""
        await self.outputs.acknowledged()

    async def checkpoint(self) -> None:
        """Per checkpoint (`processor.checkpoint`): the states held since the last one
        written to the store and the changelog, acknowledged, after the outputs that
        record them; then the batches' offsets may be committed. Cancelled half-way
        (shutdown), the batches are not acked and are read again."""
        resources = () if self.resources is None else (self.resources.held,)
        await flush(self.outputs, *resources, self.state)

    def _stored(self, key: bytes, partition: int | None = None) -> StoredEnvoy | None:
        """The envoy's state: held since the last checkpoint, else read from the store
        with one lookup in its partition's store when the partition is known (the input
        paths), else through the table (the API's lookups by id)."""
        held = self.state.held.get(key)
        if held is not None:
            data = held[1]
        else:
            data = self.table.get(key) if partition is None else self._read(partition, key)
        return decode_stored_envoy(data) if data is not None else None

    def _hold(self, partition: int, key: bytes, record: StoredEnvoy | Purged) -> None:
        """The envoy's new state, encoded now and held until the checkpoint writes it."""
        self.state.put(partition, key, encode_envoy_record(record))

    def _newest_ticks(self, messages: Sequence[Message]) -> dict[int, int]:
        """The offset of the newest tick per partition: a lagging worker sweeps once, on
        the newest tick it sees, instead of once per tick it is behind."""
        newest: dict[int, int] = {}
        for message in messages:
            if message.topic == self.names.ticks:
                newest[message.partition] = max(message.offset, newest.get(message.partition, -1))
        return newest

    def _apply(self, message: Message) -> None:
        """One input record: decode, apply the rules, publish the change, and hold the new
        state until the batch is committed."""
        meta = RecordMeta(
            message.topic, message.partition, message.offset, int(message.timestamp * 1000)
        )
        decoded = decode_input(
            message.key, message.value, meta, max_bytes=self.max_event_bytes, now_ms=self._now_ms
        )
        if isinstance(decoded, DeadLetter):
            self._dead_letter(decoded)
            return
        key = message.key
        assert key is not None  # decode_input dead-letters a missing key
        record = self._stored(key, message.partition)
        state = record.state if record is not None else None
        position = Position(self.topic_index[message.topic], message.offset)
        applied = apply_event(state, decoded, meta.timestamp_ms, self.rules, position)
        self._count(message.topic, applied)
        if applied.outcome in ("not_enrolled", "revoked"):
            reason = applied.outcome
            self._dead_letter(DeadLetter(meta, key, message.value, reason, _REFUSALS[reason]))
        new = applied.state
        if new is None or new is state:
            return
        partition = message.partition
        self._hold(partition, key, StoredEnvoy(partition, new))
        self._listed(partition, key, new)
        if self.group_by:
            self._move_groups(partition, state, new)
        self._move_rollouts(partition, key, state, new, meta.timestamp_ms)
        if applied.change is not None:
            self._publish(key, partition, applied.change)
        old_status = None if state is None else state.status
        if new.status is not old_status:
            self._move(partition, old_status, new.status)
        self._schedule(partition, key, new)
        if self.resources is not None:
            self.resources.on_event(partition, message.offset, meta.timestamp_ms, decoded, applied)

    def _count(self, topic: str, applied: Applied) -> None:
        outcome = applied.outcome
        if outcome in ("applied", "late"):
            label = "applied"
        elif outcome == "duplicate":
            label = "duplicate"
        else:
            label = "deadletter"
        self._events[(topic, label)] += 1
        if applied.run_outcome is not None:
            self._runs[applied.run_outcome] += 1

    def _flush_counts(self) -> None:
        """Counters are added once per batch and label set, not once per record."""
        for (topic, outcome), n in self._events.items():
            self.metrics.events.labels(topic=topic, outcome=outcome).inc(n)
        for (from_status, to_status), n in self._transitions.items():
            self.metrics.status_transitions.labels(**{"from": from_status}, to=to_status).inc(n)
        for outcome, n in self._runs.items():
            self.metrics.runs.labels(outcome=outcome).inc(n)
        self._events.clear()
        self._transitions.clear()
        self._runs.clear()

    def _dead_letter(self, dead: DeadLetter) -> None:
        if dead.reason not in ("not_enrolled", "revoked"):
            self._events[(dead.meta.topic, "deadletter")] += 1
        self.metrics.deadletters.labels(reason=dead.reason).inc()
        # The key is bounded too: the dead letter must never exceed the broker limit itself.
        key = dead.key[:1024] if dead.key is not None else None
        self.outputs.send(self.deadletter_topic, key=key, value=encode_deadletter(dead))

    def _publish(self, key: bytes, partition: int, change: StatusChange) -> None:
        """Status changes go to the same partition number as their envoy, so the fleet
        projection's table is co-partitioned with the envoy table."""
        value = status_change_value(change)
        self.outputs.send(self.status_topic, key=key, value=value, partition=partition)
        from_status = change.from_status.value if change.from_status else "none"
        self._transitions[(from_status, change.to_status.value)] += 1


def status_change_value(change: StatusChange) -> bytes:
    """The status-change record's value (SPEC section 3) for a change of the rules."""
    return encode_status_change(
        envoy_id=change.envoy_id,
        from_status=change.from_status.value if change.from_status else None,
        to_status=change.to_status.value,
        at=iso_from_ms(change.at_ms),
        version=change.version,
        cause=change.cause.value,
        run_id=change.run_id,
        consecutive_changed_runs=change.consecutive_changed_runs,
        labels=change.labels,
    )


_REFUSALS = {
    "not_enrolled": "envoy is not enrolled and enrollment.strict is true",
    "revoked": "envoy is revoked; enroll it again to resume",
}
