"""Catch-up tracking: a worker may not judge liveness on a partition until it has
processed everything that was already in it when the partition was assigned.

Otherwise a processor that was down for an hour would, on restart, mark the whole fleet
offline before it had read the check-ins waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import faust
from faust.types import TP

from processor.faust_compat import DeliveryGuard
from processor.faust_compat.delivery import BROKER_ERRORS, BrokerHealth


@dataclass
class CatchUp:
    """Which of the guarded topics' partitions are caught up with what they held when
    assigned; positions come from the agent's delivery guard."""

    app: faust.App
    guard: DeliveryGuard
    _targets: dict[TP, int] = field(default_factory=dict)
    _caught_up: set[TP] = field(default_factory=set)
    _assigned: set[TP] = field(default_factory=set)
    #: Set on the first assignment: until then nothing is known to be caught up.
    assignment_received: bool = False

    @property
    def topics(self) -> frozenset[str]:
        return self.guard.topics

    def on_assigned(self, assigned: Iterable[TP]) -> None:
        """A new assignment: every newly assigned partition must be caught up again."""
        mine = {tp for tp in assigned if tp.topic in self.topics}
        for tp in mine - self._assigned:
            self._caught_up.discard(tp)
            self._targets.pop(tp, None)
        self._assigned = mine

    def on_revoked(self, revoked: Iterable[TP]) -> None:
        for tp in revoked:
            self._assigned.discard(tp)
            self._caught_up.discard(tp)
            self._targets.pop(tp, None)

    def partition_caught_up(self, partition: int) -> bool:
        tps = [tp for tp in self._assigned if tp.partition == partition]
        return bool(tps) and all(tp in self._caught_up for tp in tps)

    def all_caught_up(self) -> bool:
        """Every assigned partition caught up; a worker assigned none (more workers than
        partitions) is caught up as soon as it has its (empty) assignment."""
        return self.assignment_received and self._assigned <= self._caught_up

    @property
    def broker(self) -> BrokerHealth:
        """Whether the broker answered the guards' last call (`/readyz`)."""
        return self.guard.offsets.health

    def active_partitions(self) -> set[int]:
        actives = self.app.assignor.assigned_actives()
        return {tp.partition for tp in actives if tp.topic in self.topics}

    async def refresh(self) -> None:
        """Fetch the end offsets once per assignment and compare with progress; while
        the broker does not answer, what is pending stays pending (asked again on the
        next tick)."""
        actives = self.app.assignor.assigned_actives()
        self.on_assigned(tp for tp in actives if tp.topic in self.topics)
        pending = [tp for tp in self._assigned if tp not in self._caught_up]
        missing = [tp for tp in pending if tp not in self._targets]
        try:
            if missing:
                self._targets.update(await self.guard.offsets(missing))
            elif not self.broker.reachable:
                await self.guard.offsets.probe()  # back? (a worker may have no partition)
        except BROKER_ERRORS as exc:
            self.broker.failed("end offsets", exc)
        for tp in pending:
            target = self._targets.get(tp)
            if target is not None and self.guard.position(tp) >= target:
                self._caught_up.add(tp)
