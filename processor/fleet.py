"""The fleet projection, in two stages (like a Kafka Streams aggregation):

1. per partition, on the worker that owns it: the envoy agent keeps the counts of the
   partition's statuses next to its envoy states (rebuilt from them after an assignment,
   so they can never disagree) and publishes them as a partial to the internal
   one-partition topic between batches, about once a second (never ahead of what it
   published and wrote);
2. fleet-wide, on the worker that owns that topic's only partition (the fleet owner):
   the aggregator (`processor.aggregator`) sums the partials, publishes
   `vigo.fleet.convergence`, keeps the sparkline history and runs the threshold
   detectors, all inside its stream.

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

from processor.config import Settings
from processor.envoys import EnvoyProcessor
from processor.records import (
    encode_fleet_partial,
)
from processor.rollouts import RolloutPartials
from projections.fleet import FleetCounts
from projections.groups import (
    Groups,
    GroupTally,
    bounded,
    pinned_values,
)
from projections.history import ConvergenceHistory

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
    #: SPEC 11.2: each partition's rollouts, carried by its partial, and the ones last sent.
    rollouts: RolloutPartials = field(default_factory=RolloutPartials)
    _sent_rollouts: dict[int, object] = field(default_factory=dict)

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
            rollouts = self.rollouts.part(self.envoys, partition, groups)
            sent = self._sent.get(partition)
            fresh = sent is not None and now_ms - sent[2] < self.interval_s * 500
            same = self._sent_rollouts.get(partition) is rollouts
            if fresh and sent is not None and sent[0] == counts and sent[1] is groups and same:
                continue
            await self.partials_topic.send(
                key=f"p{partition}".encode(),
                value=encode_fleet_partial(partition, counts, now_ms, groups, rollouts),
            )
            self._sent[partition] = (counts, groups, now_ms)
            self._sent_rollouts[partition] = rollouts


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    counts: FleetCounts
    at_ms: int
    threshold: float | None
    below: bool
    history: ConvergenceHistory
    #: key -> value -> numbers, bounded as published; empty without `fleet.group_by`.
    groups: Groups = field(default_factory=dict)


def group_settings(settings: Settings) -> GroupSettings:
    """Groups by label (SPEC 10.2): keys, cap and per-group thresholds."""
    return GroupSettings(
        tuple(settings.fleet.group_by),
        settings.fleet.max_group_values,
        settings.group_thresholds,
    )
