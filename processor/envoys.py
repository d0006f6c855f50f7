"""The envoy agent: applies input records to the per-envoy table through
`projections.envoy`, publishes status changes, dead-letters what cannot be applied, and
sweeps liveness deadlines on tick records.

The per-record path stays lean: raw bytes and orjson, no Faust Records or events, no
per-record logging; records come in the batches the consumer fetched
(`faust_compat.InputBatches`) and each envoy's table entry is written once per batch, after
the batch's outputs were acknowledged (`processor.outputs`), with its changelog
records in one producer batch per partition (`faust_compat.TableWriter`).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import Message, TableT

from processor.deadlines import Deadlines
from processor.faust_compat import DeliveryGuard, TableWriter
from processor.metrics import Metrics
from processor.outputs import Outputs
from processor.progress import CatchUp
from processor.records import (
    EnvoyHead,
    StoredEnvoy,
    decode_envoy_head,
    decode_stored_envoy,
    encode_stored_envoy,
    head_labels,
)
from projections.envoy import (
    Applied,
    EnvoyState,
    Position,
    Rules,
    StatusChange,
    apply_event,
    next_deadline_ms,
    sweep_envoy,
)
from projections.fleet import FleetCounts
from projections.groups import GroupTally, in_group
from topics.codec import encode_deadletter, encode_status_change
from topics.decode import decode_input
from topics.events import DeadLetter, RecordMeta
from topics.names import TopicNames
from topics.statuses import Status
from topics.timestamps import iso_from_ms

#: Envoys swept per tick and partition: a network partition is worked off over several
#: ticks instead of stalling the agent.
SWEEP_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class StaleEnvoy:
    envoy_id: str
    episode: int
    last_seen_ms: int
    labels: dict[str, str]


StaleHandler = Callable[[int, list[StaleEnvoy], int], None]


@dataclass(frozen=True, slots=True)
class Purged:
    """A held delete (SPEC 10.3): the envoy's key is removed from the table and gets a
    tombstone in its changelog partition."""

    partition: int


#: (key, status before, new state or delete, change to publish)
SweptRecord = tuple[bytes, Status, StoredEnvoy | Purged, StatusChange | None]


@dataclass
class EnvoyProcessor:
    table: TableT[Any, Any]
    writer: TableWriter
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
    #: The batch's new states, written by `commit` (reads see them first); a `Purged`:
    #: the envoy is deleted (SPEC 10.3), a tombstone in the changelog.
    held: dict[bytes, StoredEnvoy | Purged] = field(default_factory=dict)
    #: Per partition, its envoys by status (the fleet projection's first stage).
    counts: dict[int, FleetCounts] = field(default_factory=dict)
    #: Per partition, its envoys by group, built and dropped with `counts`.
    groups: dict[int, GroupTally] = field(default_factory=dict)
    _events: Counter[tuple[str, str]] = field(default_factory=Counter)
    _transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    _runs: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.topic_index = {name: i for i, name in enumerate(self.names.inputs)}

    # -- input records -------------------------------------------------------------------

    def process_batch(self, messages: Sequence[Message]) -> None:
        """Apply a batch; synchronous, so no timer or web view interleaves with it. The new
        states are held until `commit` (outputs first: see `processor.outputs`)."""
        started = time.perf_counter()
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

    async def commit(self) -> None:
        """Once the batch's outputs are acknowledged, write the states that record them;
        returns when those are acknowledged too, so the batch's offsets may be committed.
        Cancelled half-way (shutdown), the batch is not acked and is read again."""
        await self.outputs.acknowledged()
        held, self.held = self.held, {}
        await self.writer.write(
            (
                record.partition,
                key,
                encode_stored_envoy(record) if type(record) is StoredEnvoy else None,
            )
            for key, record in held.items()
        )

    def _stored(self, key: bytes) -> StoredEnvoy | None:
        held = self.held.get(key)
        if held is not None:
            return held if type(held) is StoredEnvoy else None
        data = self.table.get(key)
        return decode_stored_envoy(data) if data is not None else None

    def _heads(self, partition: int) -> dict[bytes, EnvoyHead]:
        """The heads of the partition's envoys (the batch's held states over the table's):
        all that the indexes built on assignment need, read without decoding each envoy."""
        heads = {}
        for key, data in self.table.items():
            if data is not None:
                head = decode_envoy_head(data)
                if head.partition == partition:
                    heads[key] = head
        for key, record in self.held.items():
            if record.partition != partition:
                continue
            if type(record) is StoredEnvoy:
                heads[key] = decode_envoy_head(encode_stored_envoy(record))
            else:
                heads.pop(key, None)
        return heads

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
        decoded = decode_input(message.key, message.value, meta, max_bytes=self.max_event_bytes)
        if isinstance(decoded, DeadLetter):
            self._dead_letter(decoded)
            return
        key = message.key
        assert key is not None  # decode_input dead-letters a missing key
        record = self._stored(key)
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
        self.held[key] = StoredEnvoy(partition, new)
        if self.group_by:
            self._move_groups(partition, state, new)
        if applied.change is not None:
            self._publish(key, partition, applied.change)
        old_status = None if state is None else state.status
        if new.status is not old_status:
            self._move(partition, old_status, new.status)
        self._schedule(partition, key, new)

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
        value = encode_status_change(
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
        self.outputs.send(self.status_topic, key=key, value=value, partition=partition)
        from_status = change.from_status.value if change.from_status else "none"
        self._transitions[(from_status, change.to_status.value)] += 1

    def _move(self, partition: int, old: Status | None, new: Status | None) -> None:
        """Move the partition's counts by a state's status (not by the published change:
        a revocation of an unknown envoy publishes nothing but counts as revoked)."""
        counts = self.counts.get(partition)
        if counts is not None:
            self.counts[partition] = counts.moved(old, new)

    def _move_groups(self, partition: int, old: EnvoyState | None, new: EnvoyState | None) -> None:
        """Groups move with the (old, new) state pair, not with status changes alone: a
        re-enrollment with new labels moves an envoy between groups, status unchanged.
        `new` None: the envoy was purged (SPEC 10.3) and leaves its groups."""
        tally = self.groups.get(partition)
        if tally is None:
            return
        if new is None:
            if old is not None:
                tally.move(old.status, old.labels, None, None)
        else:
            tally.move_state(old, new)

    # -- liveness ------------------------------------------------------------------------

    def _schedule(self, partition: int, key: bytes, state: EnvoyState) -> None:
        deadlines = self.deadlines.get(partition)
        if deadlines is not None:
            deadlines.schedule(key, next_deadline_ms(state, self.rules))

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.deadlines.pop(partition, None)
            self.counts.pop(partition, None)
            self.groups.pop(partition, None)

    def counts_for(self, partition: int) -> FleetCounts:
        """The partition's envoys by status: built from the table (and the batch's held
        states) once per assignment, then moved with every status change published."""
        counts = self.counts.get(partition)
        if counts is None:
            heads = self._heads(partition).values()
            counts = FleetCounts.of_statuses(h.status for h in heads)
            self.counts[partition] = counts
            if self.group_by:
                envoys = ((h.status, head_labels(h)) for h in heads)
                self.groups[partition] = GroupTally.of_envoys(self.group_by, envoys)
        return counts

    def group_tally(self, partition: int) -> GroupTally | None:
        """The partition's envoys by group (None without `fleet.group_by`), built with and
        moved like its counts."""
        self.counts_for(partition)
        return self.groups.get(partition)

    def _deadlines_for(self, partition: int) -> Deadlines:
        """Built from the table (and the batch's held states) on the first tick after the
        partition was assigned."""
        deadlines = self.deadlines.get(partition)
        if deadlines is None:
            deadlines = Deadlines()
            for key, head in self._heads(partition).items():
                deadlines.schedule(key, next_deadline_ms(head.liveness(), self.rules))
            self.deadlines[partition] = deadlines
        return deadlines

    def _on_tick(self, tick: Message) -> None:
        """Sweep the partition's expired deadlines as of the tick's own record time, so a
        replayed tick sweeps exactly as the first reading did."""
        partition = tick.partition
        if partition not in self.catch_up.active_partitions():
            return
        if not self.catch_up.partition_caught_up(partition) or self.guard.settling(partition):
            return
        now_ms = int(tick.timestamp * 1000)
        self.metrics.sweep_lag.set(max(0.0, self.clock() - now_ms / 1000))
        stale, swept_records = self._sweep(partition, now_ms)
        # Alerts are sent before the states that record them are written (`commit`).
        if stale:
            for handler in self.stale_handlers:
                handler(partition, stale, now_ms)
        for key, old_status, stored, change in swept_records:
            # Outputs first: the change (`to: purged` too) goes out before the state (or
            # the delete) that records it is written (`commit`).
            self.held[key] = stored
            if change is not None:
                self._publish(key, partition, change)
            new_status = stored.state.status if type(stored) is StoredEnvoy else None
            if new_status is not old_status:
                self._move(partition, old_status, new_status)

    def _sweep(self, partition: int, now_ms: int) -> tuple[list[StaleEnvoy], list[SweptRecord]]:
        """The envoys of `partition` whose deadline passed: their new states (or deletes)
        and changes, and those that just went stale. Touches only what expired (the
        deadline heap)."""
        deadlines = self._deadlines_for(partition)
        stale: list[StaleEnvoy] = []
        swept_records: list[SweptRecord] = []
        for key in list(deadlines.due(now_ms, SWEEP_LIMIT)):
            record = self._stored(key)
            if record is None or record.partition != partition:
                continue
            state = record.state
            deadline = next_deadline_ms(state, self.rules)
            if deadline is None:
                continue
            if deadline > now_ms:
                deadlines.schedule(key, deadline)
                continue
            swept = sweep_envoy(state, now_ms, self.rules)
            if swept.purged:
                swept_records.append((key, state.status, Purged(partition), swept.change))
                if self.group_by:
                    self._move_groups(partition, state, None)
                continue
            if swept.state != state:
                stored = StoredEnvoy(partition, swept.state)
                swept_records.append((key, state.status, stored, swept.change))
                if self.group_by:
                    self._move_groups(partition, state, swept.state)
            if swept.became_stale:
                stale.append(
                    StaleEnvoy(
                        envoy_id=state.envoy_id,
                        episode=swept.state.stale_episodes,
                        last_seen_ms=state.last_alive_ms,
                        labels=dict(state.labels),
                    )
                )
            # A deadline that passed too (inactive, then purge, after a long stop) is for the
            # next tick: this sweep must not pop the envoy again before its state is held.
            after = next_deadline_ms(swept.state, self.rules)
            deadlines.schedule(key, None if after is None else max(after, now_ms + 1))
        return stale, swept_records

    # -- queries of the web layer ---------------------------------------------------------

    def owned(self, envoy_id: str) -> EnvoyState | None:
        """The envoy if this worker actively owns its partition: the local table may still
        hold entries of partitions that moved away, or standby copies."""
        data = self.table.get(envoy_id.encode("utf-8"))
        if data is None:
            return None
        record = decode_stored_envoy(data)
        if record.partition not in self.catch_up.active_partitions():
            return None
        return record.state

    def owned_envoys(
        self,
        statuses: Container[Status] | None = None,
        after: str | None = None,
        first: int | None = None,
        label: tuple[str, str] | None = None,
    ) -> list[EnvoyState]:
        """The envoys of the partitions this worker actively owns, read in one pass (no
        await), so a batch never interleaves with the read: those with one of `statuses`
        and an id after `after`, only the `first` in id order if given. Filtered by their
        heads and keys (the envoy ids in UTF-8, which sort as the ids do) before anything
        is decoded whole; with `label` (KEY, VALUE), only the envoys in that group (their
        labels read from the tail alone)."""
        owned = self.catch_up.active_partitions()
        after_key = after.encode("utf-8") if after is not None else None
        keys = []
        for key, data in self.table.items():
            if data is None or (after_key is not None and key <= after_key):
                continue
            head = decode_envoy_head(data)
            if (
                head.partition in owned
                and (statuses is None or head.status in statuses)
                and (label is None or in_group(head_labels(head), *label))
            ):
                keys.append(key)
        if first is not None:
            keys = heapq.nsmallest(first, keys)
        return [decode_stored_envoy(self.table[key]).state for key in keys]


_REFUSALS = {
    "not_enrolled": "envoy is not enrolled and enrollment.strict is true",
    "revoked": "envoy is revoked; enroll it again to resume",
}
