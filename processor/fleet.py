"""The fleet projection, in two stages (like a Kafka Streams aggregation):

1. per partition, on the worker that owns it: the envoy agent keeps the counts of the
   partition's statuses next to its envoy states (rebuilt from them after an assignment,
   so they can never disagree) and publishes them as a partial to the internal
   one-partition topic between batches, about once a second (never ahead of what it
   published and wrote);
2. fleet-wide, on the worker that owns that topic's only partition (the fleet owner):
   the aggregator sums the partials, publishes `vigo.fleet.convergence`, keeps the
   sparkline history and runs the threshold detectors, all inside its stream.

Groups by label (SPEC 10.2) travel the same way: each partial carries its partition's
group counts, bounded per key (`groups.bounded`: the `fleet.max_group_values` largest
values and those with a threshold of their own named, the rest as `(other)`, and at most
`GROUP_BYTES_PER_KEY` of values); the aggregator merges them and bounds them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import faust
import orjson
from faust.types import EventT, TableT

from processor.envoys import EnvoyProcessor
from processor.faust_compat import DeliveryGuard
from processor.metrics import Metrics
from processor.outputs import HeldWrites, Outputs
from processor.records import (
    TICK_KEY,
    TICK_MAX_AGE_MS,
    FleetPart,
    decode_fleet_partial,
    encode_fleet_partial,
    group_threshold_key,
)
from projections.fleet import FleetCounts
from projections.groups import (
    Groups,
    GroupTally,
    bounded,
    merge_groups,
    parse_label,
    pinned_values,
)
from projections.history import ConvergenceHistory, history_bucket_ms, record_point
from projections.threshold import ThresholdState, check_threshold, recovered
from topics.codec import encode_fleet_convergence
from topics.timestamps import iso_from_ms

#: How often the envoy agent publishes its partitions' partials (when they changed).
PARTIALS_EVERY_S: Final = 1.0

#: The named values of one key in a partial or a published record take at most this much
#: JSON (each value's text plus an allowance for its counts): with 4 keys, a record stays
#: well under the broker's 1 MiB message limit whatever the label values hold.
GROUP_BYTES_PER_KEY: Final = 160 * 1024
_COUNTS_ALLOWANCE: Final = 100


#: A partition's groups without `fleet.group_by`: one object, so an unchanged partial is
#: recognised (`publish_partials` compares the groups it sent by identity).
NO_GROUPS: Final[Groups] = MappingProxyType({})


def _group_value_size(value: str) -> int:
    return len(orjson.dumps(value)) + _COUNTS_ALLOWANCE


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """`fleet.group_by`, `fleet.max_group_values` and the per-group thresholds."""

    group_by: tuple[str, ...] = ()
    max_values: int = 200
    #: `{"env=prod": 95}`; only for keys of `group_by` (checked with the configuration).
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @property
    def pinned(self) -> dict[str, frozenset[str]]:
        return pinned_values(self.thresholds)

    def bound(self, groups: Groups) -> dict[str, dict[str, FleetCounts]]:
        return bounded(
            groups,
            self.group_by,
            self.max_values,
            self.pinned,
            size=_group_value_size,
            budget=GROUP_BYTES_PER_KEY,
        )


def group_doc(counts: FleetCounts) -> dict[str, Any]:
    """A group's numbers in the fleet's shape (inactive and revoked beside active)."""
    return {
        "active": counts.active,
        "compliant": counts.compliant,
        "percent": counts.percent,
        "by_status": counts.as_dict(),
        "inactive": counts.inactive,
        "revoked": counts.revoked,
    }


def groups_doc(groups: Groups) -> dict[str, dict[str, dict[str, Any]]]:
    """`{"env": {"prod": {"active", "compliant", "percent", "by_status", ...}, ...}, ...}`."""
    return {key: {v: group_doc(c) for v, c in values.items()} for key, values in groups.items()}


@dataclass
class FleetProjection:
    """Stage 1: each owned, caught-up partition's counts, which the envoy agent keeps next
    to its states (`EnvoyProcessor.counts_for`), published as a partial."""

    app: faust.App
    envoys: EnvoyProcessor
    partials_topic: faust.TopicT
    interval_s: int
    clock: Callable[[], float]
    groups: GroupSettings = field(default_factory=GroupSettings)
    _sent: dict[int, tuple[FleetCounts, object, int]] = field(default_factory=dict)
    #: Per partition, its bounded groups and the tally version they were bounded at.
    _bounded: dict[int, tuple[GroupTally, int, Groups]] = field(default_factory=dict)
    _published_at: float = float("-inf")

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._sent.pop(partition, None)
            self._bounded.pop(partition, None)

    def partition_groups(self, partition: int) -> Groups:
        """The partition's groups as its partial carries them: bounded, recomputed only
        when an envoy moved."""
        tally = self.envoys.group_tally(partition)
        if tally is None:
            return NO_GROUPS
        cached = self._bounded.get(partition)
        if cached is not None and cached[0] is tally and cached[1] == tally.version:
            return cached[2]
        groups = self.groups.bound(tally.counts)
        self._bounded[partition] = (tally, tally.version, groups)
        return groups

    async def publish_partials_when_due(self) -> None:
        """At most once a `PARTIALS_EVERY_S`: the envoy agent calls this after every
        batch it committed."""
        now = time.monotonic()
        if now - self._published_at < PARTIALS_EVERY_S:
            return
        self._published_at = now
        await self.publish_partials()

    async def publish_partials(self) -> None:
        """On change, and at least twice an interval so a new fleet owner learns them
        quickly. Called by the envoy agent between batches only: a partial then counts
        no change whose status-change record or state is not yet acknowledged, and a
        worker killed in between cannot leave the fleet numbers ahead of the topic."""
        if self.app.rebalancing or self.app.in_recovery:
            return
        catch_up = self.envoys.catch_up
        now_ms = int(self.clock() * 1000)
        for partition in sorted(catch_up.active_partitions()):
            if not catch_up.partition_caught_up(partition):
                continue
            counts = self.envoys.counts_for(partition)
            groups = self.partition_groups(partition)
            sent = self._sent.get(partition)
            fresh = sent is not None and now_ms - sent[2] < self.interval_s * 500
            if fresh and sent is not None and sent[0] == counts and sent[1] is groups:
                continue
            await self.partials_topic.send(
                key=f"p{partition}".encode(),
                value=encode_fleet_partial(partition, counts, now_ms, groups),
            )
            self._sent[partition] = (counts, groups, now_ms)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    counts: FleetCounts
    at_ms: int
    threshold: float | None
    below: bool
    history: ConvergenceHistory
    #: key -> value -> numbers, bounded as published; empty without `fleet.group_by`.
    groups: Groups = field(default_factory=dict)


#: (group label `KEY=VALUE` or None for the fleet, new detector state, the numbers, the
#: threshold, now): called once per downward crossing.
ThresholdHandler = Callable[[str | None, ThresholdState, FleetCounts, float, int], None]


@dataclass
class FleetAggregator:
    """Stage 2, on the fleet owner: sum partials, publish, detect, remember."""

    app: faust.App
    parts_table: TableT[Any, Any]
    state_table: TableT[Any, Any]
    partials_topic: faust.TopicT
    convergence_topic: faust.TopicT
    guard: DeliveryGuard
    outputs: Outputs
    partitions: int
    interval_s: int
    threshold: float | None
    metrics: Metrics
    clock: Callable[[], float]
    groups: GroupSettings = field(default_factory=GroupSettings)
    threshold_handlers: list[ThresholdHandler] = field(default_factory=list)
    #: Called once per crossing back to at or above a threshold that fired (SPEC 10.4).
    recovery_handlers: list[ThresholdHandler] = field(default_factory=list)
    snapshot: FleetSnapshot | None = None
    _published: tuple[FleetCounts, Groups, int] | None = None
    _last_check_ms: int | None = None
    held: HeldWrites = field(default_factory=HeldWrites)

    @property
    def interval_ms(self) -> int:
        return self.interval_s * 1000

    def owns_fleet(self) -> bool:
        return any(
            tp.topic == self.partials_topic.get_topic_name()
            for tp in self.app.assignor.assigned_actives()
        )

    async def send_tick(self) -> None:
        if self.owns_fleet() and not (self.app.rebalancing or self.app.in_recovery):
            await self.partials_topic.send(key=TICK_KEY, value=b"")

    def process(self, event: EventT[Any]) -> None:
        """One partial or tick; table writes are held until `commit`."""
        message = event.message
        if not self.guard.accept(message.tp, message.offset):
            return
        if message.key == TICK_KEY:
            now_ms = int(self.clock() * 1000)
            if now_ms - int(message.timestamp * 1000) <= TICK_MAX_AGE_MS:
                self._on_tick(event, now_ms)
            return
        partial = decode_fleet_partial(message.value) if message.value else None
        if partial is None:
            return
        partition, part = partial
        if partition < self.partitions:
            self.held.put(self.parts_table, str(partition), part, event)

    async def commit(self, stream: faust.Stream[Any]) -> None:
        """Outputs (fleet numbers, alerts) first, then the state that records them."""
        try:
            await self.outputs.acknowledged()
        finally:
            # Also when the wait is cancelled (shutdown, rebalance): take_events acks the
            # batch on the way out and Faust commits its offsets, so the states must be
            # written now; they are flushed with the outputs still in the producer.
            self.held.apply(stream)

    def _parts(self) -> list[FleetPart]:
        parts = (self.parts_table.get(str(p)) for p in range(self.partitions))
        return [part for part in parts if isinstance(part, FleetPart)]

    def total(self) -> FleetCounts:
        return FleetCounts.merged(part.counts for part in self._parts())

    def total_groups(self) -> Groups:
        """The fleet's groups: the partials' merged and bounded again (empty without
        `fleet.group_by`)."""
        if not self.groups.group_by:
            return {}
        return self.groups.bound(merge_groups(part.groups for part in self._parts()))

    def _on_tick(self, event: EventT[Any], now_ms: int) -> None:
        counts, groups = self.total(), self.total_groups()
        self.metrics.set_fleet(counts)
        self.metrics.set_groups(groups)
        self._publish(counts, groups, now_ms)

        history = self._history()
        updated = record_point(history, now_ms, counts.percent)
        if updated is not history:
            self.held.put(self.state_table, "history", updated, event)

        state = self._threshold_state()
        due = self._last_check_ms is None or now_ms - self._last_check_ms >= self.interval_ms
        if due:
            self._last_check_ms = now_ms
            if self.threshold is not None:
                state = self._check(event, None, "threshold", counts, self.threshold, now_ms)
            for label, threshold in self.groups.thresholds.items():
                group = _group_counts(groups, label)
                self._check(event, label, group_threshold_key(label), group, threshold, now_ms)
        self.snapshot = FleetSnapshot(counts, now_ms, self.threshold, state.below, updated, groups)

    def _publish(self, counts: FleetCounts, groups: Groups, now_ms: int) -> None:
        """On change, and at least once an interval; `groups` only with `fleet.group_by`."""
        published = self._published
        if (
            published is not None
            and published[0] == counts
            and published[1] == groups
            and now_ms - published[2] < self.interval_ms
        ):
            return
        self.outputs.send(
            self.convergence_topic,
            key=b"fleet",
            value=encode_fleet_convergence(
                at=iso_from_ms(now_ms),
                active=counts.active,
                compliant=counts.compliant,
                percent=counts.percent,
                by_status=counts.as_dict(),
                inactive=counts.inactive,
                revoked=counts.revoked,
                groups=groups_doc(groups) if self.groups.group_by else None,
            ),
        )
        self._published = (counts, groups, now_ms)

    def _check(
        self,
        event: EventT[Any],
        label: str | None,
        state_key: str,
        counts: FleetCounts,
        threshold: float,
        now_ms: int,
    ) -> ThresholdState:
        """One detector (the fleet's, or a group's): fires once per downward crossing, and
        reports the crossing back once; its state is written after the alert (`commit`),
        so a crash in between repeats the alert (same id, recognised by the sender)
        rather than losing it."""
        state = self._threshold_state(state_key)
        new_state, fired = check_threshold(state, counts.percent, threshold)
        if fired and counts.percent is not None:
            for handler in self.threshold_handlers:
                handler(label, new_state, counts, threshold, now_ms)
        if recovered(state, new_state):
            for handler in self.recovery_handlers:
                handler(label, new_state, counts, threshold, now_ms)
        if new_state != state:
            self.held.put(self.state_table, state_key, new_state, event)
        return new_state

    def current(self) -> FleetSnapshot | None:
        """The fleet numbers for the API: only on the fleet owner once its tables are
        recovered; before its first tick they are read from the tables directly."""
        if not self.owns_fleet() or self.app.in_recovery:
            return None
        if self.snapshot is not None:
            return self.snapshot
        state = self._threshold_state()
        now_ms = int(self.clock() * 1000)
        return FleetSnapshot(
            self.total(),
            now_ms,
            self.threshold,
            state.below,
            self._history(),
            self.total_groups(),
        )

    def group_threshold(self, label: str) -> float | None:
        """A group's own threshold, else the fleet's."""
        return self.groups.thresholds.get(label, self.threshold)

    def _threshold_state(self, key: str = "threshold") -> ThresholdState:
        state = self.state_table.get(key)
        return state if isinstance(state, ThresholdState) else ThresholdState()

    def _history(self) -> ConvergenceHistory:
        bucket_ms = history_bucket_ms(self.interval_s)
        history = self.state_table.get("history")
        if not isinstance(history, ConvergenceHistory) or history.bucket_ms != bucket_ms:
            return ConvergenceHistory(bucket_ms)
        return history


def _group_counts(groups: Groups, label: str) -> FleetCounts:
    """A group's numbers; an absent group is empty (percent None: its detector waits)."""
    parsed = parse_label(label)
    if parsed is None:
        return FleetCounts()
    return groups.get(parsed[0], {}).get(parsed[1], FleetCounts())
