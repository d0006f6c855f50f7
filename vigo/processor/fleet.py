"""The fleet projection, in two stages (like a Kafka Streams aggregation):

1. per partition, on the worker that owns it: the envoy agent keeps the counts of the
   partition's statuses next to its envoy states (rebuilt from them after an assignment,
   so they can never disagree); a timer publishes them as a partial to the internal
   one-partition topic;
2. fleet-wide, on the worker that owns that topic's only partition (the fleet owner):
   the aggregator sums the partials, publishes `vigo.fleet.convergence`, keeps the
   sparkline history and runs the threshold detector, all inside its stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import EventT, TableT

from vigo.processor.envoys import EnvoyProcessor
from vigo.processor.faust_compat import DeliveryGuard
from vigo.processor.metrics import Metrics
from vigo.processor.outputs import HeldWrites, Outputs
from vigo.processor.records import (
    TICK_KEY,
    TICK_MAX_AGE_MS,
    decode_fleet_partial,
    encode_fleet_partial,
)
from vigo.projections.fleet import FleetCounts
from vigo.projections.history import ConvergenceHistory, history_bucket_ms, record_point
from vigo.projections.threshold import ThresholdState, check_threshold
from vigo.topics.codec import encode_fleet_convergence
from vigo.topics.timestamps import iso_from_ms


@dataclass
class FleetProjection:
    """Stage 1: each owned, caught-up partition's counts, which the envoy agent keeps next
    to its states (`EnvoyProcessor.counts_for`), published as a partial."""

    app: faust.App
    envoys: EnvoyProcessor
    partials_topic: faust.TopicT
    interval_s: int
    clock: Callable[[], float]
    _sent: dict[int, tuple[FleetCounts, int]] = field(default_factory=dict)

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._sent.pop(partition, None)

    async def publish_partials(self) -> None:
        """On change, and at least twice an interval so a new fleet owner learns them
        quickly."""
        if self.app.rebalancing or self.app.in_recovery:
            return
        catch_up = self.envoys.catch_up
        now_ms = int(self.clock() * 1000)
        for partition in sorted(catch_up.active_partitions()):
            if not catch_up.partition_caught_up(partition):
                continue
            counts = self.envoys.counts_for(partition)
            sent = self._sent.get(partition)
            if sent and sent[0] == counts and now_ms - sent[1] < self.interval_s * 500:
                continue
            await self.partials_topic.send(
                key=f"p{partition}".encode(),
                value=encode_fleet_partial(partition, counts, now_ms),
            )
            self._sent[partition] = (counts, now_ms)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    counts: FleetCounts
    at_ms: int
    threshold: float | None
    below: bool
    history: ConvergenceHistory


ThresholdHandler = Callable[[ThresholdState, FleetCounts, float, int], None]


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
    threshold_handlers: list[ThresholdHandler] = field(default_factory=list)
    snapshot: FleetSnapshot | None = None
    _published: tuple[FleetCounts, int] | None = None
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
        partition, counts = partial
        if partition < self.partitions:
            self.held.put(self.parts_table, str(partition), counts, event)

    async def commit(self, stream: faust.Stream[Any]) -> None:
        """Outputs (fleet numbers, alerts) first, then the state that records them."""
        try:
            await self.outputs.acknowledged()
        finally:
            # Also when the wait is cancelled (shutdown, rebalance): take_events acks the
            # batch on the way out and Faust commits its offsets, so the states must be
            # written now; they are flushed with the outputs still in the producer.
            self.held.apply(stream)

    def total(self) -> FleetCounts:
        parts = (self.parts_table.get(str(p)) for p in range(self.partitions))
        return FleetCounts.merged(part for part in parts if part is not None)

    def _on_tick(self, event: EventT[Any], now_ms: int) -> None:
        counts = self.total()
        self.metrics.set_fleet(counts)
        published = self._published
        if published is None or published[0] != counts or now_ms - published[1] >= self.interval_ms:
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
                ),
            )
            self._published = (counts, now_ms)

        history = self._history()
        updated = record_point(history, now_ms, counts.percent)
        if updated is not history:
            self.held.put(self.state_table, "history", updated, event)

        state = self._threshold_state()
        due = self._last_check_ms is None or now_ms - self._last_check_ms >= self.interval_ms
        if self.threshold is not None and due:
            self._last_check_ms = now_ms
            new_state, fired = check_threshold(state, counts.percent, self.threshold)
            # The alert is sent before the state that records it is written (`commit`): a
            # crash in between repeats it (same id, recognised by the sender).
            if fired and counts.percent is not None:
                for handler in self.threshold_handlers:
                    handler(new_state, counts, self.threshold, now_ms)
            if new_state != state:
                self.held.put(self.state_table, "threshold", new_state, event)
                state = new_state
        self.snapshot = FleetSnapshot(counts, now_ms, self.threshold, state.below, updated)

    def current(self) -> FleetSnapshot | None:
        """The fleet numbers for the API: only on the fleet owner once its tables are
        recovered; before its first tick they are read from the tables directly."""
        if not self.owns_fleet() or self.app.in_recovery:
            return None
        if self.snapshot is not None:
            return self.snapshot
        state = self._threshold_state()
        now_ms = int(self.clock() * 1000)
        return FleetSnapshot(self.total(), now_ms, self.threshold, state.below, self._history())

    def _threshold_state(self) -> ThresholdState:
        state = self.state_table.get("threshold")
        return state if isinstance(state, ThresholdState) else ThresholdState()

    def _history(self) -> ConvergenceHistory:
        bucket_ms = history_bucket_ms(self.interval_s)
        history = self.state_table.get("history")
        if not isinstance(history, ConvergenceHistory) or history.bucket_ms != bucket_ms:
            return ConvergenceHistory(bucket_ms)
        return history
