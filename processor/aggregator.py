"""Stage 2 of the fleet projection (see `processor.fleet`), on the worker that owns the
partials topic's only partition (the fleet owner): the aggregator sums the partitions'
partials, publishes `vigo.fleet.convergence`, keeps the sparkline history and runs the
threshold detectors (the fleet's and each group's), all inside its stream, writing its
tables the one way (`processor.state`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import faust
from faust.types import EventT

from processor.faust_compat import DeliveryGuard
from processor.fleet import FleetSnapshot, GroupSettings, groups_doc
from processor.metrics import Metrics
from processor.outputs import Outputs
from processor.records import (
    TICK_KEY,
    TICK_MAX_AGE_MS,
    FleetPart,
    decode_fleet_partial,
    group_threshold_key,
)
from processor.resources_fleet import ResourceParts
from processor.rollouts_fleet import RolloutFleet
from processor.state import HeldTable, flush
from projections.fleet import FleetCounts
from projections.groups import (
    Groups,
    merge_groups,
    parse_label,
)
from projections.history import ConvergenceHistory, history_bucket_ms, record_point
from projections.threshold import ThresholdState, check_threshold, recovered
from topics.codec import encode_fleet_convergence
from topics.timestamps import iso_from_ms

#: The fleet tables have one partition, like the partials topic they are written from.
FLEET_TABLE_PARTITION: Final = 0

#: (group label `KEY=VALUE` or None for the fleet, new detector state, the numbers, the
#: threshold, now): called once per downward crossing.
ThresholdHandler = Callable[[str | None, ThresholdState, FleetCounts, float, int], None]


@dataclass
class FleetAggregator:
    """Stage 2, on the fleet owner: sum partials, publish, detect, remember."""

    app: faust.App
    #: Table fleet-parts: each partition's latest partial, by partition number.
    parts: HeldTable
    #: Table fleet-state: the sparkline history and the threshold detectors' states.
    state: HeldTable
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
    #: SPEC 11.3: the partitions' resource summaries, which share the partials topic.
    resources: ResourceParts | None = None
    #: SPEC 11.2: rollouts by `config_version`, from the same partials.
    rollouts: RolloutFleet | None = None
    snapshot: FleetSnapshot | None = None
    _published: tuple[FleetCounts, Groups, int] | None = None
    _last_check_ms: int | None = None

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
        if self.resources is not None and self.resources.take(message.key, message.value):
            return
        if message.key == TICK_KEY:
            now_ms = int(self.clock() * 1000)
            if now_ms - int(message.timestamp * 1000) <= TICK_MAX_AGE_MS:
                self._on_tick(now_ms)
            return
        partial = decode_fleet_partial(message.value) if message.value else None
        if partial is None:
            return
        partition, part = partial
        if partition < self.partitions:
            self.parts.put(FLEET_TABLE_PARTITION, str(partition), part)

    async def commit(self) -> None:
        """Outputs (fleet numbers, alerts) first, then the state that records them.
        Shielded: when the agent is cancelled (shutdown, rebalance) Faust acks the event on
        the way out and commits its offset, so the flush must still run to its end."""
        more = () if self.resources is None else (self.resources.held,)
        await asyncio.shield(flush(self.outputs, self.parts, self.state, *more))

    def _parts(self) -> list[FleetPart]:
        parts = (self.parts.get(str(p)) for p in range(self.partitions))
        return [part for part in parts if isinstance(part, FleetPart)]

    def total(self) -> FleetCounts:
        return FleetCounts.merged(part.counts for part in self._parts())

    def total_groups(self) -> Groups:
        """The fleet's groups: the partials' merged and bounded again (empty without
        `fleet.group_by`)."""
        if not self.groups.group_by:
            return {}
        return self.groups.bound(merge_groups(part.groups for part in self._parts()))

    def _on_tick(self, now_ms: int) -> None:
        counts, groups = self.total(), self.total_groups()
        self.metrics.set_fleet(counts)
        self.metrics.set_groups(groups)
        self._publish(counts, groups, now_ms)
        if self.rollouts is not None:
            self.rollouts.on_tick(self._parts(), groups, now_ms)

        history = self._history()
        updated = record_point(history, now_ms, counts.percent)
        if updated is not history:
            self.state.put(FLEET_TABLE_PARTITION, "history", updated)

        state = self._threshold_state()
        due = self._last_check_ms is None or now_ms - self._last_check_ms >= self.interval_ms
        if due:
            self._last_check_ms = now_ms
            if self.threshold is not None:
                state = self._check(None, "threshold", counts, self.threshold, now_ms)
            for label, threshold in self.groups.thresholds.items():
                group = _group_counts(groups, label)
                self._check(label, group_threshold_key(label), group, threshold, now_ms)
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
            self.state.put(FLEET_TABLE_PARTITION, state_key, new_state)
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
        state = self.state.get(key)
        return state if isinstance(state, ThresholdState) else ThresholdState()

    def _history(self) -> ConvergenceHistory:
        bucket_ms = history_bucket_ms(self.interval_s)
        history = self.state.get("history")
        if not isinstance(history, ConvergenceHistory) or history.bucket_ms != bucket_ms:
            return ConvergenceHistory(bucket_ms)
        return history


def _group_counts(groups: Groups, label: str) -> FleetCounts:
    """A group's numbers; an absent group is empty (percent None: its detector waits)."""
    parsed = parse_label(label)
    if parsed is None:
        return FleetCounts()
    return groups.get(parsed[0], {}).get(parsed[1], FleetCounts())
